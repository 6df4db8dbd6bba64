"""Streamed answers through the gateway, including upstream faults before and during a stream."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.gateway.conftest import Gateway, GatewayKit, SseBody, chat_body, parse_sse
from tests.support.recorded import SCRIPTED_ANSWER
from tests.support.scenario import Scenario, ToolCall

# About 240 tokens: at the fake's 4 tokens per chunk, a stream of about 60 events.
LONG_ANSWER = " ".join(f"word{i % 10}" for i in range(240))
STREAM_FAILED = {
    "error": {
        "message": "The model's stream failed before the answer was complete.",
        "type": "api_error",
        "param": None,
        "code": "upstream_error",
    }
}


async def stream(
    gateway: Gateway, body: dict[str, Any], **headers: str
) -> tuple[httpx.Response, SseBody]:
    response = await gateway.chat({**body, "stream": True}, headers=headers)
    return response, parse_sse(response.content)


def count_upstream_events(answer: str) -> int:
    """The number of data events (``[DONE]`` included) the fake streams for ``answer``."""
    from tests.support import tokens

    content_chunks = len(tokens.split_tokens(tokens.encode(answer), 4))
    return 1 + content_chunks + 1 + 1 + 1  # role, content, finish, usage, [DONE]


async def test_stream_relays_chunks_and_done(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response, sse = await stream(gateway, chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert sse.done
    assert sse.errors == []
    assert sse.text() == SCRIPTED_ANSWER
    assert sse.finish_reasons() == {0: "stop"}
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in sse.chunks)
    assert sse.chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len(records) == 1
    assert records[0]["stream"] is True
    assert records[0]["status"] == 200
    assert records[0]["tokens_out"] > 0
    assert records[0]["first_byte_ms"] is not None
    assert "api" not in records[0]


async def test_stream_usage_chunk_once_before_done(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        _, sse = await stream(gateway, chat_body(stream_options={"include_usage": True}))

    with_usage = [chunk for chunk in sse.chunks if chunk.get("usage")]
    assert len(with_usage) == 1
    assert with_usage[0] == sse.chunks[-1]
    assert with_usage[0]["choices"] == []
    assert with_usage[0]["object"] == "chat.completion.chunk"
    usage = with_usage[0]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] > 0
    assert sse.data[-1] == "[DONE]"
    assert sse.data[-2] != "[DONE]"
    # No other chunk carries a usage key, not even null.
    assert all("usage" not in chunk for chunk in sse.chunks[:-1])


async def test_stream_without_include_usage_has_no_usage(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        _, sse = await stream(gateway, chat_body())
        records = await gateway.request_records()

    assert sse.done
    assert all("usage" not in chunk for chunk in sse.chunks)
    assert all(chunk["choices"] for chunk in sse.chunks)
    # The gateway still asked the upstream for usage, so the outcome has real token counts.
    assert kit.fakes["edge"].requests[0].body["stream_options"] == {"include_usage": True}
    assert records[0]["tokens_in"] > 0


async def test_stream_headers_disable_buffering(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response, sse = await stream(gateway, chat_body(), **{"Accept-Encoding": "gzip, br"})

    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert response.headers["x-tierwise-cache"] == "miss"
    assert response.headers["x-tierwise-tier"] == "edge"
    assert sse.done


async def test_cut_stream_ends_with_error_event(kit: GatewayKit) -> None:
    total_events = count_upstream_events(LONG_ANSWER)
    assert total_events >= 60
    kit.fakes["edge"].enqueue(Scenario(text=LONG_ANSWER, cut_after_events=40))
    async with kit.running() as gateway:
        response, sse = await stream(gateway, chat_body(temperature=0))
        records = await gateway.request_records()
        retry, retry_sse = await stream(gateway, chat_body(temperature=0))

    # The status line went out before the cut, so the body must show that the answer is incomplete.
    assert response.status_code == 200
    assert not sse.done
    assert "[DONE]" not in sse.data
    # The fake aborts with a reset, which can drop events still in flight: at most 40 arrive.
    assert 1 <= len(sse.chunks) <= 40
    assert LONG_ANSWER.startswith(sse.text())
    assert len(sse.text()) < len(LONG_ANSWER)
    assert sse.errors == [STREAM_FAILED]
    assert sse.payloads[-1] == STREAM_FAILED
    assert sse.finish_reasons() == {}
    assert len(records) == 1
    assert records[0]["status"] == 502
    assert records[0]["error"] == "stream_connection"
    assert records[0]["stream"] is True
    # Nothing was cached: the retry went upstream again and completed.
    assert retry.headers["x-tierwise-cache"] == "miss"
    assert retry_sse.done
    assert len(kit.fakes["edge"].requests) == 2


async def test_finished_stream_without_done_is_complete(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario(omit_done=True))
    async with kit.running() as gateway:
        response, sse = await stream(
            gateway, chat_body(temperature=0, stream_options={"include_usage": True})
        )
        records = await gateway.request_records()
        again, again_sse = await stream(gateway, chat_body(temperature=0))

    assert response.status_code == 200
    assert sse.done
    assert sse.errors == []
    assert sse.text() == SCRIPTED_ANSWER
    assert sse.finish_reasons() == {0: "stop"}
    assert len(records) == 1
    assert records[0]["status"] == 200
    assert records[0]["error"] is None
    assert records[0]["tokens_out"] > 0
    # The whole answer was cached like any other.
    assert again.headers["x-tierwise-cache"] == "hit"
    assert again_sse.text() == SCRIPTED_ANSWER


async def test_unfinished_stream_without_done_fails(kit: GatewayKit) -> None:
    # A clean end of the body with no finish reason is a cut answer, not a whole one.
    cut_chunks = [
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "fake-edge",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Half an"},
                      "finish_reason": None}]},
    ]
    kit.fakes["edge"].enqueue(Scenario(chunks=tuple(cut_chunks), omit_done=True))
    async with kit.running() as gateway:
        response, sse = await stream(gateway, chat_body(temperature=0))
        records = await gateway.request_records()

    assert response.status_code == 200
    assert not sse.done
    assert sse.text() == "Half an"
    assert sse.errors == [STREAM_FAILED]
    assert records[0]["status"] == 502
    assert records[0]["error"] == "stream_connection"


async def test_stream_without_done_missing_choice_fails(kit: GatewayKit) -> None:
    # With n=2, a clean end after only choice 0 finished is a cut response, because choice 1
    # never arrived.
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "fake-edge"}
    one_choice = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "A"},
                              "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    kit.fakes["edge"].enqueue(Scenario(chunks=tuple(one_choice), omit_done=True))
    async with kit.running() as gateway:
        response, sse = await stream(gateway, chat_body(temperature=0, n=2))
        records = await gateway.request_records()
        retry, retry_sse = await stream(gateway, chat_body(temperature=0, n=2))

    assert response.status_code == 200
    assert not sse.done
    assert sse.errors == [STREAM_FAILED]
    assert records[0]["status"] == 502
    assert records[0]["error"] == "stream_connection"
    # The one-choice completion was not cached for requests with n=2.
    assert retry.headers["x-tierwise-cache"] == "miss"
    assert retry_sse.finish_reasons() == {0: "stop", 1: "stop"}


async def test_first_event_error_escalates_to_mid(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.stream_error(after_events=0))
    async with kit.running() as gateway:
        response, sse = await stream(gateway, chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert sse.done
    assert sse.errors == []
    assert sse.text() == SCRIPTED_ANSWER
    attempts = [(a["tier"], a["error"]) for a in records[0]["attempts"]]
    assert attempts == [("edge", "server"), ("mid", None)]


async def test_first_event_error_everywhere_gets_http_502(kit: GatewayKit) -> None:
    for fake in kit.fakes.values():
        fake.set_default(Scenario.stream_error(after_events=0))
    async with kit.running() as gateway:
        response, _ = await stream(gateway, chat_body())

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {
            "message": (
            "Every eligible deployment failed: edge-small (HTTP 500), mid-medium "
            "(HTTP 500), frontier-large (HTTP 500). Retry later, or report this "
            "response's x-request-id to the gateway's operators."
        ),
            "type": "api_error",
            "param": None,
            "code": "upstream_error",
        }
    }


async def test_later_error_event_reaches_client(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(
        Scenario.stream_error(after_events=4, message="upstream detail: do-not-leak")
    )
    async with kit.running() as gateway:
        response, sse = await stream(gateway, chat_body(temperature=0))
        records = await gateway.request_records()
        again = await gateway.chat(chat_body(temperature=0))

    assert response.status_code == 200
    assert not sse.done
    assert len(sse.chunks) == 4
    assert SCRIPTED_ANSWER.startswith(sse.text())
    assert sse.errors == [STREAM_FAILED]
    assert "do-not-leak" not in response.text
    assert records[0]["error"] == "stream_server"
    assert records[0]["status"] == 502
    # The partial answer was not cached.
    assert again.headers["x-tierwise-cache"] == "miss"
    assert again.json()["choices"][0]["message"]["content"] == SCRIPTED_ANSWER


async def test_too_long_stream_gets_json_400(kit: GatewayKit) -> None:
    prompt = "lorem " * 3000
    async with kit.running(
        context_windows={"edge": 1024, "mid": 1024, "frontier": 1024}
    ) as gateway:
        response, _ = await stream(gateway, chat_body(prompt))

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert response.json()["error"]["param"] == "messages"


async def test_silent_upstream_stream_escalates(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.hang())
    async with kit.running(timeout_s=0.5) as gateway:
        response, sse = await stream(gateway, chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert sse.done
    attempts = [(a["tier"], a["error"]) for a in records[0]["attempts"]]
    assert attempts == [("edge", "timeout"), ("mid", None)]


async def test_silent_upstream_json_escalates(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.hang())
    async with kit.running(timeout_s=0.5) as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    attempts = [(a["tier"], a["error"]) for a in records[0]["attempts"]]
    assert attempts == [("edge", "timeout"), ("mid", None)]


async def test_every_tier_silent_gets_504(kit: GatewayKit) -> None:
    for fake in kit.fakes.values():
        fake.set_default(Scenario.hang())
    expected = {
        "error": {
            "message": "Every eligible deployment timed out: edge-small, mid-medium, frontier-large. "
            "Retry later, or ask the gateway's operators to raise these deployments' timeout_s.",
            "type": "api_error",
            "param": None,
            "code": "upstream_timeout",
        }
    }
    async with kit.running(timeout_s=0.3) as gateway:
        streamed, _ = await stream(gateway, chat_body())
        plain = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert streamed.status_code == 504
    assert streamed.json() == expected
    assert plain.status_code == 504
    assert plain.json() == expected
    assert [r["status"] for r in records] == [504, 504]
    assert [r["error"] for r in records] == ["upstream_timeout", "upstream_timeout"]


async def test_stall_mid_stream_gets_timeout_event(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.pause(after_events=3, seconds=3.0))
    async with kit.running(timeout_s=0.5) as gateway:
        response, sse = await stream(gateway, chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    assert not sse.done
    assert len(sse.chunks) == 3
    assert sse.errors == [
        {
            "error": {
                "message": "The model stopped answering.",
                "type": "api_error",
                "param": None,
                "code": "upstream_timeout",
            }
        }
    ]
    assert records[0]["error"] == "stream_timeout"


async def test_pause_sends_keepalive_comments(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.pause(after_events=3, seconds=0.6))
    kit.write_policy(timeout_s=5.0)
    settings = kit.settings(keepalive_interval_s=0.1)
    async with kit.running(settings=settings) as gateway:
        response, sse = await stream(gateway, chat_body())

    assert response.status_code == 200
    assert sse.done
    assert sse.text() == SCRIPTED_ANSWER
    assert len(sse.comments) >= 2
    assert set(sse.comments) == {"keep-alive"}


async def test_n2_stream_has_both_indexes(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response, sse = await stream(
            gateway, chat_body(n=2, stream_options={"include_usage": True})
        )

    assert response.status_code == 200
    assert sse.done
    assert sse.finish_reasons() == {0: "stop", 1: "stop"}
    assert sse.text(0) == SCRIPTED_ANSWER
    assert sse.text(1) == SCRIPTED_ANSWER
    assert sum(1 for chunk in sse.chunks if chunk.get("usage")) == 1


async def test_streamed_tool_call_finishes_tool_calls(kit: GatewayKit) -> None:
    call = ToolCall("get_weather", '{"city": "Paris", "unit": "celsius"}', id="call_weather_1")
    kit.fakes["edge"].enqueue(Scenario.tools(call))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    async with kit.running() as gateway:
        response, sse = await stream(gateway, chat_body("Weather in Paris?", tools=tools))

    assert response.status_code == 200
    assert sse.done
    assert sse.finish_reasons() == {0: "tool_calls"}
    deltas = [
        call_delta
        for chunk in sse.chunks
        for choice in chunk["choices"]
        for call_delta in choice["delta"].get("tool_calls") or ()
    ]
    assert deltas[0]["id"] == "call_weather_1"
    assert deltas[0]["function"]["name"] == "get_weather"
    assert "".join(d["function"].get("arguments", "") for d in deltas) == call.arguments
    assert kit.fakes["edge"].requests[0].body["tools"] == tools


async def test_tool_result_turn_is_accepted(kit: GatewayKit) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_weather_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_weather_1", "content": '{"temp_c": 18}'},
    ]
    async with kit.running() as gateway:
        streamed, sse = await stream(gateway, {"model": "auto", "messages": messages})
        plain = await gateway.chat({"model": "auto", "messages": messages})

    assert streamed.status_code == 200
    assert sse.done
    assert plain.status_code == 200
    assert plain.json()["choices"][0]["finish_reason"] == "stop"
    assert kit.fakes["edge"].requests[0].body["messages"] == messages


async def test_reasoning_deltas_are_relayed(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.with_reasoning("First, consider the question."))
    async with kit.running() as gateway:
        _, sse = await stream(gateway, chat_body())

    assert sse.text(field_name="reasoning_content") == "First, consider the question."
    assert sse.text() == SCRIPTED_ANSWER
    assert sse.done


async def test_stream_error_log_omits_prompt(
    kit: GatewayKit, capfd: pytest.CaptureFixture[str]
) -> None:
    prompt = "Tell me about the project named zebra-quartz-7."
    kit.fakes["edge"].enqueue(Scenario.stream_error(after_events=3, message=f"bad input: {prompt}"))
    async with kit.running() as gateway:
        response, _ = await stream(gateway, chat_body(prompt))

    output = capfd.readouterr()
    lines = [line for line in (output.out + output.err).splitlines() if "upstream_failed" in line]
    assert response.status_code == 200
    assert len(lines) == 1
    assert "after_first_byte" in lines[0]
    assert "[prompt]" in lines[0]
    assert "zebra-quartz" not in output.out + output.err


async def test_cut_stream_logs_upstream_failure(
    kit: GatewayKit, capfd: pytest.CaptureFixture[str]
) -> None:
    kit.fakes["edge"].enqueue(Scenario(text=LONG_ANSWER, cut_after_events=40))
    async with kit.running() as gateway:
        response, _ = await stream(gateway, chat_body(temperature=0))

    output = capfd.readouterr()
    lines = [line for line in (output.out + output.err).splitlines() if "upstream_failed" in line]
    assert len(lines) == 1
    assert response.headers["x-request-id"] in lines[0]
    assert "after_first_byte" in lines[0]
