"""The outcome record: what happened to one request, for cost reports and retraining."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from router.policy.schema import Deployment, EmbeddingDeployment, Policy
from router.upstream.base import UpstreamHeaders

if TYPE_CHECKING:
    from router.ratelimits import TokenReservation

_log = structlog.get_logger("tierwise.outcomes")
MAX_TOKEN_COUNT = 1_000_000_000
"""Largest token count taken from an upstream's usage; no context window comes near it."""


@dataclass
class Outcome:
    """Mutable while the request runs; ``as_record`` freezes it into a plain dict."""

    request_id: str
    tenant: str
    requested_model: str
    policy_version: str
    classifier_version: str | None
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    timestamp: float = field(default_factory=time.time)
    scores: dict[str, float] | None = None
    messages: Any = None
    """The routed request's messages, kept so that ``category`` can be computed after the
    response is sent; never written to the record."""
    category: str | None = None
    """Coarse topic of the last user message (``router.routing.category``): a label in
    ``/metrics`` and the record, and the key of the policy's ``category_floors``."""
    tier: str | None = None
    deployment: Deployment | EmbeddingDeployment | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    """Input tokens that the provider read from its own prompt cache, part of ``tokens_in``."""
    cache_hit: bool = False
    attempts: list[Any] = field(default_factory=list)
    """Dispatch attempts; each has ``as_record()``."""
    error: str | None = None
    status: int = 200
    first_byte_ms: float | None = None
    prompt: Any = None
    client_request_id: str | None = None
    """The client's own x-request-id when the gateway issued another id in its place."""
    large_body: bool = False
    """Whether the request body exceeded ``router.api.admission.OFFLOAD_BODY_BYTES``. The
    steps whose time grows with the body then run in the parsing thread. Never written to
    the record."""
    issued_request_id: str | None = None
    """The id issued at admission, when an error response re-signed ``request_id`` as
    unanswered (``router.request_ids``); the log lines written before the error carry it.
    Never written to the record."""
    token_reservation: TokenReservation | None = None
    """Prompt tokens estimated at admission and counted against the tenant's token limit
    until the request ends (``router.ratelimits``); never written to the record."""
    upstream: UpstreamHeaders | None = None
    """Headers of the deployment whose response was used, passed on to the client. None for a
    cache hit."""
    endpoint: str | None = None
    """``embeddings`` for POST /v1/embeddings, written to the record as ``endpoint``; None for
    the chat endpoints, whose records have no such field."""
    api: str | None = None
    """``responses``, ``messages`` or ``completions`` for a request that came in through
    that API and was served as a chat completion, written to the record as ``api``; None for
    POST /v1/chat/completions, whose records have no such field."""

    def cost_usd(self) -> float:
        if self.cache_hit or self.deployment is None:
            return 0.0
        return self.deployment.cost_usd(self.tokens_in, self.tokens_out, self.tokens_cached)

    def set_usage(self, usage: Any) -> None:
        """Take the token counts of an upstream ``usage`` object.

        A count that is not a whole number from 0 to MAX_TOKEN_COUNT is recorded as 0, with a
        warning. So a faulty upstream cannot break the outcome record, because orjson writes
        integers of up to 64 bits, and cannot lower a tenant's spend with a negative cost.
        """
        if not usage or not isinstance(usage, dict):
            return
        self.tokens_in = self._token_count(usage, "prompt_tokens")
        self.tokens_out = self._token_count(usage, "completion_tokens")
        details = usage.get("prompt_tokens_details")
        cached = 0
        if isinstance(details, dict) and details.get("cached_tokens") is not None:
            cached = self._token_count(details, "cached_tokens")
        # More cached tokens than input tokens would make the input cost negative.
        self.tokens_cached = min(cached, self.tokens_in)

    def _token_count(self, usage: dict[str, Any], key: str) -> int:
        value = usage.get(key)
        if value is None:
            return 0
        count = valid_token_count(value)
        if count is not None:
            return count
        _log.warning(
            "upstream_usage_invalid",
            request_id=self.request_id,
            field=key,
            value=str(value)[:40],
            effect="counted as 0 tokens",
        )
        return 0

    def as_record(self, policy: Policy) -> dict[str, Any]:
        latency_ms = (time.perf_counter() - self.started) * 1000
        record: dict[str, Any] = {
            "type": "request",
            "request_id": self.request_id,
            "ts": round(self.timestamp, 3),
            "tenant": self.tenant,
            "requested_model": self.requested_model,
            "policy_version": self.policy_version,
            "classifier_version": self.classifier_version,
            "scores": self.scores,
            "category": self.category,
            "tier": self.tier,
            "model": self.deployment.name if self.deployment else None,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tokens_cached": self.tokens_cached,
            "cost_usd": round(self.cost_usd(), 8),
            "baseline_cost_usd": round(self._baseline_cost(policy), 8),
            "latency_ms": round(latency_ms, 2),
            "first_byte_ms": None if self.first_byte_ms is None else round(self.first_byte_ms, 2),
            "cache_hit": self.cache_hit,
            "stream": self.stream,
            "attempts": [attempt.as_record() for attempt in self.attempts],
            "error": self.error,
            "status": self.status,
        }
        if self.endpoint is not None:
            record["endpoint"] = self.endpoint
        if self.api is not None:
            record["api"] = self.api
        if self.prompt is not None:
            # The messages of a chat request, or the input of an embeddings request.
            record["messages" if self.endpoint is None else "input"] = self.prompt
        if self.client_request_id is not None:
            record["client_request_id"] = self.client_request_id
        if self.upstream is not None and self.upstream.request_id is not None:
            record["upstream_request_id"] = self.upstream.request_id
        return record

    def _baseline_cost(self, policy: Policy) -> float:
        if self.endpoint is not None:
            # No tier serves embeddings, so there is no frontier tier to compare with.
            return self.cost_usd()
        return baseline_cost(policy, self.tokens_in, self.tokens_out, self.tokens_cached)


def valid_token_count(value: Any) -> int | None:
    """Return ``value`` as a token count if it is a whole number from 0 to MAX_TOKEN_COUNT.

    A float with no fraction counts, as JSON parsers may produce one. Returns None otherwise.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    return None


def baseline_cost(policy: Policy, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float:
    """What the same tokens would cost on the most capable tier's first deployment."""
    tiers = policy.ordered_tiers()
    if not tiers:
        return 0.0
    return tiers[-1][1].deployments[0].cost_usd(tokens_in, tokens_out, tokens_cached)
