"""Serve another API's request on the chat-completion serving path.

``POST /v1/messages``, ``POST /v1/responses`` and ``POST /v1/completions`` translate their
request body into an OpenAI chat body, which :func:`router.api.chat.serve_chat` routes,
caches, rate-limits, budgets and records exactly like a chat completion.
:func:`serve_translated` then translates the OpenAI response: the JSON completion with the
endpoint's ``to_body`` function, and the SSE chunks with the endpoint's
:class:`SseTranslator`.  The helpers at the end validate request fields for the
translations.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any, Protocol, TypeVar

import orjson
from fastapi import Request
from starlette.responses import Response, StreamingResponse

from router.api.chat import serve_chat
from router.api.recording import RecordingResponse, json_response
from router.api.streaming import RelayResponse
from router.errors import GatewayError, InvalidRequest

# Headers of the OpenAI response that describe its body, which the translation replaces.
_BODY_HEADERS = frozenset({"content-length", "content-type"})


class RequestTranslation(Protocol):
    """A translated request: the OpenAI chat body, and what the response translation needs."""

    @property
    def body(self) -> dict[str, Any]: ...


TranslationT = TypeVar("TranslationT", bound=RequestTranslation)


class SseTranslator(ABC):
    """Translate the OpenAI SSE events of one streamed completion, in order, into another API's.

    The chat serving path relays an upstream stream, or replays a cached completion, as
    ``data:`` events and ``:`` keep-alive comments.  A stream that failed after its first
    byte ends with ``data: {"error": {...}}`` and no ``[DONE]``.
    """

    def translate(self, raw: bytes) -> bytes:
        """Translate one or more OpenAI SSE events into the bytes to send."""
        out: list[bytes] = []
        for event in raw.split(b"\n\n"):
            for line in event.split(b"\n"):
                if line.startswith(b":"):
                    out.append(self.keepalive())
                elif line.startswith(b"data:"):
                    out.extend(self._data(line[5:].strip()))
        return b"".join(out)

    def _data(self, data: bytes) -> list[bytes]:
        if data == b"[DONE]":
            return self.end()
        payload = orjson.loads(data)
        if "error" in payload:
            return self.error(payload["error"])
        return self.chunk(payload)

    @abstractmethod
    def keepalive(self) -> bytes:
        """Return the event that replaces a keep-alive comment."""

    @abstractmethod
    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        """Return the events for one ``chat.completion.chunk``."""

    @abstractmethod
    def error(self, error: dict[str, Any]) -> list[bytes]:
        """Return the events that end a stream which failed with the OpenAI ``error`` object."""

    @abstractmethod
    def end(self) -> list[bytes]:
        """Return the events that end a whole stream, sent in place of ``[DONE]``."""


async def serve_translated(
    request: Request,
    translate: Callable[[dict[str, Any]], TranslationT],
    to_body: Callable[[dict[str, Any], TranslationT], dict[str, Any]],
    open_translator: Callable[[TranslationT], SseTranslator],
    parameter_names: Mapping[str, str] | None = None,
) -> Response:
    """Serve ``request`` through :func:`serve_chat` with translated request and response.

    ``translate`` validates the endpoint's request body and returns its translation, whose
    ``body`` is served as a chat request.  ``to_body`` turns the chat completion into the
    endpoint's response body, and ``open_translator`` returns the translator of a stream.
    ``parameter_names`` maps chat parameters to the endpoint's own names, for the errors
    raised after the translation (see ``rename_parameters``).
    Raises GatewayError as ``serve_chat`` does; a request that fails validation never
    reaches ``to_body``.
    """
    translations: list[TranslationT] = []

    def chat_body(body: dict[str, Any]) -> dict[str, Any]:
        translation = translate(body)
        translations.append(translation)
        return translation.body

    try:
        response = await serve_chat(request, chat_body)
    except GatewayError as exc:
        # An error raised before the translation finished already names the endpoint's fields.
        if translations and parameter_names:
            rename_parameters(exc, parameter_names)
        raise
    # serve_chat returns a response only after chat_body has run.
    translation = translations[0]
    if isinstance(response, StreamingResponse):
        translator = open_translator(translation)
        response.body_iterator = _translated_events(response.body_iterator, translator)
        if isinstance(response, RelayResponse):
            # The translated events do not end with the chat stream's [DONE].
            response.final_suffix = None
        return response
    # The translated response takes over the recording of the outcome. If translating
    # fails, the outcome is recorded here before the error propagates.
    on_sent = response.on_sent if isinstance(response, RecordingResponse) else None
    outcome = response.outcome if isinstance(response, RecordingResponse) else None
    try:
        completion = orjson.loads(bytes(response.body))
        headers = {k: v for k, v in response.headers.items() if k not in _BODY_HEADERS}
        body = to_body(completion, translation)
    except Exception:
        if isinstance(response, RecordingResponse):
            response.run_on_sent()
        raise
    return json_response(body, headers, on_sent, outcome)


async def _translated_events(
    events: AsyncIterable[Any], translator: SseTranslator
) -> AsyncIterator[bytes]:
    """Yield the translated events for each OpenAI event of ``events``.

    Closing this generator closes ``events``, whose own clean-up records the outcome.
    """
    try:
        async for raw in events:
            translated = translator.translate(raw.encode() if isinstance(raw, str) else bytes(raw))
            if translated:
                yield translated
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def rename_parameters(error: GatewayError, names: Mapping[str, str]) -> None:
    """Rename the chat parameters that ``error`` names to the endpoint's, in place.

    ``param`` is renamed when its first name is a key of ``names``, without the chat
    parameter's indexes (``messages[2]`` becomes ``input``), because the endpoint's items
    need not map one to one onto chat messages. The message is edited where it quotes that
    ``param``, and wherever it names a key that contains an underscore, such as
    ``max_tokens``. Plain words such as "messages" stay, because they are also prose.
    """
    param = error.param
    if param is not None:
        head = _PARAM_HEAD.match(param)
        if head is not None and head.group(0) in names:
            renamed = names[head.group(0)]
            error.message = error.message.replace(f"'{param}'", f"'{renamed}'")
            error.param = renamed
    for chat_name, name in names.items():
        if "_" in chat_name:
            error.message = re.sub(rf"\b{re.escape(chat_name)}\b", name, error.message)
    error.args = (error.message,)


_PARAM_HEAD = re.compile(r"[A-Za-z_]+")


# Request and response helpers ---------------------------------------------------------------


def compact_parts(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Return a lone text part as a plain string, which every OpenAI-compatible server accepts."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def required_string(block: dict[str, Any], key: str, where: str) -> str:
    """Return ``block[key]`` if it is a non-empty string, else raise InvalidRequest naming it."""
    value = block.get(key)
    if not isinstance(value, str) or not value:
        raise invalid_value(f"{where}.{key}", "expected a non-empty string")
    return value


def invalid_value(param: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid value for '{param}': {reason}.", param=param)


def content_text(content: Any) -> str:
    """Return the text of a chat completion message's ``content``, a string or text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""
