"""The end of a model request: its outcome record, metrics and log line, and its response.

``finish`` writes the record, charges budgets and limits, counts metrics and logs one
``request`` line. ``RecordingResponse`` runs it once the body is sent, so the client does
not wait for it. The ``record_*`` functions record requests that end with an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from router.api.admission import token_limit_of
from router.api.disconnect import client_connected
from router.api.internal_error import REQUEST_ID_STATE
from router.api.streaming import CLIENT_CLOSED_REQUEST, SERVER_STOPPED
from router.errors import (
    GatewayError,
    NoDeploymentAvailable,
    ServerShuttingDown,
    retry_after_headers,
)
from router.outcomes.record import Outcome
from router.policy.schema import Policy
from router.routing.category import prompt_category
from router.routing.decide import Decision
from router.runtime import Runtime

log = structlog.get_logger("tierwise.request")


def finish(runtime: Runtime, policy: Policy, outcome: Outcome) -> None:
    """Emit the outcome record, count it in metrics and the dashboard, and log one summary line."""
    if outcome.category is None and outcome.messages is not None:
        outcome.category = prompt_category(outcome.messages)
    record = outcome.as_record(policy)
    runtime.outcomes.emit(record)
    runtime.budgets.record(outcome.tenant, record["cost_usd"])
    reservation = outcome.token_reservation
    if reservation is not None or token_limit_of(outcome.tenant, policy) is not None:
        used = 0 if outcome.cache_hit else outcome.tokens_in + outcome.tokens_out
        runtime.token_limits.record(outcome.tenant, used, reservation)
    runtime.metrics.observe(record, policy, outcome.category)
    runtime.dashboard.observe(record, outcome.category)
    log.info(
        "request",
        request_id=outcome.request_id,
        tenant=outcome.tenant,
        tier=record["tier"],
        model=record["model"],
        tokens_in=record["tokens_in"],
        tokens_out=record["tokens_out"],
        cost_usd=record["cost_usd"],
        latency_ms=record["latency_ms"],
        cache="hit" if outcome.cache_hit else "miss",
        status=outcome.status,
        error=outcome.error,
        fallbacks=max(0, len(outcome.attempts) - 1),
        **({"issued_request_id": outcome.issued_request_id} if outcome.issued_request_id else {}),
    )


def headers(outcome: Outcome, decision: Decision | None) -> dict[str, str]:
    result = {
        "x-request-id": outcome.request_id,
        "x-tierwise-tier": outcome.tier or "",
        "x-tierwise-model": outcome.deployment.name if outcome.deployment else "",
        "x-tierwise-cache": "hit" if outcome.cache_hit else "miss",
    }
    if decision is not None and decision.score is not None:
        result["x-tierwise-score"] = f"{decision.score:.4f}"
    if not outcome.stream or outcome.cache_hit:
        result["x-tierwise-cost-usd"] = f"{outcome.cost_usd():.8f}"
    upstream = outcome.upstream
    if upstream is not None:
        if upstream.request_id is not None:
            result["x-tierwise-upstream-request-id"] = upstream.request_id
        result.update(upstream.rate_limits)
    return result


class RecordingResponse(Response):
    """A JSON response that runs ``on_sent`` once its body is sent, or sending failed.

    The status is 200, and Content-Length and Content-Type are set from the body, so
    ``headers`` must contain neither.

    A served request's outcome record, metrics and log line are written by ``on_sent``,
    so the client does not wait for them.  uvicorn's ``send`` writes to the socket
    without yielding, so no other request runs between the body and ``on_sent``.
    """

    media_type = "application/json"

    def __init__(self, content: bytes, headers: dict[str, str],
                 on_sent: Callable[[], None] | None = None,
                 outcome: Outcome | None = None) -> None:
        # What Starlette's Response.__init__ sets for a 200 with these headers and a bytes
        # body, without its checks for a Content-Length or Content-Type in ``headers``
        # (timeit: 1.5 µs against 2.5 µs). The callers' headers never contain either.
        self.status_code = 200
        self.background = None
        self.body = content
        self.raw_headers = [
            *[(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()],
            (b"content-length", str(len(content)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]
        self.on_sent = on_sent
        self.outcome = outcome
        """The record that ``on_sent`` writes, marked 499 when the client left first."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.outcome is not None and client_connected(receive) is False:
                # The client got nothing, so a 200 in the record would count the request as
                # served in reports and retraining.
                self.outcome.error = "client_disconnected"
                self.outcome.status = CLIENT_CLOSED_REQUEST
            self.run_on_sent()

    def run_on_sent(self) -> None:
        """Run ``on_sent`` unless it has run; callers that drop the response call this."""
        on_sent, self.on_sent = self.on_sent, None
        if on_sent is not None:
            on_sent()


