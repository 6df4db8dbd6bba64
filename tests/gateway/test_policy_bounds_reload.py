"""Values that the policy bounds reject, because they crashed a running gateway or lost data.

Each test starts a gateway on a valid policy, saves an edit with one such value and reloads
it. The edit must be rejected with its line-numbered problem, and the request that the value
used to break must work on the policy that keeps serving:

- a price of 1.7e308 made a request's cost infinite, Redis rejected the spend write
  (INCRBYFLOAT), and the tenant's spend was lost without a log line;
- embedding ``dimensions`` of 2**64 failed every embeddings request with a 500, because
  orjson, which hashes the cache key, takes integers up to 2**64 - 1 only;
- a shadow judge ``max_tokens`` of 2**64 failed every shadow job, for the same reason.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import redis
import yaml
from structlog.testing import capture_logs

from router.budgets import period_keys
from tests.gateway.conftest import GatewayKit, chat_body, policy_document, write_yaml

EDGE = "tiers.edge.deployments.0"


def tenant_policy(kit: GatewayKit, digest: str) -> dict[str, Any]:
    """Return the test policy with one tenant, whose key has ``digest``, and its budget."""
    document = policy_document(kit.base_urls, cache_enabled=False)
    document["tenants"] = {
        "entries": {
            "team": {"key_sha256": [digest], "budget": {"usd_per_day": 100.0}},
        },
    }
    return document


def rejected_problems(logs: list[dict[str, Any]]) -> list[str]:
    [rejected] = [entry for entry in logs if entry["event"] == "policy_reload_rejected"]
    return list(rejected["problems"])


def replace_marker(document: dict[str, Any], marker: str, literal: str) -> str:
    """Dump ``document`` as YAML with the string ``marker`` replaced by the YAML ``literal``."""
    return yaml.safe_dump(document, sort_keys=False).replace(f"'{marker}'", literal)


async def test_reload_rejects_price_that_loses_spend(
    redis_kit: GatewayKit, redis_client: redis.Redis
) -> None:
    api_key = f"sk-bounds-{uuid.uuid4().hex}"
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    document = tenant_policy(redis_kit, digest)
    write_yaml(redis_kit.policy_path, document)
    settings = redis_kit.settings(use_redis=True)
    day_key, month_key = period_keys("team", prefix=settings.redis_key_prefix)
    redis_client.delete(day_key, month_key)

    async with redis_kit.running(settings=settings) as gateway:
        version = gateway.runtime.policies.current.version
        document["tiers"]["edge"]["deployments"][0]["price"]["output_per_million"] = "@@price@@"
        redis_kit.policy_path.write_text(replace_marker(document, "@@price@@", "1.7e+308"))
        with capture_logs() as logs:
            gateway.runtime.policies.check_for_change()
        first = await gateway.chat(chat_body("Say hello."), api_key=api_key)
        second = await gateway.chat(chat_body("Say hello again."), api_key=api_key)
        await gateway.runtime.budgets.flush()
        stored = redis_client.get(day_key)
    redis_client.delete(day_key, month_key)

    [problem] = rejected_problems(logs)
    assert problem.endswith(
        f": {EDGE}.price.output_per_million: must be at most 1000000 (found 1.7e+308)"
    )
    assert gateway.runtime.policies.current.version == version
    assert first.status_code == 200
    assert second.status_code == 200
    # The spend of both requests reached Redis as a finite amount.
    assert stored is not None
    assert 0 < float(stored) < 1


async def test_reload_rejects_dimensions_beyond_64_bits(
    redis_kit: GatewayKit, redis_client: redis.Redis
) -> None:
    document = policy_document(redis_kit.base_urls)
    document["embeddings"] = {
        "deployments": [
            {
                "name": "embed",
                "model": "openai/embed",
                # The fake upstream has no embeddings route, so it responds with 404.
                "api_base": redis_kit.base_urls["mid"],
                "transport": "direct",
                "price": {"input_per_million": 0.02},
                "dimensions": 8,
            }
        ]
    }
    write_yaml(redis_kit.policy_path, document)

    async with redis_kit.running(settings=redis_kit.settings(use_redis=True)) as gateway:
        document["embeddings"]["deployments"][0]["dimensions"] = "@@dimensions@@"
        redis_kit.policy_path.write_text(replace_marker(document, "@@dimensions@@", str(2**64)))
        with capture_logs() as logs:
            gateway.runtime.policies.check_for_change()
            response = await gateway.client.post(
                "/v1/embeddings",
                json={"model": "embed", "input": "hello"},
                headers={"Authorization": f"Bearer {gateway.api_key}"},
            )

    [problem] = rejected_problems(logs)
    assert problem.endswith(
        f": embeddings.deployments.0.dimensions: must be at most 134217728 (found {2**64})"
    )
    # The request reaches the upstream, whose 404 becomes a 502, instead of failing with a
    # 500 while the gateway builds its cache key.
    assert response.status_code == 502
    assert [entry for entry in logs if entry["event"] == "internal_error"] == []


async def test_reload_rejects_judge_max_tokens_beyond_64_bits(kit: GatewayKit) -> None:
    document = policy_document(kit.base_urls, cache_enabled=False)
    document["tiers"]["frontier"]["deployments"][0]["price"] = {
        "input_per_million": 0.0,
        "output_per_million": 0.0,
    }
    document["shadow"] = {
        "enabled": True,
        "sample_rate": 1.0,
        "tiers": ["edge"],
        "reference_tier": "frontier",
        "judge": {"deployment": "frontier-large", "max_tokens": 16},
    }
    write_yaml(kit.policy_path, document)

    async with kit.running(settings=kit.settings()) as gateway:
        document["shadow"]["judge"]["max_tokens"] = "@@max_tokens@@"
        kit.policy_path.write_text(replace_marker(document, "@@max_tokens@@", str(2**64)))
        with capture_logs() as logs:
            gateway.runtime.policies.check_for_change()
            response = await gateway.chat(chat_body("Say hello."))
            await gateway.runtime.shadow.wait_idle()

    [problem] = rejected_problems(logs)
    assert problem.endswith(
        f": shadow.judge.max_tokens: must be at most {2**63 - 1} (found {2**64})"
    )
    assert response.status_code == 200
    events = [entry["event"] for entry in logs]
    assert "shadow_error" not in events
    assert "shadow_failed" not in events
    assert "shadow" in events
