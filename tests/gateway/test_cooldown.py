"""A deployment that keeps failing goes to the back of the queue, and comes back after its cooldown."""

from __future__ import annotations

from typing import Any

from tests.gateway.conftest import GatewayKit, chat_body, policy_document, write_yaml
from tests.support.scenario import Scenario


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
