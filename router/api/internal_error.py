"""The last line of defence: unexpected exceptions become the fixed 500 response.

Starlette's own handler for ``Exception`` re-raises after responding, so the server logs the
traceback and with it the exception text, which can carry keys, prompts or upstream
internals.  This middleware responds and does not re-raise; it logs only the exception type
and the place it was raised.
"""

from __future__ import annotations

import traceback

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.errors import GatewayError, render_error

log = structlog.get_logger("tierwise.app")

# Key in the ASGI scope's ``state`` under which an endpoint stores the request id, so the
# 500 response can carry it in ``x-request-id``.
REQUEST_ID_STATE = "request_id"


class InternalErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Created here so that the endpoint's request.state writes into this same dict.
        scope.setdefault("state", {})
        response_started = False

        async def send_tracking_start(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking_start)
        except Exception as exc:  # noqa: BLE001 - every unexpected fault gets the same answer
            _log_internal_error(scope, exc)
            # A response already under way (a stream) cannot change its status; the server
            # closes the connection when this returns.
            if not response_started:
                await _internal_error_response(scope)(scope, receive, send)


def _internal_error_response(scope: Scope) -> ASGIApp:
    error = GatewayError()
    request_id = (scope.get("state") or {}).get(REQUEST_ID_STATE)
    if request_id:
        error.set_request_id(str(request_id))
    return render_error(error)


def _log_internal_error(scope: Scope, exc: Exception) -> None:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    log.error(
        "internal_error",
        path=scope.get("path"),
        request_id=(scope.get("state") or {}).get(REQUEST_ID_STATE),
        error=type(exc).__name__,
        at=f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else None,
    )
