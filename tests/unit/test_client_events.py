"""The SSE bytes a streamed response sends for each batch of upstream chunks."""

from __future__ import annotations

from typing import Any

from router.api.streaming import _client_events
from router.upstream.sse import StreamAssembler, encode_event

HEAD = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def chunk(content: str, **extra: Any) -> dict[str, Any]:
    return {**HEAD, "choices": [{"index": 0, "delta": {"content": content}}], **extra}


def test_batch_is_one_event_per_chunk() -> None:
    batch = [chunk("Hel"), chunk("lo"), chunk("!")]

    sent = _client_events(batch, StreamAssembler())

    assert sent == b"".join(encode_event(item) for item in batch)


def test_usage_is_held_back() -> None:
    with_choices = chunk("end", usage=USAGE)
    usage_only = {**HEAD, "choices": [], "usage": USAGE}
    assembler = StreamAssembler()

    sent = _client_events([chunk("a"), with_choices, usage_only], assembler)

    assert sent == encode_event(chunk("a")) + encode_event(chunk("end"))
    assert assembler.usage == USAGE


def test_batch_of_usage_only_sends_nothing() -> None:
    usage_only = {**HEAD, "choices": [], "usage": USAGE}

    assert _client_events([usage_only], StreamAssembler()) == b""
