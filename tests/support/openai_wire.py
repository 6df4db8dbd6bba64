"""OpenAI chat-completion wire format: request parsing, JSON bodies and SSE stream events.

Only what a replay needs: the text of the answer is decided elsewhere, and this module turns it
into a ``chat.completion`` body or the list of ``chat.completion.chunk`` events that OpenAI
streams (role chunk, content chunks, a final chunk with ``finish_reason``, an optional usage
chunk with ``choices: []``, then ``data: [DONE]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tests.support import tokens
from tests.support.scenario import ToolCall

DONE_EVENT = b"data: [DONE]\n\n"


class InvalidRequestError(ValueError):
    """Raised when a request body is not a valid chat-completion request; maps to HTTP 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The fields of a chat-completion request that shape a replayed answer."""

    model: str | None
    messages: list[Mapping[str, Any]]
    stream: bool
    include_usage: bool
    n: int
    max_tokens: int | None

    def last_user_text(self) -> str:
        """Return the text of the last ``user`` message, else of the last message."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return tokens.message_text(message.get("content"))
        return tokens.message_text(self.messages[-1].get("content"))


@dataclass(frozen=True, slots=True)
class Completion:
    """One answer ready to serialize; token counts are per choice and use ``cl100k_base``."""

    id: str
    created: int
    model: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    n: int = 1
    reasoning: str | None = None
    reasoning_tokens: int = 0
    tool_calls: tuple[ToolCall, ...] = ()


def _positive_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"{key} must be a positive integer, got {value!r}", key)
    return value


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Parse a chat-completion request body.

    Raises:
        InvalidRequestError: the body is not a JSON object, or ``messages``, ``n`` or
            ``max_tokens`` is invalid.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidRequestError(f"request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise InvalidRequestError("messages must be a non-empty list of objects", "messages")
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    options = body.get("stream_options") or {}
    return ChatRequest(
        model=body.get("model") if isinstance(body.get("model"), str) else None,
        messages=messages,
        stream=bool(body.get("stream")),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        n=_positive_int(body, "n") or 1,
        max_tokens=max_tokens,
    )


def error_body(
    message: str, error_type: str, param: str | None = None, code: Any = None
) -> dict[str, Any]:
    """Return an OpenAI error body."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def usage(completion: Completion) -> dict[str, Any]:
    """Return the ``usage`` object: completion tokens summed over the ``n`` choices."""
    completion_tokens = completion.completion_tokens * completion.n
    result: dict[str, Any] = {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": completion.prompt_tokens + completion_tokens,
    }
    if completion.reasoning_tokens:
        reasoning_tokens = completion.reasoning_tokens * completion.n
        result["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return result


def _tool_call_json(call: ToolCall, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _message(completion: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": completion.text, "refusal": None}
    if completion.tool_calls:
        message["content"] = None
        message["tool_calls"] = [_tool_call_json(c, i) for i, c in enumerate(completion.tool_calls)]
    if completion.reasoning is not None:
        message["reasoning_content"] = completion.reasoning
    return message


def completion_body(completion: Completion) -> dict[str, Any]:
    """Return the non-streaming ``chat.completion`` body (each of the ``n`` choices is the same)."""
    choices = [
        {
            "index": index,
            "message": _message(completion),
            "logprobs": None,
            "finish_reason": completion.finish_reason,
        }
        for index in range(completion.n)
    ]
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "choices": choices,
        "usage": usage(completion),
        "system_fingerprint": None,
    }


def sse_event(payload: Mapping[str, Any]) -> bytes:
    """Encode ``payload`` as one server-sent event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class _ChunkFactory:
    """Builds ``chat.completion.chunk`` payloads that share an id, timestamp and model."""

    def __init__(self, completion: Completion, include_usage: bool) -> None:
        self.completion = completion
        self.include_usage = include_usage

    def chunk(
        self, index: int, delta: Mapping[str, Any], finish_reason: str | None = None
    ) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        payload: dict[str, Any] = {
            "id": self.completion.id,
            "object": "chat.completion.chunk",
            "created": self.completion.created,
            "model": self.completion.model,
            "system_fingerprint": None,
            "choices": [choice],
        }
        # With include_usage, OpenAI sends "usage": null on every chunk but the last.
        if self.include_usage:
            payload["usage"] = None
        return sse_event(payload)

    def usage_chunk(self, override: Mapping[str, Any] | None = None) -> bytes:
        payload = {
            "id": self.completion.id,
            "object": "chat.completion.chunk",
            "created": self.completion.created,
            "model": self.completion.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": dict(override) if override is not None else usage(self.completion),
        }
        return sse_event(payload)


def _tool_call_deltas(calls: tuple[ToolCall, ...], chunk_tokens: int) -> list[dict[str, Any]]:
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        opening = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        deltas.append({"tool_calls": [opening]})
        for piece in tokens.split_tokens(tokens.encode(call.arguments), chunk_tokens):
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return deltas


def _content_deltas(completion: Completion, chunk_tokens: int) -> list[dict[str, Any]]:
    deltas: list[dict[str, Any]] = []
    if completion.reasoning:
        for piece in tokens.split_tokens(tokens.encode(completion.reasoning), chunk_tokens):
            deltas.append({"reasoning_content": piece})
    if completion.tool_calls:
        deltas.extend(_tool_call_deltas(completion.tool_calls, chunk_tokens))
        return deltas
    for piece in tokens.split_tokens(tokens.encode(completion.text), chunk_tokens):
        deltas.append({"content": piece})
    return deltas


def stream_events(
    completion: Completion,
    chunk_tokens: int,
    include_usage: bool,
    usage_override: Mapping[str, Any] | None = None,
) -> list[bytes]:
    """Return every SSE event of a streamed answer, ``data: [DONE]`` included.

    Choices are interleaved event by event (index 0, then 1, ...), as OpenAI streams ``n > 1``.
    ``usage_override`` replaces the usage chunk's counts.
    """
    factory = _ChunkFactory(completion, include_usage)
    first_content: Any = None if completion.tool_calls else ""
    deltas = _content_deltas(completion, chunk_tokens)
    indexes = range(completion.n)
    events = [factory.chunk(i, {"role": "assistant", "content": first_content}) for i in indexes]
    for delta in deltas:
        events.extend(factory.chunk(i, delta) for i in indexes)
    events.extend(factory.chunk(i, {}, completion.finish_reason) for i in indexes)
    if include_usage:
        events.append(factory.usage_chunk(usage_override))
    events.append(DONE_EVENT)
    return events
