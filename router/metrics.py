"""Prometheus metrics of one gateway app, fed once per request from its outcome record.

Each app owns a ``CollectorRegistry`` (never the process-wide default), so several apps in
one process, as in the tests, keep separate counts.  Label values come from the policy
(tier, deployment, alias names), the gateway's own error codes and the fixed prompt
categories, never from free client input: a requested model that the policy does not know
is counted as ``unknown``.

Per-request cost is a few dictionary look-ups and additions to plain Python numbers, which a
collector turns into metric families only when ``/metrics`` is scraped.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

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


class _Histogram:
    """Bucket counts and sum of one histogram series, kept in plain Python numbers."""

    __slots__ = ("bounds", "counts", "created", "total")

    def __init__(self, bounds: tuple[float, ...], created: float) -> None:
        self.bounds = bounds
        """Upper bounds, the last one +Inf."""
        self.counts = [0] * len(bounds)
        """Observations per bucket, not cumulative."""
        self.total = 0.0
        self.created = created

    def observe(self, value: float) -> None:
        # The first bucket whose bound is >= value, as prometheus_client's Histogram.observe
        # picks it. NaN falls in no bucket but is added to the sum, as there.
        if value <= self.bounds[-1]:
            self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            buckets.append((floatToGoString(bound), running))
        return buckets


class _Count:
    """One counter series: its running total and the time it was first counted."""

    __slots__ = ("created", "value")

    def __init__(self, created: float) -> None:
        self.value: float = 0
        self.created = created


class _DeploymentSeries:
    """The histograms and counters of one (tier, model) pair, created together."""

    __slots__ = ("baseline", "cache_hits", "cost", "created", "first_byte", "latency",
                 "tokens_in", "tokens_out")

    def __init__(self, created: float) -> None:
        self.created = created
        self.latency = _Histogram(_LATENCY_BOUNDS, created)
        self.first_byte = _Histogram(_LATENCY_BOUNDS, created)
        self.tokens_in: float = 0
        self.tokens_out: float = 0
        self.cost = 0.0
        self.baseline = 0.0
        self.cache_hits = 0


_LATENCY_BOUNDS = (*LATENCY_BUCKETS_S, math.inf)
_SCORE_BOUNDS = (*SCORE_BUCKETS, math.inf)
# prometheus_client 0.26 reads the same variable, so the _created series appear or not as
# they do for its own metrics (its disable_created_metrics() call is not followed).
_USE_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
    "true", "1", "t",
)


class GatewayMetrics:
    """The gateway's Prometheus metrics in their own registry (see :meth:`observe`).

    ``observe`` runs once per request, so it adds to plain Python numbers, and a collector
    turns them into metric families when ``/metrics`` is scraped. prometheus_client's own
    ``Counter.inc`` and ``Histogram.observe`` take a lock per call and loop over the buckets
    in Python. Both ``observe`` and a scrape run on the event loop's thread.
    """

    def __init__(self, read_state: Callable[[], GatewayState] | None = None) -> None:
        self.registry = CollectorRegistry()
        self._series: dict[tuple[str, str], _DeploymentSeries] = {}
        self._requests: dict[tuple[str, ...], _Count] = {}
        self._errors: dict[str, _Count] = {}
        self._fallbacks: dict[tuple[str, ...], _Count] = {}
        self._scores: dict[str, _Histogram] = {}
        self._routed: dict[tuple[str, ...], _Count] = {}
        self._savings = 0.0
        self.registry.register(_RequestCollector(self))
        self.shadow = ShadowMetrics(self.registry)
        if read_state is not None:
            self.registry.register(_StateCollector(read_state))
        ProcessCollector(registry=self.registry)

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
        _count(self._requests, (tier, model, f"{status // 100}xx", cache, requested))
        if record["tier"] is not None:
            # Any value outside the fixed set is counted as "other", so the series stay bounded.
            _count(self._routed, (record["tier"], category if category in CATEGORIES else "other"))
        if record["error"] is not None or status >= 400:
            _count(self._errors, record["error"] or f"http_{status}")
        self._observe_deployment(tier, model, record)
        if record["scores"]:
            self._observe_scores(record["scores"])
        attempts = record["attempts"]
        if len(attempts) > 1:
            for failed, following in itertools.pairwise(attempts):
                _count(self._fallbacks, (failed["tier"], following["tier"]))

    def _observe_deployment(self, tier: str, model: str, record: Mapping[str, Any]) -> None:
        series = self._series.get((tier, model))
        if series is None:
            series = self._series[(tier, model)] = _DeploymentSeries(time.time())
        series.latency.observe(record["latency_ms"] / 1000)
        if record["first_byte_ms"] is not None:
            series.first_byte.observe(record["first_byte_ms"] / 1000)
        if record["cache_hit"]:
            series.cache_hits += 1
        series.tokens_in += record["tokens_in"]
        series.tokens_out += record["tokens_out"]
        cost, baseline = record["cost_usd"], record["baseline_cost_usd"]
        series.cost += cost
        series.baseline += baseline
        self._savings += baseline - cost

    def _observe_scores(self, scores: Mapping[str, float]) -> None:
        for tier, score in scores.items():
            histogram = self._scores.get(tier)
            if histogram is None:
                histogram = self._scores[tier] = _Histogram(_SCORE_BOUNDS, time.time())
            histogram.observe(score)


def _count(series: dict[Any, _Count], key: Any) -> None:
    entry = series.get(key)
    if entry is None:
        entry = series[key] = _Count(time.time())
    entry.value += 1


class _RequestCollector(Collector):
    """A collector that builds the metric families of a ``GatewayMetrics`` at scrape time.

    The families, their order, names, help texts and samples are those that
    prometheus_client's ``Counter``, ``Histogram`` and ``Gauge`` gave before: a counter
    series has ``_total`` and ``_created``, and a histogram series has its buckets,
    ``_count``, ``_sum`` and ``_created``.
    """

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        # Without samples: the registry reads only the names, to reject duplicates.
        return iter(self._families(empty=True))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(empty=False))

    def _families(self, empty: bool) -> list[Metric]:
        m = self._metrics
        series = {} if empty else m._series
        requests = _counter(
            "tierwise_requests",
            "Chat completion requests by served tier and model, status class, cache result "
            "and requested model (router alias or deployment name).",
            ["tier", "model", "status_class", "cache", "requested_model"],
            {} if empty else m._requests,
        )
        errors = _counter(
            "tierwise_errors", "Failed requests by error code.", ["code"],
            {} if empty else {(code,): entry for code, entry in m._errors.items()},
        )
        latency = _histogram(
            "tierwise_request_duration_seconds",
            "Time from request arrival to the outcome record (the end of the stream for streams).",
            ["tier", "model"], {key: s.latency for key, s in series.items()},
        )
        first_byte = _histogram(
            "tierwise_time_to_first_byte_seconds",
            "Time from request arrival to the first upstream chunk of a streamed answer.",
            ["tier", "model"], {key: s.first_byte for key, s in series.items()},
        )
        cache_hits = _counter(
            "tierwise_cache_hits", "Requests answered from the response cache.", ["tier", "model"],
            {key: _value(s.cache_hits, s.created) for key, s in series.items()},
        )
        scores = _histogram(
            "tierwise_classifier_score",
            "Classifier P(adequate) of each tier head for requests to a router alias.",
            ["tier"], {} if empty else {(tier,): h for tier, h in m._scores.items()},
        )
        routed = _counter(
            "tierwise_routed_requests",
            "Requests that were given a tier, by tier and prompt category (a fixed set of "
            "topics from keyword rules on the last user message).",
            ["tier", "category"], {} if empty else m._routed,
        )
        fallbacks = _counter(
            "tierwise_fallbacks",
            "Escalations from a failed deployment's tier to the next candidate's tier.",
            ["from_tier", "to_tier"], {} if empty else m._fallbacks,
        )
        tokens = _counter(
            "tierwise_tokens", "Tokens by direction (input or output).", ["tier", "model", "type"],
            {
                (*key, direction): _value(value, s.created)
                for key, s in series.items()
                for direction, value in (("input", s.tokens_in), ("output", s.tokens_out))
            },
        )
        cost = _counter(
            "tierwise_cost_usd", "Cost at the policy's prices, in USD (cache hits cost 0).",
            ["tier", "model"], {key: _value(s.cost, s.created) for key, s in series.items()},
        )
        baseline = _counter(
            "tierwise_baseline_cost_usd",
            "What the same tokens would have cost on the frontier tier's first deployment, in USD.",
            ["tier", "model"], {key: _value(s.baseline, s.created) for key, s in series.items()},
        )
        # A gauge, not a counter: a fallback to a pricier deployment makes one request's
        # savings negative, and counters must never decrease.
        savings = GaugeMetricFamily(
            "tierwise_savings_usd",
            "Baseline cost minus actual cost since the process started, in USD.",
            value=None if empty else m._savings,
        )
        return [requests, errors, latency, first_byte, cache_hits, scores, routed, fallbacks,
                tokens, cost, baseline, savings]


def _value(value: float, created: float) -> _Count:
    entry = _Count(created)
    entry.value = value
    return entry


def _counter(
    name: str, documentation: str, labels: list[str], series: Mapping[tuple[str, ...], _Count]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, entry in series.items():
        family.add_metric(list(key), entry.value, created=entry.created if _USE_CREATED else None)
    return family


def _histogram(
    name: str, documentation: str, labels: list[str], series: Mapping[tuple[str, ...], _Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for key, histogram in series.items():
        family.add_metric(list(key), histogram.cumulative(), histogram.total)
        if _USE_CREATED:
            family.samples.append(
                Sample(f"{name}_created", dict(zip(labels, key, strict=True)), histogram.created)
            )
    return family


def _requested_label(requested: str, policy: Policy) -> str:
    """Return the requested model when the policy names it, else ``unknown`` (or ``none``)."""
    if not requested:
        return NONE_LABEL
    if policy.has_model(requested) or policy.embedding_candidates(requested) is not None:
        return requested
    return UNKNOWN_MODEL_LABEL
