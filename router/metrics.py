"""Prometheus metrics of one gateway app, fed once per request from its outcome record.

Each app owns a ``CollectorRegistry`` (never the process-wide default), so several apps in
one process, as in the tests, keep separate counts.  Label values come from the policy
(tier, deployment, alias names), the gateway's own error codes and the fixed prompt
categories, never from free client input: a requested model that the policy does not know
is counted as ``unknown``.

Per-request cost is a few dictionary look-ups and counter increments, because the label
children of each (tier, model) pair and each request label set are bound once and reused.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from router.routing.category import CATEGORIES
from router.shadow.metrics import ShadowMetrics

if TYPE_CHECKING:
    from router.policy.schema import Policy
    from router.runtime import Runtime

# Seconds, from 1 ms (a cache hit) to 60 s (a long frontier completion).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)
# Classifier scores are probabilities, and 0.05 steps resolve the usual 0.6-0.8 thresholds.
SCORE_BUCKETS: tuple[float, ...] = tuple(round(step * 0.05, 2) for step in range(1, 21))
NONE_LABEL = "none"
UNKNOWN_MODEL_LABEL = "unknown"
REDIS_STATE_VALUES: dict[str, float] = {"ok": 1.0, "degraded": 0.0, "not_configured": -1.0}


@dataclass(frozen=True, slots=True)
class GatewayState:
    """Gateway state that ``/metrics`` reports at scrape time."""

    redis: str
    """``ok``, ``degraded`` (circuit breaker open) or ``not_configured``."""
    policy_version: str
    policy_name: str
    classifier_version: str
    cooling: dict[str, float]
    """Deployment name -> seconds left of its cooldown (``router/upstream/health.py``)."""


def gateway_state(runtime: Runtime) -> GatewayState:
    """Read the runtime's current Redis, policy and classifier state without any I/O."""
    loaded = runtime.policies.current
    return GatewayState(
        redis=runtime.redis.state if runtime.redis is not None else "not_configured",
        policy_version=loaded.version,
        policy_name=loaded.policy.name,
        classifier_version=str(getattr(runtime.scorer, "version", "") or ""),
        cooling=runtime.health.cooling(),
    )


class _StateCollector(Collector):
    """Reports the Redis state and the policy and classifier versions when scraped."""

    def __init__(self, read_state: Callable[[], GatewayState]) -> None:
        self._read_state = read_state

    def collect(self) -> Iterator[Metric]:
        state = self._read_state()
        redis = GaugeMetricFamily(
            "tierwise_redis_state",
            "Redis link: 1 ok, 0 degraded (circuit breaker open), -1 not configured.",
        )
        redis.add_metric([], REDIS_STATE_VALUES.get(state.redis, 0.0))
        yield redis
        policy = InfoMetricFamily("tierwise_policy", "The policy the gateway routes with.")
        policy.add_metric([], {"version": state.policy_version, "name": state.policy_name})
        yield policy
        classifier = InfoMetricFamily("tierwise_classifier", "The loaded prompt classifier.")
        classifier.add_metric([], {"version": state.classifier_version})
        yield classifier
        cooling = GaugeMetricFamily(
            "tierwise_deployment_cooldown_seconds",
            "Seconds left of a deployment's cooldown after failures in a row; "
            "only cooling deployments are listed.",
            labels=["deployment"],
        )
        for name, seconds in sorted(state.cooling.items()):
            cooling.add_metric([name], seconds)
        yield cooling


@dataclass(frozen=True, slots=True)
class _DeploymentSeries:
    """Label children bound to one (tier, model) pair."""

    latency: Any
    first_byte: Any
    tokens_in: Any
    tokens_out: Any
    cost: Any
    baseline: Any
    cache_hits: Any


