"""``POST /v1/messages``: the official ``anthropic`` client against a live gateway, the
in-process app for outcome records and faults, and the translation functions on their own."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from router.api.anthropic_format import Translation, to_chat_body, to_message
from router.api.anthropic_stream import StreamTranslator
from router.errors import InvalidRequest
from tests.gateway.conftest import (
    INTERNAL_ERROR_MESSAGE,
    FailingScorer,
    GatewayKit,
    StubScorer,
    new_api_key,
    tenant_of_key,
)
from tests.gateway.live_stack import LiveStack as BaseLiveStack
from tests.gateway.live_stack import reset_live_stack, run_live_stack, sse_events
from tests.support.recorded import SCRIPTED_ANSWER
from tests.support.scenario import Scenario, ToolCall

anthropic = pytest.importorskip(
    "anthropic", reason="the anthropic client is in the test extra: pip install -e '.[test]'"
)

PROMPT = "Say hello in one short sentence."
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]
WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
OPENAI_WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": WEATHER_TOOL["input_schema"],
        "description": "Current weather for a city.",
    },
}
TEXT_SOURCE: dict[str, Any] = {"type": "text", "media_type": "text/plain", "data": "Q3 revenue rose."}
PDF_SOURCE: dict[str, Any] = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}
PDF_DATA_URL = "data:application/pdf;base64,JVBERi0="
UNKNOWN_MODEL_MESSAGE = (
    "The model 'claude-9' does not exist on this gateway. Use a router alias such as 'auto' "
    "or a model listed by GET /v1/models."
)


class LiveStack(BaseLiveStack):
    def client(self, api_key: str | None = None) -> Any:
        """An Anthropic client; it appends ``/v1/messages`` to the root URL itself."""
        return anthropic.Anthropic(
            base_url=self.root_url, api_key=api_key or new_api_key(), max_retries=0, timeout=15
        )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    yield from run_live_stack(tmp_path_factory, "anthropic-client", LiveStack)


@pytest.fixture(autouse=True)
def reset_fakes(request: pytest.FixtureRequest) -> None:
    reset_live_stack(request)


def stream_raw(live: LiveStack, body: dict[str, Any]) -> tuple[httpx.Headers, list[str]]:
    url = f"{live.root_url}/v1/messages"
    headers = {"x-api-key": new_api_key(), "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=15) as response:
        return response.headers, list(response.iter_lines())


# The official client ------------------------------------------------------------------------


def test_plain_text_message(live: LiveStack) -> None:
    raw = live.client().messages.with_raw_response.create(
        model="auto", max_tokens=256, messages=MESSAGES
    )
    message = raw.parse()

    assert raw.headers["x-tierwise-tier"] == "edge"
    assert raw.headers["x-tierwise-model"] == "edge-small"
    assert raw.headers["x-tierwise-cache"] == "miss"
    assert raw.headers["content-type"] == "application/json"
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == SCRIPTED_ANSWER
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


def test_request_reaches_upstream_as_chat_body(live: LiveStack) -> None:
    live.client().messages.create(
        model="auto",
        max_tokens=256,
        messages=MESSAGES,
        stop_sequences=["END"],
        metadata={"user_id": "user-7"},
        # This client release no longer has sampling arguments; the API still takes them.
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 40},
    )

    received = live.fakes["edge"].requests[0].body
    assert received["messages"] == MESSAGES
    assert received["max_tokens"] == 256
    assert received["temperature"] == 0.5
    assert received["top_p"] == 0.9
    assert received["top_k"] == 40
    assert received["stop"] == ["END"]
    assert received["user"] == "user-7"
    assert received["model"] == "fake-edge"
    assert "stream" not in received


def test_system_prompt_string_and_blocks(live: LiveStack) -> None:
    client = live.client()
    client.messages.create(model="auto", max_tokens=256, system="Be brief.", messages=MESSAGES)
    client.messages.create(
        model="auto",
        max_tokens=256,
        system=[
            {"type": "text", "text": "Be brief."},
            {"type": "text", "text": "Answer in English.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=MESSAGES,
    )

    first, second = (request.body["messages"] for request in live.fakes["edge"].requests)
    assert first == [{"role": "system", "content": "Be brief."}, *MESSAGES]
    assert second == [{"role": "system", "content": "Be brief.\n\nAnswer in English."}, *MESSAGES]


def test_max_tokens_stop_reason(live: LiveStack) -> None:
    message = live.client().messages.create(model="auto", max_tokens=5, messages=MESSAGES)

    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5
    assert SCRIPTED_ANSWER.startswith(message.content[0].text)


def test_stream_text_deltas_assemble(live: LiveStack) -> None:
    with live.client().messages.stream(model="auto", max_tokens=256, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == SCRIPTED_ANSWER
    assert final.content[0].text == SCRIPTED_ANSWER
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0
    received = live.fakes["edge"].requests[0].body
    assert received["stream"] is True
    assert received["stream_options"] == {"include_usage": True}


def test_stream_usage_matches_non_streaming(live: LiveStack) -> None:
    client = live.client()
    whole = client.messages.create(model="auto", max_tokens=256, messages=MESSAGES)
    with client.messages.stream(model="auto", max_tokens=256, messages=MESSAGES) as stream:
        streamed = stream.get_final_message()

    assert streamed.usage.input_tokens == whole.usage.input_tokens
    assert streamed.usage.output_tokens == whole.usage.output_tokens


def test_raw_stream_event_order(live: LiveStack) -> None:
    headers, lines = stream_raw(
        live, {"model": "auto", "max_tokens": 256, "messages": MESSAGES, "stream": True}
    )
    events = sse_events(lines)
    names = [name for name, _ in events]

    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-tierwise-tier"] == "edge"
    assert all(name == data["type"] for name, data in events)
    assert names[0] == "message_start"
    assert names[1] == "content_block_start"
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["role"] == "assistant"
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == SCRIPTED_ANSWER
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0
    assert delta["usage"]["input_tokens"] > 0


def test_tool_use_round_trip(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(
        Scenario.tools(ToolCall("get_weather", '{"city": "Oslo"}', id="call_8"))
    )
    client = live.client()
    question = {"role": "user", "content": "What is the weather in Oslo?"}
    first = client.messages.create(
        model="auto",
        max_tokens=256,
        messages=[question],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "auto"},
    )
    follow_up = client.messages.create(
        model="auto",
        max_tokens=256,
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_8", "content": "4 degrees"}
                ],
            },
        ],
        tools=[WEATHER_TOOL],
    )

    assert first.stop_reason == "tool_use"
    assert [block.type for block in first.content] == ["tool_use"]
    call = first.content[0]
    assert call.id == "call_8"
    assert call.name == "get_weather"
    assert call.input == {"city": "Oslo"}
    first_body, second_body = (request.body for request in live.fakes["edge"].requests)
    assert first_body["tools"] == [OPENAI_WEATHER_TOOL]
    assert first_body["tool_choice"] == "auto"
    assert second_body["messages"] == [
        question,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_8",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_8", "content": "4 degrees"},
    ]
    assert follow_up.stop_reason == "end_turn"
    assert follow_up.content[0].text == SCRIPTED_ANSWER


def test_streamed_tool_use(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(
        Scenario.tools(ToolCall("get_weather", '{"city": "Paris"}', id="call_9"))
    )
    with live.client().messages.stream(
        model="auto",
        max_tokens=256,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()

    json_deltas = [
        event.delta.partial_json
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
    ]
    assert "".join(json_deltas) == '{"city": "Paris"}'
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use"
    assert final.content[0].id == "call_9"
    assert final.content[0].input == {"city": "Paris"}
    received = live.fakes["edge"].requests[0].body
    assert received["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert received["parallel_tool_calls"] is False


def test_cache_hit_on_repeat_temperature_zero(live: LiveStack) -> None:
    client = live.client()

    def ask() -> Any:
        return client.messages.with_raw_response.create(
            model="auto", max_tokens=256, messages=MESSAGES, extra_body={"temperature": 0}
        )

    first, second = ask(), ask()
    with client.messages.stream(
        model="auto", max_tokens=256, messages=MESSAGES, extra_body={"temperature": 0}
    ) as stream:
        streamed_text = "".join(stream.text_stream)
        streamed = stream.get_final_message()
        stream_cache = stream.response.headers["x-tierwise-cache"]

    assert first.headers["x-tierwise-cache"] == "miss"
    assert second.headers["x-tierwise-cache"] == "hit"
    assert stream_cache == "hit"
    assert len(live.fakes["edge"].requests) == 1
    assert second.parse().content == first.parse().content
    assert second.parse().usage == first.parse().usage
    assert streamed_text == SCRIPTED_ANSWER
    assert streamed.usage.output_tokens == first.parse().usage.output_tokens


def test_request_id_header_for_client(live: LiveStack) -> None:
    raw = live.client().messages.with_raw_response.create(
        model="auto", max_tokens=256, messages=MESSAGES
    )

    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    assert raw.parse()._request_id == raw.headers["x-request-id"]


def test_unknown_model_raises_not_found(live: LiveStack) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        live.client().messages.create(model="claude-9", max_tokens=256, messages=MESSAGES)

    error = caught.value
    assert error.status_code == 404
    assert error.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": UNKNOWN_MODEL_MESSAGE},
    }
    assert error.request_id is not None
    assert error.request_id.startswith("req-")


def test_invalid_temperature_raises_bad_request(live: LiveStack) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        live.client().messages.create(
            model="auto", max_tokens=256, messages=MESSAGES, extra_body={"temperature": 1.5}
        )

    assert caught.value.status_code == 400
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "Invalid value for 'temperature': Input should be less than or equal to 1.",
        },
    }


def test_unknown_parameter_raises_bad_request(live: LiveStack) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        live.client().messages.create(
            model="auto",
            max_tokens=256,
            messages=MESSAGES,
            extra_body={"api_base": "http://127.0.0.1:9"},
        )

    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message == (
        "The parameter 'api_base' is not supported on /v1/messages. Remove it."
    )
    assert live.fakes["edge"].requests == []


def test_missing_max_tokens_is_400(live: LiveStack) -> None:
    response = httpx.post(
        f"{live.root_url}/v1/messages",
        json={"model": "auto", "messages": MESSAGES},
        headers={"x-api-key": new_api_key()},
        timeout=15,
    )

    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "Missing required parameter: 'max_tokens'.",
        },
    }


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_tokens", "5", "Invalid value for 'max_tokens': Input should be a valid integer."),
        ("stream", "true", "Invalid value for 'stream': Input should be a valid boolean."),
        ("temperature", "0.5", "Invalid value for 'temperature': Input should be a valid number."),
    ],
)
def test_string_scalar_is_400(live: LiveStack, field: str, value: str, expected: str) -> None:
    body = {"model": "auto", "max_tokens": 256, "messages": MESSAGES, field: value}
    response = httpx.post(
        f"{live.root_url}/v1/messages",
        json=body,
        headers={"x-api-key": new_api_key(), "anthropic-version": "2023-06-01"},
        timeout=15,
    )

    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": expected},
    }
    assert response.headers["request-id"].startswith("req-")
    assert live.fakes["edge"].requests == []


def test_invalid_json_is_400(live: LiveStack) -> None:
    response = httpx.post(
        f"{live.root_url}/v1/messages",
        content=b'{"model": "auto",',
        headers={"x-api-key": new_api_key(), "content-type": "application/json"},
        timeout=15,
    )

    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["message"].startswith("The request body is not valid JSON")


def test_upstream_failure_raises_internal_server_error(live: LiveStack) -> None:
    for fake in live.fakes.values():
        fake.enqueue(Scenario.http_error(503, "overloaded"))

    with pytest.raises(anthropic.InternalServerError) as caught:
        live.client().messages.create(model="auto", max_tokens=256, messages=MESSAGES)

    assert caught.value.status_code == 502
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": (
            "Every eligible deployment failed: edge-small (HTTP 503), mid-medium "
            "(HTTP 503), frontier-large (HTTP 503). Retry later, or report this "
            "response's x-request-id to the gateway's operators."
        ),
        },
    }


def test_cut_stream_raises_api_error(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.cut(after_events=3))
    texts: list[str] = []

    client = live.client()
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model="auto", max_tokens=256, messages=MESSAGES) as stream,
    ):
        texts.extend(stream.text_stream)

    assert caught.value.type == "api_error"
    assert caught.value.api_message == "The model's stream failed before the answer was complete."
    assert "".join(texts) != SCRIPTED_ANSWER


def test_cut_stream_ends_without_message_stop(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.cut(after_events=3))
    _, lines = stream_raw(
        live, {"model": "auto", "max_tokens": 256, "messages": MESSAGES, "stream": True}
    )
    names = [name for name, _ in sse_events(lines)]

    assert names[0] == "message_start"
    assert names[-1] == "error"
    assert "message_stop" not in names
    assert "message_delta" not in names


def test_keepalives_become_pings(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.pause(after_events=2, seconds=0.5))
    _, lines = stream_raw(
        live, {"model": "auto", "max_tokens": 256, "messages": MESSAGES, "stream": True}
    )
    names = [name for name, _ in sse_events(lines)]

    assert names.count("ping") >= 2
    assert names[0] == "message_start"
    assert names[-1] == "message_stop"


# In process: outcome records, images, thinking, own faults --------------------------------


async def post_messages(
    gateway: Any, body: dict[str, Any], api_key: str | None = None
) -> httpx.Response:
    key = api_key or gateway.api_key
    gateway.tenants.add(tenant_of_key(key))
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    response: httpx.Response = await gateway.client.post("/v1/messages", json=body, headers=headers)
    return response


async def test_outcome_record_and_tenant_from_x_api_key(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await post_messages(
            gateway, {"model": "auto", "max_tokens": 256, "messages": MESSAGES, "temperature": 0}
        )
        records = await gateway.request_records()

    assert response.status_code == 200
    assert len(records) == 1
    record = records[0]
    assert record["api"] == "messages"
    assert record["tenant"] == gateway.tenant
    assert record["requested_model"] == "auto"
    assert record["tier"] == "edge"
    assert record["model"] == "edge-small"
    assert record["status"] == 200
    assert record["tokens_in"] == response.json()["usage"]["input_tokens"]
    assert record["tokens_out"] == response.json()["usage"]["output_tokens"]
    assert record["scores"] == StubScorer().scores


async def test_streamed_outcome_record(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await post_messages(
            gateway, {"model": "auto", "max_tokens": 256, "messages": MESSAGES, "stream": True}
        )
        records = await gateway.request_records()

    assert response.status_code == 200
    assert len(records) == 1
    assert records[0]["stream"] is True
    assert records[0]["tokens_out"] > 0


async def test_error_outcome_record(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await post_messages(
            gateway, {"model": "claude-9", "max_tokens": 256, "messages": MESSAGES}
        )
        records = await gateway.request_records()

    assert response.status_code == 404
    assert response.headers["x-request-id"] == records[0]["request_id"]
    assert records[0]["status"] == 404
    assert records[0]["error"] == "model_not_found"


async def test_image_block_reaches_upstream(kit: GatewayKit) -> None:
    data = base64.b64encode(b"\x89PNG fake").decode()
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
        {"type": "text", "text": "Describe the image."},
    ]
    async with kit.running() as gateway:
        response = await post_messages(
            gateway,
            {
                "model": "auto",
                "max_tokens": 256,
                "messages": [{"role": "user", "content": content}],
            },
        )

    assert response.status_code == 200
    received = kit.fakes["edge"].requests[0].body["messages"]
    assert received == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
                {"type": "text", "text": "Describe the image."},
            ],
        }
    ]


async def test_reasoning_becomes_thinking_block(kit: GatewayKit) -> None:
    kit.fakes["edge"].set_default(Scenario.with_reasoning("First, greet."))
    body = {
        "model": "auto",
        "max_tokens": 256,
        "messages": MESSAGES,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    async with kit.running() as gateway:
        whole = await post_messages(gateway, body)
        streamed = await post_messages(gateway, {**body, "stream": True})
        plain = await post_messages(gateway, {k: v for k, v in body.items() if k != "thinking"})

    assert whole.json()["content"] == [
        {"type": "thinking", "thinking": "First, greet.", "signature": ""},
        {"type": "text", "text": SCRIPTED_ANSWER},
    ]
    events = sse_events(streamed.text.split("\n"))
    starts = [
        data["content_block"]["type"] for name, data in events if name == "content_block_start"
    ]
    thinking = "".join(
        data["delta"]["thinking"]
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "thinking_delta"
    )
    assert starts == ["thinking", "text"]
    assert thinking == "First, greet."
    assert [block["type"] for block in plain.json()["content"]] == ["text"]
    assert "thinking" not in kit.fakes["edge"].requests[0].body


async def test_own_fault_is_fixed_500_in_anthropic_shape(kit: GatewayKit) -> None:
    async with kit.running(scorer=FailingScorer()) as gateway:
        response = await post_messages(
            gateway, {"model": "auto", "max_tokens": 256, "messages": MESSAGES}
        )
        records = await gateway.request_records()

    assert response.status_code == 500
    assert response.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": INTERNAL_ERROR_MESSAGE},
    }
    assert FailingScorer.secret not in response.text
    assert "RuntimeError" not in response.text
    assert response.headers["x-request-id"] == records[0]["request_id"]
    assert records[0]["status"] == 500


async def test_chat_completions_unchanged(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.chat({"model": "auto", "messages": MESSAGES})

    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"
    assert response.json()["choices"][0]["message"]["content"] == SCRIPTED_ANSWER


# Request translation ----------------------------------------------------------------------


def translate(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "auto", "max_tokens": 64, "messages": MESSAGES} | fields
    return to_chat_body(body).body


def translation_error(**fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        translate(**fields)
    return caught.value


def test_tool_result_with_image_and_error() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    messages = [
        {"role": "user", "content": "Chart?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Draw it.", "signature": "sig"},
                {"type": "text", "text": "Drawing."},
                {"type": "tool_use", "id": "toolu_1", "name": "draw", "input": {}},
                {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {"q": "x"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "done"}, image],
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": "not found",
                    "is_error": True,
                },
                {"type": "text", "text": "Explain."},
            ],
        },
    ]

    result = translate(messages=messages)["messages"]

    assert result[1] == {
        "role": "assistant",
        "content": "Drawing.",
        "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "draw", "arguments": "{}"}},
            {
                "id": "toolu_2",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q":"x"}'},
            },
        ],
    }
    assert result[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "done"}
    assert result[3] == {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: not found"}
    assert result[4] == {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "text", "text": "Explain."},
        ],
    }
    assert len(result) == 5


def user_content(*blocks: dict[str, Any]) -> Any:
    """Translate one user message of ``blocks`` and return the chat message's content."""
    [message] = translate(messages=[{"role": "user", "content": list(blocks)}])["messages"]
    return message["content"]


