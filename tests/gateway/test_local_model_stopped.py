"""Requests that fail because the local model server stopped under them.

The edge fake serves as the local model (``local_model: true``), and a stand-in for the
server process reports to the runtime whether that process still runs.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from router.app import create_app
from router.upstream.dispatch import LOCAL_MODEL_STOPPED
from tests.gateway.conftest import (
    GatewayKit,
    LiveGateway,
    StubScorer,
    chat_body,
    new_api_key,
    policy_document,
    write_yaml,
)
from tests.support.scenario import Scenario

UNSET_KEY = "TIERWISE_TEST_UNSET_KEY"


class ServerProcess:
    """Replaces `EdgeModelServer` where the runtime only checks whether it runs."""

    requested_port = None
    load_time_s = 2.0

    def __init__(self, *, running: bool) -> None:
        self.running = running

    async def stop(self) -> None:
        return None


def write_local_policy(kit: GatewayKit, *, edge_only: bool) -> None:
    document = policy_document(kit.base_urls)
    document["tiers"]["edge"]["deployments"][0]["local_model"] = True
    if edge_only:
        for tier in ("mid", "frontier"):
            document["tiers"][tier]["deployments"][0]["api_key_env"] = UNSET_KEY
    write_yaml(kit.policy_path, document)


@pytest.fixture(autouse=True)
def unset_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET_KEY, raising=False)


async def send_while_stopped(
    kit: GatewayKit, *, running: bool, requests: int = 3, **body: Any
) -> tuple[list[Any], dict[str, float]]:
    """Send ``requests`` requests whose edge attempt loses its connection; return them and the cooldowns."""
    kit.fakes["edge"].set_default(Scenario.cut(after_events=0))
    async with kit.running(settings=kit.settings()) as gateway:
        gateway.runtime.local_model_state = gateway.runtime.local_model_status = "ready"
        gateway.runtime.extra["local_model"] = ServerProcess(running=running)
        responses = [await gateway.chat(chat_body(**body)) for _ in range(requests)]
        cooling = gateway.runtime.health.cooling()
    return responses, cooling


@pytest.mark.parametrize("stream", [False, True])
async def test_stopped_local_model_gets_retryable_503(kit: GatewayKit, stream: bool) -> None:
    write_local_policy(kit, edge_only=True)
    responses, cooling = await send_while_stopped(
        kit, running=False, model="edge-small", stream=stream
    )

    for response in responses:
        assert response.status_code == 503
        assert response.json()["error"] == {
            "message": LOCAL_MODEL_STOPPED,
            "type": "api_error",
            "param": None,
            "code": "no_deployment_available",
        }
        assert "x-should-retry" not in response.headers
        # The first restart delay (1 s) plus the stand-in's start time (2 s).
        assert response.headers["retry-after"] == "3"
    # Three failures in a row would cool a deployment down for 30 s.
    assert cooling == {}


async def test_stopped_local_model_fails_over(kit: GatewayKit) -> None:
    write_local_policy(kit, edge_only=False)
    responses, cooling = await send_while_stopped(kit, running=False, model="auto")

    for response in responses:
        assert response.status_code == 200
        assert response.headers["x-tierwise-tier"] == "mid"
    assert len(kit.fakes["edge"].requests) == 3
    assert cooling == {}


async def test_stream_broken_by_stopped_model(kit: GatewayKit) -> None:
    write_local_policy(kit, edge_only=True)
    kit.fakes["edge"].set_default(Scenario.cut(after_events=3))
    async with kit.running(settings=kit.settings()) as gateway:
        gateway.runtime.local_model_state = gateway.runtime.local_model_status = "ready"
        gateway.runtime.extra["local_model"] = ServerProcess(running=False)
        responses = [
            await gateway.chat(chat_body(model="edge-small", stream=True)) for _ in range(3)
        ]
        cooling = gateway.runtime.health.cooling()

    for response in responses:
        # The stream started, so the client got its first chunks and then an error event.
        assert response.status_code == 200
        assert "data: [DONE]" not in response.text
    assert cooling == {}


async def test_running_local_model_failure_counts(kit: GatewayKit) -> None:
    write_local_policy(kit, edge_only=True)
    responses, cooling = await send_while_stopped(kit, running=True, model="edge-small")

    for response in responses:
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_error"
        assert "retry-after" not in response.headers
    assert "edge-small" in cooling


async def test_readyz_shows_local_model_state(kit: GatewayKit) -> None:
    write_local_policy(kit, edge_only=False)
    async with kit.running(settings=kit.settings()) as gateway:
        disabled = await gateway.client.get("/readyz")
        gateway.runtime.local_model_state = gateway.runtime.local_model_status = "ready"
        ready = await gateway.client.get("/readyz")

    assert disabled.json()["local_model"] == "disabled"
    assert disabled.json()["available_deployments"]["edge"] == 0
    assert ready.json()["local_model"] == "ready"
    assert ready.json()["available_deployments"]["edge"] == 1


def test_openai_client_retries_after_restart(kit: GatewayKit) -> None:
    write_local_policy(kit, edge_only=True)
    seen: list[httpx.Response] = []
    with LiveGateway(create_app(kit.settings(), StubScorer())) as gateway:
        runtime = gateway.runtime
        runtime.local_model_state = "restarting"
        runtime.local_model_serving_at = time.monotonic() + 1.0

        def restart_after_first_response(response: httpx.Response) -> None:
            seen.append(response)
            # The client's retry, after the Retry-After wait, finds the model ready.
            runtime.local_model_state = runtime.local_model_status = "ready"

        http_client = httpx.Client(event_hooks={"response": [restart_after_first_response]})
        client = openai.OpenAI(base_url=gateway.base_url, api_key=new_api_key(), timeout=15,
                               max_retries=1, http_client=http_client)
        with http_client:
            completion = client.chat.completions.create(
                model="edge-small", messages=[{"role": "user", "content": "Say hello."}]
            )

    assert [response.status_code for response in seen] == [503, 200]
    assert seen[0].headers["retry-after"] == "1"
    assert "x-should-retry" not in seen[0].headers
    assert completion.choices[0].message.content
