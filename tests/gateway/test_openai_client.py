"""The official ``openai`` client against a live gateway (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
)
from openai.types.shared_params import ResponseFormatJSONSchema

from router.app import create_app
from tests.gateway.conftest import TIERS, GatewayKit, LiveGateway, StubScorer, new_api_key
from tests.support.fake_upstream import FakeUpstream
from tests.support.recorded import SCRIPTED_ANSWER
from tests.support.scenario import Scenario, ToolCall

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello in one short sentence."}]
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
NO_JSON_SCHEMA_MESSAGE = (
    "The model 'edge-small' does not support the 'response_format' parameter of this request. "
    "Remove it, or request a router alias such as 'auto' or another model from GET /v1/models."
)


@dataclass
class LiveStack:
    gateway: LiveGateway
    fakes: dict[str, FakeUpstream]
    kit: GatewayKit

    def client(self, **options: Any) -> openai.OpenAI:
        """Return a client with a fresh API key that does not retry unless ``options`` set max_retries."""
        settings: dict[str, Any] = {"max_retries": 0, "timeout": 15} | options
        return openai.OpenAI(base_url=self.gateway.base_url, api_key=new_api_key(), **settings)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """One live gateway for the module; its edge tier has no JSON-schema support."""
    fakes = {tier: FakeUpstream(f"fake-{tier}").start() for tier in TIERS}
    kit = GatewayKit(tmp_path_factory.mktemp("openai-client"), fakes)
    try:
        # The mid tier also takes audio and file parts, which policies leave off by default.
        kit.write_policy(
            capabilities={"edge": {"json_schema": False}, "mid": {"audio": True, "files": True}},
            timeout_s=5.0,
        )
        app = create_app(kit.settings(keepalive_interval_s=0.1), StubScorer())
        with LiveGateway(app) as gateway:
            yield LiveStack(gateway, fakes, kit)
    finally:
        for fake in fakes.values():
            fake.stop()


@pytest.fixture(autouse=True)
def reset_fakes(live: LiveStack) -> None:
    """Reset the shared gateway's fakes and cooldowns, which earlier tests' failures start."""
    for fake in live.fakes.values():
        fake.reset()
    live.gateway.runtime.health.keep_only(())


def test_chat_completion(live: LiveStack) -> None:
    raw = live.client().chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    completion = raw.parse()

    assert raw.headers["x-tierwise-tier"] == "edge"
    assert raw.headers["x-tierwise-model"] == "edge-small"
    assert raw.headers["x-tierwise-cache"] == "miss"
    assert raw.headers["x-request-id"].startswith("req-")
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == SCRIPTED_ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (
        completion.usage.total_tokens
        == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_stream_with_usage(live: LiveStack) -> None:
    chunks = list(
        live.client().chat.completions.create(
            model="auto", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )

    with_usage = [chunk for chunk in chunks if chunk.usage is not None]
    assert len(with_usage) == 1
    assert chunks[-1] is with_usage[0]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks[:-1])
    assert text == SCRIPTED_ANSWER
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_stream_without_usage(live: LiveStack) -> None:
    chunks = list(
        live.client().chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    )

    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_raw_stream_ends_with_usage_then_done(live: LiveStack) -> None:
    body = {
        "model": "auto",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST", f"{live.gateway.base_url}/chat/completions", json=body, timeout=15
    ) as response:
        data = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
        headers = response.headers

    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert data[-1] == "[DONE]"
    assert data.count("[DONE]") == 1
    usage_events = [item for item in data[:-1] if json.loads(item).get("usage")]
    assert usage_events == [data[-2]]
    assert json.loads(data[-2])["choices"] == []


def test_tools_reach_upstream(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(
        Scenario.tools(ToolCall("get_weather", '{"city": "Paris"}', id="call_7"))
    )
    completion = live.client().chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        parallel_tool_calls=False,
    )

    received = live.fakes["edge"].requests[0].body
    assert received["tools"] == [WEATHER_TOOL]
    assert received["tool_choice"] == "auto"
    assert received["parallel_tool_calls"] is False
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.id == "call_7"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_streamed_tool_call_then_tool_result(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(
        Scenario.tools(ToolCall("get_weather", '{"city": "Oslo"}', id="call_8"))
    )
    client = live.client()
    chunks = list(
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    arguments = "".join(
        call.function.arguments or ""
        for chunk in chunks
        for choice in chunk.choices
        for call in choice.delta.tool_calls or ()
        if call.function is not None
    )
    follow_up = client.chat.completions.create(
        model="auto",
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_8",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_8", "content": '{"temp_c": 4}'},
        ],
        tools=[WEATHER_TOOL],
    )

    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert arguments == '{"city": "Oslo"}'
    assert follow_up.choices[0].finish_reason == "stop"


def test_json_mode_passes_response_format(live: LiveStack) -> None:
    raw = live.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, response_format={"type": "json_object"}
    )

    # The edge deployment lacks JSON support, so the request goes to the mid tier.
    assert raw.headers["x-tierwise-tier"] == "mid"
    assert live.fakes["edge"].requests == []
    assert live.fakes["mid"].requests[0].body["response_format"] == {"type": "json_object"}
    assert raw.parse().choices[0].message.content == SCRIPTED_ANSWER


def test_json_schema_passes_through(live: LiveStack) -> None:
    response_format: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {
            "name": "greeting",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
                "additionalProperties": False,
            },
        },
    }
    live.client().chat.completions.create(
        model="auto", messages=MESSAGES, response_format=response_format
    )

    assert live.fakes["mid"].requests[0].body["response_format"] == response_format


def test_json_mode_on_incapable_deployment_is_400(live: LiveStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().chat.completions.create(
            model="edge-small", messages=MESSAGES, response_format={"type": "json_object"}
        )

    error = caught.value
    assert error.status_code == 400
    assert error.body == {
        "message": NO_JSON_SCHEMA_MESSAGE,
        "type": "invalid_request_error",
        "param": "response_format",
        "code": "unsupported_parameter",
    }
    assert error.param == "response_format"
    assert live.fakes["edge"].requests == []


def test_unknown_model_raises_not_found(live: LiveStack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        live.client().chat.completions.create(model="gpt-9", messages=MESSAGES)

    error = caught.value
    assert error.status_code == 404
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert error.type == "invalid_request_error"
    assert error.body == {
        "message": "The model 'gpt-9' does not exist on this gateway. Use a router alias such as 'auto' "
        "or a model listed by GET /v1/models.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_invalid_value_raises_bad_request(live: LiveStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().chat.completions.create(model="auto", messages=MESSAGES, temperature=3)

    assert caught.value.body == {
        "message": "Invalid value for 'temperature': Input should be less than or equal to 2.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "invalid_request",
    }


def test_forbidden_parameter_raises_bad_request(live: LiveStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().chat.completions.create(
            model="auto", messages=MESSAGES, extra_body={"api_base": "http://127.0.0.1:9/v1"}
        )

    assert caught.value.param == "api_base"
    assert caught.value.code == "unsupported_parameter"


def test_upstream_failure_raises_internal_server_error(live: LiveStack) -> None:
    for fake in live.fakes.values():
        fake.enqueue(Scenario.http_error(503, "overloaded"))

    with pytest.raises(openai.InternalServerError) as caught:
        live.client().chat.completions.create(model="auto", messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.body == {
        "message": (
            "Every eligible deployment failed: edge-small (HTTP 503), mid-medium "
            "(HTTP 503), frontier-large (HTTP 503). Retry later, or report this "
            "response's x-request-id to the gateway's operators."
        ),
        "type": "api_error",
        "param": None,
        "code": "upstream_error",
    }


def test_timeout_raises_internal_server_error(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    for fake in fakes.values():
        fake.set_default(Scenario.hang())
    kit = GatewayKit(tmp_path, fakes)
    kit.write_policy(timeout_s=0.3)
    with LiveGateway(create_app(kit.settings(), StubScorer())) as gateway:
        # The client's default max_retries (2) stays: x-should-retry: false stops its retries.
        client = openai.OpenAI(base_url=gateway.base_url, api_key=new_api_key(), timeout=15)
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="auto", messages=MESSAGES)

    assert caught.value.status_code == 504
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert sum(len(fake.requests) for fake in fakes.values()) == 3
    assert caught.value.code == "upstream_timeout"
    assert caught.value.body == {
        "message": "Every eligible deployment timed out: edge-small, mid-medium, frontier-large. "
        "Retry later, or ask the gateway's operators to raise these deployments' timeout_s.",
        "type": "api_error",
        "param": None,
        "code": "upstream_timeout",
    }


def test_timeout_after_errors_is_502(tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    fakes["edge"].set_default(Scenario.http_error(503, "overloaded"))
    fakes["mid"].set_default(Scenario.http_error(503, "overloaded"))
    fakes["frontier"].set_default(Scenario.hang())
    kit = GatewayKit(tmp_path, fakes)
    kit.write_policy(timeout_s=0.3)
    with LiveGateway(create_app(kit.settings(), StubScorer())) as gateway:
        client = openai.OpenAI(
            base_url=gateway.base_url, api_key=new_api_key(), timeout=15, max_retries=0
        )
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="auto", messages=MESSAGES)

    # Only the last deployment timed out, so "every eligible deployment timed out" is false.
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert "x-should-retry" not in caught.value.response.headers
    assert [len(fake.requests) for fake in fakes.values()] == [1, 1, 1]


def test_cut_stream_raises_api_error(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.cut(after_events=3))
    stream = live.client().chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    received = []

    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)  # noqa: PERF402 - keeps the chunks read before the error

    # The fake aborts the connection with a reset, which can drop events still in flight, so
    # the client sees between one and three chunks, never the whole answer.
    assert 1 <= len(received) <= 3
    text = "".join(chunk.choices[0].delta.content or "" for chunk in received)
    assert SCRIPTED_ANSWER.startswith(text)
    assert text != SCRIPTED_ANSWER
    assert caught.value.message == "The model's stream failed before the answer was complete."
    assert caught.value.code == "upstream_error"


def test_client_reads_through_keepalives(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.pause(after_events=2, seconds=0.5))
    chunks = list(
        live.client().chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    )

    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == SCRIPTED_ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_keepalive_comments_on_the_wire(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.pause(after_events=2, seconds=0.5))
    body = {"model": "auto", "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST", f"{live.gateway.base_url}/chat/completions", json=body, timeout=15
    ) as response:
        lines = list(response.iter_lines())

    assert lines.count(": keep-alive") >= 2
    assert [line for line in lines if line][-1] == "data: [DONE]"


def test_n2_returns_two_choices(live: LiveStack) -> None:
    completion = live.client().chat.completions.create(model="auto", messages=MESSAGES, n=2)
    chunks = list(
        live.client().chat.completions.create(model="auto", messages=MESSAGES, n=2, stream=True)
    )

    assert [choice.index for choice in completion.choices] == [0, 1]
    finishes = {
        choice.index: choice.finish_reason
        for chunk in chunks
        for choice in chunk.choices
        if choice.finish_reason
    }
    assert finishes == {0: "stop", 1: "stop"}


async def test_async_client_streams(live: LiveStack) -> None:
    client = openai.AsyncOpenAI(
        base_url=live.gateway.base_url, api_key=new_api_key(), max_retries=0, timeout=15
    )
    stream = await client.chat.completions.create(
        model="auto-quality", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    await client.close()

    assert chunks[-1].usage is not None
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == SCRIPTED_ANSWER
    assert live.fakes["edge"].requests == []
    assert len(live.fakes["mid"].requests) == 1


def test_models_list(live: LiveStack) -> None:
    ids = [model.id for model in live.client().models.list()]

    assert ids == ["auto", "auto-quality", "edge-small", "mid-medium", "frontier-large"]


def token_logprob(token: str) -> dict[str, Any]:
    return {"token": token, "logprob": -0.25, "bytes": list(token.encode()), "top_logprobs": []}


UPSTREAM_HEAD: dict[str, Any] = {
    "id": "chatcmpl-upstream",
    "created": 1700000000,
    "model": "fake-edge-2024",
    "system_fingerprint": "fp_test",
    "service_tier": "default",
}
UPSTREAM_USAGE: dict[str, Any] = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


def streamed_tokens(chunks: list[Any]) -> list[str]:
    return [
        token.token
        for chunk in chunks
        for choice in chunk.choices
        if choice.logprobs is not None
        for token in choice.logprobs.content or ()
    ]


def test_cached_answer_streams_with_logprobs(live: LiveStack) -> None:
    answer = {
        **UPSTREAM_HEAD,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "logprobs": {"content": [token_logprob("Hel"), token_logprob("lo")], "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": UPSTREAM_USAGE,
    }
    live.fakes["edge"].enqueue(Scenario(body=answer))
    client = live.client()
    request: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": "Greet me with log probabilities."}],
        "temperature": 0,
        "logprobs": True,
    }
    first = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True))

    assert len(live.fakes["edge"].requests) == 1
    assert first.model_dump(exclude_unset=True) == answer
    assert streamed_tokens(chunks) == ["Hel", "lo"]
    assert {chunk.system_fingerprint for chunk in chunks} == {"fp_test"}
    assert {chunk.service_tier for chunk in chunks} == {"default"}


def test_cached_stream_keeps_logprobs(live: LiveStack) -> None:
    chunk_head = {**UPSTREAM_HEAD, "object": "chat.completion.chunk"}
    upstream_chunks = [
        {**chunk_head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}]},
        *(
            {**chunk_head, "choices": [{"index": 0, "delta": {"content": piece},
                                        "logprobs": {"content": [token_logprob(piece)], "refusal": None},
                                        "finish_reason": None}]}
            for piece in ("Hel", "lo")
        ),
        {**chunk_head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]},
        {**chunk_head, "choices": [], "usage": UPSTREAM_USAGE},
    ]
    live.fakes["edge"].enqueue(Scenario.stream_of(*upstream_chunks))
    client = live.client()
    request: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": "Stream a greeting with log probabilities."}],
        "temperature": 0,
        "logprobs": True,
    }
    streamed = list(
        client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
    )
    cached = client.chat.completions.create(**request)

    assert len(live.fakes["edge"].requests) == 1
    assert streamed_tokens(streamed) == ["Hel", "lo"]
    assert streamed[-1].usage is not None
    assert streamed[-1].usage.total_tokens == 11
    assert streamed[-1].system_fingerprint == "fp_test"
    assert streamed[-1].service_tier == "default"
    assert cached.choices[0].message.content == "Hello"
    assert cached.choices[0].logprobs is not None
    assert [token.token for token in cached.choices[0].logprobs.content or ()] == ["Hel", "lo"]
    assert cached.system_fingerprint == "fp_test"


def rate_limited(retry_after_ms: str) -> Scenario:
    """Return OpenAI's 429 for a request-rate limit, with a ``retry-after-ms`` header."""
    return Scenario.http_error(
        429,
        "Rate limit reached for requests.",
        "requests",
        "rate_limit_exceeded",
        headers={"retry-after-ms": retry_after_ms},
    )