def test_text_document_becomes_text() -> None:
    document = {"type": "document", "source": TEXT_SOURCE, "citations": {"enabled": False}}

    assert user_content(document) == "Q3 revenue rose."


def test_document_title_and_context_precede_text() -> None:
    document = {
        "type": "document",
        "source": TEXT_SOURCE,
        "title": "Report",
        "context": "From finance.",
        "citations": None,
    }

    assert user_content(document, {"type": "text", "text": "Why?"}) == [
        {"type": "text", "text": "Document title: Report\nDocument context: From finance.\n\nQ3 revenue rose."},
        {"type": "text", "text": "Why?"},
    ]


def test_pdf_document_becomes_file_part() -> None:
    document = {"type": "document", "source": PDF_SOURCE, "cache_control": {"type": "ephemeral"}}

    assert user_content(document) == [
        {"type": "file", "file": {"filename": "document.pdf", "file_data": PDF_DATA_URL}}
    ]


@pytest.mark.parametrize(
    ("title", "filename"),
    [
        ("Q3 report", "Q3 report.pdf"),
        ("q3.PDF", "q3.PDF"),
        ("../etc/passwd", ".._etc_passwd.pdf"),
        ("a\nb", "a_b.pdf"),
        ("  ", "document.pdf"),
        ("x" * 300, "x" * 251 + ".pdf"),
    ],
)
def test_pdf_filename_from_title(title: str, filename: str) -> None:
    content = user_content({"type": "document", "source": PDF_SOURCE, "title": title})

    assert content[-1]["file"]["filename"] == filename


