"""The litellm transport: the same behaviour as the direct path, through litellm.acompletion.

Deployments whose provider needs request translation go through litellm; here every tier
uses ``transport: litellm`` against the fake OpenAI-compatible upstreams, so the answers,
usage, streaming shape, escalation and outcome records can be compared with the direct path.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from router.upstream.base import UpstreamError
from tests.gateway.conftest import GatewayKit, chat_body, parse_sse, policy_document, write_yaml
from tests.support.recorded import SCRIPTED_ANSWER
from tests.support.scenario import Scenario, context_length_error


def write_litellm_policy(kit: GatewayKit) -> None:
    document: dict[str, Any] = policy_document(kit.base_urls)
    for tier in document["tiers"].values():
        for deployment in tier["deployments"]:
            deployment["transport"] = "litellm"
    write_yaml(kit.policy_path, document)


async def test_litellm_path_answers_json(kit: GatewayKit) -> None:
    write_litellm_policy(kit)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(temperature=0))
        records = await gateway.request_records()

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == SCRIPTED_ANSWER
    assert body["usage"]["completion_tokens"] > 0
    assert response.headers["x-tierwise-tier"] == "edge"
    assert kit.fakes["edge"].requests[0].body["model"] == "fake-edge"
    assert records[0]["tokens_out"] == body["usage"]["completion_tokens"]
    assert records[0]["cost_usd"] > 0
    assert "provider_specific_fields" not in body
    assert "provider_specific_fields" not in body["choices"][0]["message"]


async def test_litellm_path_streams_with_one_usage_chunk(kit: GatewayKit) -> None:
    write_litellm_policy(kit)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(
            chat_body(stream=True, stream_options={"include_usage": True})
        )

    assert response.status_code == 200, response.text
    events = parse_sse(response.content).data
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(event) for event in events[:-1]]
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert len(usage_chunks) == 1
    assert usage_chunks[0] is chunks[-1]
    assert chunks[-1]["choices"] == []
    text = "".join(
        choice["delta"].get("content") or "" for c in chunks for choice in c.get("choices", [])
    )
    assert text == SCRIPTED_ANSWER
    deltas = [choice["delta"] for c in chunks for choice in c.get("choices", [])]
    assert all("provider_specific_fields" not in delta for delta in deltas)


async def test_litellm_context_error_escalates(kit: GatewayKit) -> None:
    write_litellm_policy(kit)
    kit.fakes["edge"].enqueue(context_length_error("openai"))
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200, response.text
    assert response.headers["x-tierwise-tier"] == "mid"
    assert [a["error"] for a in records[0]["attempts"]] == ["context", None]


async def test_litellm_server_error_escalates(kit: GatewayKit) -> None:
    write_litellm_policy(kit)
    kit.fakes["edge"].enqueue(Scenario.http_error(503, "The server is overloaded."))
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 200, response.text
    assert response.headers["x-tierwise-tier"] == "mid"


async def test_litellm_rejection_keeps_param(kit: GatewayKit) -> None:
    write_litellm_policy(kit)
    kit.fakes["edge"].enqueue(
        Scenario.http_error(400, "Invalid 'top_logprobs': integer above maximum value.",
                            "invalid_request_error", "integer_above_max_value",
                            param="top_logprobs")
    )
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(logprobs=True, top_logprobs=15))

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "upstream_rejected"
    assert response.json()["error"]["param"] == "top_logprobs"
    assert kit.fakes["mid"].requests == []


@pytest.mark.parametrize("stream", [False, True])
async def test_litellm_model_list_gets_400(kit: GatewayKit, stream: bool) -> None:
    # litellm.completion sends a request with model_list to the listed deployment instead,
    # with the gateway's key, so this body would reach another api_base.
    write_litellm_policy(kit)
    elsewhere = kit.base_urls["mid"]
    model_list = [{"model_name": "openai/fake-edge",
                   "litellm_params": {"model": "openai/other", "base_url": elsewhere}}]
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(stream=stream, model_list=model_list))
        records = await gateway.request_records()

    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {
            "message": "The parameter 'model_list' is a setting of the gateway's litellm "
            "library, not an OpenAI API parameter, so clients cannot set it. Remove it from "
            "the request.",
            "type": "invalid_request_error",
            "param": "model_list",
            "code": "unsupported_parameter",
        }
    }
    for fake in kit.fakes.values():
        assert fake.requests == []
    assert [record["status"] for record in records] == [400]


@pytest.mark.parametrize(
    "name", ["langfuse_host", "s3_endpoint_url", "openai_identity_token_file", "timeout", "tags"]
)
async def test_litellm_settings_get_400(kit: GatewayKit, name: str) -> None:
    write_litellm_policy(kit)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(**{name: "http://127.0.0.1:9/x"}))

    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == name
    assert kit.fakes["edge"].requests == []


async def test_litellm_openai_parameters_pass(kit: GatewayKit) -> None:
    write_litellm_policy(kit)
    parameters = {"seed": 7, "stop": ["x"], "store": False, "service_tier": "auto",
                  "metadata": {"trace": "t1"}, "user": "end-user-1", "n": 1}
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(**parameters))

    assert response.status_code == 200, response.text
    received = kit.fakes["edge"].requests[0].body
    assert received["seed"] == 7
    assert received["stop"] == ["x"]
    assert received["service_tier"] == "auto"


@pytest.mark.parametrize("metadata", [[1], "trace", {"trace": 1}])
async def test_metadata_not_string_map_gets_400(kit: GatewayKit, metadata: Any) -> None:
    # litellm reads metadata itself and raised on a list, which surfaced as a 502.
    write_litellm_policy(kit)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(metadata=metadata))

    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith("metadata")
    assert kit.fakes["edge"].requests == []


async def test_litellm_rejection_message_is_providers(kit: GatewayKit) -> None:
    write_litellm_policy(kit)
    kit.fakes["edge"].enqueue(
        Scenario.http_error(400, "Invalid 'seed': expected an integer.", "invalid_request_error",
                            "invalid_type", param="seed")
    )
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(seed=1))

    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == (
        "The model rejected the request: Invalid 'seed': expected an integer."
    )


async def test_litellm_empty_stream_falls_back(kit: GatewayKit) -> None:
    # litellm turns a stream without chunks into a made-up chunk with finish_reason "stop",
    # which must not pass as an empty answer.
    write_litellm_policy(kit)
    kit.fakes["edge"].enqueue(Scenario.stream_of())
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(stream=True))
        records = await gateway.request_records()

    assert response.status_code == 200, response.text
    assert response.headers["x-tierwise-tier"] == "mid"
    chunks = [orjson.loads(event) for event in parse_sse(response.content).data[:-1]]
    text = "".join(
        choice["delta"].get("content") or "" for c in chunks for choice in c.get("choices", [])
    )
    assert text == SCRIPTED_ANSWER
    assert [a["error"] for a in records[0]["attempts"]] == ["stream", None]


async def test_litellm_imported_off_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from router.upstream import litellm_path

    release = threading.Event()
    sentinel = object()

    def slow_import() -> object:
        release.wait(10)
        return sentinel

    monkeypatch.setattr(litellm_path, "_load_litellm", slow_import)
    transport = litellm_path.LitellmTransport()
    transport.preload()
    waiter = asyncio.create_task(transport._imported())
    # The event loop keeps running while the import blocks its worker thread.
    await asyncio.sleep(0.05)

    assert transport.loading is True
    assert waiter.done() is False
    release.set()
    assert await waiter is sentinel
    assert transport.loading is False
    assert await transport._imported() is sentinel


async def test_failed_litellm_import_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    from router.upstream import litellm_path

    results: list[object] = [ImportError("broken install"), "module"]

    def flaky_import() -> object:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(litellm_path, "_load_litellm", flaky_import)
    transport = litellm_path.LitellmTransport()

    with pytest.raises(UpstreamError, match="litellm failed to import: ImportError: broken install"):
        await transport._imported()
    assert await transport._imported() == "module"
    assert transport.import_error is None


async def test_failed_preload_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    from router.upstream import litellm_path

    def broken_import() -> object:
        raise ImportError("broken install")

    monkeypatch.setattr(litellm_path, "_load_litellm", broken_import)
    transport = litellm_path.LitellmTransport()
    with capture_logs() as logs:
        transport.preload()
        # No request awaits the import, which fails in its worker thread.
        while transport.loading:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)

    failures = [entry for entry in logs if entry["event"] == "litellm_import_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error"
    assert "broken install" in failures[0]["error"]
    assert transport.import_error == "ImportError: broken install"
    assert transport.loading is False


async def test_failed_import_makes_litellm_deployments_unavailable(
    kit: GatewayKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from router.upstream import litellm_path

    def broken_import() -> object:
        raise ImportError("broken install")

    monkeypatch.setattr(litellm_path, "_load_litellm", broken_import)
    document: dict[str, Any] = policy_document(kit.base_urls)
    # Edge and mid go through litellm; frontier stays on the direct path.
    for tier in ("edge", "mid"):
        document["tiers"][tier]["deployments"][0]["transport"] = "litellm"
    write_yaml(kit.policy_path, document)
    async with kit.running(settings=kit.settings()) as gateway:
        loader = gateway.runtime.litellm_loader
        assert loader is not None
        while loader.loading:
            await asyncio.sleep(0.01)
        ready = await gateway.client.get("/readyz")
        routed = await gateway.chat(chat_body(temperature=0))
        named = await gateway.chat(chat_body(model="mid-medium"))

    assert ready.status_code == 200
    assert ready.json()["available_deployments"] == {"edge": 0, "mid": 0, "frontier": 1}
    assert routed.status_code == 200, routed.text
    assert routed.headers["x-tierwise-tier"] == "frontier"
    assert named.status_code == 503
    message = named.json()["error"]["message"]
    assert "the gateway failed to import litellm" in message
    assert "broken install" not in message


async def test_readyz_waits_for_litellm_import(
    kit: GatewayKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from router.upstream import litellm_path

    release = threading.Event()
    real_load = litellm_path._load_litellm

    def held_import() -> object:
        release.wait(10)
        return real_load()

    monkeypatch.setattr(litellm_path, "_load_litellm", held_import)
    write_litellm_policy(kit)
    async with kit.running(settings=kit.settings()) as gateway:
        loading = await gateway.client.get("/readyz")
        release.set()
        chat = await gateway.chat(chat_body(temperature=0))
        ready = await gateway.client.get("/readyz")

    assert loading.status_code == 503
    assert loading.json()["status"] == "loading_litellm"
    assert chat.status_code == 200, chat.text
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_direct_policy_does_not_import_litellm(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        loader = gateway.runtime.litellm_loader

    assert loader is not None
    assert loader.loading is False
    assert loader._loading is None
