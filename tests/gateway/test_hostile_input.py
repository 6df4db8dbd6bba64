"""Hostile or faulty input from either side: clients that send too much or too deep, and
upstreams that send bodies or usage figures no real model would."""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router.api.admission import MAX_JSON_DEPTH, json_depth
from router.app import create_app
from router.http_protocol import GatewayHttpProtocol
from router.outcomes.record import MAX_TOKEN_COUNT
from tests.gateway.conftest import (
    GatewayKit,
    LiveGateway,
    StubScorer,
    chat_body,
    policy_document,
    read_file_records,
    write_yaml,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.replay_upstream import ReplayOptions
from tests.support.scenario import Scenario

EDGE_SCORER = StubScorer(edge=0.99, mid=0.99, frontier=0.99)


async def test_endless_chunked_body_stops_at_limit(kit: GatewayKit) -> None:
    kit.write_policy()
    sent = 0

    async def endless() -> Any:
        nonlocal sent
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(10_000):  # 640 MB if nothing stopped it
            sent += 1
            yield b"x" * 65536

    async with kit.running(settings=kit.settings(max_body_bytes=1 << 20)) as gateway:
        response = await gateway.client.post(
            "/v1/chat/completions", content=endless(), headers={"Content-Type": "application/json"}
        )
        records = await gateway.request_records()

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert sent < 64
    assert [record["status"] for record in records] == [413]


async def test_slow_body_gets_408(kit: GatewayKit) -> None:
    kit.write_policy()

    async def trickle() -> Any:
        yield b'{"model": "auto", "messages": ['
        await asyncio.sleep(1.0)
        yield b'{"role": "user", "content": "hi"}]}'

    async with kit.running(settings=kit.settings(body_timeout_s=0.2)) as gateway:
        response = await gateway.client.post(
            "/v1/chat/completions", content=trickle(), headers={"Content-Type": "application/json"}
        )
        records = await gateway.request_records()

    assert response.status_code == 408
    error = response.json()["error"]
    assert error["code"] == "request_timeout"
    assert error["type"] == "invalid_request_error"
    assert "0.2 s after the headers" in error["message"]
    assert [record["status"] for record in records] == [408]


@pytest.mark.parametrize("sent_body", [b'{"model": "auto"', b""], ids=["partial", "headers-only"])
def test_short_body_on_socket_gets_408(tmp_path: Path, sent_body: bytes) -> None:
    # A client that declares more bytes than it sends, on a real connection.
    with FakeUpstream("fake-edge") as edge, FakeUpstream("fake-mid") as mid, \
            FakeUpstream("fake-frontier") as frontier:
        kit = GatewayKit(tmp_path, {"edge": edge, "mid": mid, "frontier": frontier})
        kit.write_policy()
        app = create_app(kit.settings(body_timeout_s=0.3), EDGE_SCORER)
        with (
            LiveGateway(app) as gateway,
            socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as connection,
        ):
            connection.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                + sent_body
            )
            reply = connection.recv(65536)

    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    body = orjson.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_timeout"
    assert f"{len(sent_body)} bytes arrived" in body["error"]["message"]
    assert not edge.requests


async def test_compressed_body_gets_415(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.chat(
            gzip.compress(orjson.dumps(chat_body())), headers={"Content-Encoding": "gzip"}
        )

    assert response.status_code == 415
    assert response.json() == {
        "error": {
            "message": "Content-Encoding 'gzip' is not supported; send the JSON body uncompressed.",
            "type": "invalid_request_error",
            "param": "content-encoding",
            "code": "unsupported_media_type",
        }
    }


@pytest.mark.parametrize(
    "content_type",
    ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "Multipart/Form-Data; boundary=x"],
)
async def test_browser_form_content_type_gets_415(kit: GatewayKit, content_type: str) -> None:
    """A web page can send these types cross-site without a preflight, so they never reach a model."""
    async with kit.running() as gateway:
        response = await gateway.chat(
            orjson.dumps(chat_body()),
            headers={"Content-Type": content_type, "Origin": "https://page.example"},
        )
        records = await gateway.request_records()

    media_type = content_type.partition(";")[0].lower()
    assert response.status_code == 415
    assert response.json() == {
        "error": {
            "message": f"Content-Type '{media_type}' is not supported; send the body as application/json.",
            "type": "invalid_request_error",
            "param": "content-type",
            "code": "unsupported_media_type",
        }
    }
    assert all(not fake.requests for fake in kit.fakes.values())
    assert [record["status"] for record in records] == [415]