def test_content_document_keeps_text_and_images() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    source = {"type": "content", "content": [{"type": "text", "text": "Page one."}, image]}

    assert user_content({"type": "document", "source": source, "context": "Scan."}) == [
        {"type": "text", "text": "Document context: Scan.\n\nPage one."},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]


def test_image_content_document_gets_title_part() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    source = {"type": "content", "content": [image]}

    assert user_content({"type": "document", "source": source, "title": "Chart"}) == [
        {"type": "text", "text": "Document title: Chart"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]


def test_tool_result_documents_split_text_and_pdf() -> None:
    messages = [
        {"role": "user", "content": "Fetch it."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "fetch", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "Found two files."},
            {"type": "document", "source": TEXT_SOURCE, "title": "Notes"},
            {"type": "document", "source": PDF_SOURCE},
        ]}]},
    ]

    result = translate(messages=messages)["messages"]

    assert result[2] == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "Found two files.\nDocument title: Notes\n\nQ3 revenue rose.",
    }
    assert result[3] == {
        "role": "user",
        "content": [{"type": "file", "file": {"filename": "document.pdf", "file_data": PDF_DATA_URL}}],
    }
    assert len(result) == 4


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choice_mapping(choice: dict[str, Any], expected: Any) -> None:
    body = translate(tools=[WEATHER_TOOL], tool_choice=choice)

    assert body["tool_choice"] == expected
    assert "parallel_tool_calls" not in body


