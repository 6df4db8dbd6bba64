"""503 messages name the deployments a request could use and why each one is unavailable."""

from __future__ import annotations

import time
from typing import Any

import pytest

from router.routing.skips import Skips, describe_unavailable_model, next_step
from tests.gateway.conftest import (
    ALL_CAPABILITIES,
    GatewayKit,
    chat_body,
    policy_document,
    write_yaml,
)

UNSET_KEY = "TIERWISE_TEST_UNSET_KEY"
KEY_MISSING = f"is unavailable because environment variable {UNSET_KEY} is not set"
AVAILABLE_HINT = "request a model whose tier is available (GET /v1/models shows which deployments are available)."
ONE_CAUSE = f"Fix this cause, or {AVAILABLE_HINT}"
SEVERAL_CAUSES = f"Fix these causes, or {AVAILABLE_HINT}"


def error_503(message: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "api_error",
            "param": None,
            "code": "no_deployment_available",
        }
    }


def write_edge_only_policy(kit: GatewayKit, **edge_options: Any) -> None:
    """Write a policy whose mid and frontier deployments need a key that is not set."""
    document = policy_document(kit.base_urls, context_windows={"edge": 512})
    for tier in ("mid", "frontier"):
        document["tiers"][tier]["deployments"][0]["api_key_env"] = UNSET_KEY
    document["tiers"]["edge"]["deployments"][0].update(edge_options)
    write_yaml(kit.policy_path, document)


@pytest.fixture(autouse=True)
def unset_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET_KEY, raising=False)


async def test_deployment_name_without_key(kit: GatewayKit) -> None:
    write_edge_only_policy(kit)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(model="mid-medium"))
        served = await gateway.chat(chat_body(model="auto"))

    assert response.status_code == 503
    assert response.json() == error_503(
        f"The model 'mid-medium' (mid tier) is unavailable because environment variable "
        f"{UNSET_KEY} is not set. {ONE_CAUSE}"
    )
    # A missing key needs an operator, so the OpenAI clients must not retry.
    assert response.headers["x-should-retry"] == "false"
    assert served.status_code == 200
    assert served.headers["x-tierwise-tier"] == "edge"


async def test_alias_with_min_tier_without_keys(kit: GatewayKit) -> None:
    write_edge_only_policy(kit)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(model="auto-quality"))

    assert response.status_code == 503
    assert response.json() == error_503(
        "No deployment is available for model 'auto-quality', which may use the mid and frontier "
        f"tiers. Deployments: mid-medium (mid) {KEY_MISSING}; frontier-large (frontier) "
        f"{KEY_MISSING}. The edge tier is below the minimum tier mid. {SEVERAL_CAUSES}"
    )


async def test_long_prompt_names_context_and_keys(kit: GatewayKit) -> None:
    write_edge_only_policy(kit)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body("word " * 2000))

    assert response.status_code == 503
    assert response.json() == error_503(
        "No deployment is available for model 'auto', which may use the edge, mid and frontier "
        "tiers. Deployments: edge-small (edge) has a context window too small for this request; "
        f"mid-medium (mid) {KEY_MISSING}; frontier-large (frontier) {KEY_MISSING}. {SEVERAL_CAUSES}"
    )


async def test_disabled_local_model_is_named(kit: GatewayKit) -> None:
    write_edge_only_policy(kit, local_model=True)
    async with kit.running(settings=kit.settings(local_model=False)) as gateway:
        response = await gateway.chat(chat_body(model="edge-small"))

    assert response.status_code == 503
    assert response.json() == error_503(
        "The model 'edge-small' (edge tier) is unavailable because the local edge model is not "
        f"running (disabled by --no-local-model or TIERWISE_LOCAL_MODEL=false). {ONE_CAUSE}"
    )


async def test_failed_local_model_hides_details(kit: GatewayKit) -> None:
    write_edge_only_policy(kit, local_model=True)
    async with kit.running(settings=kit.settings()) as gateway:
        gateway.runtime.local_model_state = "failed"
        gateway.runtime.local_model_status = (
            "failed to start: port 8081 on 127.0.0.1 is already in use; last server output: "
            "Traceback in /opt/secret/llama.py"
        )
        response = await gateway.chat(chat_body(model="auto"))

    message = response.json()["error"]["message"]
    assert response.status_code == 503
    assert "edge-small (edge) is unavailable because the local edge model is not running " in message
    assert "(it failed to start, and the gateway log has the cause)" in message
    assert "8081" not in message
    assert "Traceback" not in message
    assert "/opt/secret" not in message


