"""``GET /metrics``: Prometheus counts per request, scrape-time state, and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import LATENCY_BUCKETS_S, GatewayMetrics, GatewayState
from tests.gateway.conftest import Gateway, GatewayKit, StubScorer, chat_body
from tests.support.scenario import Scenario

GRAFANA_DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tierwise.json"
METRIC_NAME = re.compile(r"\btierwise_[a-z0-9_]+")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gateway: Gateway) -> Samples:
    """GET /metrics and return every sample keyed by (name, labels)."""
    response = await gateway.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_samples(response.text)


def parse_samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    """Return the sample's value, or 0.0 when the series does not exist yet."""
    return samples.get((metric, frozenset(labels.items())), 0.0)


def total(samples: Samples, metric: str, /, **labels: str) -> float:
    """Return the sum of the samples named ``metric`` whose labels include ``labels``."""
    expected_labels = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == metric and expected_labels <= lbls)


EDGE = {"tier": "edge", "model": "edge-small"}
EDGE_REQUEST = {**EDGE, "status_class": "2xx", "requested_model": "auto"}


# Per-request counts ---------------------------------------------------------------------------


async def test_metrics_count_requests_and_cache(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        body = chat_body("Count me.", temperature=0)
        first = await gateway.chat(body)
        second = await gateway.chat(body)
        samples = await scrape(gateway)
        records = await gateway.request_records()

    assert first.headers["x-tierwise-cache"] == "miss"
    assert second.headers["x-tierwise-cache"] == "hit"
    assert value(samples, "tierwise_requests_total", **EDGE_REQUEST, cache="miss") == 1
    assert value(samples, "tierwise_requests_total", **EDGE_REQUEST, cache="hit") == 1
    assert value(samples, "tierwise_cache_hits_total", **EDGE) == 1
    assert value(samples, "tierwise_request_duration_seconds_count", **EDGE) == 2
    assert value(samples, "tierwise_tokens_total", **EDGE, type="input") == sum(
        r["tokens_in"] for r in records
    )
    assert value(samples, "tierwise_tokens_total", **EDGE, type="output") == sum(
        r["tokens_out"] for r in records
    )
    cost = sum(r["cost_usd"] for r in records)
    baseline = sum(r["baseline_cost_usd"] for r in records)
    assert cost > 0
    assert baseline > cost
    assert value(samples, "tierwise_cost_usd_total", **EDGE) == pytest.approx(cost)
    assert value(samples, "tierwise_baseline_cost_usd_total", **EDGE) == pytest.approx(baseline)
    assert value(samples, "tierwise_savings_usd") == pytest.approx(baseline - cost)


async def test_metrics_count_errors_by_code(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        missing = await gateway.chat(chat_body(model="no-such-model"))
        invalid = await gateway.chat(b"{not json")
        samples = await scrape(gateway)

    assert missing.status_code == 404
    assert invalid.status_code == 400
    assert value(samples, "tierwise_errors_total", code="model_not_found") == 1
    assert value(samples, "tierwise_errors_total", code="invalid_json") == 1
    # A model name the policy does not know is never used as a label value.
    assert (
        value(
            samples, "tierwise_requests_total",
            tier="none", model="none", status_class="4xx", cache="miss", requested_model="unknown",
        )
        == 1
    )
    assert total(samples, "tierwise_requests_total", requested_model="no-such-model") == 0
    assert total(samples, "tierwise_requests_total", requested_model="none") == 1


async def test_metrics_count_fallbacks_between_tiers(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.http_error(500, "boom"))
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body("Escalate me."))
        samples = await scrape(gateway)

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert value(samples, "tierwise_fallbacks_total", from_tier="edge", to_tier="mid") == 1
    assert total(samples, "tierwise_fallbacks_total") == 1
    assert total(samples, "tierwise_requests_total", tier="mid", status_class="2xx") == 1


async def test_metrics_count_failed_escalation_chain(kit: GatewayKit) -> None:
    for tier in ("edge", "mid", "frontier"):
        kit.fakes[tier].enqueue(Scenario.http_error(500, "boom"))
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body("Fail everywhere."))
        samples = await scrape(gateway)

    assert response.status_code == 502
    assert value(samples, "tierwise_fallbacks_total", from_tier="edge", to_tier="mid") == 1
    assert value(samples, "tierwise_fallbacks_total", from_tier="mid", to_tier="frontier") == 1
    assert value(samples, "tierwise_errors_total", code="upstream_error") == 1
    assert total(samples, "tierwise_requests_total", status_class="5xx") == 1