def test_output_format_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    body = translate(
        output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"}
    )

    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }
    assert "effort" not in body


def test_anthropic_only_hints_are_ignored() -> None:
    body = translate(
        service_tier="auto",
        inference_geo="eu",
        speed="fast",
        cache_control={"type": "ephemeral"},
    )

    assert body == {"model": "auto", "messages": MESSAGES, "max_tokens": 64}


def test_streaming_asks_for_usage() -> None:
    body = translate(stream=True)

    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        (
            {"max_tokens": 0},
            "max_tokens",
            "Invalid value for 'max_tokens': Input should be greater than or equal to 1.",
        ),
        (
            {"messages": []},
            "messages",
            "Invalid value for 'messages': expected at least 1 item (found an empty list).",
        ),
        (
            {"messages": [{"role": "user"}]},
            "messages[0].content",
            "Missing required parameter: 'messages[0].content'.",
        ),
        (
            {"messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
            (
                "Invalid value for 'messages[0].content': content must be a string or a list "
                "of content blocks."
            ),
        ),
        (
            {"system": 5},
            "system",
            "Invalid value for 'system': system must be a string or a list of text blocks.",
        ),
        (
            {"tools": [{"name": "lookup"}]},
            "tools[0].input_schema",
            "Missing required parameter: 'tools[0].input_schema'.",
        ),
        (
            {"messages": [{"role": "system", "content": "x"}]},
            "messages[0].role",
            "Invalid value for 'messages[0].role': Input should be 'user' or 'assistant'.",
        ),
        (
            {"tool_choice": {"type": "tool"}},
            "tool_choice.name",
            "Missing required parameter: 'tool_choice.name'.",
        ),
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "tools[0]",
            (
                "Invalid value for 'tools[0]': the server tool 'web_search_20250305' is not "
                "supported, so define a custom tool with name and input_schema."
            ),
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}]},
            "messages[0].content[1].type",
            "Invalid value for 'messages[0].content[1].type': each content block needs a string 'type'.",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, "b"]}]},
            "messages[0].content[1]",
            (
                "Invalid value for 'messages[0].content[1]': expected a content block object such "
                'as {"type": "text", "text": "..."}.'
            ),
        ),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "text", "text": 5}]}]},
            "messages[0].content[0].text",
            "Invalid value for 'messages[0].content[0].text': expected a string.",
        ),
        (
            {"system": [{"type": "text", "text": "a"}, "b"]},
            "system[1]",
            (
                "Invalid value for 'system[1]': expected a content block object such as "
                '{"type": "text", "text": "..."}.'
            ),
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"text": "x"}]}],
                    }
                ]
            },
            "messages[0].content[0].content[0].type",
            (
                "Invalid value for 'messages[0].content[0].content[0].type': each content block "
                "needs a string 'type'."
            ),
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image"}]}]},
            "messages[0].content[0].source",
            "Invalid value for 'messages[0].content[0].source': an image block needs a 'source' object.",
        ),
        (
            {"messages": [{"role": "user", "content": []}]},
            "messages[0].content",
            "Invalid value for 'messages[0].content': a user message needs at least one block.",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ]
            },
            "messages[0].content[0].source.type",
            "Invalid value for 'messages[0].content[0].source.type': expected 'base64' or 'url', got 'file'.",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
            "messages[0].content[0].tool_use_id",
            "Invalid value for 'messages[0].content[0].tool_use_id': expected a non-empty string.",
        ),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0].type",
            (
                "The content block type 'document' at 'messages[0].content[0]' is not supported "
                "on /v1/messages. Send text, image, document (user), tool_use (assistant) or "
                "tool_result (user) blocks."
            ),
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document"}]}]},
            "messages[0].content[0].source",
            "Invalid value for 'messages[0].content[0].source': a document block needs a 'source' object.",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0].source.type",
            (
                "Invalid value for 'messages[0].content[0].source.type': expected 'base64', "
                "'text' or 'content', got None."
            ),
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
            ]}]},
            "messages[0].content[0].source.type",
            (
                "The document source type 'url' at 'messages[0].content[0].source' is not "
                "supported on /v1/messages: the gateway fetches no URLs, so send the PDF as a "
                "'base64' source."
            ),
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "file", "file_id": "file_011"}}
            ]}]},
            "messages[0].content[0].source.type",
            (
                "The document source type 'file' at 'messages[0].content[0].source' is not "
                "supported on /v1/messages: the gateway stores no files, so send the PDF as a "
                "'base64' source or the text as a 'text' source."
            ),
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": TEXT_SOURCE, "citations": {"enabled": True}}
            ]}]},
            "messages[0].content[0].citations.enabled",
            (
                "The parameter 'messages[0].content[0].citations.enabled' is not supported on "
                "/v1/messages: the gateway serves the request as a chat completion, which returns "
                "no citations. Remove 'citations' or set 'enabled' to false."
            ),
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": TEXT_SOURCE, "citations": {"enabled": "yes"}}
            ]}]},
            "messages[0].content[0].citations.enabled",
            "Invalid value for 'messages[0].content[0].citations.enabled': expected a boolean.",
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": TEXT_SOURCE, "citations": True}
            ]}]},
            "messages[0].content[0].citations",
            (
                "Invalid value for 'messages[0].content[0].citations': expected an object such as "
                '{"enabled": false}.'
            ),
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": TEXT_SOURCE, "title": 5}
            ]}]},
            "messages[0].content[0].title",
            "Invalid value for 'messages[0].content[0].title': expected a string.",
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": {**TEXT_SOURCE, "media_type": "text/html"}}
            ]}]},
            "messages[0].content[0].source.media_type",
            (
                "Invalid value for 'messages[0].content[0].source.media_type': expected "
                "'text/plain' for a 'text' source, got 'text/html'."
            ),
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf"}}
            ]}]},
            "messages[0].content[0].source.data",
            "Invalid value for 'messages[0].content[0].source.data': expected a non-empty string.",
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "content", "content": []}}
            ]}]},
            "messages[0].content[0].source.content",
            (
                "Invalid value for 'messages[0].content[0].source.content': expected a non-empty "
                "string or a list of text and image blocks."
            ),
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "content", "content": [
                    {"type": "text", "text": "a"}, {"type": "document", "source": TEXT_SOURCE}
                ]}}
            ]}]},
            "messages[0].content[0].source.content[1].type",
            (
                "Invalid value for 'messages[0].content[0].source.content[1].type': expected "
                "'text' or 'image', got 'document'."
            ),
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
                {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
            ]}]}]},
            "messages[0].content[0].content[0].source.type",
            (
                "The document source type 'url' at 'messages[0].content[0].content[0].source' is "
                "not supported on /v1/messages: the gateway fetches no URLs, so send the PDF as a "
                "'base64' source."
            ),
        ),
        (
            {"metadata": {"session": "s"}},
            "metadata.session",
            "The parameter 'metadata.session' is not supported on /v1/messages. Remove it.",
        ),
    ],
)
def test_invalid_requests(fields: dict[str, Any], param: str, message: str) -> None:
    error = translation_error(**fields)

    assert error.param == param
    assert error.message == message
    assert error.status == 400


