"""Per-tenant ``requests_per_minute`` at the gateway: shared counts, 429 shapes, records, reload.

Every gateway here reads a fake wall clock that stays in the middle of one minute, so no
test depends on where the real clock is within its minute.  Tests that use the shared test
Redis give their tenant a unique name, so its counter keys are their own.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import openai
import pytest
import redis
import yaml

from router.app import create_app
from router.ratelimits import WINDOW_S, window_key
from tests.gateway.conftest import (
    Gateway,
    GatewayKit,
    LiveGateway,
    StubScorer,
    chat_body,
    parse_sse,
    policy_document,
    read_file_records,
    read_stream_records,
    write_yaml,
)

# 20,000,000 minutes after the epoch (in 2008); 37.5 s into it, the minute ends in 22.5 s.
MINUTE_START = 20_000_000 * WINDOW_S
FROZEN_NOW = MINUTE_START + 37.5
RETRY_HEADERS = {"retry-after": "23", "retry-after-ms": "22500"}


def limit_message(limit: int) -> str:
    return (
        f"This API key's tenant has reached its limit of {limit} requests per minute. "
        "Retry after 23 s, when the next minute starts."
    )


class FakeClock:
    """A wall clock that stays where the test sets it."""

    def __init__(self, now: float = FROZEN_NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class LimitedTenant:
    """A policy tenant with a unique name and API key."""

    name: str
    api_key: str

    @classmethod
    def new(cls) -> LimitedTenant:
        return cls(f"team-{uuid.uuid4().hex[:12]}", f"sk-{uuid.uuid4().hex}")

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.api_key.encode()).hexdigest()


def write_limit_policy(
    kit: GatewayKit,
    tenant: LimitedTenant,
    limit: int | None,
    field: str = "requests_per_minute",
    **options: Any,
) -> None:
    """Write the test policy with ``tenant``'s ``field`` (a per-minute limit) set to ``limit``."""
    entry: dict[str, Any] = {"key_sha256": [tenant.digest]}
    if limit is not None:
        entry[field] = limit
    document = policy_document(kit.base_urls, **options)
    document["tenants"] = {"entries": {tenant.name: entry}}
    write_yaml(kit.policy_path, document)


@asynccontextmanager
async def limited_gateway(
    kit: GatewayKit,
    tenant: LimitedTenant,
    clock: FakeClock | None = None,
    *,
    use_redis: bool = False,
    **overrides: Any,
) -> AsyncIterator[Gateway]:
    """Run a gateway on the written policy whose rate limiters read ``clock``."""
    async with kit.running(settings=kit.settings(use_redis=use_redis, **overrides)) as gateway:
        clock = clock or FakeClock()
        gateway.runtime.rate_limits.clock = clock
        gateway.runtime.token_limits.clock = clock
        gateway.tenants.add(tenant.name)
        yield gateway


async def statuses(gateway: Gateway, tenant: LimitedTenant, requests: int, **body: Any) -> list[int]:
    """Send ``requests`` chat requests as ``tenant``; return their status codes in order."""
    codes = []
    for _ in range(requests):
        response = await gateway.chat(chat_body(**body), api_key=tenant.api_key)
        codes.append(response.status_code)
    return codes


def upstream_requests(kit: GatewayKit) -> int:
    return sum(len(fake.served) for fake in kit.fakes.values())


# In process ---------------------------------------------------------------------------------


