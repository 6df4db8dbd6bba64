"""``POST /v1/messages``: Anthropic's Messages API on the chat-completion serving path.

The request is translated into an OpenAI chat body (:mod:`router.api.anthropic_format`) and
served by :func:`router.api.chat.serve_chat`, so it is routed, cached, escalated, recorded
and logged exactly like a chat completion.  This module then translates the OpenAI response:
the JSON completion into an Anthropic message, the SSE chunks into Anthropic events, and
errors into Anthropic's error body with the same HTTP status.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from router.api.anthropic_format import Translation, render_error, to_chat_body, to_message
from router.api.anthropic_stream import StreamTranslator
from router.api.auth import identify
from router.api.chat import (
    RecordingResponse,
    check_model,
    json_response,
    read_json_body,
    serve_chat,
)
from router.api.internal_error import REQUEST_ID_STATE, _log_internal_error
from router.errors import GatewayError
from router.routing.tokens import count_prompt_tokens, count_text_tokens

router = APIRouter()

# Headers of the OpenAI response that describe its body, which the translation replaces.
_BODY_HEADERS = frozenset({"content-length", "content-type"})


class _Exchange:
    """The request's translation, kept for translating the response."""

    def __init__(self) -> None:
        self.translation = Translation(body={})

    def translate(self, body: dict[str, Any]) -> dict[str, Any]:
        self.translation = to_chat_body(body)
        return self.translation.body


@router.post("/v1/messages", response_model=None)
async def create_message(request: Request) -> Response:
    exchange = _Exchange()
    try:
        response = await serve_chat(request, exchange.translate)
    except GatewayError as exc:
        return _with_request_id(render_error(exc))
    except Exception as exc:  # noqa: BLE001 - the fixed 500, in this endpoint's error shape
        return _with_request_id(_internal_error(request, exc))
    if isinstance(response, StreamingResponse):
        translator = StreamTranslator(exchange.translation)
        response.body_iterator = _translated(response.body_iterator, translator)
        return _with_request_id(response)
    # The translated response takes over the recording of the outcome; if translating
    # fails, the outcome is recorded here before the error propagates.
    on_sent = response.on_sent if isinstance(response, RecordingResponse) else None
    outcome = response.outcome if isinstance(response, RecordingResponse) else None
    try:
        completion = orjson.loads(bytes(response.body))
        headers = {k: v for k, v in response.headers.items() if k not in _BODY_HEADERS}
        message = to_message(completion, exchange.translation)
    except Exception:
        if isinstance(response, RecordingResponse):
            response.run_on_sent()
        raise
    return _with_request_id(json_response(message, headers, on_sent, outcome))


@router.post("/v1/messages/count_tokens", response_model=None)
async def count_message_tokens(request: Request) -> Response:
    """Return ``{"input_tokens": N}`` for an Anthropic Messages body, without calling a model.

    N counts the translated conversation and tool definitions with OpenAI's cl100k_base
    encoding, as the gateway's context-window checks do. It is an estimate of what the
    model that serves the request will count: other tokenizers split text differently.
    """
    runtime = request.app.state.runtime
    policy = runtime.policies.current.policy
    try:
        identify(request, policy)
        body = await read_json_body(request, runtime.settings.max_body_bytes)
        # Counting needs no output limit, so a body without max_tokens is valid here.
        chat = to_chat_body({"max_tokens": 1, **body}).body
        check_model(policy, chat["model"])
    except GatewayError as exc:
        return render_error(exc)
    tokens = count_prompt_tokens(chat["messages"], fits_below=0)
    if chat.get("tools"):
        tokens += count_text_tokens([orjson.dumps(chat["tools"]).decode()])
    return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json")


def _with_request_id(response: Response) -> Response:
    """Repeat ``x-request-id`` as ``request-id``, the header Anthropic's clients read."""
    request_id = response.headers.get("x-request-id")
    if request_id:
        response.headers["request-id"] = request_id
    return response


async def _translated(
    events: AsyncIterable[Any], translator: StreamTranslator
) -> AsyncIterator[bytes]:
    """Yield the Anthropic events for each OpenAI event of ``events``.

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


def _internal_error(request: Request, exc: Exception) -> Response:
    # The same log line as InternalErrorMiddleware's: the exception type and place, no text.
    _log_internal_error(request.scope, exc)
    error = GatewayError()
    request_id = getattr(request.state, REQUEST_ID_STATE, None)
    if request_id:
        error.set_request_id(str(request_id))
    return render_error(error)
