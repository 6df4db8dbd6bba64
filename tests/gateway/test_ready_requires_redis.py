"""/readyz with the ready_requires_redis setting: not ready until Redis has answered once."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import GatewayKit

# Nothing listens on port 1 of the loopback, so every connection is refused at once.
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"


async def test_unreachable_redis_is_degraded_by_default(kit: GatewayKit) -> None:
    kit.write_policy()
    settings = kit.settings(redis_url=UNREACHABLE_REDIS_URL)
    async with kit.running(settings=settings) as gateway:
        response = await gateway.client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["redis"] == "degraded"


async def test_unreachable_redis_fails_readiness_when_required(kit: GatewayKit) -> None:
    kit.write_policy()
    settings = kit.settings(redis_url=UNREACHABLE_REDIS_URL, ready_requires_redis=True)
    async with kit.running(settings=settings) as gateway:
        response = await gateway.client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "waiting_for_redis"
    assert response.json()["redis"] == "degraded"


async def test_required_redis_that_answers_is_ready(redis_kit: GatewayKit) -> None:
    redis_kit.write_policy()
    settings = redis_kit.settings(use_redis=True, ready_requires_redis=True)
    async with redis_kit.running(settings=settings) as gateway:
        response = await gateway.client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_required_redis_outage_after_answer_only_degrades(
    redis_kit: GatewayKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_kit.write_policy()
    settings = redis_kit.settings(use_redis=True, ready_requires_redis=True)
    async with redis_kit.running(settings=settings) as gateway:
        first = await gateway.client.get("/readyz")
        link = gateway.runtime.redis
        assert link is not None

        async def failed_ping() -> bool:
            return False

        # Stands in for an outage that starts after the replica became ready.
        monkeypatch.setattr(link, "ping", failed_ping)
        during_outage = await gateway.client.get("/readyz")

    assert first.status_code == 200
    assert during_outage.status_code == 200
    assert during_outage.json()["status"] == "degraded"
