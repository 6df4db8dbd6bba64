"""``GatewayMetrics`` counts in plain numbers and reports what prometheus_client's types report."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import LATENCY_BUCKETS_S, SCORE_BUCKETS, GatewayMetrics


class NamedModels:
    """The two methods of ``Policy`` that the requested-model label reads."""

    def has_model(self, model: str) -> bool:
        return model in ("auto", "edge-small")

    def embedding_candidates(self, model: str) -> None:
        return None


def record(**changes: Any) -> dict[str, Any]:
    base = {
        "tier": "edge", "model": "edge-small", "status": 200, "cache_hit": False,
        "requested_model": "auto", "error": None, "latency_ms": 12.5, "first_byte_ms": None,
        "tokens_in": 10, "tokens_out": 20, "cost_usd": 0.001, "baseline_cost_usd": 0.01,
        "scores": {"edge": 0.8, "mid": 0.9}, "attempts": [{"tier": "edge"}],
    }
    return {**base, **changes}


# Bucket bounds exactly, values past the last bound, NaN, and a cache hit that costs 0.
RECORDS = [
    record(latency_ms=1.0, scores={"edge": 0.05, "mid": 1.0}),
    record(latency_ms=2.5, cache_hit=True, cost_usd=0.0),
    record(latency_ms=61_000.0, scores={"edge": 0.0, "mid": math.nan}),
    record(latency_ms=math.nan, tier="mid", model="mid-1", cost_usd=0.02),
    record(latency_ms=7.0, requested_model="gpt-x", tokens_in=3, tokens_out=0),
]


def reference_exposition() -> str:
    """Count RECORDS with prometheus_client's Counter, Histogram and Gauge."""
    registry = CollectorRegistry()
    requests = Counter("tierwise_requests", "x", ["tier", "model", "status_class", "cache", "requested_model"],
                       registry=registry)
    latency = Histogram("tierwise_request_duration_seconds", "x", ["tier", "model"],
                        buckets=LATENCY_BUCKETS_S, registry=registry)
    scores = Histogram("tierwise_classifier_score", "x", ["tier"], buckets=SCORE_BUCKETS, registry=registry)
    tokens = Counter("tierwise_tokens", "x", ["tier", "model", "type"], registry=registry)
    savings = Gauge("tierwise_savings_usd", "x", registry=registry)
    for row in RECORDS:
        requested = row["requested_model"] if row["requested_model"] in ("auto", "edge-small") else "unknown"
        cache = "hit" if row["cache_hit"] else "miss"
        requests.labels(row["tier"], row["model"], "2xx", cache, requested).inc()
        latency.labels(row["tier"], row["model"]).observe(row["latency_ms"] / 1000)
        tokens.labels(row["tier"], row["model"], "input").inc(row["tokens_in"])
        tokens.labels(row["tier"], row["model"], "output").inc(row["tokens_out"])
        for tier, score in row["scores"].items():
            scores.labels(tier).observe(score)
        savings.inc(row["baseline_cost_usd"] - row["cost_usd"])
    return generate_latest(registry).decode()


def samples(text: str, families: set[str]) -> dict[tuple[str, frozenset[tuple[str, str]]], float | str]:
    """Return the samples of ``families``, with each ``_created`` value replaced by a marker."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float | str] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in families:
            continue
        for sample in family.samples:
            value = "created" if sample.name.endswith("_created") else repr(sample.value)
            found[(sample.name, frozenset(sample.labels.items()))] = value
    return found


def test_metrics_match_prometheus_client_types() -> None:
    metrics = GatewayMetrics()
    for row in RECORDS:
        metrics.observe(row, NamedModels(), "math")  # type: ignore[arg-type]

    families = {"tierwise_requests", "tierwise_request_duration_seconds", "tierwise_classifier_score",
                "tierwise_tokens", "tierwise_savings_usd"}
    ours = samples(generate_latest(metrics.registry).decode(), families)
    expected = samples(reference_exposition(), families)
    assert ours == expected
    assert ("tierwise_request_duration_seconds_bucket",
            frozenset({("tier", "edge"), ("model", "edge-small"), ("le", "+Inf")})) in ours


def test_metrics_series_exist_after_first_request() -> None:
    metrics = GatewayMetrics()
    before = generate_latest(metrics.registry).decode()
    metrics.observe(record(), NamedModels(), None)  # type: ignore[arg-type]
    after = generate_latest(metrics.registry).decode()

    assert "tierwise_requests_total{" not in before
    assert "# TYPE tierwise_requests_total counter" in before
    assert "tierwise_savings_usd 0.0" in before
    # The deployment's series all start with its first request, a zero first-byte histogram too.
    assert 'tierwise_time_to_first_byte_seconds_count{model="edge-small",tier="edge"} 0.0' in after
    assert 'tierwise_cache_hits_total{model="edge-small",tier="edge"} 0.0' in after
    assert 'tierwise_routed_requests_total{category="other",tier="edge"} 1.0' in after