def json_response(payload: dict[str, Any], response_headers: dict[str, str],
                  on_sent: Callable[[], None] | None = None,
                  outcome: Outcome | None = None) -> RecordingResponse:
    return RecordingResponse(orjson.dumps(payload), response_headers, on_sent, outcome)


def record_gateway_error(
    runtime: Runtime, policy: Policy, outcome: Outcome, exc: GatewayError
) -> None:
    """Record a request that ends with ``exc``, and set the headers its response carries.

    The request id is re-signed as unanswered first, so that the record and the response
    carry the id that ``POST /v1/feedback`` rejects.
    """
    outcome.error, outcome.status = exc.code, exc.status
    mark_unanswered(runtime, outcome)
    finish(runtime, policy, outcome)
    exc.set_request_id(outcome.request_id)
    if isinstance(exc, NoDeploymentAvailable):
        wait = runtime.local_model_retry_after_s() if exc.local_model_down else None
        if wait is None:
            # Only a local model that is starting or restarting can make a retry succeed, and
            # only when it could serve the request, but a missing key, a blocked tier, a context
            # window or a capability needs an operator.  The official OpenAI clients retry every
            # 503 unless this header says otherwise.
            exc.headers = {**(exc.headers or {}), "x-should-retry": "false"}
        else:
            # The openai Python SDK (3.63) waits this long before it retries. It does not retry
            # after a wait above 120 s, and a restart delay (60 s at most) plus a start (up to
            # its 60 s start-up timeout) stays within that.
            exc.headers = {**(exc.headers or {}), **retry_after_headers(wait)}


def record_cancellation(
    runtime: Runtime, policy: Policy, outcome: Outcome
) -> ServerShuttingDown | None:
    """Record a request cancelled by the server's shutdown; return the 503 to raise instead.

    uvicorn cancels the requests still running when its graceful shutdown times out.
    Re-raised, the cancellation would make uvicorn send its own plain-text 500, so it is
    withdrawn and the client gets a 503 in the endpoint's error shape. Returns None when a
    further cancellation is still pending (uncancel() above 0), which the caller re-raises.
    """
    outcome.error, outcome.status = "server_shutdown", SERVER_STOPPED
    mark_unanswered(runtime, outcome)
    finish(runtime, policy, outcome)
    task = asyncio.current_task()
    if task is None or task.uncancel() > 0:
        return None
    stopped = ServerShuttingDown()
    stopped.set_request_id(outcome.request_id)
    return stopped


def record_internal_error(
    runtime: Runtime, policy: Policy, outcome: Outcome, request_state: Any
) -> None:
    """Record the gateway's own fault, before the exception propagates.

    InternalErrorMiddleware renders the fixed 500 response with the request id stored in
    ``request_state`` (the request's ``state``), which this sets to the re-signed id. The
    record keeps only the fixed code, never the exception text.
    """
    outcome.error, outcome.status = GatewayError.default_code, GatewayError.status
    mark_unanswered(runtime, outcome)
    setattr(request_state, REQUEST_ID_STATE, outcome.request_id)
    finish(runtime, policy, outcome)


def mark_unanswered(runtime: Runtime, outcome: Outcome) -> None:
    """Re-sign the request id of ``outcome`` as the id of a request that got no answer.

    The gateway logged the request under its issued id until now, so the ``request`` log
    line names that id as ``issued_request_id``.
    """
    if runtime.request_ids is None:
        return
    resigned = runtime.request_ids.mark_unanswered(outcome.request_id, outcome.tenant)
    if resigned != outcome.request_id:
        outcome.issued_request_id = outcome.request_id
        outcome.request_id = resigned
