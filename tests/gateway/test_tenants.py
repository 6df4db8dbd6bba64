"""API keys, tenant overrides, budgets and GET /v1/usage."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from tests.gateway.conftest import GatewayKit, chat_body, policy_document, write_yaml

GENERIC_401 = {
    "message": "Invalid API key: this gateway accepts only the keys that its policy lists. "
    "Check the key, or ask the gateway's operators for one.",
    "type": "authentication_error",
    "param": None,
    "code": "invalid_api_key",
}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write_tenant_policy(kit: GatewayKit, tenants: dict[str, Any], **options: Any) -> None:
    document = policy_document(kit.base_urls, **options)
    document["tenants"] = tenants
    write_yaml(kit.policy_path, document)


async def test_missing_and_wrong_keys_get_401(kit: GatewayKit) -> None:
    key = f"sk-team-a-{uuid.uuid4().hex}"
    write_tenant_policy(kit, {"require_key": True, "entries": {"team-a": {"key_sha256": [digest(key)]}}})
    async with kit.running(settings=kit.settings()) as gateway:
        missing = await gateway.client.post("/v1/chat/completions", json=chat_body())
        wrong = await gateway.chat(chat_body(), api_key="sk-wrong-key-1234")
        right = await gateway.chat(chat_body(), api_key=key)
    assert missing.status_code == 401
    assert missing.json()["error"] == {
        "message": "Missing API key. Send it as 'Authorization: Bearer KEY' (or 'x-api-key: KEY').",
        "type": "authentication_error",
        "param": None,
        "code": "missing_api_key",
    }
    assert wrong.status_code == 401
    assert wrong.json()["error"] == GENERIC_401
    assert "sk-wrong" not in wrong.text
    assert right.status_code == 200


async def test_rejected_key_gets_request_id(kit: GatewayKit) -> None:
    key = f"sk-team-a-{uuid.uuid4().hex}"
    write_tenant_policy(kit, {"require_key": True, "entries": {"team-a": {"key_sha256": [digest(key)]}}})
    async with kit.running(settings=kit.settings()) as gateway:
        wrong = await gateway.chat(chat_body(), api_key="sk-wrong-key-1234")
        bad_id = await gateway.chat(chat_body(), api_key=key, headers={"x-request-id": "x" * 300})
        right = await gateway.chat(chat_body(), api_key=key)
        records = await gateway.records()

    # A request rejected before its tenant is known gets an unsigned id, which feedback
    # rejects. An admitted one gets an id signed for its tenant.
    assert wrong.status_code == 401
    assert re.fullmatch(r"req-[0-9a-f]{32}", wrong.headers["x-request-id"])
    assert bad_id.status_code == 400
    assert re.fullmatch(r"req-[0-9a-f]{32}", bad_id.headers["x-request-id"])
    assert re.fullmatch(r"req-[0-9a-f]{48}", right.headers["x-request-id"])
    recorded = [record["request_id"] for record in records]
    assert recorded == [response.headers["x-request-id"] for response in (wrong, bad_id, right)]


async def test_non_bearer_authorization_gets_401(kit: GatewayKit) -> None:
    key = f"sk-team-a-{uuid.uuid4().hex}"
    write_tenant_policy(kit, {"require_key": True, "entries": {"team-a": {"key_sha256": [digest(key)]}}})
    async with kit.running(settings=kit.settings()) as gateway:
        basic = await gateway.client.post(
            "/v1/chat/completions", json=chat_body(), headers={"Authorization": "Basic abc"}
        )
        bare_key = await gateway.client.post(
            "/v1/chat/completions", json=chat_body(), headers={"Authorization": key}
        )
        messages = await gateway.client.post(
            "/v1/messages",
            json={"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]},
            headers={"Authorization": "Basic abc"},
        )
    expected = (
        "The Authorization header does not use the Bearer scheme. Send the API key as "
        "'Authorization: Bearer KEY' (or as 'x-api-key: KEY' without an Authorization header)."
    )
    assert basic.status_code == 401
    assert basic.json()["error"] == {
        "message": expected,
        "type": "authentication_error",
        "param": None,
        "code": "missing_api_key",
    }
    assert bare_key.status_code == 401
    assert bare_key.json()["error"]["message"] == expected
    assert key not in bare_key.text
    assert messages.status_code == 401
    assert messages.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": expected},
    }


async def test_tenant_min_tier_and_blocked_tier_apply(kit: GatewayKit) -> None:
    key = f"sk-{uuid.uuid4().hex}"
    entries = {"premium": {"key_sha256": [digest(key)], "blocked_tiers": ["edge"], "min_tier": "mid"}}
    write_tenant_policy(kit, {"entries": entries})
    async with kit.running(settings=kit.settings()) as gateway:
        routed = await gateway.chat(chat_body(), api_key=key)
        anonymous = await gateway.chat(chat_body())
    assert routed.headers["x-tierwise-tier"] == "mid"
    assert anonymous.headers["x-tierwise-tier"] == "edge"


async def test_min_tier_header_is_ignored_unless_allowed(kit: GatewayKit) -> None:
    write_tenant_policy(kit, {"allow_min_tier_header": False})
    async with kit.running(settings=kit.settings()) as gateway:
        ignored = await gateway.chat(chat_body(), headers={"x-tierwise-min-tier": "frontier"})
    write_tenant_policy(kit, {"allow_min_tier_header": True})
    async with kit.running(settings=kit.settings()) as gateway:
        honoured = await gateway.chat(chat_body(), headers={"x-tierwise-min-tier": "frontier"})
        invalid = await gateway.chat(chat_body(), headers={"x-tierwise-min-tier": "huge"})
    assert ignored.headers["x-tierwise-tier"] == "edge"
    assert honoured.headers["x-tierwise-tier"] == "frontier"
    assert invalid.status_code == 400
    assert invalid.json()["error"]["param"] == "x-tierwise-min-tier"


async def test_budget_exceeded_gets_429_and_usage_reports_spend(kit: GatewayKit, redis_url: str) -> None:
    key = f"sk-{uuid.uuid4().hex}"
    tenant = f"team-{uuid.uuid4().hex[:8]}"
    entries = {tenant: {"key_sha256": [digest(key)], "budget": {"usd_per_day": 0.0000001}}}
    write_tenant_policy(kit, {"entries": entries}, cache_enabled=False)
    kit.redis_url = redis_url
    async with kit.running(settings=kit.settings(use_redis=True)) as gateway:
        first = await gateway.chat(chat_body(), api_key=key)
        await gateway.runtime.budgets.flush()
        second = await gateway.chat(chat_body(), api_key=key)
        usage = await gateway.client.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})
    assert first.status_code == 200
    assert second.status_code == 429
    # The official OpenAI clients retry every 429 whose x-should-retry header is not "false".
    assert second.headers["x-should-retry"] == "false"
    assert second.json()["error"] == {
        "message": "This API key's tenant has used its daily budget. It resets at 00:00 UTC; "
        "ask the gateway's operators to raise it.",
        "type": "insufficient_quota",
        "param": None,
        "code": "budget_exceeded",
    }
    body = usage.json()
    assert body["tenant"] == tenant
    assert body["spend_usd"]["day"] == float(first.headers["x-tierwise-cost-usd"])
    assert body["budget_usd"] == {"day": 0.0000001, "month": None}


async def test_responses_spend_counts_against_budget(kit: GatewayKit, redis_url: str) -> None:
    key = f"sk-{uuid.uuid4().hex}"
    tenant = f"team-{uuid.uuid4().hex[:8]}"
    entries = {tenant: {"key_sha256": [digest(key)], "budget": {"usd_per_day": 0.0000001}}}
    write_tenant_policy(kit, {"entries": entries}, cache_enabled=False)
    kit.redis_url = redis_url
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "auto", "input": "Say hello in one short sentence."}
    async with kit.running(settings=kit.settings(use_redis=True)) as gateway:
        first = await gateway.client.post("/v1/responses", json=body, headers=headers)
        await gateway.runtime.budgets.flush()
        second = await gateway.client.post("/v1/responses", json=body, headers=headers)
        usage = await gateway.client.get("/v1/usage", headers=headers)
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["x-should-retry"] == "false"
    assert second.json()["error"]["code"] == "budget_exceeded"
    assert usage.json()["spend_usd"]["day"] == float(first.headers["x-tierwise-cost-usd"])


async def test_shutdown_flush_ignores_open_breaker(
    redis_url: str, redis_client: Any
) -> None:
    import time

    from router.budgets import BudgetLedger, period_keys
    from router.redis_link import RedisLink

    prefix = f"tw-ledger-{uuid.uuid4().hex[:8]}"
    link = RedisLink(redis_url, 1.0)
    # The breaker opened after earlier timeouts and would skip every call for a minute.
    link.breaker.consecutive_failures = link.breaker.failures_to_open
    link.breaker.open_until = time.monotonic() + 60
    ledger = BudgetLedger(link, prefix)
    ledger.record("team", 0.5)

    await ledger.stop()
    await link.close()

    day_key, month_key = period_keys("team", prefix=prefix)
    try:
        assert float(redis_client.get(month_key)) == 0.5
        assert float(redis_client.get(day_key)) == 0.5
    finally:
        redis_client.delete(day_key, month_key)


async def test_rejected_spend_write_is_logged_not_retried(
    redis_url: str, redis_client: Any
) -> None:
    from structlog.testing import capture_logs

    from router.budgets import BudgetLedger, period_keys
    from router.redis_link import RedisLink

    prefix = f"tw-ledger-{uuid.uuid4().hex[:8]}"
    broken_day, broken_month = period_keys("broken", prefix=prefix)
    infinite_day, infinite_month = period_keys("infinite", prefix=prefix)
    good_day, good_month = period_keys("good", prefix=prefix)
    redis_client.set(broken_day, "not a number")
    link = RedisLink(redis_url, 1.0)
    ledger = BudgetLedger(link, prefix)
    try:
        with capture_logs() as logs:
            ledger.record("broken", 0.25)
            ledger.record("infinite", float("inf"))
            ledger.record("good", 0.5)
            await ledger.flush()
            # The next batch of a fixed counter is written again.
            redis_client.delete(broken_day)
            ledger.record("broken", 0.125)
            await ledger.flush()
        await ledger.stop()
        await link.close()

        rejected = [entry for entry in logs if entry["event"] == "spend_write_rejected"]
        assert [entry["amounts_usd"] for entry in rejected] == [[0.25, 0.25], [float("inf")] * 2]
        assert "does not contain a number" in rejected[0]["error"]
        assert "would not be a finite number" in rejected[1]["error"]
        assert redis_client.get(broken_day) == b"0.125"
        assert float(redis_client.get(broken_month)) == 0.125
        assert redis_client.get(infinite_day) is None
        assert float(redis_client.get(good_day)) == 0.5
        assert float(redis_client.get(good_month)) == 0.5
        assert link.breaker.consecutive_failures == 0
    finally:
        redis_client.delete(broken_day, broken_month, infinite_day, infinite_month, good_day, good_month)


async def test_stop_keeps_inflight_spend() -> None:
    import asyncio

    from router.budgets import BudgetLedger

    class SlowLink:
        """A Redis link whose calls take 0.3 s and succeed."""

        def __init__(self) -> None:
            self.writes = 0

        async def call(self, operation: Any, default: Any, *, last_chance: bool = False) -> Any:
            await asyncio.sleep(0.3)
            self.writes += 1
            return True

    link = SlowLink()
    ledger = BudgetLedger(link, "tw-slow")  # type: ignore[arg-type]
    ledger.start()
    ledger.record("team", 1.0)
    await asyncio.sleep(0.25)  # the writer has taken the spend and is waiting on Redis

    await ledger.stop()

    assert link.writes >= 1
    assert dict(ledger._pending) == {}


async def test_blocked_tier_model_is_forbidden(kit: GatewayKit) -> None:
    key = f"sk-{uuid.uuid4().hex}"
    entries = {"basic": {"key_sha256": [digest(key)], "blocked_tiers": ["frontier"]}}
    write_tenant_policy(kit, {"entries": entries})
    async with kit.running(settings=kit.settings()) as gateway:
        blocked = await gateway.chat(chat_body(model="frontier-large"), api_key=key)
        records = await gateway.request_records()

    # The official OpenAI clients raise PermissionDeniedError for a 403 and never retry it.
    assert blocked.status_code == 403
    assert blocked.json()["error"] == {
        "message": "The model 'frontier-large' is in the frontier tier, which this API key may "
        "not use. Request a router alias such as 'auto', or another model from GET /v1/models.",
        "type": "invalid_request_error",
        "param": None,
        "code": "tier_blocked",
    }
    assert records[0]["status"] == 403
    assert records[0]["error"] == "tier_blocked"
    for fake in kit.fakes.values():
        assert fake.requests == []