async def test_over_limit_gets_openai_429(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 1, cache_enabled=False)
    async with limited_gateway(kit, tenant) as gateway:
        first = await gateway.chat(chat_body(), api_key=tenant.api_key)
        second = await gateway.chat(chat_body(), api_key=tenant.api_key)
        records = await gateway.request_records()

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json() == {
        "error": {
            "message": limit_message(1),
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert {name: second.headers[name] for name in RETRY_HEADERS} == RETRY_HEADERS
    # A retry after the wait succeeds, so the response must not stop the clients' retries.
    assert "x-should-retry" not in second.headers
    assert second.headers["x-request-id"].startswith("req-")
    assert upstream_requests(kit) == 1

    assert [record["status"] for record in records] == [200, 429]
    rejected = records[1]
    assert rejected["request_id"] == second.headers["x-request-id"]
    assert rejected["tenant"] == tenant.name
    assert rejected["error"] == "rate_limit_exceeded"
    assert rejected["tier"] is None
    assert rejected["cost_usd"] == 0


async def usage_of(gateway: Gateway, tenant: LimitedTenant) -> Any:
    response = await gateway.client.get(
        "/v1/usage", headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    return response.json()["requests_per_minute"]


async def test_usage_reports_limit_and_count(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 5, cache_enabled=False)
    async with limited_gateway(kit, tenant) as gateway:
        before = await usage_of(gateway, tenant)
        await statuses(gateway, tenant, 2)
        after = await usage_of(gateway, tenant)

    assert before == {"limit": 5, "used": 0}
    assert after == {"limit": 5, "used": 2}


async def test_usage_without_limit_counts_nothing(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, None, cache_enabled=False)
    async with limited_gateway(kit, tenant) as gateway:
        await statuses(gateway, tenant, 1)
        usage = await usage_of(gateway, tenant)

    assert usage == {"limit": None, "used": None}


async def test_default_limit_counts_each_unlisted_key(kit: GatewayKit) -> None:
    first, second = LimitedTenant.new(), LimitedTenant.new()
    listed = LimitedTenant.new()
    write_limit_policy(kit, listed, 5, cache_enabled=False)
    document = yaml.safe_load(kit.policy_path.read_text(encoding="utf-8"))
    document["tenants"]["default_requests_per_minute"] = 2
    write_yaml(kit.policy_path, document)
    async with limited_gateway(kit, listed) as gateway:
        first_codes = await statuses(gateway, first, 3)
        second_codes = await statuses(gateway, second, 3)
        listed_codes = await statuses(gateway, listed, 3)
        usage = await usage_of(gateway, first)

    assert first_codes == [200, 200, 429]
    assert second_codes == [200, 200, 429]
    assert listed_codes == [200, 200, 200]
    assert usage == {"limit": 2, "used": 3}


async def test_cached_answer_counts_as_request(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 2)
    async with limited_gateway(kit, tenant) as gateway:
        body = chat_body(temperature=0)
        responses = [await gateway.chat(body, api_key=tenant.api_key) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["x-tierwise-cache"] == "miss"
    assert responses[1].headers["x-tierwise-cache"] == "hit"
    assert "x-tierwise-cache" not in responses[2].headers
    assert upstream_requests(kit) == 1


async def test_stream_over_limit_gets_json_429(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 1, cache_enabled=False)
    async with limited_gateway(kit, tenant) as gateway:
        first = await gateway.chat(chat_body(stream=True), api_key=tenant.api_key)
        second = await gateway.chat(chat_body(stream=True), api_key=tenant.api_key)

    assert first.status_code == 200
    assert parse_sse(first.content).done
    assert second.status_code == 429
    assert second.headers["content-type"] == "application/json"
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert second.headers["retry-after-ms"] == RETRY_HEADERS["retry-after-ms"]


async def test_anthropic_messages_over_limit(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 1, cache_enabled=False)
    body = {"model": "auto", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}]}
    headers = {"x-api-key": tenant.api_key, "anthropic-version": "2023-06-01"}
    async with limited_gateway(kit, tenant) as gateway:
        first = await gateway.client.post("/v1/messages", json=body, headers=headers)
        second = await gateway.client.post("/v1/messages", json=body, headers=headers)
        records = await gateway.request_records()

    assert first.status_code == 200
    assert first.json()["type"] == "message"
    assert second.status_code == 429
    assert second.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": limit_message(1)},
    }
    assert {name: second.headers[name] for name in RETRY_HEADERS} == RETRY_HEADERS
    assert second.headers["request-id"] == second.headers["x-request-id"]
    assert [record["status"] for record in records] == [200, 429]


async def test_responses_over_limit(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 1, cache_enabled=False)
    body = {"model": "auto", "input": "Hi"}
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    async with limited_gateway(kit, tenant) as gateway:
        first = await gateway.client.post("/v1/responses", json=body, headers=headers)
        second = await gateway.client.post("/v1/responses", json={**body, "stream": True},
                                           headers=headers)
        records = await gateway.request_records()

    assert first.status_code == 200
    assert first.json()["object"] == "response"
    assert second.status_code == 429
    assert second.headers["content-type"] == "application/json"
    assert second.json() == {
        "error": {
            "message": limit_message(1),
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert {name: second.headers[name] for name in RETRY_HEADERS} == RETRY_HEADERS
    assert [record["status"] for record in records] == [200, 429]


async def test_reloaded_limit_applies_to_next_request(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 1, cache_enabled=False)
    async with limited_gateway(kit, tenant) as gateway:
        before = await statuses(gateway, tenant, 2)
        write_limit_policy(kit, tenant, 3, cache_enabled=False)
        raised = gateway.runtime.policies.reload()
        after_raise = await statuses(gateway, tenant, 2)
        write_limit_policy(kit, tenant, None, cache_enabled=False)
        removed = gateway.runtime.policies.reload()
        after_removal = await statuses(gateway, tenant, 2)

    assert before == [200, 429]
    assert raised is True
    # The minute's count is 2 when the limit becomes 3, so one more request fits.
    assert after_raise == [200, 429]
    assert removed is True
    assert after_removal == [200, 200]


async def test_unlimited_tenant_skips_limiter(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, None, cache_enabled=False)
    async with limited_gateway(kit, tenant) as gateway:
        checked: list[str] = []

        async def record_check(name: str, limit: int) -> None:
            checked.append(name)

        gateway.runtime.rate_limits.check = record_check  # type: ignore[method-assign]
        listed = await statuses(gateway, tenant, 3)
        anonymous = await gateway.client.post("/v1/chat/completions", json=chat_body())
        unlisted = await gateway.chat(chat_body())

    assert listed == [200, 200, 200]
    assert anonymous.status_code == 200
    assert unlisted.status_code == 200
    assert checked == []


async def test_replicas_without_redis_count_separately(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 1, cache_enabled=False)
    async with (
        limited_gateway(kit, tenant, data_dir=kit.tmp_path / "a") as first,
        limited_gateway(kit, tenant, data_dir=kit.tmp_path / "b") as second,
    ):
        from_first = await statuses(first, tenant, 2)
        from_second = await statuses(second, tenant, 2)

    assert from_first == [200, 429]
    assert from_second == [200, 429]


# With Redis ---------------------------------------------------------------------------------


async def test_gateways_share_redis_count(
    redis_kit: GatewayKit, redis_client: redis.Redis
) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(redis_kit, tenant, 3, cache_enabled=False)
    key = window_key(tenant.name, int(FROZEN_NOW // WINDOW_S))
    try:
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                limited_gateway(redis_kit, tenant, use_redis=True, data_dir=redis_kit.tmp_path / "a")
            )
            second = await stack.enter_async_context(
                limited_gateway(redis_kit, tenant, use_redis=True, data_dir=redis_kit.tmp_path / "b")
            )
            codes = [
                *await statuses(first, tenant, 2),
                *await statuses(second, tenant, 2),
                *await statuses(first, tenant, 1),
            ]
            shared_usage = await usage_of(second, tenant)
            stream_start = first.stream_start
        # Both gateways have flushed their outcome records to the one stream on stopping.
        records = read_stream_records(redis_client, stream_start, {tenant.name})
        count = int(redis_client.get(key) or 0)
        ttl = redis_client.ttl(key)
    finally:
        redis_client.delete(key)

    assert codes == [200, 200, 200, 429, 429]
    assert shared_usage == {"limit": 3, "used": 5}
    assert count == 5
    assert 0 < ttl <= 2 * WINDOW_S
    assert sorted(record["status"] for record in records) == [200, 200, 200, 429, 429]
    assert {record["error"] for record in records if record["status"] == 429} == {
        "rate_limit_exceeded"
    }


async def test_open_breaker_counts_in_process(
    redis_kit: GatewayKit, redis_client: redis.Redis
) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(redis_kit, tenant, 2, cache_enabled=False)
    key = window_key(tenant.name, int(FROZEN_NOW // WINDOW_S))
    async with limited_gateway(redis_kit, tenant, use_redis=True) as gateway:
        link = gateway.runtime.redis
        assert link is not None
        # The breaker opened after failures and skips Redis for the next minute.
        link.breaker.consecutive_failures = link.breaker.failures_to_open
        link.breaker.open_until = time.monotonic() + 60
        codes = await statuses(gateway, tenant, 3)
        # Close it again so that shutdown writes the outcome records to Redis, not the spool.
        link.breaker.consecutive_failures = 0

    assert codes == [200, 200, 429]
    assert redis_client.exists(key) == 0


async def test_unlimited_tenant_writes_no_redis_key(
    redis_kit: GatewayKit, redis_client: redis.Redis
) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(redis_kit, tenant, None, cache_enabled=False)
    async with limited_gateway(redis_kit, tenant, use_redis=True) as gateway:
        codes = await statuses(gateway, tenant, 2)

    assert codes == [200, 200]
    assert list(redis_client.scan_iter(match=f"{{tw:{tenant.name}}}:rpm:*")) == []


# The official openai client -----------------------------------------------------------------


class SteppingClock:
    """A wall clock that returns the next of ``times`` on each read, then stays on the last."""

    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def live_records(kit: GatewayKit, tenant: LimitedTenant) -> list[dict[str, Any]]:
    """The request records of ``tenant`` that a stopped live gateway wrote to its file."""
    records = read_file_records(kit.settings().resolved_outcomes_path)
    return [r for r in records if r["type"] == "request" and r["tenant"] == tenant.name]


def openai_client(live_base_url: str, tenant: LimitedTenant, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_base_url, api_key=tenant.api_key, timeout=15, **options)


MESSAGES: list[Any] = [{"role": "user", "content": "Say hello in one short sentence."}]


def test_openai_client_without_retries_raises(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 1, cache_enabled=False)
    with LiveGateway(create_app(kit.settings(), StubScorer())) as gateway:
        gateway.runtime.rate_limits.clock = FakeClock()
        client = openai_client(gateway.base_url, tenant, max_retries=0)
        client.chat.completions.create(model="auto", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="auto", messages=MESSAGES)
    error = caught.value

    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert error.message.endswith(limit_message(1))
    assert error.response.headers["retry-after-ms"] == RETRY_HEADERS["retry-after-ms"]
    assert [r["status"] for r in live_records(kit, tenant)] == [200, 429]


def test_openai_client_retry_waits_for_next_minute(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 1, cache_enabled=False)
    end = MINUTE_START + WINDOW_S
    with LiveGateway(create_app(kit.settings(), StubScorer())) as gateway:
        # One read per request: the first fills the minute, the second is rejected 0.3 s
        # before its end, and the client's retry arrives in the next minute.
        gateway.runtime.rate_limits.clock = SteppingClock(end - 0.5, end - 0.3, end + 0.1)
        client = openai_client(gateway.base_url, tenant, max_retries=1)
        client.chat.completions.create(model="auto", messages=MESSAGES)
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)

    assert raw.http_response.status_code == 200
    assert raw.retries_taken == 1
    assert raw.parse().choices[0].message.content
    assert [r["status"] for r in live_records(kit, tenant)] == [200, 429, 200]


def test_openai_client_stops_after_max_retries(kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 1, cache_enabled=False)
    with LiveGateway(create_app(kit.settings(), StubScorer())) as gateway:
        # 0.25 s before the minute ends, for good: every retry finds the minute still full.
        gateway.runtime.rate_limits.clock = FakeClock(MINUTE_START + WINDOW_S - 0.25)
        client = openai_client(gateway.base_url, tenant, max_retries=2)
        client.chat.completions.create(model="auto", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="auto", messages=MESSAGES)
    error = caught.value

    assert error.response.headers["retry-after-ms"] == "250"
    assert error.response.headers["retry-after"] == "1"
    # The first attempt and two retries, each waiting retry-after-ms, then the error.
    assert [r["status"] for r in live_records(kit, tenant)] == [200, 429, 429, 429]
    assert upstream_requests(kit) == 1