async def test_metrics_time_first_byte_of_streams(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        streamed = await gateway.chat(chat_body("Stream me.", stream=True))
        await gateway.chat(chat_body("Do not stream me."))
        samples = await scrape(gateway)

    assert streamed.status_code == 200
    assert value(samples, "tierwise_time_to_first_byte_seconds_count", **EDGE) == 1
    assert value(samples, "tierwise_request_duration_seconds_count", **EDGE) == 2
    first_byte = value(samples, "tierwise_time_to_first_byte_seconds_sum", **EDGE)
    assert 0 < first_byte <= value(samples, "tierwise_request_duration_seconds_sum", **EDGE)


async def test_metrics_histogram_buckets(kit: GatewayKit) -> None:
    async with kit.running(scorer=StubScorer(edge=0.1, mid=0.87)) as gateway:
        await gateway.chat(chat_body("Score me."))
        samples = await scrape(gateway)

    bounds = {
        dict(labels)["le"]
        for (name, labels) in samples
        if name == "tierwise_request_duration_seconds_bucket"
    }
    assert {"0.001", "60.0", "+Inf"} <= bounds
    assert len(bounds) == len(LATENCY_BUCKETS_S) + 1
    score = "tierwise_classifier_score_bucket"
    assert value(samples, score, tier="edge", le="0.05") == 0
    assert value(samples, score, tier="edge", le="0.1") == 1
    assert value(samples, score, tier="mid", le="0.85") == 0
    assert value(samples, score, tier="mid", le="0.9") == 1
    assert value(samples, score, tier="frontier", le="0.9") == 1
    assert value(samples, "tierwise_classifier_score_count", tier="frontier") == 1


async def test_metrics_skip_scores_for_named_models(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body(model="mid-medium"))
        samples = await scrape(gateway)

    assert response.headers["x-tierwise-tier"] == "mid"
    assert total(samples, "tierwise_classifier_score_count") == 0
    assert total(samples, "tierwise_requests_total", requested_model="mid-medium") == 1


# Scrape-time state ------------------------------------------------------------------------------


async def test_metrics_report_versions_and_no_redis(kit: GatewayKit) -> None:
    async with kit.running(scorer=StubScorer(version="stub-7")) as gateway:
        samples = await scrape(gateway)
        version = gateway.runtime.policies.current.version

    assert value(samples, "tierwise_redis_state") == -1
    assert value(samples, "tierwise_policy_info", name="gateway-tests", version=version) == 1
    assert value(samples, "tierwise_classifier_info", version="stub-7") == 1


async def test_metrics_report_redis_ok_and_degraded(redis_kit: GatewayKit) -> None:
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(chat_body("Touch Redis."))
        healthy = await scrape(gateway)
        link = gateway.runtime.redis
        assert link is not None
        # Open the circuit breaker as consecutive failed Redis calls would.
        for _ in range(link.breaker.failures_to_open):
            link.breaker.record_failure(TimeoutError())
        degraded = await scrape(gateway)

    assert value(healthy, "tierwise_redis_state") == 1
    assert value(degraded, "tierwise_redis_state") == 0


async def test_metrics_follow_openmetrics_accept(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def test_metrics_apps_keep_separate_counts(kit: GatewayKit) -> None:
    async with kit.running() as first:
        await first.chat(chat_body("Only the first app sees this."))
        async with kit.running() as second:
            first_samples = await scrape(first)
            second_samples = await scrape(second)

    assert total(first_samples, "tierwise_requests_total") == 1
    assert total(second_samples, "tierwise_requests_total") == 0


def test_metrics_observe_without_state_collector() -> None:
    metrics = GatewayMetrics()
    names = {family.name for family in metrics.registry.collect()}
    assert "tierwise_requests" in names
    assert "tierwise_redis_state" not in names
    state = GatewayState(redis="ok", policy_version="v1", policy_name="p", classifier_version="c",
                         cooling={})
    with_state = GatewayMetrics(lambda: state)
    redis = [f for f in with_state.registry.collect() if f.name == "tierwise_redis_state"]
    assert [s.value for s in redis[0].samples] == [1.0]


# Grafana dashboard --------------------------------------------------------------------------------


def grafana_expressions(document: dict[str, Any]) -> list[str]:
    """Return every PromQL expression of the dashboard's panels and template variables."""
    expressions: list[str] = []
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            expressions.append(target["expr"])
    for variable in document.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            expressions.append(query["query"] if isinstance(query, dict) else query)
    return expressions


async def send_every_kind_of_request(gateway: Gateway, kit: GatewayKit) -> None:
    """Send traffic that creates every labelled series: hit, stream, error, fallback and a
    cooldown (three edge failures in a row, the default ``routing.cooldown``)."""
    body = chat_body("Fill every series.", temperature=0)
    await gateway.chat(body)
    await gateway.chat(body)
    await gateway.chat(chat_body("Stream.", stream=True))
    await gateway.chat(chat_body(model="no-such-model"))
    for attempt in range(3):
        kit.fakes["edge"].enqueue(Scenario.http_error(500, "boom"))
        await gateway.chat(chat_body(f"Escalate {attempt}."))


async def test_grafana_dashboard_uses_real_metrics(kit: GatewayKit) -> None:
    document = json.loads(GRAFANA_DASHBOARD.read_text(encoding="utf-8"))
    async with kit.running() as gateway:
        await send_every_kind_of_request(gateway, kit)
        exposed = {name for name, _ in await scrape(gateway)}

    expressions = grafana_expressions(document)
    used = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert len(expressions) >= 15
    assert used, "the dashboard names no tierwise metric"
    assert used - exposed == set(), f"not exposed by /metrics: {sorted(used - exposed)}"
    families = {
        re.sub(r"_(total|bucket|count|sum|info)$", "", name) for name in used
    }
    for family in ("tierwise_requests", "tierwise_cost_usd", "tierwise_classifier_score",
                   "tierwise_fallbacks", "tierwise_redis_state", "tierwise_savings_usd"):
        assert family in families, f"the dashboard has no panel over {family}"


def test_grafana_dashboard_panels_are_complete() -> None:
    document = json.loads(GRAFANA_DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    assert document["uid"] == "tierwise"
    for panel in document["panels"]:
        assert panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']!r} has no query"
