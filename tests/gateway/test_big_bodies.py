"""Bodies above OFFLOAD_BODY_BYTES are parsed, validated and routed in a worker thread.

Each case is sent twice, once with the threshold above the body's size (the inline path)
and once with it at 0 (the thread path). Both must give the same status, the same
response body and the same upstream request.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import orjson
import pytest

from router.api import admission, chat, embeddings, messages, streaming
from router.routing import tokens
from tests.gateway.conftest import GatewayKit, StubScorer
from tests.support.scenario import Scenario

MODULES_WITH_THRESHOLD = (admission, chat, embeddings, messages)
EDGE_SCORER = StubScorer(edge=0.99, mid=0.99, frontier=0.99)


class CountingExecutor(ThreadPoolExecutor):
    """A one-thread executor that counts the calls submitted to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def _many_messages(count: int, last: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    turns = [{"role": "user", "content": f"message {index}"} for index in range(count)]
    return turns + ([last] if last is not None else [])


def _chat(**extra: Any) -> bytes:
    return orjson.dumps({"model": "auto", "temperature": 0, "messages": _many_messages(1000),
                         **extra})


def _anthropic(**extra: Any) -> bytes:
    turns = [{"role": "user" if index % 2 == 0 else "assistant", "content": f"turn {index}"}
             for index in range(1001)]
    return orjson.dumps({"model": "auto", "max_tokens": 16, "messages": turns, **extra})


def _nested(levels: int) -> bytes:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return orjson.dumps({"model": "auto", "messages": _many_messages(1000), "deep": value})


CASES: dict[str, tuple[str, bytes]] = {
    "chat valid": ("/v1/chat/completions", _chat()),
    "chat tools and stop": ("/v1/chat/completions", _chat(
        tools=[{"type": "function", "function": {"name": f"f{index}"}} for index in range(300)],
        stop=["END"], metadata={"team": "a"})),
    "chat invalid last message": ("/v1/chat/completions", orjson.dumps(
        {"model": "auto", "messages": _many_messages(1000, {"role": "user"})})),
    "chat invalid content part": ("/v1/chat/completions", orjson.dumps(
        {"model": "auto", "messages": _many_messages(
            1000, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "video"}]})})),
    "chat forbidden parameter": ("/v1/chat/completions", _chat(api_base="http://127.0.0.1:1")),
    "chat unknown model": ("/v1/chat/completions", orjson.dumps(
        {"model": "no-such-model", "messages": _many_messages(1000)})),
    "chat too deep": ("/v1/chat/completions", _nested(admission.MAX_JSON_DEPTH + 5)),
    "chat invalid json": ("/v1/chat/completions", _chat()[:-2]),
    "chat not an object": ("/v1/chat/completions", orjson.dumps(_many_messages(1000))),
    "messages valid": ("/v1/messages", _anthropic()),
    "messages invalid": ("/v1/messages", _anthropic(top_k="many")),
    "count tokens": ("/v1/messages/count_tokens", _anthropic()),
    "count tokens invalid": ("/v1/messages/count_tokens", _anthropic(model=7)),
    "responses valid": ("/v1/responses", orjson.dumps(
        {"model": "auto", "input": _many_messages(1000)})),
    "responses invalid": ("/v1/responses", orjson.dumps(
        {"model": "auto", "input": _many_messages(1000, {"role": "user", "content": 5})})),
    "embeddings too many inputs": ("/v1/embeddings", orjson.dumps(
        {"model": "auto", "input": ["text"] * 2049 * 4})),
    "embeddings invalid token": ("/v1/embeddings", orjson.dumps(
        {"model": "auto", "input": [[1, 2, 3]] * 4000 + [[1, -2]]})),
    "embeddings unknown model": ("/v1/embeddings", orjson.dumps(
        {"model": "no-such-model", "input": ["text " * 50] * 200})),
}


