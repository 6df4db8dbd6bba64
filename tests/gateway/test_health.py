"""Probes and the model list: /healthz, /readyz and GET /v1/models."""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from classifiers.artifact import DEFAULT_DIR
from tests.gateway.conftest import GatewayKit, chat_body, policy_document, write_yaml


def bundled_classifier_version() -> str:
    metadata_path = DEFAULT_DIR / "model.json"
    if not metadata_path.exists():
        pytest.skip(
            f"no bundled classifier at {DEFAULT_DIR}; train one with `tierwise classifier train`"
        )
    return str(json.loads(metadata_path.read_text(encoding="utf-8"))["version"])


async def test_healthz_is_ok(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_probes_answer_head(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        health = await gateway.client.head("/healthz")
        ready = await gateway.client.head("/readyz")

    assert health.status_code == 200
    assert ready.status_code == 200
    assert health.content == b""


async def test_openapi_operation_ids_are_unique(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.get("/openapi.json")

    assert response.status_code == 200
    operation_ids = [
        operation["operationId"]
        for path_item in response.json()["paths"].values()
        for operation in path_item.values()
    ]
    duplicates = sorted({name for name in operation_ids if operation_ids.count(name) > 1})
    assert duplicates == []
    assert "healthz_healthz_head" in operation_ids
    assert "readyz_readyz_get" in operation_ids


async def test_readyz_without_redis(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.get("/readyz")
        version = gateway.runtime.policies.current.version

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "policy": {"path": str(kit.policy_path), "version": version, "last_reload_error": False,
                   "rejected_edit": None, "file_error": None},
        "classifier": {"version": "stub-1", "tiers": ["edge", "mid", "frontier"]},
        "available_deployments": {"edge": 1, "mid": 1, "frontier": 1},
        "embeddings": None,
        "cooling_down": {},
        "in_flight": {},
        "redis": "not_configured",
        "cache": "memory",
        "outcomes": "file",
    }


async def test_readyz_is_503_when_no_deployment_can_serve(kit: GatewayKit) -> None:
    document = policy_document(kit.base_urls)
    for config in document["tiers"].values():
        for deployment in config["deployments"]:
            deployment["api_key_env"] = "TIERWISE_TEST_KEY_THAT_IS_NEVER_SET"
    write_yaml(kit.policy_path, document)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.client.get("/readyz")
        chat = await gateway.chat(chat_body())

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "no_deployment_available"
    assert body["available_deployments"] == {"edge": 0, "mid": 0, "frontier": 0}
    assert chat.status_code == 503


async def test_readyz_is_503_while_outcomes_unwritable(kit: GatewayKit) -> None:
    # A file where the outcome log's folder should be makes every write of the log fail.
    blocked = kit.tmp_path / "blocked"
    blocked.write_text("not a folder", encoding="utf-8")
    kit.write_policy()
    settings = kit.settings(outcomes_path=blocked / "outcomes.jsonl")
    async with kit.running(settings=settings) as gateway:
        before = await gateway.client.get("/readyz")
        chat = await gateway.chat(chat_body())
        after = await gateway.client.get("/readyz")

    # The file could not be opened at start, so the first request's record had nowhere to go.
    assert before.status_code == 503
    assert before.json()["status"] == "outcome_log_unwritable"
    assert chat.status_code == 200
    assert after.status_code == 503
    assert after.json()["status"] == "outcome_log_unwritable"


async def test_readyz_recovers_when_outcome_folder_appears(kit: GatewayKit) -> None:
    blocked = kit.tmp_path / "blocked"
    blocked.write_text("not a folder", encoding="utf-8")
    kit.write_policy()
    settings = kit.settings(outcomes_path=blocked / "outcomes.jsonl")
    with capture_logs() as logs:
        async with kit.running(settings=settings) as gateway:
            before = await gateway.client.get("/readyz")
            blocked.unlink()
            chat = await gateway.chat(chat_body())
            after = await gateway.client.get("/readyz")

    assert before.status_code == 503
    assert chat.status_code == 200
    assert after.status_code == 200
    assert (blocked / "outcomes.jsonl").exists()
    unusable = [line for line in logs if line["event"] == "outcome_file_unusable"]
    assert len(unusable) == 1
    assert unusable[0]["path"] == str(blocked)


async def test_readyz_with_redis(redis_kit: GatewayKit) -> None:
    async with redis_kit.running(use_redis=True) as gateway:
        response = await gateway.client.get("/readyz")

    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ready"
    assert body["redis"] == "ok"
    assert body["cache"] == "redis"
    assert body["outcomes"] == "redis-stream"


async def test_readyz_names_bundled_classifier(kit: GatewayKit) -> None:
    version = bundled_classifier_version()
    async with kit.running(bundled_classifier=True) as gateway:
        response = await gateway.client.get("/readyz")
        answer = await gateway.chat(
            {"model": "auto", "messages": [{"role": "user", "content": "Hi!"}]}
        )
        records = await gateway.request_records()

    assert response.json()["classifier"] == {
        "version": version,
        "tiers": ["edge", "mid", "frontier"],
    }
    assert answer.status_code == 200
    assert records[0]["classifier_version"] == version
    assert set(records[0]["scores"]) == {"edge", "mid", "frontier"}
    assert all(0.0 <= score <= 1.0 for score in records[0]["scores"].values())


async def test_models_lists_aliases_then_deployments(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.get("/v1/models")
        created = int(gateway.runtime.started_at)

    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [
        "auto",
        "auto-quality",
        "edge-small",
        "mid-medium",
        "frontier-large",
    ]
    assert body["data"][1] == {
        "id": "auto-quality",
        "object": "model",
        "created": created,
        "owned_by": "tierwise",
        "description": "Routed to the cheapest tier the classifier expects to answer well.",
        "tierwise": {"kind": "router", "policy": "gateway-tests", "min_tier": "mid", "max_tier": None},
    }
    assert body["data"][4] == {
        "id": "frontier-large",
        "object": "model",
        "created": created,
        "owned_by": "tierwise",
        "tierwise": {
            "kind": "deployment",
            "tier": "frontier",
            "available": True,
            "context_window": 32768,
            "price_per_million": {"input_per_million": 10.0, "output_per_million": 30.0},
        },
    }


async def test_models_marks_unavailable_deployment(
    kit: GatewayKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIERWISE_TEST_MISSING_KEY", raising=False)
    document: dict[str, Any] = policy_document(kit.base_urls)
    document["tiers"]["frontier"]["deployments"][0]["api_key_env"] = "TIERWISE_TEST_MISSING_KEY"
    write_yaml(kit.policy_path, document)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.client.get("/v1/models")
        routed = await gateway.chat(
            {"model": "frontier-large", "messages": [{"role": "user", "content": "Hi"}]}
        )

    availability = {m["id"]: m["tierwise"].get("available") for m in response.json()["data"]}
    assert availability == {
        "auto": None,
        "auto-quality": None,
        "edge-small": True,
        "mid-medium": True,
        "frontier-large": False,
    }
    assert routed.status_code == 503
    assert routed.json()["error"]["code"] == "no_deployment_available"


async def test_retrieve_model_by_id(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        alias = await gateway.client.get("/v1/models/auto")
        missing = await gateway.client.get("/v1/models/no-such-model")

    assert alias.status_code == 200
    assert alias.json()["id"] == "auto"
    assert alias.json()["tierwise"]["kind"] == "router"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert missing.json()["error"]["param"] == "model"