# The request models are strict: no string, float or boolean passes as an integer, no string
# as a number or a boolean, and no number as a string.
@pytest.mark.parametrize(
    ("fields", "param", "expected"),
    [
        ({"max_tokens": "5"}, "max_tokens", "a valid integer"),
        ({"max_tokens": 5.0}, "max_tokens", "a valid integer"),
        ({"max_tokens": True}, "max_tokens", "a valid integer"),
        ({"temperature": "0.5"}, "temperature", "a valid number"),
        ({"top_p": "1"}, "top_p", "a valid number"),
        ({"top_k": "3"}, "top_k", "a valid integer"),
        ({"top_k": 3.0}, "top_k", "a valid integer"),
        ({"stream": "true"}, "stream", "a valid boolean"),
        ({"stream": 1}, "stream", "a valid boolean"),
        ({"model": 5}, "model", "a valid string"),
        ({"stop_sequences": [1]}, "stop_sequences[0]", "a valid string"),
        ({"service_tier": 1}, "service_tier", "a valid string"),
        ({"metadata": {"user_id": 5}}, "metadata.user_id", "a valid string"),
        ({"thinking": {"type": "enabled", "budget_tokens": "1024"}}, "thinking.budget_tokens",
         "a valid integer"),
        ({"tool_choice": {"type": "auto", "disable_parallel_tool_use": "true"}},
         "tool_choice.disable_parallel_tool_use", "a valid boolean"),
        ({"tools": [{"name": "f", "input_schema": {}, "description": 5}]}, "tools[0].description",
         "a valid string"),
    ],
)
def test_scalar_fields_are_strict(fields: dict[str, Any], param: str, expected: str) -> None:
    error = translation_error(**fields)

    assert error.param == param
    assert error.message == f"Invalid value for '{param}': Input should be {expected}."
    assert error.status == 400


