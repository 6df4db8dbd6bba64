"""What every upstream transport provides, and how upstream failures are classified."""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

from router.policy.schema import Deployment, EmbeddingDeployment

ErrorKind = Literal["context", "timeout", "connection", "server", "client", "stream"]

# Providers word context-length errors differently; these cover OpenAI, Anthropic, vLLM,
# llama.cpp ("the request exceeds the available context size"), Ollama and litellm's own
# wording.
_CONTEXT_PATTERN = re.compile(
    r"context[_ ](?:length|size)|context window|maximum context|too many tokens|prompt is too long"
    r"|input is too long|exceeds? the (?:maximum|context)|reduce the length|n_ctx|token limit",
    re.IGNORECASE,
)


class UpstreamError(Exception):
    """Raised by a transport when a deployment fails to answer.

    ``kind`` decides what the dispatcher does next: ``client`` errors go back to the caller,
    every other kind moves on to the next candidate deployment.  ``message`` is the
    provider's text, which only reaches clients for ``client`` errors. The dispatcher logs it
    with the request's prompt texts replaced (``dispatch.without_prompts``).
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: ErrorKind = kind
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        """Seconds the upstream asked the caller to wait before retrying, from its headers."""
        self.param = param
        """The request parameter that the upstream's error body names, if any."""


class StreamEndedWithoutDone(UpstreamError):
    """Raised when a stream's body ended cleanly before its ``data: [DONE]`` event.

    A stream whose every choice already has a finish reason is complete, so the relay serves
    it as such; some OpenAI-compatible servers leave out ``[DONE]``.
    """


def classify_http_error(
    status: int, message: str, retry_after_s: float | None = None, param: str | None = None
) -> UpstreamError:
    """Turn an upstream HTTP error status and message into an ``UpstreamError``."""
    if _CONTEXT_PATTERN.search(message):
        kind: ErrorKind = "context"
    elif status in (408, 504):
        kind = "timeout"
    elif status in (401, 403, 404, 413, 429) or status >= 500:
        # A rejected provider key, a rate limit, a wrong model name or path (404) and a body
        # past the upstream's own size limit (413) are the deployment's problem, not the
        # caller's, so the next candidate gets the request.
        kind = "server"
    else:
        kind = "client"
    return UpstreamError(kind, message, status, retry_after_s, param)


def parse_retry_after(retry_after_ms: str | None, retry_after: str | None) -> float | None:
    """Return the wait in seconds that an error response's headers request, or None.

    ``retry-after-ms`` (milliseconds) takes precedence over ``retry-after`` (seconds or an
    HTTP date), in the order that the openai Python SDK (3.63) reads them. Invalid and
    negative values count as absent, and a date in the past counts as 0.
    """
    if retry_after_ms is not None:
        milliseconds = _non_negative_number(retry_after_ms)
        if milliseconds is not None:
            return milliseconds / 1000
    if retry_after is None:
        return None
    if retry_after.strip().lstrip("+-").replace(".", "", 1).isdigit():
        return _non_negative_number(retry_after)
    try:
        moment = parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)


def _non_negative_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def error_message_of(payload: Any) -> str:
    """Extract the human-readable message from an OpenAI-style error payload."""
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)
    return str(payload)


MAX_PARAM_CHARS = 200
"""Maximum length of an upstream ``param`` value passed on to clients; longer ones are dropped."""


def error_param_of(payload: Any) -> str | None:
    """Return the ``param`` string of an OpenAI-style error payload, or None."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error", payload)
    param = error.get("param") if isinstance(error, dict) else None
    if isinstance(param, str) and 0 < len(param) <= MAX_PARAM_CHARS:
        return param
    return None


RATE_LIMIT_PREFIX = "x-ratelimit-"
"""Prefix of OpenAI's rate-limit headers (``x-ratelimit-remaining-requests`` and others)."""
REQUEST_ID_HEADERS = ("x-request-id", "request-id")
"""Headers with the provider's id of a call: OpenAI sends the first, Anthropic the second."""
MAX_PASSED_HEADERS = 12
MAX_PASSED_VALUE_CHARS = 128


class UpstreamHeaders:
    """Response headers of the responding deployment that the gateway passes on.

    Rate-limit headers (``x-ratelimit-*``) reach the client unchanged. The provider's
    request id goes to the client as ``x-tierwise-upstream-request-id`` and into the outcome
    record, where it identifies the call in a support request to the provider.  A value that
    is not printable ASCII or is longer than MAX_PASSED_VALUE_CHARS is dropped, and at most
    MAX_PASSED_HEADERS rate-limit headers are kept.
    """

    __slots__ = ("rate_limits", "request_id")

    def __init__(self) -> None:
        self.rate_limits: dict[str, str] = {}
        self.request_id: str | None = None

    def take(self, name: str, value: str) -> None:
        """Keep header ``name`` (lower case) if it is one to pass on."""
        if not (0 < len(value) <= MAX_PASSED_VALUE_CHARS and value.isascii() and value.isprintable()):
            return
        if name.startswith(RATE_LIMIT_PREFIX):
            if name in self.rate_limits or (
                len(self.rate_limits) < MAX_PASSED_HEADERS and _is_token(name)
            ):
                self.rate_limits[name] = value
        elif name in REQUEST_ID_HEADERS and self.request_id is None:
            self.request_id = value


def _is_token(name: str) -> bool:
    return name.isascii() and all(char.isalnum() or char == "-" for char in name)


class Transport(Protocol):
    async def complete(
        self, deployment: Deployment, body: dict[str, Any], seen: UpstreamHeaders | None = None
    ) -> dict[str, Any]:
        """Send a non-streaming request; return the completion as a dict.

        When ``seen`` is given, the response's headers to pass on are put into it.
        """
        ...

    def stream(
        self, deployment: Deployment, body: dict[str, Any], seen: UpstreamHeaders | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Send a streaming request; yield chunk dicts until the upstream's [DONE].

        When ``seen`` is given, the response's headers to pass on are put into it before
        the first chunk is yielded.
        """
        ...

    async def embed(
        self,
        deployment: EmbeddingDeployment,
        body: dict[str, Any],
        seen: UpstreamHeaders | None = None,
    ) -> dict[str, Any]:
        """Send an embeddings request; return the response (``{"data": [...], ...}``) as a dict."""
        ...

    async def close(self) -> None: ...
