"""``POST /v1/responses``: the official ``openai`` client against a live gateway, the
in-process app for outcome records and faults, and the translation functions on their own."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from pydantic import BaseModel

from router.api.responses_format import CHAT_PARAMETERS, Translation, to_chat_body
from router.api.responses_output import to_response
from router.api.responses_stream import StreamTranslator
from router.api.translated import rename_parameters
from router.app import create_app
from router.errors import InvalidRequest
from tests.gateway.conftest import (
    INTERNAL_ERROR_MESSAGE,
    FailingScorer,
    Gateway,
    GatewayKit,
    LiveGateway,
    StubScorer,
    new_api_key,
    read_file_records,
    tenant_of_key,
)
from tests.gateway.live_stack import OpenAIStack, reset_live_stack, run_live_stack, sse_events
from tests.support.recorded import SCRIPTED_ANSWER
from tests.support.scenario import Scenario, ToolCall

PROMPT = "Say hello in one short sentence."
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": None,
}
CHAT_WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": WEATHER_TOOL["parameters"],
    },
}
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_END_EVENTS = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


class Weather(BaseModel):
    city: str
    degrees: int


class LiveStack(OpenAIStack):
    path = "/responses"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    yield from run_live_stack(tmp_path_factory, "responses-client", LiveStack)


@pytest.fixture(autouse=True)
def reset_fakes(request: pytest.FixtureRequest) -> None:
    reset_live_stack(request)


def stream_raw(live: LiveStack, body: dict[str, Any]) -> tuple[httpx.Headers, list[str]]:
    headers = {"Authorization": f"Bearer {new_api_key()}"}
    with httpx.stream("POST", live.url, json=body, headers=headers, timeout=15) as response:
        return response.headers, list(response.iter_lines())


def event_types(events: list[Any]) -> list[str]:
    return [event.type for event in events]


# The official client ------------------------------------------------------------------------


def test_plain_text_response(live: LiveStack) -> None:
    raw = live.client().responses.with_raw_response.create(model="auto", input=PROMPT)
    response = raw.parse()

    assert raw.headers["x-tierwise-tier"] == "edge"
    assert raw.headers["x-tierwise-model"] == "edge-small"
    assert raw.headers["x-tierwise-cache"] == "miss"
    assert float(raw.headers["x-tierwise-cost-usd"]) > 0
    assert raw.headers["x-request-id"].startswith("req-")
    assert raw.headers["content-type"] == "application/json"
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.incomplete_details is None
    assert response.error is None
    assert response.model == "fake-edge"
    assert [item.type for item in response.output] == ["message"]
    message = response.output[0]
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.status == "completed"
    assert message.id.startswith("msg_")
    assert response.output_text == SCRIPTED_ANSWER
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_request_reaches_upstream_as_chat_body(live: LiveStack) -> None:
    response = live.client().responses.create(
        model="auto",
        input=PROMPT,
        instructions="Be brief.",
        temperature=0.5,
        top_p=0.9,
        max_output_tokens=256,
        user="user-7",
        metadata={"ticket": "T-1"},
        store=True,
        parallel_tool_calls=False,
        extra_body={"seed": 7},
    )

    received = live.fakes["edge"].requests[0].body
    assert received["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": PROMPT},
    ]
    assert received["model"] == "fake-edge"
    assert received["max_tokens"] == 256
    assert received["temperature"] == 0.5
    assert received["top_p"] == 0.9
    assert received["user"] == "user-7"
    assert received["parallel_tool_calls"] is False
    assert received["seed"] == 7
    assert "metadata" not in received
    assert "store" not in received
    assert "input" not in received
    assert "instructions" not in received
    assert "stream" not in received
    assert response.metadata == {"ticket": "T-1"}
    assert response.instructions == "Be brief."
    assert response.temperature == 0.5
    assert response.max_output_tokens == 256
    assert response.parallel_tool_calls is False
    assert response.model_extra is not None
    assert response.model_extra["store"] is False


def test_input_items_keep_roles_and_parts(live: LiveStack) -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    live.client().responses.create(
        model="auto",
        input=[
            {"role": "developer", "content": "Answer in English."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": image, "detail": "low"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "A dot.", "annotations": []}],
            },
            {"role": "user", "content": [{"type": "input_text", "text": "Sure?"}]},
        ],
    )

    assert live.fakes["edge"].requests[0].body["messages"] == [
        {"role": "developer", "content": "Answer in English."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
            ],
        },
        {"role": "assistant", "content": "A dot."},
        {"role": "user", "content": "Sure?"},
    ]


def test_max_output_tokens_makes_incomplete(live: LiveStack) -> None:
    response = live.client().responses.create(model="auto", input=PROMPT, max_output_tokens=5)

    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"
    assert response.usage is not None
    assert response.usage.output_tokens == 5
    assert SCRIPTED_ANSWER.startswith(response.output_text)


def test_stream_events_assemble_text(live: LiveStack) -> None:
    stream = live.client().responses.create(model="auto", input=PROMPT, stream=True)
    events = list(stream)
    names = event_types(events)

    assert names[:4] == TEXT_EVENTS
    assert set(names[4:-4]) == {"response.output_text.delta"}
    assert names[-4:] == TEXT_END_EVENTS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == SCRIPTED_ANSWER
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == SCRIPTED_ANSWER
    assert final.response.status == "completed"
    assert final.response.id == events[0].response.id
    assert final.response.usage is not None
    assert final.response.usage.output_tokens > 0
    received = live.fakes["edge"].requests[0].body
    assert received["stream"] is True
    assert received["stream_options"] == {"include_usage": True}


def test_stream_helper_final_response(live: LiveStack) -> None:
    client = live.client()
    whole = client.responses.create(model="auto", input=PROMPT)
    with client.responses.stream(model="auto", input=PROMPT) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()

    assert "".join(deltas) == SCRIPTED_ANSWER
    assert final.output_text == SCRIPTED_ANSWER
    assert final.usage is not None
    assert whole.usage is not None
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_raw_stream_event_order(live: LiveStack) -> None:
    headers, lines = stream_raw(live, {"model": "auto", "input": PROMPT, "stream": True})
    events = sse_events(lines)
    names = [name for name, _ in events]

    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-tierwise-tier"] == "edge"
    assert headers["x-tierwise-cache"] == "miss"
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert names[:4] == TEXT_EVENTS
    assert set(names[4:-4]) == {"response.output_text.delta"}
    assert names[-4:] == TEXT_END_EVENTS
    created = events[0][1]["response"]
    assert created["status"] == "in_progress"
    assert created["output"] == []
    assert created["usage"] is None
    added = events[2][1]
    assert added["output_index"] == 0
    assert added["item"]["type"] == "message"
    assert added["item"]["status"] == "in_progress"
    assert added["item"]["content"] == []
    assert events[3][1]["part"] == {
        "type": "output_text",
        "text": "",
        "annotations": [],
        "logprobs": [],
    }
    item_id = added["item"]["id"]
    assert all(data["item_id"] == item_id for _, data in events[3:-2])
    assert events[-4][1]["text"] == SCRIPTED_ANSWER
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed"
    assert completed["output"][0]["id"] == item_id
    assert completed["output"][0]["content"][0]["text"] == SCRIPTED_ANSWER
    assert completed["usage"]["output_tokens"] > 0
    assert "[DONE]" not in "".join(lines)


def test_tool_round_trip(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(
        Scenario.tools(ToolCall("get_weather", '{"city": "Oslo"}', id="call_8"))
    )
    client = live.client()
    question = {"role": "user", "content": "What is the weather in Oslo?"}
    first = client.responses.create(
        model="auto", input=[question], tools=[WEATHER_TOOL], tool_choice="auto"
    )
    call = first.output[0]
    follow_up = client.responses.create(
        model="auto",
        input=[
            question,
            *first.output,
            {"type": "function_call_output", "call_id": "call_8", "output": "4 degrees"},
        ],
        tools=[WEATHER_TOOL],
    )

    assert first.status == "completed"
    assert [item.type for item in first.output] == ["function_call"]
    assert call.type == "function_call"
    assert call.call_id == "call_8"
    assert call.id is not None
    assert call.id.startswith("fc_")
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Oslo"}
    assert first.tools[0].type == "function"
    first_body, second_body = (request.body for request in live.fakes["edge"].requests)
    assert first_body["tools"] == [CHAT_WEATHER_TOOL]
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
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_8", "content": "4 degrees"},
    ]
    assert follow_up.output_text == SCRIPTED_ANSWER


def test_streamed_function_call(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(
        Scenario.tools(ToolCall("get_weather", '{"city": "Paris"}', id="call_9"))
    )
    with live.client().responses.stream(
        model="auto",
        input="Weather in Paris?",
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()

    names = event_types(events)
    assert names[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert names[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(deltas) == '{"city": "Paris"}'
    call = final.output[0]
    assert call.type == "function_call"
    assert call.call_id == "call_9"
    assert call.arguments == '{"city": "Paris"}'
    assert call.status == "completed"
    received = live.fakes["edge"].requests[0].body
    assert received["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_json_schema_format_parses(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario(text='{"city": "Oslo", "degrees": 4}'))
    response = live.client().responses.parse(
        model="auto", input="Weather in Oslo as JSON.", text_format=Weather
    )

    assert response.output_parsed == Weather(city="Oslo", degrees=4)
    received = live.fakes["edge"].requests[0].body
    assert received["response_format"]["type"] == "json_schema"
    assert received["response_format"]["json_schema"]["name"] == "Weather"
    assert received["response_format"]["json_schema"]["strict"] is True
    assert received["response_format"]["json_schema"]["schema"]["required"] == ["city", "degrees"]
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "json_schema"


def test_json_object_format(live: LiveStack) -> None:
    live.client().responses.create(
        model="auto", input="Reply in JSON.", text={"format": {"type": "json_object"}}
    )

    assert live.fakes["edge"].requests[0].body["response_format"] == {"type": "json_object"}


def test_cache_hit_on_repeat_temperature_zero(live: LiveStack) -> None:
    client = live.client()

    def ask() -> Any:
        return client.responses.with_raw_response.create(model="auto", input=PROMPT, temperature=0)

    first, second = ask(), ask()
    raw_stream = client.responses.with_raw_response.create(
        model="auto", input=PROMPT, temperature=0, stream=True
    )
    streamed = list(raw_stream.parse())[-1]
    chat = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": PROMPT}], temperature=0
    )

    assert first.headers["x-tierwise-cache"] == "miss"
    assert second.headers["x-tierwise-cache"] == "hit"
    assert raw_stream.headers["x-tierwise-cache"] == "hit"
    assert chat.headers["x-tierwise-cache"] == "hit"
    assert len(live.fakes["edge"].requests) == 1
    assert second.parse().output_text == first.parse().output_text
    assert second.parse().usage == first.parse().usage
    assert second.parse().id != first.parse().id
    assert streamed.type == "response.completed"
    assert streamed.response.output_text == SCRIPTED_ANSWER
    assert streamed.response.usage == first.parse().usage


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
    ],
)
def test_stateful_parameters_are_rejected(
    live: LiveStack, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().responses.create(model="auto", input=PROMPT, extra_body=fields)

    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.type == "invalid_request_error"
    assert f"The parameter '{param}' is not supported on /v1/responses" in caught.value.message
    assert live.fakes["edge"].requests == []


def test_builtin_tool_is_rejected(live: LiveStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().responses.create(model="auto", input=PROMPT, tools=[{"type": "web_search"}])

    assert caught.value.param == "tools[0].type"
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.body == {
        "message": (
            "The tool type 'web_search' at 'tools[0]' is not supported on /v1/responses. The "
            "gateway runs no built-in tools such as web_search or file_search, so define a "
            "tool of type 'function'."
        ),
        "type": "invalid_request_error",
        "param": "tools[0].type",
        "code": "unsupported_parameter",
    }


def test_errors_match_chat_completions(live: LiveStack) -> None:
    client = live.client()
    cases = [
        ({"model": "gpt-9"}, openai.NotFoundError),
        ({"model": "auto", "temperature": 3}, openai.BadRequestError),
        ({"model": "auto", "api_base": "http://127.0.0.1:9"}, openai.BadRequestError),
    ]
    for fields, error_class in cases:
        model = fields["model"]
        extra = {key: value for key, value in fields.items() if key != "model"}
        with pytest.raises(error_class) as from_chat:
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPT}], extra_body=extra
            )
        with pytest.raises(error_class) as from_responses:
            client.responses.create(model=model, input=PROMPT, extra_body=extra)

        assert from_responses.value.status_code == from_chat.value.status_code
        assert from_responses.value.body == from_chat.value.body
        assert from_responses.value.request_id is not None
    assert live.fakes["edge"].requests == []


def test_chat_parameter_names_counterpart(live: LiveStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().responses.create(model="auto", input=PROMPT, extra_body={"max_tokens": 9})

    assert caught.value.param == "max_tokens"
    assert caught.value.body["message"] == (
        "The parameter 'max_tokens' is a Chat Completions parameter. "
        "Use 'max_output_tokens' on /v1/responses."
    )


def test_upstream_failure_is_502(live: LiveStack) -> None:
    for fake in live.fakes.values():
        fake.enqueue(Scenario.http_error(503, "overloaded"))

    with pytest.raises(openai.InternalServerError) as caught:
        live.client().responses.create(model="auto", input=PROMPT)

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


def test_cut_stream_ends_with_failed_response(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.cut(after_events=3))
    stream = live.client().responses.create(model="auto", input=PROMPT, stream=True)
    events = list(stream)
    names = event_types(events)

    assert names[:4] == TEXT_EVENTS
    assert names[-2:] == ["error", "response.failed"]
    assert "response.completed" not in names
    error = events[-2]
    assert error.type == "error"
    assert error.code == "upstream_error"
    assert error.message == "The model's stream failed before the answer was complete."
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    assert failed.response.error is not None
    assert failed.response.error.code == "server_error"
    assert failed.response.output[0].status == "incomplete"
    assert failed.response.output_text != SCRIPTED_ANSWER
    assert [event.sequence_number for event in events] == list(range(len(events)))


def test_cut_stream_helper_has_no_final_response(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.cut(after_events=3))
    with live.client().responses.stream(model="auto", input=PROMPT) as stream:
        names = event_types(list(stream))
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()

    assert names[-1] == "response.failed"


def test_keepalives_pass_as_comments(live: LiveStack) -> None:
    live.fakes["edge"].enqueue(Scenario.pause(after_events=2, seconds=0.5))
    _, lines = stream_raw(live, {"model": "auto", "input": PROMPT, "stream": True})
    names = [name for name, _ in sse_events(lines)]

    assert lines.count(": keep-alive") >= 2
    assert names[0] == "response.created"
    assert names[-1] == "response.completed"


def test_wrong_method_is_openai_405(live: LiveStack) -> None:
    response = httpx.get(live.url, timeout=15)

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {
        "error": {
            "message": "GET is not supported on /v1/responses. Use POST.",
            "type": "invalid_request_error",
            "param": None,
            "code": "method_not_allowed",
        }
    }


# In process: outcome records, feedback, own faults -----------------------------------------


async def post_response(
    gateway: Gateway, body: dict[str, Any], api_key: str | None = None
) -> httpx.Response:
    key = api_key or gateway.api_key
    gateway.tenants.add(tenant_of_key(key))
    headers = {"Authorization": f"Bearer {key}"}
    return await gateway.client.post("/v1/responses", json=body, headers=headers)


async def test_outcome_record_and_feedback(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await post_response(gateway, {"model": "auto", "input": PROMPT})
        request_id = response.headers["x-request-id"]
        feedback = await gateway.client.post(
            "/v1/feedback",
            json={"request_id": request_id, "score": 0.5},
            headers={"Authorization": f"Bearer {gateway.api_key}"},
        )
        records = await gateway.records()
        metrics = await gateway.client.get("/metrics")

    assert response.status_code == 200
    assert feedback.status_code == 200
    assert [record["type"] for record in records] == ["request", "feedback"]
    record = records[0]
    assert record["request_id"] == request_id
    assert record["tenant"] == gateway.tenant
    assert record["requested_model"] == "auto"
    assert record["tier"] == "edge"
    assert record["model"] == "edge-small"
    assert record["status"] == 200
    assert record["stream"] is False
    assert record["tokens_in"] == response.json()["usage"]["input_tokens"]
    assert record["tokens_out"] == response.json()["usage"]["output_tokens"]
    assert record["scores"] == StubScorer().scores
    assert 'tier="edge"' in metrics.text


async def test_streamed_outcome_record(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await post_response(gateway, {"model": "auto", "input": PROMPT, "stream": True})
        records = await gateway.request_records()

    assert response.status_code == 200
    assert len(records) == 1
    assert records[0]["request_id"] == response.headers["x-request-id"]
    assert records[0]["stream"] is True
    assert records[0]["status"] == 200
    assert records[0]["tokens_out"] > 0


async def test_error_outcome_record(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await post_response(gateway, {"model": "gpt-9", "input": PROMPT})
        records = await gateway.request_records()

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert response.headers["x-request-id"] == records[0]["request_id"]
    assert records[0]["status"] == 404
    assert records[0]["error"] == "model_not_found"


async def test_invalid_body_outcome_record(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await post_response(gateway, {"model": "auto", "input": []})
        records = await gateway.request_records()

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"
    assert records[0]["api"] == "responses"
    assert records[0]["status"] == 400
    assert records[0]["error"] == "invalid_request"


async def test_number_input_gets_openai_error(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await post_response(gateway, {"model": "auto", "input": 5})

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "Invalid value for 'input': input must be a string or a list of input items.",
            "type": "invalid_request_error",
            "param": "input",
            "code": "invalid_request",
        }
    }


async def test_context_error_names_responses_fields(kit: GatewayKit) -> None:
    windows = {"edge": 1024, "mid": 1024, "frontier": 2048}
    async with kit.running(context_windows=windows) as gateway:
        response = await post_response(
            gateway, {"model": "auto", "input": "lorem " * 3000, "max_output_tokens": 16}
        )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input"
    assert "lower max_output_tokens" in error["message"]
    assert "max_tokens" not in error["message"]


def test_rename_parameters_keeps_prose() -> None:
    error = InvalidRequest(
        "Invalid value for 'messages[2].content': the messages need max_tokens.",
        param="messages[2].content",
    )

    rename_parameters(error, CHAT_PARAMETERS)

    assert error.param == "input"
    assert error.message == "Invalid value for 'input': the messages need max_output_tokens."
    assert str(error) == error.message


async def test_own_fault_is_fixed_500(kit: GatewayKit) -> None:
    async with kit.running(scorer=FailingScorer()) as gateway:
        response = await post_response(gateway, {"model": "auto", "input": PROMPT})
        records = await gateway.request_records()

    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": INTERNAL_ERROR_MESSAGE,
            "type": "api_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert FailingScorer.secret not in response.text
    assert response.headers["x-request-id"] == records[0]["request_id"]
    assert records[0]["status"] == 500


def test_client_disconnect_mid_stream_is_499(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.pause(after_events=3, seconds=1.0))
    kit.write_policy()
    app = create_app(kit.settings(), StubScorer())
    with LiveGateway(app) as gateway:
        path = gateway.runtime.outcomes.path
        body = {"model": "auto", "input": PROMPT, "stream": True}
        with httpx.stream("POST", f"{gateway.base_url}/responses", json=body, timeout=10) as response:
            first_lines = [line for _, line in zip(range(2), response.iter_lines())]

        records: list[dict[str, Any]] = []
        for _ in range(100):
            records = read_file_records(path)
            if records:
                break
            time.sleep(0.1)

    assert first_lines == ["event: response.created", first_lines[1]]
    assert first_lines[1].startswith("data: ")
    assert len(records) == 1
    assert records[0]["status"] == 499
    assert records[0]["error"] == "client_disconnected"
    assert records[0]["stream"] is True


async def test_store_prompts_keeps_translated_messages(kit: GatewayKit) -> None:
    async with kit.running(store_prompts=True) as gateway:
        await post_response(gateway, {"model": "auto", "input": PROMPT, "instructions": "Be brief."})
        records = await gateway.request_records()

    assert records[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": PROMPT},
    ]


# Request translation ----------------------------------------------------------------------


def translate(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "auto", "input": PROMPT} | fields
    return to_chat_body(body).body


def translation_error(**fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        translate(**fields)
    return caught.value


def test_calls_join_assistant_message() -> None:
    messages = translate(
        input=[
            {"role": "user", "content": "Chart?"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Drawing."}],
            },
            {"type": "function_call", "call_id": "c1", "name": "draw", "arguments": "{}"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
            {"type": "function_call", "call_id": "c2", "name": "lookup", "arguments": '{"q":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [
                    {"type": "input_text", "text": "line 1"},
                    {"type": "input_text", "text": "line 2"},
                ],
            },
            {"type": "function_call", "call_id": "c3", "name": "draw", "arguments": "{}"},
        ]
    )["messages"]

    assert messages == [
        {"role": "user", "content": "Chart?"},
        {
            "role": "assistant",
            "content": "Drawing.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "draw", "arguments": "{}"}},
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":1}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "tool", "tool_call_id": "c2", "content": "line 1\nline 2"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c3", "type": "function", "function": {"name": "draw", "arguments": "{}"}}
            ],
        },
    ]


def test_refusal_and_file_parts() -> None:
    messages = translate(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE",
                     "filename": "a.pdf"},
                ],
            },
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot."}]},
        ]
    )["messages"]

    assert messages == [
        {
            "role": "user",
            "content": [
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                }
            ],
        },
        {"role": "assistant", "content": "", "refusal": "I cannot."},
    ]


@pytest.mark.parametrize(
    ("input_file", "chat_file"),
    [
        ({"file_id": "file-1"}, {"file_id": "file-1"}),
        ({"file_id": "file-1", "filename": "a.pdf"}, {"file_id": "file-1", "filename": "a.pdf"}),
        ({"file_data": "data:application/pdf;base64,JVBE"}, {"file_data": "data:application/pdf;base64,JVBE"}),
        ({"file_id": "file-1", "file_url": None, "detail": "auto"}, {"file_id": "file-1"}),
        ({"file_id": "file-1", "detail": None, "file_data": None}, {"file_id": "file-1"}),
    ],
)
def test_input_file_becomes_file_part(input_file: dict[str, Any], chat_file: dict[str, Any]) -> None:
    content = [{"type": "input_text", "text": "Read it."}, {"type": "input_file", **input_file}]
    messages = translate(input=[{"role": "user", "content": content}])["messages"]

    assert messages == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Read it."}, {"type": "file", "file": chat_file}],
        }
    ]


def test_options_map_to_chat_names() -> None:
    body = translate(
        reasoning={"effort": "low", "summary": "auto"},
        text={"verbosity": "low", "format": {"type": "text"}},
        store=False,
        include=["message.output_text.logprobs"],
        truncation="auto",
        metadata={"k": "v"},
        stream_options={"include_obfuscation": False},
        service_tier="flex",
        max_tool_calls=3,
    )

    assert body == {
        "model": "auto",
        "messages": [{"role": "user", "content": PROMPT}],
        "reasoning_effort": "low",
        "verbosity": "low",
        "service_tier": "flex",
    }


def test_json_schema_format_translation() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = translate(
        text={
            "format": {
                "type": "json_schema",
                "name": "answer",
                "schema": schema,
                "description": "One field.",
                "strict": False,
            }
        }
    )

    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": schema,
            "description": "One field.",
            "strict": False,
        },
    }


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        (
            {"input": []},
            "input",
            "Invalid value for 'input': expected a string or at least one input item.",
        ),
        (
            {"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]},
            "input",
            "Invalid value for 'input': expected at least one item besides reasoning items.",
        ),
        (
            {"input": None},
            "input",
            "Invalid value for 'input': input must be a string or a list of input items.",
        ),
        (
            {"input": 5},
            "input",
            "Invalid value for 'input': input must be a string or a list of input items.",
        ),
        (
            {"input": [{"role": "user", "content": "Hi"}, "Hi"]},
            "input",
            (
                "Invalid value for 'input': input[1] must be an input item object such as "
                '{"role": "user", "content": "..."}, not a bare value.'
            ),
        ),
        (
            {"max_output_tokens": 0},
            "max_output_tokens",
            "Invalid value for 'max_output_tokens': Input should be greater than or equal to 1.",
        ),
        (
            {"temperature": "0.5"},
            "temperature",
            "Invalid value for 'temperature': Input should be a valid number.",
        ),
        (
            {"input": [{"role": "tool", "content": "x"}]},
            "input[0].role",
            (
                "Invalid value for 'input[0].role': expected 'user', 'system', 'developer' or "
                "'assistant'."
            ),
        ),
        (
            {"input": [{"type": "item_reference", "id": "msg_1"}]},
            "input[0].type",
            (
                "The input item type 'item_reference' at 'input[0]' is not supported on "
                "/v1/responses. Send message, function_call or function_call_output items."
            ),
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"text": "b"}]}]},
            "input[0].content[1].type",
            "Invalid value for 'input[0].content[1].type': each content part needs a string 'type'.",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}, "b"]}]},
            "input[0].content[1]",
            (
                "Invalid value for 'input[0].content[1]': expected a content part object such as "
                '{"type": "input_text", "text": "..."}.'
            ),
        ),
        (
            {"input": [{"role": "assistant", "content": [{"type": "output_text"}]}]},
            "input[0].content[0].text",
            "Invalid value for 'input[0].content[0].text': expected a string.",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].image_url",
            "Invalid value for 'input[0].content[0].image_url': expected a non-empty string.",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
            (
                "The parameter 'input[0].content[0].file_id' is not supported on /v1/responses: "
                "the gateway stores no files, so send the image as 'image_url' (a URL or a data "
                "URL)."
            ),
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "u"}]}]},
            "input[0].content[0].file_url",
            (
                "The parameter 'input[0].content[0].file_url' is not supported on /v1/responses: "
                "a chat file part has no URL and the gateway fetches no URLs, so send the file's "
                "content as 'file_data' or an uploaded file's 'file_id'."
            ),
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "filename": "a.pdf"}]}]},
            "input[0].content[0].file_data",
            (
                "Invalid value for 'input[0].content[0].file_data': an input_file part needs "
                "'file_data' (the file's content) or 'file_id' (an uploaded file)."
            ),
        ),
        (
            {"input": [{"role": "user", "content": [
                {"type": "input_file", "file_id": "f", "file_data": "data:application/pdf;base64,JVBE"}
            ]}]},
            "input[0].content[0].file_id",
            "Invalid value for 'input[0].content[0].file_id': send either 'file_id' or 'file_data', not both.",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": 5}]}]},
            "input[0].content[0].file_id",
            "Invalid value for 'input[0].content[0].file_id': expected a non-empty string.",
        ),
        (
            {"input": [{"role": "user", "content": [
                {"type": "input_file", "file_id": "f", "filename": ""}
            ]}]},
            "input[0].content[0].filename",
            "Invalid value for 'input[0].content[0].filename': expected a non-empty string.",
        ),
        (
            {"input": [{"role": "user", "content": [
                {"type": "input_file", "file_id": "http://169.254.169.254/latest"}
            ]}]},
            "input[0].content[0].file_id",
            (
                "Invalid value for 'input[0].content[0].file_id': a URL is not a file id, and the "
                "gateway fetches no URLs, so send the file's content as 'file_data'."
            ),
        ),
        (
            {"input": [{"role": "user", "content": [
                {"type": "input_file", "file_id": "f", "detail": "low"}
            ]}]},
            "input[0].content[0].detail",
            (
                "The parameter 'input[0].content[0].detail' is not supported on /v1/responses: a "
                "chat file part has no detail level, so leave it unset or 'auto'."
            ),
        ),
        (
            {"input": [{"role": "user", "content": [
                {"type": "input_file", "file_id": "f", "detail": "max"}
            ]}]},
            "input[0].content[0].detail",
            "Invalid value for 'input[0].content[0].detail': expected 'auto', 'low' or 'high'.",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_audio", "data": "x"}]}]},
            "input[0].content[0].type",
            (
                "The content part type 'input_audio' at 'input[0].content[0]' is not supported on "
                "/v1/responses. Send input_text, input_image or input_file parts."
            ),
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
            "input[0].arguments",
            (
                "Invalid value for 'input[0].arguments': expected the call's arguments as a JSON "
                "string."
            ),
        ),
        (
            {"input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
            "Invalid value for 'input[0].call_id': expected a non-empty string.",
        ),
        (
            {"tools": [{"type": "function", "name": "f", "parameters": "x"}]},
            "tools[0].parameters",
            "Invalid value for 'tools[0].parameters': expected a JSON object.",
        ),
        (
            {"tool_choice": {"type": "file_search"}},
            "tool_choice",
            (
                "The tool_choice type 'file_search' is not supported on /v1/responses. Send "
                "'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}."
            ),
        ),
        (
            {"tool_choice": "any"},
            "tool_choice",
            "Invalid value for 'tool_choice': expected 'auto', 'none', 'required' or a function.",
        ),
        (
            {"text": {"format": {"type": "json_schema", "schema": {}}}},
            "text.format",
            (
                "Invalid value for 'text.format': a format of type 'json_schema' needs 'name' and "
                "'schema'."
            ),
        ),
        (
            {"metadata": {f"k{index}": "v" for index in range(17)}},
            "metadata",
            "Invalid value for 'metadata': at most 16 key-value pairs are allowed.",
        ),
        (
            {"prompt": {"id": "pmpt_1"}},
            "prompt",
            (
                "The parameter 'prompt' is not supported on /v1/responses: the gateway has no "
                "stored prompts, so send the prompt's text in 'instructions' and 'input'."
            ),
        ),
        (
            {"messages": [{"role": "user", "content": "x"}]},
            "messages",
            (
                "The parameter 'messages' is a Chat Completions parameter. Use 'input' on "
                "/v1/responses."
            ),
        ),
        (
            {"n": 2},
            "n",
            (
                "The parameter 'n' is not supported on /v1/responses, which returns one output "
                "message per response. Send several requests instead."
            ),
        ),
    ],
)
def test_invalid_requests(fields: dict[str, Any], param: str, message: str) -> None:
    error = translation_error(**fields)

    assert error.param == param
    assert error.message == message
    assert error.status == 400


def test_image_file_id_unsupported_parameter() -> None:
    error = translation_error(
        input=[{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]
    )

    assert error.code == "unsupported_parameter"
    assert error.param == "input[0].content[0].file_id"


# Response translation ---------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "created": 1_700_000_000,
        "model": "fake-edge",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "total_tokens": 18,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }


def test_response_from_completion() -> None:
    translation = to_chat_body({"model": "auto", "input": PROMPT, "metadata": {"k": "v"}})
    response = to_response(completion({"content": "Hi."}), translation)

    assert response["id"].startswith("resp_")
    assert response["object"] == "response"
    assert response["created_at"] == 1_700_000_000
    assert response["status"] == "completed"
    assert response["incomplete_details"] is None
    assert response["model"] == "fake-edge"
    assert response["metadata"] == {"k": "v"}
    assert response["store"] is False
    assert response["tool_choice"] == "auto"
    assert response["tools"] == []
    assert response["text"] == {"format": {"type": "text"}}
    assert response["completed_at"] >= response["created_at"]
    item = response["output"][0]
    assert item["id"].startswith("msg_")
    assert {key: value for key, value in item.items() if key != "id"} == {
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Hi.", "annotations": [], "logprobs": []}],
    }
    assert response["usage"] == {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 18,
    }


def test_response_with_refusal_and_calls() -> None:
    calls = [
        {"id": None, "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{"}},
    ]
    response = to_response(
        completion({"content": None, "refusal": "No.", "tool_calls": calls}, "content_filter"),
        Translation({}),
    )

    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "content_filter"}
    assert "completed_at" not in response
    refusal, first, second = response["output"]
    assert refusal["content"] == [{"type": "refusal", "refusal": "No."}]
    assert refusal["status"] == "incomplete"
    assert first["type"] == "function_call"
    assert first["call_id"].startswith("call_")
    assert first["arguments"] == '{"a": 1}'
    assert second["call_id"] == "call_2"
    assert second["name"] == "g"
    assert second["arguments"] == "{"


def test_faulty_usage_counts_become_zero() -> None:
    faulty = completion({"content": "Hi."})
    faulty["usage"] = {"prompt_tokens": "11", "completion_tokens": -3}
    response = to_response(faulty, Translation({}))

    assert response["usage"]["input_tokens"] == 0
    assert response["usage"]["output_tokens"] == 0
    assert response["usage"]["total_tokens"] == 0


def openai_event(delta: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    """Encode one OpenAI chunk event for choice 0, or the usage chunk when ``delta`` is None."""
    head: dict[str, Any] = {"id": "chatcmpl-2", "object": "chat.completion.chunk",
                            "created": 1_700_000_000, "model": "fake-edge"}
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


def translated(translator: StreamTranslator, *raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    return sse_events(translator.translate(b"".join(raw)).decode().split("\n"))


def test_stream_translator_text_then_tool_calls() -> None:
    translator = StreamTranslator(Translation({}))
    events = translated(
        translator,
        openai_event({"role": "assistant", "content": "Let me look."}),
        openai_event(tool_call_delta(0, '{"a"', id="call_1", name="f")),
        openai_event(tool_call_delta(0, ": 1}")),
        openai_event(tool_call_delta(1, "{}", id="call_2", name="g")),
        openai_event({}, finish="tool_calls"),
        openai_event(None),
        b"data: [DONE]\n\n",
    )

    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert [data["output_index"] for name, data in events if name.endswith("item.added")] == [
        0,
        1,
        2,
    ]
    assert events[11][1]["arguments"] == '{"a": 1}'
    assert events[11][1]["name"] == "f"
    final = events[-1][1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call", "function_call"]
    assert [item["status"] for item in final["output"]] == ["completed"] * 3
    assert final["output"][1]["call_id"] == "call_1"
    assert final["output"][2]["arguments"] == "{}"
    assert final["usage"]["input_tokens"] == 5
    assert final["usage"]["output_tokens"] == 9
    assert final["created_at"] == 1_700_000_000


def test_stream_translator_length_is_incomplete() -> None:
    translator = StreamTranslator(Translation({}))
    events = translated(
        translator,
        openai_event({"content": "Cut"}),
        openai_event({}, finish="length"),
        openai_event(None),
        b"data: [DONE]\n\n",
    )

    name, data = events[-1]
    assert name == "response.incomplete"
    assert data["response"]["status"] == "incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert data["response"]["output"][0]["status"] == "incomplete"
    assert "completed_at" not in data["response"]


def test_stream_translator_refusal_part() -> None:
    translator = StreamTranslator(Translation({}))
    events = translated(
        translator,
        openai_event({"content": "Well."}),
        openai_event({"refusal": "I cannot."}),
        openai_event({}, finish="stop"),
        b"data: [DONE]\n\n",
    )

    names = [name for name, _ in events]
    assert names[names.index("response.refusal.delta") - 1] == "response.content_part.added"
    assert "response.refusal.done" in names
    content = events[-1][1]["response"]["output"][0]["content"]
    assert content == [
        {"type": "output_text", "text": "Well.", "annotations": [], "logprobs": []},
        {"type": "refusal", "refusal": "I cannot."},
    ]


def test_stream_translator_timeout_error() -> None:
    translator = StreamTranslator(Translation({}))
    error = {"error": {"message": "The model stopped answering.", "type": "api_error",
                       "param": None, "code": "upstream_timeout"}}
    events = translated(
        translator,
        openai_event({"content": "Half"}),
        b": keep-alive\n\n",
        b"data: " + orjson.dumps(error) + b"\n\n",
    )

    names = [name for name, _ in events]
    assert names[-2:] == ["error", "response.failed"]
    assert events[-2][1] == {
        "type": "error",
        "sequence_number": len(events) - 2,
        "code": "upstream_timeout",
        "message": "The model stopped answering.",
        "param": None,
    }
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "The model stopped answering."}
    assert failed["output"][0]["content"][0]["text"] == "Half"


def test_stream_translator_passes_keepalive() -> None:
    translator = StreamTranslator(Translation({}))

    assert translator.translate(b": keep-alive\n\n") == b": keep-alive\n\n"



def test_reasoning_content_becomes_reasoning_item() -> None:
    translation = to_chat_body({"model": "auto", "input": PROMPT})
    response = to_response(
        completion({"content": "Paris.", "reasoning_content": "The capital of France..."}),
        translation,
    )

    assert [item["type"] for item in response["output"]] == ["reasoning", "message"]
    item = response["output"][0]
    assert item["id"].startswith("rs_")
    assert item["status"] == "completed"
    assert item["summary"] == []
    assert item["content"] == [{"type": "reasoning_text", "text": "The capital of France..."}]


def test_stream_translator_reasoning_then_text() -> None:
    translator = StreamTranslator(Translation({}))
    events = translated(
        translator,
        openai_event({"role": "assistant", "reasoning_content": "Think"}),
        openai_event({"reasoning_content": "ing."}),
        openai_event({"content": "Done."}),
        openai_event({}, finish="stop"),
        b"data: [DONE]\n\n",
    )

    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[5][1]["text"] == "Thinking."
    assert events[5][1]["item_id"] == events[2][1]["item"]["id"]
    final = events[-1][1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["content"][0]["text"] == "Thinking."


def test_reasoning_items_reach_openai_client(live: LiveStack) -> None:
    client = live.client()
    live.fakes["edge"].enqueue(Scenario.with_reasoning("First, recall the question."))
    whole = client.responses.create(model="auto", input=PROMPT)
    live.fakes["edge"].enqueue(Scenario.with_reasoning("First, recall the question."))
    with client.responses.stream(model="auto", input=PROMPT) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()

    for response in (whole, final):
        reasoning = response.output[0]
        assert reasoning.type == "reasoning"
        assert reasoning.content is not None
        assert reasoning.content[0].text == "First, recall the question."
        assert response.output_text == SCRIPTED_ANSWER
    assert "response.reasoning_text.delta" in kinds