def test_integer_temperature_is_accepted() -> None:
    body = translate(temperature=1, top_p=1)

    assert body["temperature"] == 1
    assert body["top_p"] == 1


# Response translation ---------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str = "stop", **choice: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "model": "fake-edge",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish,
                **choice,
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def test_message_from_completion() -> None:
    message = to_message(completion({"content": "Hi."}), Translation({}))

    assert message == {
        "id": "msg_chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "fake-edge",
        "content": [{"type": "text", "text": "Hi."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 7},
    }


def test_message_usage_reports_cache_reads_apart() -> None:
    answer = completion({"content": "Hi."})
    answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 8}
    message = to_message(answer, Translation({}))

    # Anthropic's input_tokens leaves out the tokens read from the prompt cache.
    assert message["usage"] == {"input_tokens": 3, "output_tokens": 7, "cache_read_input_tokens": 8}


def test_message_usage_reports_cache_writes_apart() -> None:
    answer = completion({"content": "Hi."})
    # litellm 1.110 reports an Anthropic deployment's cache writes here, inside prompt_tokens.
    answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 2, "cache_creation_tokens": 6}
    message = to_message(answer, Translation({}))

    assert message["usage"] == {
        "input_tokens": 3,
        "output_tokens": 7,
        "cache_read_input_tokens": 2,
        "cache_creation_input_tokens": 6,
    }


