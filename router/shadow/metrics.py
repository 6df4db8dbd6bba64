"""Prometheus counters of shadow evaluation, registered in the gateway's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

VERDICTS: tuple[str, ...] = ("parsed", "unparsable")


class ShadowMetrics:
    """Counts each stage a sampled request can end in, and the money spent on shadow calls."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sampled = Counter(
            "tierwise_shadow_sampled",
            "Eligible requests chosen for shadow evaluation.",
            registry=registry,
        )
        self.done = Counter(
            "tierwise_shadow_done",
            "Shadow jobs that got a judge verdict, by whether a score could be parsed from it.",
            ["verdict"],
            registry=registry,
        )
        self.skipped_budget = Counter(
            "tierwise_shadow_skipped_budget",
            "Sampled requests skipped because the day's shadow budget could not cover them "
            "(or could not be checked while Redis was unreachable).",
            registry=registry,
        )
        self.dropped = Counter(
            "tierwise_shadow_dropped",
            "Sampled requests dropped because the maximum number of shadow jobs was running.",
            registry=registry,
        )
        self.failed = Counter(
            "tierwise_shadow_failed",
            "Shadow jobs whose reference or judge call failed or timed out.",
            registry=registry,
        )
        self.cost = Counter(
            "tierwise_shadow_cost_usd",
            "Cost of the reference and judge calls of jobs that got a verdict, at the "
            "policy's prices, in USD (failed jobs keep only their budget reservation).",
            registry=registry,
        )
        self._done_children = {verdict: self.done.labels(verdict) for verdict in VERDICTS}

    def count_done(self, verdict: str) -> None:
        self._done_children[verdict].inc()
