"""The response cache on a real Redis: only whole answers are stored, and a hit replays all of it.

An answer the cache keeps must be one that the same request could get from the upstream as
it is: every requested choice, each with a finish reason that ends an answer and some output.
A hit served in the other delivery form (a stream for a JSON answer, or the reverse) must
carry everything the upstream returned, so an answer with parts that one form cannot carry
is left to the upstream in that form.
"""

from __future__ import annotations

from typing import Any

from tests.gateway.conftest import GatewayKit, chat_body, parse_sse
from tests.support.scenario import Scenario

BASE = chat_body("What is the capital of France?", temperature=0)
STREAM = {**BASE, "stream": True}


def chunk(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    """Return one ``chat.completion.chunk`` for choice ``index``."""
    return {
        "id": "chatcmpl-attack",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fake-edge",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    """Return a chat completion with one choice that has ``message``."""
    return {
        "id": "chatcmpl-attack",
        "object": "chat.completion",
        "created": 1,
        "model": "fake-edge",
        "choices": [{"index": 0, "message": {"role": "assistant", **message},
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


async def test_streamed_content_filter_not_cached(redis_kit: GatewayKit) -> None:
    redis_kit.fakes["edge"].enqueue(Scenario.stream_of(
        chunk(role="assistant", content="Par"),
        chunk(finish="content_filter"),
    ))
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(STREAM)
        again = await gateway.chat(BASE)

    assert again.headers["x-tierwise-cache"] == "miss"
    assert again.json()["choices"][0]["finish_reason"] == "stop"
    assert len(redis_kit.fakes["edge"].requests) == 2


async def test_json_content_filter_not_cached(redis_kit: GatewayKit) -> None:
    redis_kit.fakes["edge"].enqueue(
        Scenario(body=completion({"content": "Par"}, finish="content_filter"))
    )
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(BASE)
        again = await gateway.chat(BASE)

    assert again.headers["x-tierwise-cache"] == "miss"
    assert len(redis_kit.fakes["edge"].requests) == 2


async def test_stream_missing_choice_not_cached(redis_kit: GatewayKit) -> None:
    # n=2, but the upstream ended the stream with [DONE] after only choice 0.
    redis_kit.fakes["edge"].enqueue(Scenario.stream_of(
        chunk(role="assistant", content="Paris."),
        chunk(finish="stop"),
    ))
    body = {**BASE, "n": 2}
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat({**body, "stream": True})
        again = await gateway.chat(body)

    assert again.headers["x-tierwise-cache"] == "miss"
    assert len(again.json()["choices"]) == 2
    assert len(redis_kit.fakes["edge"].requests) == 2


async def test_json_missing_choice_not_cached(redis_kit: GatewayKit) -> None:
    redis_kit.fakes["edge"].enqueue(Scenario(body=completion({"content": "Paris."})))
    body = {**BASE, "n": 2}
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(body)
        again = await gateway.chat(body)

    assert again.headers["x-tierwise-cache"] == "miss"
    assert len(again.json()["choices"]) == 2


async def test_json_empty_answer_not_cached(redis_kit: GatewayKit) -> None:
    redis_kit.fakes["edge"].enqueue(Scenario(body=completion({"content": ""})))
    async with redis_kit.running(use_redis=True) as gateway:
        empty = await gateway.chat(BASE)
        again = await gateway.chat(BASE)

    assert empty.json()["choices"][0]["message"]["content"] == ""
    assert again.headers["x-tierwise-cache"] == "miss"
    assert again.json()["choices"][0]["message"]["content"]


async def test_json_null_answer_not_cached(redis_kit: GatewayKit) -> None:
    redis_kit.fakes["edge"].enqueue(
        Scenario(body=completion({"content": None}, finish="length"))
    )
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(BASE)
        again = await gateway.chat(BASE)

    assert again.headers["x-tierwise-cache"] == "miss"


async def test_streamed_empty_answer_not_cached(redis_kit: GatewayKit) -> None:
    redis_kit.fakes["edge"].enqueue(Scenario.stream_of(
        chunk(role="assistant", content=""),
        chunk(finish="stop"),
    ))
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(STREAM)
        again = await gateway.chat(BASE)

    assert again.headers["x-tierwise-cache"] == "miss"
    assert again.json()["choices"][0]["message"]["content"]


async def test_streamed_audio_not_cached_as_empty(redis_kit: GatewayKit) -> None:
    # Audio output streams as delta.audio, which the assembled completion would drop.
    audio = {"id": "audio_1", "data": "UklGRg==", "transcript": "Paris.", "expires_at": 2}
    redis_kit.fakes["edge"].enqueue(Scenario.stream_of(
        chunk(role="assistant", audio=audio),
        chunk(finish="stop"),
    ))
    body = {**BASE, "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat({**body, "stream": True})
        again = await gateway.chat(body)

    assert again.headers["x-tierwise-cache"] == "miss"


async def test_streamed_function_call_not_cached_as_empty(redis_kit: GatewayKit) -> None:
    # The deprecated ``functions`` parameter streams its call as delta.function_call.
    redis_kit.fakes["edge"].enqueue(Scenario.stream_of(
        chunk(role="assistant", content=None,
              function_call={"name": "get_weather", "arguments": '{"city": "Paris"}'}),
        chunk(finish="function_call"),
    ))
    functions = [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    body = {**BASE, "functions": functions}
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat({**body, "stream": True})
        again = await gateway.chat(body)

    assert again.headers["x-tierwise-cache"] == "miss"


async def test_stream_hit_keeps_audio_answer(redis_kit: GatewayKit) -> None:
    # A JSON answer whose audio the replayed chunks cannot carry is not replayed as a stream.
    audio = {"id": "audio_1", "data": "UklGRg==", "transcript": "Paris.", "expires_at": 2}
    redis_kit.fakes["edge"].enqueue(Scenario(body=completion({"content": None, "audio": audio})))
    body = {**BASE, "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}
    async with redis_kit.running(use_redis=True) as gateway:
        first = await gateway.chat(body)
        json_hit = await gateway.chat(body)
        streamed = await gateway.chat({**body, "stream": True})

    assert first.json()["choices"][0]["message"]["audio"] == audio
    assert json_hit.headers["x-tierwise-cache"] == "hit"
    assert json_hit.json()["choices"][0]["message"]["audio"] == audio
    assert streamed.headers["x-tierwise-cache"] == "miss"
    assert parse_sse(streamed.content).done


async def test_stream_hit_keeps_annotations(redis_kit: GatewayKit) -> None:
    annotations = [{"type": "url_citation", "url_citation": {
        "url": "https://example.com/paris", "title": "Paris", "start_index": 0, "end_index": 5}}]
    redis_kit.fakes["edge"].enqueue(
        Scenario(body=completion({"content": "Paris.", "annotations": annotations}))
    )
    body = {**BASE, "web_search_options": {}}
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(body)
        streamed = await gateway.chat({**body, "stream": True})

    assert streamed.headers["x-tierwise-cache"] == "miss"


async def test_stream_hit_of_plain_json_answer(redis_kit: GatewayKit) -> None:
    # OpenAI's JSON answers carry null and empty fields that a stream leaves out, and these
    # do not stop a replay.
    redis_kit.fakes["edge"].enqueue(Scenario(body=completion(
        {"content": "Paris.", "refusal": None, "annotations": [], "audio": None,
         "function_call": None, "tool_calls": []}
    )))
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(BASE)
        streamed = await gateway.chat(STREAM)

    assert streamed.headers["x-tierwise-cache"] == "hit"
    assert parse_sse(streamed.content).text() == "Paris."


async def test_memory_cache_keeps_no_content_filter_stop(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.stream_of(
        chunk(role="assistant", content="Par"),
        chunk(finish="content_filter"),
    ))
    async with kit.running() as gateway:
        assert gateway.runtime.cache.backend == "memory"
        await gateway.chat(STREAM)
        again = await gateway.chat(BASE)

    assert again.headers["x-tierwise-cache"] == "miss"
    assert len(kit.fakes["edge"].requests) == 2


async def test_streamed_reasoning_field_is_cached(redis_kit: GatewayKit) -> None:
    # OpenRouter streams the model's reasoning as ``reasoning``, not ``reasoning_content``.
    redis_kit.fakes["edge"].enqueue(Scenario.stream_of(
        chunk(role="assistant", reasoning="The capital "),
        chunk(reasoning="is Paris."),
        chunk(content="Paris."),
        chunk(finish="stop"),
    ))
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(STREAM)
        again = await gateway.chat(BASE)

    assert again.headers["x-tierwise-cache"] == "hit"
    message = again.json()["choices"][0]["message"]
    assert message["content"] == "Paris."
    assert message["reasoning"] == "The capital is Paris."
    assert len(redis_kit.fakes["edge"].requests) == 1


async def test_json_reasoning_field_replays_as_stream(redis_kit: GatewayKit) -> None:
    redis_kit.fakes["edge"].enqueue(Scenario(body=completion(
        {"content": "Paris.", "reasoning": "The capital is Paris."})))
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(BASE)
        streamed = await gateway.chat(STREAM)

    assert streamed.headers["x-tierwise-cache"] == "hit"
    deltas = [choice["delta"] for payload in parse_sse(streamed.content).payloads
              for choice in payload["choices"]]
    assert "".join(delta.get("reasoning", "") for delta in deltas) == "The capital is Paris."
    assert "".join(delta.get("content", "") for delta in deltas) == "Paris."
    assert len(redis_kit.fakes["edge"].requests) == 1
