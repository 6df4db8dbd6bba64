"""``POST /v1/messages``: Anthropic's Messages API on the chat-completion serving path.

The request is translated into an OpenAI chat body (:mod:`router.api.anthropic_format`) and
served by :func:`router.api.translated.serve_translated`, so it is routed, cached, escalated,
recorded and logged exactly like a chat completion.  The OpenAI response is translated back:
the JSON completion into an Anthropic message, the SSE chunks into Anthropic events, and
errors into Anthropic's error body with the same HTTP status.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from router.api.admission import OFFLOAD_BODY_BYTES, parse_json_body, read_body, run_for_body
from router.api.anthropic_format import render_error, to_chat_body, to_message
from router.api.anthropic_stream import StreamTranslator
from router.api.auth import identify
from router.api.chat import check_model
from router.api.internal_error import REQUEST_ID_STATE, _log_internal_error
from router.api.translated import serve_translated
from router.errors import GatewayError
from router.policy.schema import Policy
from router.routing.tokens import count_prompt_tokens, count_text_tokens

router = APIRouter()


@router.post("/v1/messages", response_model=None)
async def create_message(request: Request) -> Response:
    try:
        response = await serve_translated(request, to_chat_body, to_message, StreamTranslator)
    except GatewayError as exc:
        return _with_request_id(render_error(exc))
    except Exception as exc:  # noqa: BLE001 - the fixed 500, in this endpoint's error shape
        return _with_request_id(_internal_error(request, exc))
    return _with_request_id(response)


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
        raw = await read_body(
            request, runtime.settings.max_body_bytes, runtime.settings.body_timeout_s
        )
        tokens = await run_for_body(len(raw) > OFFLOAD_BODY_BYTES, _count_tokens, raw, policy)
    except GatewayError as exc:
        return render_error(exc)
    return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json")


def _count_tokens(raw: bytes, policy: Policy) -> int:
    """Translate an Anthropic Messages body and count its input tokens.

    Raises InvalidRequest or ModelNotFound.
    """
    # Counting needs no output limit, so a body without max_tokens is valid here.
    chat = to_chat_body({"max_tokens": 1, **parse_json_body(raw)}).body
    check_model(policy, chat["model"])
    tokens = count_prompt_tokens(chat["messages"], fits_below=0)
    if chat.get("tools"):
        tokens += count_text_tokens([orjson.dumps(chat["tools"]).decode()])
    return tokens


def _with_request_id(response: Response) -> Response:
    """Repeat ``x-request-id`` as ``request-id``, the header Anthropic's clients read."""
    request_id = response.headers.get("x-request-id")
    if request_id:
        response.headers["request-id"] = request_id
    return response


def _internal_error(request: Request, exc: Exception) -> Response:
    # The same log line as InternalErrorMiddleware's: the exception type and place, no text.
    _log_internal_error(request.scope, exc)
    error = GatewayError()
    request_id = getattr(request.state, REQUEST_ID_STATE, None)
    if request_id:
        error.set_request_id(str(request_id))
    return render_error(error)