async def test_starting_local_model_may_be_retried(kit: GatewayKit) -> None:
    write_edge_only_policy(kit, local_model=True)
    async with kit.running(settings=kit.settings()) as gateway:
        gateway.runtime.local_model_state = "starting"
        response = await gateway.chat(chat_body(model="edge-small"))

    assert response.status_code == 503
    assert "still starting" in response.json()["error"]["message"]
    assert "x-should-retry" not in response.headers
    # No start has been timed yet, so the wait is the expected start time.
    assert response.headers["retry-after"] == "5"
    assert response.headers["retry-after-ms"] == "5000"


async def test_restarting_local_model_sends_wait(kit: GatewayKit) -> None:
    write_edge_only_policy(kit, local_model=True)
    async with kit.running(settings=kit.settings()) as gateway:
        gateway.runtime.local_model_state = "restarting"
        gateway.runtime.local_model_serving_at = time.monotonic() + 30.0
        response = await gateway.chat(chat_body(model="auto"))

    assert response.status_code == 503
    assert "(it exited and is restarting; the gateway log has the cause)" in (
        response.json()["error"]["message"]
    )
    assert "x-should-retry" not in response.headers
    assert 1 <= int(response.headers["retry-after"]) <= 30
    assert 1 <= int(response.headers["retry-after-ms"]) <= 30_000


async def test_unresponsive_local_model_is_named(kit: GatewayKit) -> None:
    write_edge_only_policy(kit, local_model=True)
    async with kit.running(settings=kit.settings()) as gateway:
        gateway.runtime.local_model_state = "unresponsive"
        gateway.runtime.local_model_status = "killed, restarting in 1 s: no response to 3 probes"
        gateway.runtime.local_model_serving_at = time.monotonic() + 4.0
        response = await gateway.chat(chat_body(model="edge-small"))
        ready = await gateway.client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == error_503(
        "The model 'edge-small' (edge tier) is unavailable because the local edge model is not "
        "running (it stopped responding, was killed and is restarting; the gateway log has the "
        f"cause). {ONE_CAUSE}"
    )
    assert "x-should-retry" not in response.headers
    assert 1 <= int(response.headers["retry-after"]) <= 4
    assert ready.status_code == 503
    assert ready.json()["local_model"] == "unresponsive"
    assert ready.json()["available_deployments"]["edge"] == 0


async def test_restart_wait_only_for_local_model_requests(kit: GatewayKit) -> None:
    # Requests that the local model cannot serve, even once it runs, need an operator, so
    # its restart must not make the OpenAI clients retry them.
    write_edge_only_policy(kit, local_model=True, capabilities=ALL_CAPABILITIES | {"tools": False})
    tool = {"type": "function", "function": {"name": "get_weather"}}
    async with kit.running(settings=kit.settings()) as gateway:
        gateway.runtime.local_model_state = "restarting"
        gateway.runtime.local_model_serving_at = time.monotonic() + 30.0
        named = await gateway.chat(chat_body(model="mid-medium"))
        too_long = await gateway.chat(chat_body("word " * 2000, model="auto"))
        with_tools = await gateway.chat(chat_body(model="auto", tools=[tool]))
        local = await gateway.chat(chat_body(model="auto"))

    for response in (named, too_long, with_tools):
        assert response.status_code == 503
        assert response.headers["x-should-retry"] == "false"
        assert "retry-after" not in response.headers
        assert "retry-after-ms" not in response.headers
    assert local.status_code == 503
    assert "x-should-retry" not in local.headers
    assert 1 <= int(local.headers["retry-after"]) <= 30


async def test_failed_local_model_sends_no_wait(kit: GatewayKit) -> None:
    write_edge_only_policy(kit, local_model=True)
    async with kit.running(settings=kit.settings()) as gateway:
        gateway.runtime.local_model_state = "failed"
        response = await gateway.chat(chat_body(model="edge-small"))

    assert response.status_code == 503
    assert response.headers["x-should-retry"] == "false"
    assert "retry-after" not in response.headers


def test_next_step_matches_cause_count() -> None:
    assert next_step(0) == (
        "Request a model whose tier is available "
        "(GET /v1/models shows which deployments are available)."
    )
    assert next_step(1) == ONE_CAUSE
    assert next_step(2) == SEVERAL_CAUSES


def test_unavailable_model_without_reason() -> None:
    skips = Skips()
    skips.add("mid-medium", "unavailable")
    message = describe_unavailable_model("mid-medium", "mid", skips)

    assert message == f"The model 'mid-medium' (mid tier) is unavailable. {next_step(0)}"
    assert "Fix" not in message
