"""Scripted upstream behaviour for one request, and error bodies that real servers send.

A :class:`Scenario` with default fields is a plain replay. Stream positions count ``data:``
events: the first event (the assistant role chunk) is event 1, so ``after_events=0`` acts before
any event is sent and ``after_events=2`` acts after the role chunk and the first content chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the upstream returns. ``arguments`` is JSON text, streamed in pieces."""

    name: str
    arguments: str
    id: str = "call_0"


@dataclass(frozen=True, slots=True)
class Scenario:
    """The upstream's behaviour for one request. Build it with the class methods below.

    Attributes:
        status: HTTP status. With a status of 400 or more the upstream sends ``body`` (or
            ``{"error": error}``) as JSON and nothing else.
        error: OpenAI error object (``message``, ``type``, ``param``, ``code``). With status 200
            and a streaming request it is sent as ``data: {"error": ...}`` at
            ``error_after_events``.
        body: whole JSON body of an HTTP error, for servers whose error is not under ``"error"``.
        error_after_events: stream position of the error event (see the module docstring).
        cut_after_events: stream position at which the connection is aborted with no final chunk
            and no ``[DONE]``. A non-streaming request is aborted before any response byte.
        silent: accept the request and never send a byte until the server stops.
        pause_after_events / pause_s: stream position of a pause, and its length in seconds.
        text: answer text used in place of the replayed answer.
        reasoning: ``reasoning_content`` sent before the answer (streamed as its own deltas).
        tool_calls: calls returned in place of text, with finish_reason ``tool_calls``.
        headers: extra response headers, for example ``{"retry-after": "1"}``.
        ignore_include_usage: stream no usage chunk even when the request sets
            ``stream_options.include_usage``, as some servers (llama.cpp among them) do.
        usage: usage object sent in place of the real counts in a JSON response or a stream's
            usage chunk, for servers that report odd counts.
        chunks: ``chat.completion.chunk`` payloads that a streaming request gets exactly as
            given, then ``[DONE]``, in place of the generated stream.
        omit_done: end a stream cleanly without its ``data: [DONE]`` event, as some servers do.

    With status 200, ``body`` is sent as the whole JSON response of a non-streaming request,
    for servers that answer with something that is not a completion.
    """

    status: int = 200
    error: Mapping[str, Any] | None = None
    body: Mapping[str, Any] | None = None
    error_after_events: int | None = None
    cut_after_events: int | None = None
    silent: bool = False
    pause_after_events: int | None = None
    pause_s: float = 0.0
    text: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    ignore_include_usage: bool = False
    usage: Mapping[str, Any] | None = None
    chunks: tuple[Mapping[str, Any], ...] | None = None
    omit_done: bool = False

    @classmethod
    def replay(cls) -> Scenario:
        """Return the plain replay (the behaviour when no scenario is queued)."""
        return cls()

    @classmethod
    def http_error(
        cls,
        status: int,
        message: str,
        error_type: str = "server_error",
        code: str | int | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Scenario:
        """Return an HTTP error with an OpenAI error body."""
        error = {"message": message, "type": error_type, "param": param, "code": code}
        return cls(status=status, error=error, headers=dict(headers or {}))

    @classmethod
    def raw_error(cls, status: int, body: Mapping[str, Any]) -> Scenario:
        """Return an HTTP error whose JSON body is ``body`` exactly."""
        return cls(status=status, body=body)

    @classmethod
    def rate_limited(cls, retry_after_s: int = 1) -> Scenario:
        """Return HTTP 429 with a ``retry-after`` header, as OpenAI sends it."""
        return cls.http_error(
            429,
            "Rate limit reached for requests. Please try again in 1s.",
            "requests",
            "rate_limit_exceeded",
            headers={"retry-after": str(retry_after_s)},
        )

    @classmethod
    def stream_error(
        cls,
        after_events: int = 0,
        message: str = "The server had an error while processing your request.",
    ) -> Scenario:
        """Return a stream that sends ``data: {"error": ...}`` at ``after_events`` and ends."""
        error = {"message": message, "type": "server_error", "param": None, "code": None}
        return cls(error=error, error_after_events=after_events)

    @classmethod
    def cut(cls, after_events: int) -> Scenario:
        """Return a stream whose connection is aborted at ``after_events``."""
        return cls(cut_after_events=after_events)

    @classmethod
    def hang(cls) -> Scenario:
        """Return a request that is accepted and never answered."""
        return cls(silent=True)

    @classmethod
    def pause(cls, after_events: int, seconds: float) -> Scenario:
        """Return a stream that stops for ``seconds`` at ``after_events``, then continues."""
        return cls(pause_after_events=after_events, pause_s=seconds)

    @classmethod
    def tools(cls, *calls: ToolCall) -> Scenario:
        """Return an answer made of ``calls`` with finish_reason ``tool_calls``."""
        return cls(tool_calls=tuple(calls))

    @classmethod
    def stream_of(cls, *chunks: Mapping[str, Any]) -> Scenario:
        """Return a stream made of ``chunks`` exactly as given, then ``[DONE]``."""
        return cls(chunks=tuple(chunks))

    @classmethod
    def with_reasoning(cls, reasoning: str) -> Scenario:
        """Return a replay preceded by ``reasoning`` in ``reasoning_content`` deltas."""
        return cls(reasoning=reasoning)


# Context-length errors in the wordings of several OpenAI-compatible servers, as
# (status, body) pairs. The texts are examples from public bug reports and API responses, with
# invented token counts, so a gateway can be tested on each wording.
CONTEXT_LENGTH_ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "openai": (
        400,
        {
            "error": {
                "message": "This model's maximum context length is 8192 tokens. However, your "
                "messages resulted in 9021 tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    ),
    # vLLM releases from 2024 put the error object at the top level, not under "error".
    "vllm": (
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens. However, you "
            "requested 4612 tokens (516 in the messages, 4096 in the completion). Please reduce "
            "the length of the messages or completion.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ),
    "llama.cpp": (
        400,
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 14429,
                "n_ctx": 8192,
            }
        },
    ),
    "anthropic": (
        400,
        {
            "error": {
                "message": "prompt is too long: 210431 tokens > 200000 maximum",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    ),
}


def context_length_error(server: str = "openai") -> Scenario:
    """Return the context-length error of ``server`` (a key of :data:`CONTEXT_LENGTH_ERRORS`).

    Raises:
        KeyError: ``server`` is not a known wording.
    """
    status, body = CONTEXT_LENGTH_ERRORS[server]
    return Scenario.raw_error(status, body)