async def test_body_without_content_type_is_accepted(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.post(
            "/v1/chat/completions",
            content=orjson.dumps(chat_body()),
            headers={"Authorization": f"Bearer {gateway.api_key}"},
        )

    assert response.status_code == 200


async def test_messages_text_plain_gets_anthropic_415(kit: GatewayKit) -> None:
    body = {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    async with kit.running() as gateway:
        response = await gateway.client.post(
            "/v1/messages",
            content=orjson.dumps(body),
            headers={"Content-Type": "text/plain", "x-api-key": gateway.api_key},
        )

    assert response.status_code == 415
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "Content-Type 'text/plain'" in response.json()["error"]["message"]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1000])
async def test_deeply_nested_body_gets_400(kit: GatewayKit, depth: int) -> None:
    nested: Any = 1
    for _ in range(depth - 1):
        nested = [nested]
    async with kit.running() as gateway:
        response = await gateway.chat(
            orjson.dumps(chat_body(temperature=0))[:-1] + b', "metadata": '
            + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"
        )

    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"The request body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep."
    )
    assert kit.fakes["edge"].requests == []


async def test_nesting_at_limit_is_served(kit: GatewayKit) -> None:
    # The body object is one level, the unknown parameter "nested" adds MAX_JSON_DEPTH - 1
    # more. "metadata" cannot carry the lists, because it must be an object of strings.
    levels = MAX_JSON_DEPTH - 1
    raw = orjson.dumps(chat_body())[:-1] + b', "nested": ' + b"[" * levels + b"]" * levels + b"}"
    async with kit.running() as gateway:
        response = await gateway.chat(raw)

    assert json_depth(orjson.loads(raw)) == MAX_JSON_DEPTH
    assert response.status_code == 200


def test_json_depth_counts_levels() -> None:
    assert json_depth(1) == 0
    assert json_depth({}) == 1
    assert json_depth({"a": [1, {"b": []}]}) == 4
    assert json_depth([[], [[[]]]]) == 4


