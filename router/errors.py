"""The gateway's error tree and the one handler that renders it.

Every error a client can see is a ``GatewayError``; each subclass carries its HTTP status
and OpenAI error ``type``, and ``render_error`` turns it into OpenAI's body
``{"error": {"message", "type", "param", "code"}}``::

    GatewayError                      500 api_error (fixed message, never exception text)
    ├── InvalidRequest                400 invalid_request_error
    │   ├── ContextTooLong            400 invalid_request_error, code context_length_exceeded
    │   └── UnsupportedParameter      400 invalid_request_error, code unsupported_parameter
    ├── AuthenticationFailed          401 authentication_error
    ├── ModelNotFound                 404 invalid_request_error, code model_not_found
    ├── RequestIdNotFound             404 invalid_request_error, code request_id_not_found
    ├── RequestNotAnswered            409 invalid_request_error, code request_not_answered
    ├── RequestTooLarge               413 invalid_request_error
    ├── ClientDisconnected            499 (the client left before the response; never sent)
    ├── BudgetExceeded                429 insufficient_quota
    ├── RequestRateExceeded           429 requests, code rate_limit_exceeded (tenant's limit)
    ├── UpstreamRateLimited           429 rate_limit_error (every eligible deployment sent 429)
    ├── UpstreamFailed                502 api_error (every eligible deployment failed)
    ├── NoDeploymentAvailable         503 api_error (no tier has a usable deployment)
    └── UpstreamTimeout               504 api_error
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.responses import Response


class GatewayError(Exception):
    """Base class; raised directly only for the gateway's own faults."""

    status = 500
    error_type = "api_error"
    default_code: str | None = "internal_error"

    def __init__(
        self,
        message: str = "The gateway failed to process the request. Retry, or report the request id.",
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] | None = None

    def set_request_id(self, request_id: str) -> None:
        """Add the ``x-request-id`` response header, keeping the error's other headers."""
        self.headers = {**(self.headers or {}), "x-request-id": request_id}


class InvalidRequest(GatewayError):
    """Raised when the request body or its parameters are invalid."""

    status = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class ContextTooLong(InvalidRequest):
    """Raised when the conversation fits no deployment's context window."""

    default_code = "context_length_exceeded"


class UnsupportedParameter(InvalidRequest):
    """Raised when a parameter no eligible deployment supports, or a forbidden one, is set."""

    default_code = "unsupported_parameter"


class AuthenticationFailed(GatewayError):
    """Raised when keys are configured and the request's key is missing or unknown."""

    status = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class ModelNotFound(GatewayError):
    """Raised when ``model`` is neither a router alias nor a deployment the policy lists."""

    status = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class RequestIdNotFound(GatewayError):
    """Raised when feedback names a request id that was not issued to the caller's tenant."""

    status = 404
    error_type = "invalid_request_error"
    default_code = "request_id_not_found"


class RequestNotAnswered(GatewayError):
    """Raised when feedback names a request that ended in an error response, not an answer."""

    status = 409
    error_type = "invalid_request_error"
    default_code = "request_not_answered"


class RequestTooLarge(GatewayError):
    """Raised when the request body exceeds the configured size limit."""

    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RequestTimedOut(GatewayError):
    """Raised when the request body did not arrive in full within the body timeout."""

    status = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class UnsupportedMediaType(GatewayError):
    """Raised when the request body is compressed or otherwise not plain JSON."""

    status = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"


class ClientDisconnected(GatewayError):
    """Raised when the client closed its connection before the gateway had a response.

    Nobody receives the response. The status is nginx's 499 (client closed request), which
    the outcome record shows.
    """

    status = 499
    error_type = "invalid_request_error"
    default_code = "client_disconnected"

    def __init__(self) -> None:
        super().__init__("The client closed the connection before the response was ready.")


class BudgetExceeded(GatewayError):
    """Raised when a tenant is over its budget."""

    status = 429
    error_type = "insufficient_quota"
    default_code = "budget_exceeded"

    def __init__(self, message: str, **kwargs: str | None) -> None:
        super().__init__(message, **kwargs)
        # A retry cannot succeed before the budget resets, and the official OpenAI clients
        # retry every 429 unless this header says otherwise.
        self.headers = {"x-should-retry": "false"}