class GatewayMetrics:
    """The gateway's Prometheus metrics in their own registry; see :meth:`observe`."""

    def __init__(self, read_state: Callable[[], GatewayState] | None = None) -> None:
        self.registry = CollectorRegistry()
        self._define_request_metrics()
        self._define_money_metrics()
        self.shadow = ShadowMetrics(self.registry)
        if read_state is not None:
            self.registry.register(_StateCollector(read_state))
        ProcessCollector(registry=self.registry)
        self._series: dict[tuple[str, str], _DeploymentSeries] = {}
        self._request_children: dict[tuple[str, ...], Any] = {}
        self._error_children: dict[str, Any] = {}
        self._fallback_children: dict[tuple[str, str], Any] = {}
        self._score_children: dict[str, Any] = {}
        self._routed_children: dict[tuple[str, str], Any] = {}

    def _define_request_metrics(self) -> None:
        registry = self.registry
        self.requests = Counter(
            "tierwise_requests",
            "Chat completion requests by served tier and model, status class, cache result "
            "and requested model (router alias or deployment name).",
            ["tier", "model", "status_class", "cache", "requested_model"],
            registry=registry,
        )
        self.errors = Counter(
            "tierwise_errors", "Failed requests by error code.", ["code"], registry=registry
        )
        self.latency = Histogram(
            "tierwise_request_duration_seconds",
            "Time from request arrival to the outcome record (the end of the stream for streams).",
            ["tier", "model"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.first_byte = Histogram(
            "tierwise_time_to_first_byte_seconds",
            "Time from request arrival to the first upstream chunk of a streamed answer.",
            ["tier", "model"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.cache_hits = Counter(
            "tierwise_cache_hits", "Requests answered from the response cache.",
            ["tier", "model"], registry=registry,
        )
        self.scores = Histogram(
            "tierwise_classifier_score",
            "Classifier P(adequate) of each tier head for requests to a router alias.",
            ["tier"],
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self.routed = Counter(
            "tierwise_routed_requests",
            "Requests that were given a tier, by tier and prompt category (a fixed set of "
            "topics from keyword rules on the last user message).",
            ["tier", "category"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "tierwise_fallbacks",
            "Escalations from a failed deployment's tier to the next candidate's tier.",
            ["from_tier", "to_tier"],
            registry=registry,
        )

    def _define_money_metrics(self) -> None:
        registry = self.registry
        self.tokens = Counter(
            "tierwise_tokens", "Tokens by direction (input or output).",
            ["tier", "model", "type"], registry=registry,
        )
        self.cost = Counter(
            "tierwise_cost_usd", "Cost at the policy's prices, in USD (cache hits cost 0).",
            ["tier", "model"], registry=registry,
        )
        self.baseline = Counter(
            "tierwise_baseline_cost_usd",
            "What the same tokens would have cost on the frontier tier's first deployment, in USD.",
            ["tier", "model"],
            registry=registry,
        )
        # A gauge, not a counter: a fallback to a pricier deployment makes one request's
        # savings negative, and counters must never decrease.
        self.savings = Gauge(
            "tierwise_savings_usd",
            "Baseline cost minus actual cost since the process started, in USD.",
            registry=registry,
        )

    def observe(
        self, record: Mapping[str, Any], policy: Policy, category: str | None = None
    ) -> None:
        """Count one finished request from its outcome record (``Outcome.as_record``).

        ``category`` is the request's prompt category (``router.routing.category``), which
        the record does not contain; requests with a tier but no category count as ``other``.
        """
        tier = record["tier"] or NONE_LABEL
        model = record["model"] or NONE_LABEL
        status: int = record["status"]
        cache = "hit" if record["cache_hit"] else "miss"
        requested = _requested_label(record["requested_model"], policy)
        self._request_child(tier, model, f"{status // 100}xx", cache, requested).inc()
        if record["tier"] is not None:
            self._routed_child(record["tier"], category).inc()
        if record["error"] is not None or status >= 400:
            self._error_child(record["error"] or f"http_{status}").inc()
        self._observe_deployment(self._series_for(tier, model), record)
        if record["scores"]:
            self._observe_scores(record["scores"])
        attempts = record["attempts"]
        if len(attempts) > 1:
            self._observe_fallbacks(attempts)

    def _observe_deployment(self, series: _DeploymentSeries, record: Mapping[str, Any]) -> None:
        series.latency.observe(record["latency_ms"] / 1000)
        if record["first_byte_ms"] is not None:
            series.first_byte.observe(record["first_byte_ms"] / 1000)
        if record["cache_hit"]:
            series.cache_hits.inc()
        series.tokens_in.inc(record["tokens_in"])
        series.tokens_out.inc(record["tokens_out"])
        cost, baseline = record["cost_usd"], record["baseline_cost_usd"]
        series.cost.inc(cost)
        series.baseline.inc(baseline)
        self.savings.inc(baseline - cost)

    def _observe_scores(self, scores: Mapping[str, float]) -> None:
        for tier, score in scores.items():
            child = self._score_children.get(tier)
            if child is None:
                child = self._score_children[tier] = self.scores.labels(tier)
            child.observe(score)

    def _observe_fallbacks(self, attempts: list[Mapping[str, Any]]) -> None:
        for failed, following in itertools.pairwise(attempts):
            key = (failed["tier"], following["tier"])
            child = self._fallback_children.get(key)
            if child is None:
                child = self._fallback_children[key] = self.fallbacks.labels(*key)
            child.inc()

    def _request_child(self, *labels: str) -> Any:
        child = self._request_children.get(labels)
        if child is None:
            child = self._request_children[labels] = self.requests.labels(*labels)
        return child

    def _routed_child(self, tier: str, category: str | None) -> Any:
        # Any value outside the fixed set is counted as "other", so the series stay bounded.
        label = category if category in CATEGORIES else "other"
        child = self._routed_children.get((tier, label))
        if child is None:
            child = self._routed_children[(tier, label)] = self.routed.labels(tier, label)
        return child

    def _error_child(self, code: str) -> Any:
        child = self._error_children.get(code)
        if child is None:
            child = self._error_children[code] = self.errors.labels(code)
        return child

    def _series_for(self, tier: str, model: str) -> _DeploymentSeries:
        series = self._series.get((tier, model))
        if series is None:
            series = self._series[(tier, model)] = _DeploymentSeries(
                latency=self.latency.labels(tier, model),
                first_byte=self.first_byte.labels(tier, model),
                tokens_in=self.tokens.labels(tier, model, "input"),
                tokens_out=self.tokens.labels(tier, model, "output"),
                cost=self.cost.labels(tier, model),
                baseline=self.baseline.labels(tier, model),
                cache_hits=self.cache_hits.labels(tier, model),
            )
        return series


def _requested_label(requested: str, policy: Policy) -> str:
    """Return the requested model when the policy names it, else ``unknown`` (or ``none``)."""
    if not requested:
        return NONE_LABEL
    if policy.has_model(requested) or policy.embedding_candidates(requested) is not None:
        return requested
    return UNKNOWN_MODEL_LABEL
