"""A deployment that keeps failing goes to the back of the queue, and comes back after its cooldown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx
import pytest

from router.app import create_app
from router.policy.loader import load_policy
from tests.gateway.conftest import (
    RELOAD_INTERVAL_S,
    GatewayKit,
    LiveGateway,
    StubScorer,
    chat_body,
    eventually,
    policy_document,
    read_file_records,
    write_yaml,
)
from tests.support.replay_upstream import ReplayOptions
from tests.support.scenario import Scenario

T = TypeVar("T")


def write_cooldown_policy(kit: GatewayKit, **cooldown: Any) -> None:
    document = policy_document(kit.base_urls)
    document["routing"]["cooldown"] = {"after_failures": 2, "seconds": 60, **cooldown}
    write_yaml(kit.policy_path, document)


async def test_cooling_deployment_tried_last(kit: GatewayKit) -> None:
    write_cooldown_policy(kit)
    for _ in range(2):
        kit.fakes["edge"].enqueue(Scenario.http_error(503, "The server is overloaded."))
    async with kit.running(settings=kit.settings()) as gateway:
        for _ in range(3):
            response = await gateway.chat(chat_body())
            assert response.status_code == 200, response.text
        ready = (await gateway.client.get("/readyz")).json()
        metrics = (await gateway.client.get("/metrics")).text
        records = await gateway.request_records()

    assert [[a["deployment"] for a in r["attempts"]] for r in records] == [
        ["edge-small", "mid-medium"],
        ["edge-small", "mid-medium"],
        ["mid-medium"],
    ]
    assert len(kit.fakes["edge"].requests) == 2
    assert set(ready["cooling_down"]) == {"edge-small"}
    assert 0 < ready["cooling_down"]["edge-small"] <= 60
    assert 'tierwise_deployment_cooldown_seconds{deployment="edge-small"}' in metrics


async def test_cooling_deployment_serves_last(kit: GatewayKit) -> None:
    write_cooldown_policy(kit, after_failures=1)
    kit.fakes["edge"].enqueue(Scenario.http_error(503, "The server is overloaded."))
    async with kit.running(settings=kit.settings()) as gateway:
        await gateway.chat(chat_body())
        for tier in ("mid", "frontier"):
            kit.fakes[tier].enqueue(Scenario.http_error(503, "The server is overloaded."))
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200, response.text
    assert response.headers["x-tierwise-tier"] == "edge"
    assert [a["deployment"] for a in records[1]["attempts"]] == ["mid-medium", "frontier-large", "edge-small"]


async def test_cooldown_turned_off(kit: GatewayKit) -> None:
    write_cooldown_policy(kit, after_failures=0)
    for _ in range(3):
        kit.fakes["edge"].enqueue(Scenario.http_error(503, "The server is overloaded."))
    async with kit.running(settings=kit.settings()) as gateway:
        for _ in range(3):
            await gateway.chat(chat_body())
        ready = (await gateway.client.get("/readyz")).json()

    assert len(kit.fakes["edge"].requests) == 3
    assert ready["cooling_down"] == {}


async def test_stream_skips_cooling_deployment(kit: GatewayKit) -> None:
    write_cooldown_policy(kit)
    for _ in range(2):
        kit.fakes["edge"].enqueue(Scenario.http_error(503, "The server is overloaded."))
    async with kit.running(settings=kit.settings()) as gateway:
        for _ in range(3):
            response = await gateway.chat(chat_body(stream=True))
            assert response.status_code == 200, response.text
        records = await gateway.request_records()

    assert [a["deployment"] for a in records[2]["attempts"]] == ["mid-medium"]
    assert len(kit.fakes["edge"].requests) == 2


async def test_weighted_tier_spreads_first_tries(kit: GatewayKit) -> None:
    document = policy_document(kit.base_urls)
    edge = document["tiers"]["edge"]
    second = {**edge["deployments"][0], "name": "edge-second"}
    edge["deployments"].append(second)
    edge["balance"] = "weighted"
    write_yaml(kit.policy_path, document)
    async with kit.running(settings=kit.settings()) as gateway:
        served = [(await gateway.chat(chat_body())).headers["x-tierwise-model"] for _ in range(40)]
        records = await gateway.request_records()

    assert set(served) == {"edge-small", "edge-second"}
    assert all(len(record["attempts"]) == 1 for record in records)


async def test_reload_off_ends_cooldowns(kit: GatewayKit) -> None:
    write_cooldown_policy(kit, after_failures=1)
    kit.fakes["edge"].enqueue(Scenario.http_error(503, "The server is overloaded."))
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    async with kit.running(settings=settings) as gateway:
        await gateway.chat(chat_body())
        assert set(gateway.runtime.health.cooling()) == {"edge-small"}
        version = gateway.runtime.policies.current.version
        write_cooldown_policy(kit, after_failures=0)

        async def reloaded() -> bool:
            return gateway.runtime.policies.current.version != version

        assert await eventually(reloaded)
        response = await gateway.chat(chat_body())
        ready = (await gateway.client.get("/readyz")).json()

    assert response.headers["x-tierwise-tier"] == "edge"
    assert ready["cooling_down"] == {}


async def test_reload_to_fewer_seconds_shortens_cooldown(kit: GatewayKit) -> None:
    write_cooldown_policy(kit, after_failures=1, seconds=600)
    kit.fakes["edge"].enqueue(Scenario.http_error(503, "The server is overloaded."))
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    async with kit.running(settings=settings) as gateway:
        await gateway.chat(chat_body())
        assert gateway.runtime.health.cooling()["edge-small"] > 500
        version = gateway.runtime.policies.current.version
        write_cooldown_policy(kit, after_failures=1, seconds=5)

        async def reloaded() -> bool:
            return gateway.runtime.policies.current.version != version

        assert await eventually(reloaded)
        ready = (await gateway.client.get("/readyz")).json()

    assert 0 < ready["cooling_down"]["edge-small"] <= 5


async def test_reload_forgets_removed_deployment(kit: GatewayKit) -> None:
    write_cooldown_policy(kit, after_failures=1)
    kit.fakes["edge"].enqueue(Scenario.http_error(503, "The server is overloaded."))
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    async with kit.running(settings=settings) as gateway:
        await gateway.chat(chat_body())
        version = gateway.runtime.policies.current.version
        document = policy_document(kit.base_urls)
        document["routing"]["cooldown"] = {"after_failures": 1, "seconds": 60}
        document["tiers"]["edge"]["deployments"][0]["name"] = "edge-renamed"
        write_yaml(kit.policy_path, document)

        async def reloaded() -> bool:
            return gateway.runtime.policies.current.version != version

        assert await eventually(reloaded)
        ready = (await gateway.client.get("/readyz")).json()
        metrics = (await gateway.client.get("/metrics")).text

    assert ready["cooling_down"] == {}
    assert "edge-small" not in metrics


async def test_zero_retry_after_counts_as_failure(kit: GatewayKit) -> None:
    write_cooldown_policy(kit, after_failures=1)
    kit.fakes["edge"].enqueue(Scenario.rate_limited(retry_after_s=0))
    async with kit.running(settings=kit.settings()) as gateway:
        await gateway.chat(chat_body())
        second = await gateway.chat(chat_body())

    assert second.headers["x-tierwise-tier"] == "mid"
    assert len(kit.fakes["edge"].requests) == 1


def test_client_disconnect_not_counted(kit: GatewayKit) -> None:
    write_cooldown_policy(kit, after_failures=1)
    kit.fakes["edge"].enqueue(Scenario.hang(), Scenario.hang())
    app = create_app(kit.settings(), StubScorer())
    with LiveGateway(app) as live:
        for stream in (False, True):
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{live.base_url}/chat/completions", json=chat_body(stream=stream),
                           timeout=0.5)
        records: list[dict[str, Any]] = []
        for _ in range(100):
            records = read_file_records(live.runtime.outcomes.path)
            if len(records) == 2:
                break
            time.sleep(0.1)
        cooling = live.runtime.health.cooling()

    assert [r["status"] for r in records] == [499, 499]
    assert [[a["error"] for a in r["attempts"]] for r in records] == [["cancelled"], ["cancelled"]]
    assert cooling == {}


async def test_weighted_draw_skips_cooling_deployment(kit: GatewayKit) -> None:
    # edge-heavy takes nearly every first try until it cools. Then its share must go to the
    # others by their weights, not all to the first one listed.
    document = policy_document(kit.base_urls)
    document["routing"]["cooldown"] = {"after_failures": 1, "seconds": 60}
    edge = document["tiers"]["edge"]
    first = edge["deployments"][0]
    edge["deployments"] = [
        {**first, "name": "edge-heavy", "weight": 1_000_000},
        {**first, "name": "edge-one", "weight": 1},
        {**first, "name": "edge-two", "weight": 1},
    ]
    edge["balance"] = "weighted"
    write_yaml(kit.policy_path, document)
    kit.fakes["edge"].enqueue(Scenario.http_error(503, "The server is overloaded."))
    async with kit.running(settings=kit.settings()) as gateway:
        await gateway.chat(chat_body())
        assert set(gateway.runtime.health.cooling()) == {"edge-heavy"}
        served = [(await gateway.chat(chat_body())).headers["x-tierwise-model"] for _ in range(40)]

    assert set(served) == {"edge-one", "edge-two"}


async def test_published_policy_forgets_removed_deployment(kit: GatewayKit) -> None:
    write_cooldown_policy(kit, after_failures=1)
    kit.fakes["edge"].enqueue(Scenario.http_error(503, "The server is overloaded."))
    async with kit.running(settings=kit.settings()) as gateway:
        await gateway.chat(chat_body())
        document = policy_document(kit.base_urls)
        document["tiers"]["edge"]["deployments"][0]["name"] = "edge-renamed"
        published = write_yaml(kit.tmp_path / "published.yaml", document)
        gateway.runtime.policies.use_published(load_policy(published))
        ready = (await gateway.client.get("/readyz")).json()

    assert ready["cooling_down"] == {}


async def test_stream_cut_midway_counts(kit: GatewayKit) -> None:
    write_cooldown_policy(kit, after_failures=1)
    kit.fakes["edge"].enqueue(Scenario.cut(after_events=3))
    async with kit.running(settings=kit.settings()) as gateway:
        cut = await gateway.chat(chat_body(stream=True))
        after = await gateway.chat(chat_body(stream=True))
        ready = (await gateway.client.get("/readyz")).json()
        records = await gateway.request_records()

    assert cut.status_code == 200
    assert records[0]["error"] == "stream_connection"
    assert set(ready["cooling_down"]) == {"edge-small"}
    assert [a["deployment"] for a in records[1]["attempts"]] == ["mid-medium"]
    assert after.headers["x-tierwise-tier"] == "mid"


def write_in_flight_policy(kit: GatewayKit, limit: int) -> None:
    document = policy_document(kit.base_urls)
    document["tiers"]["edge"]["deployments"][0]["max_in_flight"] = limit
    write_yaml(kit.policy_path, document)


async def test_busy_deployment_spills_to_next_tier(kit: GatewayKit) -> None:
    write_in_flight_policy(kit, 1)
    kit.fakes["edge"].options = ReplayOptions(first_byte_delay_s=1.0)
    async with kit.running(settings=kit.settings()) as gateway:
        slow, spilled = await asyncio.gather(
            gateway.chat(chat_body("first")),
            delayed(0.3, gateway.chat(chat_body("second"))),
        )
        after = await gateway.chat(chat_body("third"))
        ready = (await gateway.client.get("/readyz")).json()

    assert slow.headers["x-tierwise-tier"] == "edge"
    assert spilled.headers["x-tierwise-tier"] == "mid"
    assert after.headers["x-tierwise-tier"] == "edge"
    assert ready["in_flight"] == {}


async def test_open_stream_holds_its_slot(kit: GatewayKit) -> None:
    write_in_flight_policy(kit, 1)
    kit.fakes["edge"].enqueue(Scenario.pause(after_events=2, seconds=1.0))
    async with kit.running(settings=kit.settings()) as gateway:
        streamed, during = await asyncio.gather(
            gateway.chat(chat_body(stream=True)),
            delayed(0.3, gateway.chat(chat_body("during"))),
        )
        after = await gateway.chat(chat_body("after"))

    assert streamed.headers["x-tierwise-tier"] == "edge"
    assert during.headers["x-tierwise-tier"] == "mid"
    assert after.headers["x-tierwise-tier"] == "edge"


async def delayed(seconds: float, request: Awaitable[T]) -> T:
    await asyncio.sleep(seconds)
    return await request


async def test_rejected_stream_frees_its_slot(kit: GatewayKit) -> None:
    write_in_flight_policy(kit, 1)
    kit.fakes["edge"].enqueue(Scenario.http_error(400, "Invalid 'top_logprobs'.", param="top_logprobs"))
    async with kit.running(settings=kit.settings()) as gateway:
        rejected = await gateway.chat(chat_body(stream=True))
        ready = (await gateway.client.get("/readyz")).json()

    assert rejected.status_code == 400
    assert ready["in_flight"] == {}