async def _send(kit: GatewayKit, monkeypatch: pytest.MonkeyPatch, path: str, raw: bytes,
                threshold: int) -> tuple[int, Any, list[Any], int]:
    """Send ``raw`` with the offload threshold at ``threshold`` bytes.

    Returns the status, the response body, the bodies the upstreams received and the number
    of calls that ran in the parsing thread.
    """
    for module in MODULES_WITH_THRESHOLD:
        monkeypatch.setattr(module, "OFFLOAD_BODY_BYTES", threshold)
    executor = CountingExecutor()
    monkeypatch.setattr(admission, "_PARSE_EXECUTOR", executor)
    for fake in kit.fakes.values():
        fake.clear_requests()
    try:
        async with kit.running(scorer=EDGE_SCORER) as gateway:
            response = await gateway.client.post(
                path, content=raw,
                headers={"Authorization": "Bearer big-body-key", "Content-Type": "application/json"},
            )
    finally:
        executor.shutdown()
    upstream = [request.body for fake in kit.fakes.values() for request in fake.requests]
    return response.status_code, _comparable(response.json()), upstream, executor.submitted


def _comparable(payload: Any) -> Any:
    """Drop the response fields that differ between any two requests: ids and times."""
    if isinstance(payload, dict):
        return {key: _comparable(value) for key, value in payload.items()
                if key not in ("id", "created", "created_at", "completed_at")}
    if isinstance(payload, list):
        return [_comparable(item) for item in payload]
    return payload


@pytest.mark.parametrize("case", list(CASES))
async def test_thread_path_matches_inline_path(
    kit: GatewayKit, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    path, raw = CASES[case]
    assert len(raw) > 16 * 1024

    inline_status, inline_body, inline_upstream, inline_calls = await _send(
        kit, monkeypatch, path, raw, threshold=len(raw) + 1)
    thread_status, thread_body, thread_upstream, thread_calls = await _send(
        kit, monkeypatch, path, raw, threshold=0)

    assert inline_calls == 0
    assert thread_calls >= 1
    assert thread_status == inline_status
    assert thread_body == inline_body
    assert thread_upstream == inline_upstream


async def test_valid_cases_reach_upstream(kit: GatewayKit, monkeypatch: pytest.MonkeyPatch) -> None:
    for case in ("chat valid", "messages valid", "responses valid"):
        path, raw = CASES[case]
        status, _, upstream, _ = await _send(kit, monkeypatch, path, raw, threshold=0)
        assert status == 200, case
        assert len(upstream) == 1, case


async def test_invalid_cases_name_the_field(
    kit: GatewayKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, raw = CASES["chat invalid last message"]
    status, body, upstream, _ = await _send(kit, monkeypatch, path, raw, threshold=0)
    assert status == 400
    assert body["error"]["param"] == "messages[1000].content"
    assert upstream == []


async def test_parsing_thread_pauses_garbage_collector() -> None:
    def collector_enabled() -> bool:
        return gc.isenabled()

    def fail() -> None:
        raise ValueError("parse failed")

    assert gc.isenabled()
    assert await admission.run_off_loop(collector_enabled) is False
    assert gc.isenabled()
    with pytest.raises(ValueError, match="parse failed"):
        await admission.run_off_loop(fail)
    assert gc.isenabled()


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_estimate_runs_in_thread(
    kit: GatewayKit, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    # Without usage from the upstream (llama.cpp streams none), the gateway counts the
    # prompt's tokens itself, which takes as long as the classification of a big body.
    counted_in: list[str] = []

    def count_prompt_tokens(messages: list[Any], fits_below: int) -> int:
        counted_in.append(threading.current_thread().name)
        return tokens.count_prompt_tokens(messages, fits_below)

    monkeypatch.setattr(streaming, "count_prompt_tokens", count_prompt_tokens)
    for module in MODULES_WITH_THRESHOLD:
        monkeypatch.setattr(module, "OFFLOAD_BODY_BYTES", 0)
    kit.fakes["edge"].set_default(Scenario(usage={}, ignore_include_usage=True))
    body = {"model": "auto", "messages": _many_messages(3), "stream": stream}
    async with kit.running(scorer=EDGE_SCORER, cache_enabled=False) as gateway:
        response = await gateway.chat(body)
        records = await gateway.request_records()

    assert response.status_code == 200
    assert records[0]["tokens_in"] > 0
    assert len(counted_in) == 1
    assert counted_in[0].startswith("tierwise-parse")