@pytest.mark.parametrize(
    "details",
    [None, [], {"cached_tokens": None}, {"cached_tokens": "8"}, {"cached_tokens": -2},
     {"cached_tokens": 8.5}, {"cached_tokens": {"n": 8}}, {"cached_tokens": 10**30}],
)
def test_message_usage_ignores_odd_cached_tokens(details: Any) -> None:
    answer = completion({"content": "Hi."})
    answer["usage"]["prompt_tokens_details"] = details
    message = to_message(answer, Translation({}))

    assert message["usage"] == {"input_tokens": 11, "output_tokens": 7}


def test_message_usage_caps_cache_reads_at_input() -> None:
    answer = completion({"content": "Hi."})
    answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 50}
    message = to_message(answer, Translation({}))

    assert message["usage"] == {"input_tokens": 0, "output_tokens": 7, "cache_read_input_tokens": 11}


@pytest.mark.parametrize("prompt_tokens", ["eleven", -11, 11.5, [11], 10**30])
def test_message_usage_ignores_odd_token_counts(prompt_tokens: Any) -> None:
    answer = completion({"content": "Hi."})
    answer["usage"]["prompt_tokens"] = prompt_tokens
    message = to_message(answer, Translation({}))

    assert message["usage"] == {"input_tokens": 0, "output_tokens": 7}


@pytest.mark.parametrize(
    ("finish", "extra", "expected"),
    [
        ("length", {}, ("max_tokens", None)),
        ("content_filter", {}, ("refusal", None)),
        ("stop", {"stop_reason": "END"}, ("stop_sequence", "END")),
        ("stop", {"stop_reason": "OTHER"}, ("end_turn", None)),
        ("stop", {"stop_reason": 2}, ("end_turn", None)),
    ],
)
def test_stop_reason_mapping(
    finish: str, extra: dict[str, Any], expected: tuple[str, str | None]
) -> None:
    message = to_message(completion({"content": "Hi."}, finish, **extra), Translation({}, ("END",)))

    assert (message["stop_reason"], message["stop_sequence"]) == expected


def test_tool_calls_with_stop_finish_are_tool_use() -> None:
    calls = [
        {"id": None, "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{not json"}},
    ]
    message = to_message(completion({"content": None, "tool_calls": calls}), Translation({}))

    assert message["stop_reason"] == "tool_use"
    first, second = message["content"]
    assert first["type"] == "tool_use"
    assert first["id"].startswith("toolu_")
    assert first["input"] == {"a": 1}
    assert second == {"type": "tool_use", "id": "call_2", "name": "g", "input": {}}