@pytest.mark.parametrize("function", [True, -1, "x", ["name"]])
async def test_tool_call_function_not_object_gets_400(kit: GatewayKit, function: Any) -> None:
    body = chat_body()
    body["messages"] = [
        {"role": "user", "content": "What is the weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": function}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    async with kit.running() as gateway:
        response = await gateway.chat(body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[1].tool_calls[0].function"
    assert error["message"] == (
        "Invalid value for 'messages[1].tool_calls[0].function': expected an object with "
        "'name' and 'arguments'."
    )


async def test_tool_call_arguments_not_string_gets_400(kit: GatewayKit) -> None:
    body = chat_body()
    body["messages"] = [
        {"role": "user", "content": "What is the weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    async with kit.running() as gateway:
        response = await gateway.chat(body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[1].tool_calls[0].function.arguments"
    assert error["message"] == (
        "Invalid value for 'messages[1].tool_calls[0].function.arguments': expected a string."
    )


@pytest.mark.parametrize(
    ("usage", "tokens_out"),
    [
        ({"prompt_tokens": 10**30, "completion_tokens": 5}, 5),
        ({"prompt_tokens": -100, "completion_tokens": -5}, 0),
        ({"prompt_tokens": "12", "completion_tokens": True}, 0),
        ({"prompt_tokens": MAX_TOKEN_COUNT + 1, "completion_tokens": 1.5}, 0),
    ],
)
async def test_odd_usage_counts_as_zero(
    kit: GatewayKit, usage: dict[str, Any], tokens_out: int
) -> None:
    kit.fakes["edge"].enqueue(Scenario(usage=usage))
    async with kit.running(scorer=EDGE_SCORER) as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    assert len(records) == 1
    assert records[0]["tokens_in"] == 0
    assert records[0]["tokens_out"] == tokens_out
    assert records[0]["cost_usd"] >= 0.0
    assert float(response.headers["x-tierwise-cost-usd"]) == records[0]["cost_usd"]


async def test_usage_in_range_is_kept(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario(usage={"prompt_tokens": 12, "completion_tokens": 7.0}))
    async with kit.running(scorer=EDGE_SCORER) as gateway:
        await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert records[0]["tokens_in"] == 12
    assert records[0]["tokens_out"] == 7


@pytest.mark.parametrize(
    "body",
    [{}, {"choices": None, "usage": "many"}, {"choices": []}, {"choices": ["text"]}],
    ids=["empty", "null-choices", "no-choices", "string-choice"],
)
async def test_body_without_choices_falls_back(kit: GatewayKit, body: dict[str, Any]) -> None:
    kit.fakes["edge"].enqueue(Scenario(body=body))
    async with kit.running(scorer=EDGE_SCORER) as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert [a["error"] for a in records[0]["attempts"]] == ["server", None]


async def test_body_without_choices_everywhere_gets_502(kit: GatewayKit) -> None:
    for fake in kit.fakes.values():
        fake.set_default(Scenario(body={}))
    async with kit.running(scorer=EDGE_SCORER) as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert records[0]["status"] == 502


@pytest.mark.parametrize("status", [404, 413])
async def test_upstream_config_error_falls_back(kit: GatewayKit, status: int) -> None:
    kit.fakes["edge"].enqueue(Scenario.http_error(status, "The model `small` does not exist."))
    async with kit.running(scorer=EDGE_SCORER) as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"


async def test_upstream_422_still_reaches_client(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.http_error(422, "top_k must be positive", "invalid_request_error"))
    async with kit.running(scorer=EDGE_SCORER) as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "upstream_rejected"
    assert kit.fakes["mid"].requests == []


async def test_long_client_request_id_gets_400(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        long_id = await gateway.chat(chat_body(), headers={"x-request-id": "r" * 257})
        control = await gateway.chat(chat_body(), headers={"x-request-id": "bad\x01id"})
        fine = await gateway.chat(chat_body(), headers={"x-request-id": "r" * 256})
        records = await gateway.request_records()

    assert long_id.status_code == 400
    assert long_id.json()["error"]["param"] == "x-request-id"
    assert long_id.headers["x-request-id"].startswith("req-")
    assert control.status_code == 400
    assert fine.status_code == 200
    assert fine.headers["x-request-id"] == "r" * 256
    assert [record["status"] for record in records] == [400, 400, 200]
    assert records[0]["client_request_id"] == "r" * 256


async def test_head_on_health_checks(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        healthz = await gateway.client.head("/healthz")
        readyz = await gateway.client.head("/readyz")

    assert healthz.status_code == 200
    assert readyz.status_code in (200, 503)


@pytest.mark.parametrize(("frontier_window", "status"), [(2048, 400), (200_000, 503)])
async def test_long_prompt_with_frontier_down(
    kit: GatewayKit, monkeypatch: pytest.MonkeyPatch, frontier_window: int, status: int
) -> None:
    # A deployment that is down counts only when it could have served the request: a
    # small one makes the request itself the problem (400), a large one the gateway (503).
    monkeypatch.delenv("TIERWISE_TEST_UNSET_KEY", raising=False)
    document = policy_document(
        kit.base_urls, context_windows={"edge": 1024, "mid": 1024, "frontier": frontier_window}
    )
    document["tiers"]["frontier"]["deployments"][0]["api_key_env"] = "TIERWISE_TEST_UNSET_KEY"
    write_yaml(kit.policy_path, document)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body("lorem " * 3000))

    assert response.status_code == status
    expected_code = "context_length_exceeded" if status == 400 else "no_deployment_available"
    assert response.json()["error"]["code"] == expected_code


def test_client_gone_before_answer_is_recorded_499(tmp_path: Path) -> None:
    slow = FakeUpstream("fake-edge", options=ReplayOptions(first_byte_delay_s=1.0))
    others = {tier: FakeUpstream(f"fake-{tier}") for tier in ("mid", "frontier")}
    with slow, others["mid"], others["frontier"]:
        kit = GatewayKit(tmp_path, {"edge": slow, **others})
        kit.write_policy()
        app = create_app(kit.settings(), EDGE_SCORER)
        with LiveGateway(app) as gateway:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(f"{gateway.base_url}/chat/completions", json=chat_body(), timeout=0.3)
            answered = httpx.post(f"{gateway.base_url}/chat/completions", json=chat_body(), timeout=5)
            # The first request's record is written once the gateway notices the disconnect.
            deadline = time.monotonic() + 5
            while len(read_file_records(gateway.runtime.outcomes.path)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        records = read_file_records(app.state.runtime.outcomes.path)

    assert answered.status_code == 200
    statuses = sorted((record["status"], record["error"]) for record in records)
    assert statuses == [(200, None), (499, "client_disconnected")]


@pytest.mark.parametrize("http", ["gateway", "httptools"])
@pytest.mark.parametrize("stream", [False, True])
def test_client_gone_cancels_upstream_call(tmp_path: Path, stream: bool, http: str) -> None:
    # "gateway" is the protocol of `tierwise serve`, which reports the lost connection
    # itself; under uvicorn's own httptools protocol a watcher task waits for it.
    fakes = {tier: FakeUpstream(f"fake-{tier}") for tier in ("edge", "mid", "frontier")}
    fakes["edge"].set_default(Scenario.hang())
    with fakes["edge"], fakes["mid"], fakes["frontier"]:
        kit = GatewayKit(tmp_path, fakes)
        # Far longer than the test waits, so that only the disconnect can end the call.
        kit.write_policy(timeout_s=120)
        app = create_app(kit.settings(), EDGE_SCORER)
        protocol = GatewayHttpProtocol if http == "gateway" else http
        with LiveGateway(app, http=protocol) as gateway:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(
                    f"{gateway.base_url}/chat/completions",
                    json=chat_body(stream=stream),
                    timeout=0.3,
                )
            deadline = time.monotonic() + 10
            while not read_file_records(gateway.runtime.outcomes.path) and time.monotonic() < deadline:
                time.sleep(0.05)
            records = read_file_records(gateway.runtime.outcomes.path)
            mid_requests = fakes["mid"].requests

    assert len(records) == 1
    assert records[0]["status"] == 499
    assert records[0]["error"] == "client_disconnected"
    assert records[0]["attempts"] == [
        {"tier": "edge", "deployment": "edge-small", "error": "cancelled"}
    ]
    assert mid_requests == []