class RequestRateExceeded(GatewayError):
    """Raised when a tenant has sent more requests this minute than its ``requests_per_minute``."""

    status = 429
    # OpenAI's API sends this type with its own requests-per-minute errors.
    error_type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(self, limit: int, retry_after_s: float) -> None:
        super().__init__(
            f"This API key's tenant has reached its limit of {limit} requests per minute. "
            f"Retry after {max(1, math.ceil(retry_after_s))} s, when the next minute starts."
        )
        self.limit = limit
        self.retry_after_s = retry_after_s
        # No x-should-retry header, because a retry after the wait succeeds.  The openai
        # Python client retries a 429 after the wait in retry-after-ms.
        self.headers = retry_after_headers(retry_after_s)


class TokenRateExceeded(GatewayError):
    """Raised when a tenant's completions this minute have used its ``tokens_per_minute``."""

    status = 429
    # OpenAI's API sends this type with its own tokens-per-minute errors.
    error_type = "tokens"
    default_code = "rate_limit_exceeded"

    def __init__(self, limit: int, used: int, retry_after_s: float) -> None:
        # ``used`` includes the prompt estimates of the tenant's requests in flight, so a
        # tenant that has received no answer yet can see a count at or above its limit.
        super().__init__(
            f"This API key's tenant has used {used} of its {limit} tokens per minute, "
            "counting the estimated prompt tokens of its requests in flight. "
            f"Retry after {max(1, math.ceil(retry_after_s))} s, when the next minute starts."
        )
        self.headers = retry_after_headers(retry_after_s)


class UpstreamRateLimited(GatewayError):
    """Raised when every eligible deployment rejected the request with HTTP 429."""

    status = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        if retry_after_s is not None:
            self.headers = retry_after_headers(retry_after_s)


class UpstreamFailed(GatewayError):
    """Raised when every eligible deployment failed before sending an answer."""

    status = 502
    default_code = "upstream_error"


class TierNotAllowed(GatewayError):
    """Raised when a key requests a deployment in a tier that its tenant may not use, or an
    alias none of whose tiers its tenant may use."""

    status = 403
    # OpenAI's API returns a 403 of this type for a model that a key may not use.
    error_type = "invalid_request_error"
    default_code = "tier_blocked"


class NoDeploymentAvailable(GatewayError):
    """Raised when no tier has a deployment that can serve the request.

    ``local_model_down`` is true when a local model deployment that could serve the request
    was down, so that a start or restart of the local model can make a retry succeed.
    """

    status = 503
    default_code = "no_deployment_available"

    def __init__(self, message: str, *, local_model_down: bool = False) -> None:
        super().__init__(message)
        self.local_model_down = local_model_down


class ServerShuttingDown(GatewayError):
    """Raised when the server stopped before the request's upstream call finished."""

    status = 503
    default_code = "server_shutdown"

    def __init__(self) -> None:
        super().__init__(
            "The gateway stopped before the upstream answered this request. Retry it; another "
            "replica or the restarted gateway serves it."
        )


class UpstreamTimeout(GatewayError):
    """Raised when the last eligible deployment timed out."""

    status = 504
    default_code = "upstream_timeout"


MAX_RETRY_AFTER_S = 86_400
"""Maximum wait sent to clients; an upstream's retry-after date far in the future is cut to it."""


def retry_after_headers(seconds: float) -> dict[str, str]:
    """Return ``retry-after`` (whole seconds, 1 to MAX_RETRY_AFTER_S) and ``retry-after-ms``.

    Both are sent because the openai Python SDK reads retry-after-ms first and many other HTTP
    clients read only retry-after.
    """
    seconds = min(seconds, MAX_RETRY_AFTER_S)
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


def error_body(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Build OpenAI's error object."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def render_error(error: GatewayError) -> Response:
    """Render ``error`` as an OpenAI-shaped JSON response."""
    body = error_body(error.message, error.error_type, param=error.param, code=error.code)
    return Response(
        orjson.dumps(body),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


def sse_error_event(error: GatewayError) -> bytes:
    """Encode ``error`` as one SSE event, for failures after a stream has started."""
    body = error_body(error.message, error.error_type, param=error.param, code=error.code)
    return b"data: " + orjson.dumps(body) + b"\n\n"