def test_rate_limited_upstreams_raise_rate_limit_error(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.rate_limited(retry_after_s=7))
    live.fakes["mid"].enqueue(Scenario.rate_limited(retry_after_s=2))
    live.fakes["frontier"].enqueue(rate_limited("2500"))

    with pytest.raises(openai.RateLimitError) as caught:
        live.client().chat.completions.create(model="auto", messages=MESSAGES)

    error = caught.value
    assert error.status_code == 429
    assert error.body == {
        "message": "Every eligible deployment is rate limited by its provider. Retry after 2 s.",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert error.response.headers["retry-after"] == "2"
    assert error.response.headers["retry-after-ms"] == "2000"
    assert "x-should-retry" not in error.response.headers


def test_client_retries_after_rate_limit(live: LiveStack) -> None:
    for fake in live.fakes.values():
        fake.enqueue(rate_limited("20"))

    completion = live.client(max_retries=1).chat.completions.create(
        model="auto", messages=MESSAGES
    )

    assert completion.choices[0].message.content == SCRIPTED_ANSWER
    assert [len(fake.requests) for fake in live.fakes.values()] == [2, 1, 1]


def test_one_rate_limit_among_failures_is_502(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.rate_limited(retry_after_s=1))
    live.fakes["mid"].enqueue(Scenario.http_error(503, "overloaded"))
    live.fakes["frontier"].enqueue(Scenario.http_error(503, "overloaded"))

    with pytest.raises(openai.InternalServerError) as caught:
        live.client().chat.completions.create(model="auto", messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert "retry-after" not in caught.value.response.headers


def test_upstream_rejection_keeps_param(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(
        Scenario.http_error(
            400,
            "Invalid 'top_logprobs': integer above maximum value.",
            "invalid_request_error",
            "integer_above_max_value",
            param="top_logprobs",
        )
    )

    with pytest.raises(openai.BadRequestError) as caught:
        live.client().chat.completions.create(
            model="auto", messages=MESSAGES, logprobs=True, top_logprobs=15
        )

    assert caught.value.param == "top_logprobs"
    assert caught.value.code == "upstream_rejected"
    assert live.fakes["edge"].requests[0].body["top_logprobs"] == 15
    assert live.fakes["mid"].requests == []


def test_null_n_and_stream_mean_defaults(live: LiveStack) -> None:
    # The SDK types n and stream as Optional and sends null for None.
    completion = live.client().chat.completions.create(
        model="auto", messages=MESSAGES, n=None, stream=None
    )

    assert [choice.index for choice in completion.choices] == [0]
    assert completion.choices[0].message.content == SCRIPTED_ANSWER
    assert "stream" not in live.fakes["edge"].requests[0].body


def test_overloaded_upstreams_pass_retry_after(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.http_error(503, "overloaded", headers={"retry-after": "4"}))
    live.fakes["mid"].enqueue(Scenario.http_error(503, "overloaded", headers={"retry-after": "3"}))
    live.fakes["frontier"].enqueue(rate_limited("5000"))

    with pytest.raises(openai.InternalServerError) as caught:
        live.client().chat.completions.create(model="auto", messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.response.headers["retry-after-ms"] == "3000"


# Message forms that OpenAI's Chat Completions API accepts, as the openai SDK sends them. The
# gateway's content-part and tool-call checks must pass each one through unchanged.
PNG_DATA_URL = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
WAV_BASE64 = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()
PDF_DATA_URL = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4\n").decode()
WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
USER_TURN = {"role": "user", "content": "Say hello in one short sentence."}
VALID_MESSAGES: dict[str, list[dict[str, Any]]] = {
    "image_url_with_detail": [{"role": "user", "content": [
        {"type": "text", "text": "Describe it."},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
    ]}],
    "input_audio": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": WAV_BASE64, "format": "wav"}},
    ]}],
    "image_base64_data_url": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG_DATA_URL}}]}
    ],
    "file_with_file_id": [
        {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc123"}}]}
    ],
    "file_with_file_data": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": PDF_DATA_URL, "filename": "a.pdf"}},
    ]}],
    "assistant_refusal_part": [
        USER_TURN,
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot."}]},
        USER_TURN,
    ],
    "assistant_text_parts": [
        USER_TURN, {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]}, USER_TURN
    ],
    "tool_calls_with_null_content": [
        USER_TURN,
        {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "Sunny"}]},
    ],
    "tool_calls_without_content": [
        USER_TURN,
        {"role": "assistant", "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    ],
    "custom_tool_call": [
        USER_TURN,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_2", "type": "custom", "custom": {"name": "grep", "input": "hello"}},
        ]},
        {"role": "tool", "tool_call_id": "call_2", "content": "no match"},
    ],
    "developer_and_names": [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}], "name": "ops"},
        {"role": "user", "content": "Say hello.", "name": "bob"},
    ],
    "audio_in_assistant_history": [
        USER_TURN,
        {"role": "assistant", "content": None, "audio": {"id": "audio_abc123"}},
        USER_TURN,
    ],
    "legacy_function_call": [
        USER_TURN,
        {"role": "assistant", "content": None,
         "function_call": {"name": "get_weather", "arguments": "{}"}},
        {"role": "function", "name": "get_weather", "content": "Sunny"},
    ],
}


@pytest.mark.parametrize("case", list(VALID_MESSAGES))
def test_valid_message_forms_pass_through(live: LiveStack, case: str) -> None:
    messages = VALID_MESSAGES[case]
    completion = live.client().chat.completions.create(model="auto", messages=messages)

    assert completion.choices[0].message.content
    [request] = [r for fake in live.fakes.values() for r in fake.requests]
    assert request.body["messages"] == messages
