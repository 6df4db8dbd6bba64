"""RelayResponse under uvicorn: headers leave with the first part, and [DONE] ends the body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.api.streaming import RelayResponse
from router.http_protocol import CoalescingTransport
from router.upstream.sse import DONE
from tests.unit.test_http_protocol import RecordingTransport

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
EVENT = b'data: {"n": 1}\n\n'


class FakeCycle:
    """The parts of uvicorn's request cycle that RelayResponse reads."""

    def __init__(self, transport: Any) -> None:
        self.disconnected = False
        self.transport = transport

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.disconnect"}


def body_of(parts: list[bytes], events: list[str]) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        try:
            for part in parts:
                events.append("part ready")
                yield part
        finally:
            events.append("body closed")

    return body()


async def relay(response: RelayResponse, cycle: FakeCycle, events: list[str]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        events.append(message["type"])

    await response(SCOPE, cycle.receive, send)
    return sent


async def test_headers_wait_for_first_part() -> None:
    events: list[str] = []
    response = RelayResponse(body_of([EVENT, DONE], events), media_type="text/event-stream")

    await relay(response, FakeCycle(RecordingTransport()), events)

    assert events[:2] == ["part ready", "http.response.start"]


async def test_done_part_ends_the_body() -> None:
    events: list[str] = []
    response = RelayResponse(body_of([EVENT, DONE], events), media_type="text/event-stream")

    sent = await relay(response, FakeCycle(RecordingTransport()), events)

    bodies = [(m["body"], m["more_body"]) for m in sent if m["type"] == "http.response.body"]
    assert bodies == [(EVENT, True), (DONE, False)]
    # The body's clean-up after [DONE] (the outcome record in the relays) still ran.
    assert events[-1] == "body closed"


async def test_done_part_is_flushed_at_once() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    events: list[str] = []

    async def body() -> AsyncIterator[bytes]:
        yield EVENT
        yield DONE
        # Runs before the body's end: the [DONE] write must already have left.
        events.append(f"writes after done: {len(raw.writes)}")

    cycle = FakeCycle(transport)

    async def send(message: dict[str, Any]) -> None:
        transport.write(message.get("body", b"HEAD"))

    response = RelayResponse(body(), media_type="text/event-stream")
    await response(SCOPE, cycle.receive, send)

    assert events == ["writes after done: 2"]
    assert raw.writes == [b"HEAD" + EVENT, DONE]


async def test_body_without_final_suffix_gets_empty_end() -> None:
    events: list[str] = []
    response = RelayResponse(body_of([EVENT, DONE], events), media_type="text/event-stream")
    response.final_suffix = None

    sent = await relay(response, FakeCycle(RecordingTransport()), events)

    bodies = [(m["body"], m["more_body"]) for m in sent if m["type"] == "http.response.body"]
    assert bodies == [(EVENT, True), (DONE, True), (b"", False)]


async def test_empty_body_sends_headers_and_end() -> None:
    events: list[str] = []
    response = RelayResponse(body_of([], events), media_type="text/event-stream")

    sent = await relay(response, FakeCycle(RecordingTransport()), events)

    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["more_body"] is False


async def test_failing_first_part_still_sends_headers() -> None:
    async def body() -> AsyncIterator[bytes]:
        raise RuntimeError("no first part")
        yield b""  # pragma: no cover - makes this an async generator

    events: list[str] = []
    response = RelayResponse(body(), media_type="text/event-stream")

    with pytest.raises(RuntimeError):
        await relay(response, FakeCycle(RecordingTransport()), events)

    assert events == ["http.response.start"]


async def test_gone_client_gets_no_parts() -> None:
    events: list[str] = []
    cycle = FakeCycle(RecordingTransport())
    cycle.disconnected = True
    response = RelayResponse(body_of([EVENT, DONE], events), media_type="text/event-stream")

    sent = await relay(response, cycle, events)

    assert [m["type"] for m in sent] == ["http.response.start"]
    assert events[-1] == "body closed"
