"""``POST /v1/responses``: OpenAI's Responses API on the chat-completion serving path.

The request is translated into an OpenAI chat body (:mod:`router.api.responses_format`) and
served by :func:`router.api.translated.serve_translated`, so it is routed, cached,
rate-limited, budgeted, recorded and logged exactly like a chat completion.  The chat
completion is translated back into a ``response`` object
(:mod:`router.api.responses_output`), and its SSE chunks into Responses events
(:mod:`router.api.responses_stream`).  Errors keep OpenAI's shape, as on
``/v1/chat/completions``: the app's GatewayError handler and InternalErrorMiddleware render
them.  Nothing is stored, so the API is stateless.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from router.api.responses_format import CHAT_PARAMETERS, ENDPOINT, to_chat_body
from router.api.responses_output import to_response
from router.api.responses_stream import StreamTranslator
from router.api.translated import serve_translated

router = APIRouter()


@router.post(ENDPOINT, response_model=None)
async def create_response(request: Request) -> Response:
    return await serve_translated(
        request, to_chat_body, to_response, StreamTranslator, CHAT_PARAMETERS
    )