def openai_event(delta: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    """Encode one OpenAI chunk event for choice 0, or the usage chunk when ``delta`` is None."""
    head: dict[str, Any] = {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "model": "fake-edge",
    }
    if delta is None:
        chunk = {**head, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}}
    else:
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def tool_call_delta(index: int, arguments: str, **fields: str) -> dict[str, Any]:
    """Return a delta with one tool-call piece; ``fields`` may set ``id`` and ``name``."""
    function = {"arguments": arguments} | ({"name": fields["name"]} if "name" in fields else {})
    call = {"index": index, "function": function} | ({"id": fields["id"]} if "id" in fields else {})
    return {"tool_calls": [call]}


def test_stream_translator_tool_calls_then_usage() -> None:
    translator = StreamTranslator(Translation({}))
    raw = b"".join(
        [
            openai_event({"role": "assistant", "content": "Let me look."}),
            openai_event(tool_call_delta(0, '{"a"', id="call_1", name="f")),
            openai_event(tool_call_delta(0, ": 1}")),
            openai_event(tool_call_delta(1, "{}", id="call_2", name="g")),
            openai_event({}, finish="tool_calls"),
            openai_event(None),
            b"data: [DONE]\n\n",
        ]
    )

    events = sse_events(translator.translate(raw).decode().split("\n"))

    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[4][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "f",
        "input": {},
    }
    assert [data["index"] for name, data in events if name == "content_block_start"] == [0, 1, 2]
    partial = "".join(
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["index"] == 1
    )
    assert partial == '{"a": 1}'
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 5, "output_tokens": 9},
    }


def test_stream_translator_reports_cache_reads_apart() -> None:
    translator = StreamTranslator(Translation({}))
    usage = {"prompt_tokens": 5, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 4}}
    usage_chunk = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "model": "fake-edge",
                   "choices": [], "usage": usage}
    raw = b"".join(
        [
            openai_event({"role": "assistant", "content": "Hi."}),
            openai_event({}, finish="stop"),
            b"data: " + orjson.dumps(usage_chunk) + b"\n\n",
            b"data: [DONE]\n\n",
        ]
    )

    events = sse_events(translator.translate(raw).decode().split("\n"))

    assert events[-2][1]["usage"] == {
        "input_tokens": 1,
        "output_tokens": 9,
        "cache_read_input_tokens": 4,
    }


def test_stream_translator_timeout_error_event() -> None:
    translator = StreamTranslator(Translation({}))
    error = {
        "error": {
            "message": "The model stopped answering.",
            "type": "api_error",
            "code": "upstream_timeout",
        }
    }

    events = sse_events(
        translator.translate(b"data: " + orjson.dumps(error) + b"\n\n").decode().split("\n")
    )

    assert events == [
        (
            "error",
            {
                "type": "error",
                "error": {"type": "timeout_error", "message": "The model stopped answering."},
            },
        )
    ]


# Fuzzing --------------------------------------------------------------------------------------


def test_generated_requests_never_get_5xx(live: LiveStack) -> None:
    schemathesis = pytest.importorskip(
        "schemathesis", reason="schemathesis is in the test extra: pip install -e '.[test]'"
    )
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{live.root_url}/openapi.json")
    operation = schema["/v1/messages"]["POST"]

    for mode in ("positive", "negative"):

        @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call()
            assert response.status_code < 500, response.text[:300]
            if response.status_code >= 400:
                body = response.json()
                assert body["type"] == "error"
                assert set(body["error"]) == {"type", "message"}

        check()


# Token counting ------------------------------------------------------------------------------


def test_count_tokens_with_official_client(live: LiveStack) -> None:
    client = live.client()
    counted = client.messages.count_tokens(model="auto", messages=MESSAGES)
    with_system = client.messages.count_tokens(
        model="auto", messages=MESSAGES, system="Answer in French."
    )
    with_tools = client.messages.count_tokens(model="auto", messages=MESSAGES, tools=[WEATHER_TOOL])

    assert counted.input_tokens > 0
    assert with_system.input_tokens > counted.input_tokens
    assert with_tools.input_tokens > counted.input_tokens
    for fake in live.fakes.values():
        assert fake.requests == []


def test_count_tokens_unknown_model_raises_not_found(live: LiveStack) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        live.client().messages.count_tokens(model="claude-9", messages=MESSAGES)

    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": UNKNOWN_MODEL_MESSAGE},
    }


def test_count_tokens_invalid_body_is_400(live: LiveStack) -> None:
    response = httpx.post(
        f"{live.root_url}/v1/messages/count_tokens",
        json={"model": "auto", "messages": []},
        headers={"x-api-key": new_api_key(), "anthropic-version": "2023-06-01"},
        timeout=15,
    )

    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_wrong_method_uses_anthropic_shape(live: LiveStack) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = httpx.get(f"{live.root_url}{path}", timeout=15)

        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json() == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": f"GET is not supported on {path}. Use POST.",
            },
        }


def test_compressed_body_is_invalid_request(live: LiveStack) -> None:
    response = httpx.post(
        f"{live.root_url}/v1/messages",
        content=b"\x1f\x8b\x08\x00",
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json",
                 "x-api-key": new_api_key()},
        timeout=15,
    )

    assert response.status_code == 415
    assert response.json()["error"]["type"] == "invalid_request_error"
