"""Per-tenant ``tokens_per_minute`` at the gateway: 429 shape, what counts, usage, Redis.

As in ``test_rate_limits``, the token counter reads a fake wall clock that stays in the middle
of one minute, and tenants have unique names, so their Redis keys are their own.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
import yaml

from router.app import create_app
from router.budgets import BudgetLedger
from router.ratelimits import (
    WINDOW_S,
    TokenRateLimiter,
    estimate_prompt_tokens,
    token_window_key,
)
from router.redis_link import RedisLink
from tests.gateway.conftest import (
    Gateway,
    GatewayKit,
    LiveGateway,
    StubScorer,
    chat_body,
    parse_sse,
    write_yaml,
)
from tests.gateway.test_rate_limits import (
    FROZEN_NOW,
    RETRY_HEADERS,
    FakeClock,
    LimitedTenant,
    limited_gateway,
    statuses,
    upstream_requests,
    write_limit_policy,
)
from tests.gateway.test_redis_faults import PrivateRedis
from tests.support.scenario import Scenario


def write_token_policy(kit: GatewayKit, tenant: LimitedTenant, limit: int | None,
                       **options: Any) -> None:
    """Write the test policy with ``tenant`` limited to ``limit`` tokens per minute."""
    write_limit_policy(kit, tenant, limit, "tokens_per_minute", **options)


async def token_usage(gateway: Gateway, tenant: LimitedTenant) -> Any:
    response = await gateway.client.get(
        "/v1/usage", headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    return response.json()["tokens_per_minute"]


def tokens(record: dict[str, Any]) -> int:
    return int(record["tokens_in"]) + int(record["tokens_out"])


async def test_request_after_limit_gets_tokens_429(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(kit, tenant, 1, cache_enabled=False)
    async with limited_gateway(kit, tenant) as gateway:
        first = await gateway.chat(chat_body(), api_key=tenant.api_key)
        second = await gateway.chat(chat_body(), api_key=tenant.api_key)
        records = await gateway.request_records()

    used = tokens(records[0])
    # The request that crosses the limit is served in full.
    assert first.status_code == 200
    assert used > 1
    assert second.status_code == 429
    assert second.json() == {
        "error": {
            "message": f"This API key's tenant has used {used} of its 1 tokens per minute, "
            "counting the estimated prompt tokens of its requests in flight. "
            "Retry after 23 s, when the next minute starts.",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert {name: second.headers[name] for name in RETRY_HEADERS} == RETRY_HEADERS
    assert "x-should-retry" not in second.headers
    assert upstream_requests(kit) == 1
    assert [record["status"] for record in records] == [200, 429]
    assert records[1]["error"] == "rate_limit_exceeded"


async def test_usage_reports_completion_tokens(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(kit, tenant, 100_000, cache_enabled=False)
    async with limited_gateway(kit, tenant) as gateway:
        before = await token_usage(gateway, tenant)
        await statuses(gateway, tenant, 2)
        streamed = await gateway.chat(chat_body(stream=True), api_key=tenant.api_key)
        after = await token_usage(gateway, tenant)
        records = await gateway.request_records()

    assert parse_sse(streamed.content).done
    assert before == {"limit": 100_000, "used": 0}
    assert after == {"limit": 100_000, "used": sum(tokens(record) for record in records)}
    assert all(tokens(record) > 0 for record in records)


async def test_cache_hit_counts_no_tokens(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(kit, tenant, 100_000)
    async with limited_gateway(kit, tenant) as gateway:
        body = chat_body(temperature=0)
        responses = [await gateway.chat(body, api_key=tenant.api_key) for _ in range(2)]
        usage = await token_usage(gateway, tenant)
        records = await gateway.request_records()

    assert [r.headers["x-tierwise-cache"] for r in responses] == ["miss", "hit"]
    assert usage["used"] == tokens(records[0])


async def test_next_minute_admits_again(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(kit, tenant, 1, cache_enabled=False)
    clock = FakeClock()
    async with limited_gateway(kit, tenant, clock) as gateway:
        this_minute = await statuses(gateway, tenant, 2)
        clock.now += WINDOW_S
        next_minute = await statuses(gateway, tenant, 2)

    assert this_minute == [200, 429]
    assert next_minute == [200, 429]


async def test_request_in_flight_counts_its_prompt_estimate(kit: GatewayKit) -> None:
    # A 2,008-byte prompt is estimated at 506 tokens, over the limit of 100 on its own.
    prompt = "Tell me about the weather today. " * 60 + "Please answer in detail too."
    tenant = LimitedTenant.new()
    write_token_policy(kit, tenant, 100, cache_enabled=False)
    for fake in kit.fakes.values():
        fake.enqueue(Scenario.pause(after_events=1, seconds=1.0))
    async with limited_gateway(kit, tenant) as gateway:
        slow = asyncio.create_task(
            gateway.chat(chat_body(prompt, stream=True), api_key=tenant.api_key))
        while not any(fake.requests for fake in kit.fakes.values()):
            await asyncio.sleep(0.01)
        during = await token_usage(gateway, tenant)
        concurrent = await gateway.chat(chat_body(), api_key=tenant.api_key)
        finished = await slow
        after = await token_usage(gateway, tenant)
        records = await gateway.request_records()

    assert estimate_prompt_tokens([prompt], 1) == 506
    assert during == {"limit": 100, "used": 506}
    assert concurrent.status_code == 429
    assert concurrent.json()["error"]["message"].startswith(
        "This API key's tenant has used 506 of its 100 tokens per minute, counting the "
        "estimated prompt tokens of its requests in flight."
    )
    assert finished.status_code == 200
    assert parse_sse(finished.content).done
    # The rejected request ends first, so its record comes first.
    assert [record["status"] for record in records] == [429, 200]
    # The estimate is taken back; the answer's own tokens count.
    assert after == {"limit": 100, "used": tokens(records[1])}


async def test_failed_request_takes_its_estimate_back(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(kit, tenant, 100_000, cache_enabled=False)
    for fake in kit.fakes.values():
        fake.enqueue(Scenario.http_error(
            400, "Invalid value for 'logit_bias'.", "invalid_request_error", param="logit_bias"))
    async with limited_gateway(kit, tenant) as gateway:
        failed = await gateway.chat(chat_body(), api_key=tenant.api_key)
        usage = await token_usage(gateway, tenant)

    assert failed.status_code == 400
    assert usage == {"limit": 100_000, "used": 0}


async def test_unlimited_tenant_has_no_token_usage(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(kit, tenant, None, cache_enabled=False)
    async with limited_gateway(kit, tenant) as gateway:
        codes = await statuses(gateway, tenant, 2)
        usage = await token_usage(gateway, tenant)

    assert codes == [200, 200]
    assert usage == {"limit": None, "used": None}


async def test_default_token_limit_counts_each_unlisted_key(kit: GatewayKit) -> None:
    first, second, listed = LimitedTenant.new(), LimitedTenant.new(), LimitedTenant.new()
    write_token_policy(kit, listed, None, cache_enabled=False)
    document = yaml.safe_load(kit.policy_path.read_text(encoding="utf-8"))
    document["tenants"]["default_tokens_per_minute"] = 1
    write_yaml(kit.policy_path, document)
    async with limited_gateway(kit, listed) as gateway:
        first_codes = await statuses(gateway, first, 2)
        second_codes = await statuses(gateway, second, 2)
        listed_codes = await statuses(gateway, listed, 2)

    assert first_codes == [200, 429]
    assert second_codes == [200, 429]
    assert listed_codes == [200, 200]


async def test_anthropic_messages_over_token_limit(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(kit, tenant, 1, cache_enabled=False)
    body = {"model": "auto", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}]}
    headers = {"x-api-key": tenant.api_key, "anthropic-version": "2023-06-01"}
    async with limited_gateway(kit, tenant) as gateway:
        first = await gateway.client.post("/v1/messages", json=body, headers=headers)
        second = await gateway.client.post("/v1/messages", json=body, headers=headers)

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "rate_limit_error"
    assert "tokens per minute" in second.json()["error"]["message"]


async def test_gateways_share_token_count_through_redis(
    redis_kit: GatewayKit, redis_client: redis.Redis
) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(redis_kit, tenant, 1, cache_enabled=False)
    key = token_window_key(tenant.name, int(FROZEN_NOW // WINDOW_S))
    try:
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(limited_gateway(
                redis_kit, tenant, use_redis=True, data_dir=redis_kit.tmp_path / "a"))
            second = await stack.enter_async_context(limited_gateway(
                redis_kit, tenant, use_redis=True, data_dir=redis_kit.tmp_path / "b"))
            served = await statuses(first, tenant, 1)
            # The writer moves counts to Redis every 0.2 s; flush now instead of waiting.
            await first.runtime.budgets.flush()
            rejected = await statuses(second, tenant, 1)
            shared_usage = await token_usage(second, tenant)
            records = await first.request_records()
        stored = float(redis_client.get(key) or 0)
        ttl = redis_client.ttl(key)
    finally:
        redis_client.delete(key)

    assert served == [200]
    assert rejected == [429]
    assert stored == tokens(records[0])
    assert shared_usage == {"limit": 1, "used": tokens(records[0])}
    assert 0 < ttl <= 2 * WINDOW_S


async def test_unlimited_tenant_writes_no_token_key(
    redis_kit: GatewayKit, redis_client: redis.Redis
) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(redis_kit, tenant, None, cache_enabled=False)
    async with limited_gateway(redis_kit, tenant, use_redis=True) as gateway:
        await statuses(gateway, tenant, 2)
        await gateway.runtime.budgets.flush()

    assert list(redis_client.scan_iter(match=f"{{tw:{tenant.name}}}:tpm:*")) == []


def test_openai_client_sees_tokens_rate_limit_error(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(kit, tenant, 1, cache_enabled=False)
    with LiveGateway(create_app(kit.settings(), StubScorer())) as gateway:
        gateway.runtime.token_limits.clock = FakeClock()
        client = openai.OpenAI(base_url=gateway.base_url, api_key=tenant.api_key, timeout=15,
                               max_retries=0)
        messages: list[Any] = [{"role": "user", "content": "Say hello in one short sentence."}]
        client.chat.completions.create(model="auto", messages=messages)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="auto", messages=messages)

    assert caught.value.type == "tokens"
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after-ms"] == RETRY_HEADERS["retry-after-ms"]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which the test pauses."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_paused_redis_counts_tokens_once(private_redis: PrivateRedis) -> None:
    link = RedisLink(private_redis.url, timeout_s=0.2)
    ledger = BudgetLedger(link)
    limiter = TokenRateLimiter(ledger, clock=FakeClock())
    key = token_window_key("paused", int(FROZEN_NOW // WINDOW_S))
    try:
        assert await link.ping()
        limiter.record("paused", 50)
        private_redis.signal(signal.SIGSTOP)
        # The write reaches the paused Redis and times out, as over a slow network.
        await ledger.flush()
        unsaved_after_timeout = ledger._unsaved()
        private_redis.signal(signal.SIGCONT)
        await ledger.flush()
        stored = float(redis.Redis(port=private_redis.port).get(key) or 0)
    finally:
        await link.close()

    assert unsaved_after_timeout == {key: 50}
    assert stored == 50


@pytest.mark.parametrize("usage", [{}, [], "n/a"])
async def test_json_answer_without_usage_counts_estimate(kit: GatewayKit, usage: Any) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(kit, tenant, 1, cache_enabled=False)
    kit.fakes["edge"].set_default(Scenario(usage=usage))
    async with limited_gateway(kit, tenant) as gateway:
        codes = await statuses(gateway, tenant, 2)
        records = await gateway.request_records()

    # As for a stream without usage, the gateway counts the tokens itself.
    assert codes == [200, 429]
    assert records[0]["tokens_in"] > 0
    assert records[0]["tokens_out"] > 0
    assert records[0]["cost_usd"] > 0


async def test_paused_redis_take_back_stays_at_zero(
    private_redis: PrivateRedis,
) -> None:
    link = RedisLink(private_redis.url, timeout_s=0.2)
    ledger = BudgetLedger(link)
    limiter = TokenRateLimiter(ledger, clock=FakeClock())
    try:
        reservation = limiter.reserve("paused-release", 500)
        await ledger.flush()
        while_admitted = await limiter.used("paused-release")
        private_redis.signal(signal.SIGSTOP)
        # Redis contains the estimate, but the read falls back to this process's unsaved
        # amounts, which contain only the take-back.
        limiter.record("paused-release", 0, reservation)
        after_take_back = await limiter.used("paused-release")
        private_redis.signal(signal.SIGCONT)
    finally:
        await link.close()

    assert while_admitted == 500
    assert after_take_back == 0
