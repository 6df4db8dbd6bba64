"""Anthropic stream events from the OpenAI SSE events of one streamed completion.

The chat serving path relays an upstream stream (or replays a cached completion) as OpenAI
events; :class:`StreamTranslator` turns each into Anthropic's events::

    message_start
    content_block_start / content_block_delta ... / content_block_stop   (per block)
    message_delta (stop_reason, usage)
    message_stop

Text arrives as ``text_delta``, tool arguments as ``input_json_delta`` and, when the request
enabled thinking, ``reasoning_content`` as ``thinking_delta``.  Keep-alive comments become
``ping`` events, and an error event becomes ``event: error`` after which the stream ends
without ``message_stop``, so no client mistakes a cut answer for a whole one.
"""

from __future__ import annotations

from typing import Any

import orjson

from router.api.anthropic_format import (
    Translation,
    anthropic_usage,
    error_body,
    message_id,
    stop_details,
    tool_use_id,
)
from router.api.translated import SseTranslator


def encode_event(name: str, payload: dict[str, Any]) -> bytes:
    """Encode one Anthropic SSE event: an ``event:`` line, a ``data:`` line, a blank line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


PING = encode_event("ping", {"type": "ping"})


def stream_error_body(error: dict[str, Any]) -> dict[str, Any]:
    """Translate the OpenAI error object of a failed stream into Anthropic's error object."""
    status = 504 if error.get("code") == "upstream_timeout" else 500
    return error_body(status, str(error.get("message") or "The stream failed."))


class StreamTranslator(SseTranslator):
    """Translate the OpenAI SSE events of one streamed completion, in order, into Anthropic's."""

    def __init__(self, translation: Translation) -> None:
        self.translation = translation
        self.started = False
        self._index = -1
        """Index of the newest content block."""
        self._open: str | None = None
        """Type of the open content block, if one is open."""
        self._tool_blocks: dict[int, int] = {}
        """OpenAI tool-call index -> content block index."""
        self._finish: dict[str, Any] = {}
        self._usage: dict[str, Any] | None = None

    def keepalive(self) -> bytes:
        return PING

    def error(self, error: dict[str, Any]) -> list[bytes]:
        return [encode_event("error", stream_error_body(error))]

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        events = [] if self.started else [self._message_start(chunk)]
        self.started = True
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            # An Anthropic message has a single choice, and the translated body never sets n.
            if choice.get("index", 0) != 0:
                continue
            events.extend(self._delta(choice.get("delta") or {}))
            if choice.get("finish_reason"):
                self._finish = choice
                events.extend(self._close_block())
        return events

    @staticmethod
    def _message_start(chunk: dict[str, Any]) -> bytes:
        # NOTE: the input token count is unknown until the upstream's final usage, so
        # message_start carries zeros and message_delta carries both counts.
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or "",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return encode_event("message_start", {"type": "message_start", "message": message})

    def _delta(self, delta: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        reasoning = delta.get("reasoning_content")
        if reasoning and self.translation.thinking:
            block = {"type": "thinking", "thinking": "", "signature": ""}
            change = {"type": "thinking_delta", "thinking": reasoning}
            events.extend(self._block_delta(block, change))
        if delta.get("content"):
            block = {"type": "text", "text": ""}
            change = {"type": "text_delta", "text": delta["content"]}
            events.extend(self._block_delta(block, change))
        for call in delta.get("tool_calls") or ():
            events.extend(self._tool_delta(call))
        return events

    def _block_delta(self, block: dict[str, Any], change: dict[str, Any]) -> list[bytes]:
        """Append ``change`` to the open block, first opening ``block`` if another kind is open."""
        events: list[bytes] = []
        if self._open != block["type"]:
            events.extend(self._close_block())
            events.append(self._start_block(block))
        events.append(self._content_delta(self._index, change))
        return events

    def _tool_delta(self, call: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        position = call.get("index", 0)
        function = call.get("function") or {}
        if position not in self._tool_blocks:
            events.extend(self._close_block())
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": tool_use_id(call.get("id")),
                "name": function.get("name") or "",
                "input": {},
            }
            events.append(self._start_block(block))
            self._tool_blocks[position] = self._index
        if function.get("arguments"):
            # NOTE: servers stream tool calls one after another.  Arguments for an earlier call
            # that arrive after a later call started go to an already closed block.
            change = {"type": "input_json_delta", "partial_json": function["arguments"]}
            events.append(self._content_delta(self._tool_blocks[position], change))
        return events

    def _start_block(self, block: dict[str, Any]) -> bytes:
        self._index += 1
        self._open = block["type"]
        payload = {"type": "content_block_start", "index": self._index, "content_block": block}
        return encode_event("content_block_start", payload)

    @staticmethod
    def _content_delta(index: int, change: dict[str, Any]) -> bytes:
        payload = {"type": "content_block_delta", "index": index, "delta": change}
        return encode_event("content_block_delta", payload)

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        payload = {"type": "content_block_stop", "index": self._index}
        return [encode_event("content_block_stop", payload)]

    def end(self) -> list[bytes]:
        events = self._close_block()
        stop_reason, stop_sequence = stop_details(
            self._finish, bool(self._tool_blocks), self.translation.stop_sequences
        )
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": anthropic_usage(self._usage),
        }
        events.append(encode_event("message_delta", message_delta))
        events.append(encode_event("message_stop", {"type": "message_stop"}))
        return events
