"""Running totals, per-minute buckets and a feedback join, kept in memory for the dashboard.

Everything here lives in one gateway process and starts from zero when it restarts; the
Prometheus metrics and the outcome log are the durable views.  Memory is bounded: at most
``window_minutes`` minute buckets and ``join_size`` recent requests are kept.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

NO_TIER = "none"
"""The tier of requests that failed before a tier was chosen."""
DEFAULT_WINDOW_MINUTES = 60
DEFAULT_JOIN_SIZE = 10_000


@dataclass(slots=True)
class Tally:
    """Counts and sums over a set of requests; money in USD."""

    requests: int = 0
    errors: int = 0
    """Requests that failed on the gateway's or an upstream's side (status 500 and above)."""
    rejected: int = 0
    """Requests with a client error (status 400 to 499): invalid, unauthorised, over a limit."""
    cache_hits: int = 0
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    by_tier: dict[str, int] = field(default_factory=dict)

    def add(self, record: Mapping[str, Any]) -> None:
        """Add one outcome record (``Outcome.as_record``)."""
        self.requests += 1
        status = record["status"]
        if 400 <= status < 500:
            self.rejected += 1
        elif record["error"] is not None or status >= 500:
            self.errors += 1
        if record["cache_hit"]:
            self.cache_hits += 1
        self.cost_usd += record["cost_usd"]
        self.baseline_cost_usd += record["baseline_cost_usd"]
        self.tokens_in += record["tokens_in"]
        self.tokens_out += record["tokens_out"]
        tier = record["tier"] or NO_TIER
        self.by_tier[tier] = self.by_tier.get(tier, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """Return the tally as JSON-ready values, with savings and the cache hit rate.

        The hit rate counts cache hits among answered requests (those without an error).
        """
        # A failed or rejected request could not have been a hit, so it is left out of the rate.
        answered = self.requests - self.errors - self.rejected
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rejected": self.rejected,
            "cache_hits": self.cache_hits,
            "cache_hit_rate": self.cache_hits / answered if answered else None,
            "cost_usd": self.cost_usd,
            "baseline_cost_usd": self.baseline_cost_usd,
            "savings_usd": self.baseline_cost_usd - self.cost_usd,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "by_tier": dict(self.by_tier),
        }


@dataclass(slots=True)
class ServedRequest:
    """A recent request that feedback may refer to; ``score`` is its latest feedback."""

    tenant: str
    tier: str
    cost_usd: float
    tokens: int
    score: float | None = None


@dataclass(slots=True)
class ValueTally:
    """Feedback joined to cost for one tier: quality in [0, 1], cost in USD."""

    rated: int = 0
    quality_sum: float = 0.0
    cost_usd: float = 0.0
    tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return mean quality, quality per USD and per 1,000 tokens (None without data)."""
        return {
            "rated_requests": self.rated,
            "mean_quality": self.quality_sum / self.rated if self.rated else None,
            "cost_usd": self.cost_usd,
            "tokens": self.tokens,
            "quality_per_usd": self.quality_sum / self.cost_usd if self.cost_usd > 0 else None,
            "quality_per_1k_tokens": self.quality_sum * 1000 / self.tokens if self.tokens else None,
        }


class DashboardAggregates:
    """Totals, a per-minute series and a feedback join, updated once per request."""

    def __init__(
        self,
        window_minutes: int = DEFAULT_WINDOW_MINUTES,
        join_size: int = DEFAULT_JOIN_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window_minutes = window_minutes
        self.join_size = join_size
        self.clock = clock
        self.started_at = clock()
        self.totals = Tally()
        self.minutes: dict[int, Tally] = {}
        self.served: OrderedDict[str, ServedRequest] = OrderedDict()
        self.value: dict[str, ValueTally] = {}
        self.feedback_received = 0
        self.feedback_unmatched = 0
        self.by_category: dict[str, dict[str, int]] = {}
        """Requests per prompt category and tier, for requests that were given a tier."""

    def observe(self, record: Mapping[str, Any], category: str | None = None) -> None:
        """Add one finished request's outcome record and its prompt category.

        ``category`` is one of ``router.routing.category.CATEGORIES`` (the record does not
        contain it); a request with a tier but no category counts as ``other``.
        """
        self.totals.add(record)
        if record["tier"]:
            tiers = self.by_category.setdefault(category or "other", {})
            tiers[record["tier"]] = tiers.get(record["tier"], 0) + 1
        self._minute(int(record["ts"] // 60)).add(record)
        if record["tier"] and record["error"] is None and record["status"] < 400:
            self._remember(record)

    def observe_feedback(self, tenant: str, request_id: str, score: float) -> bool:
        """Join feedback to a recent request of the same tenant; return whether it matched.

        A second score for the same request replaces the first one.
        """
        self.feedback_received += 1
        served = self.served.get(request_id)
        if served is None or served.tenant != tenant:
            self.feedback_unmatched += 1
            return False
        value = self.value.setdefault(served.tier, ValueTally())
        if served.score is None:
            value.rated += 1
            value.cost_usd += served.cost_usd
            value.tokens += served.tokens
            value.quality_sum += score
        else:
            value.quality_sum += score - served.score
        served.score = score
        return True

    def snapshot(self) -> dict[str, Any]:
        """Return totals, per-minute series (oldest first), value per tier, tiers per category."""
        return {
            "uptime_s": self.clock() - self.started_at,
            "totals": self.totals.as_dict(),
            "minutes": self._series(),
            "value": {tier: value.as_dict() for tier, value in self.value.items()},
            "feedback": {"received": self.feedback_received, "unmatched": self.feedback_unmatched},
            "categories": {name: dict(tiers) for name, tiers in self.by_category.items()},
        }

    def _minute(self, minute: int) -> Tally:
        bucket = self.minutes.get(minute)
        if bucket is None:
            bucket = self.minutes[minute] = Tally()
            oldest_kept = minute - self.window_minutes + 1
            for stale in [m for m in self.minutes if m < oldest_kept]:
                del self.minutes[stale]
        return bucket

    def _series(self) -> list[dict[str, Any]]:
        """Return every minute from the first one shown to now, empty minutes included.

        The series starts at the process start or at the oldest kept bucket, whichever is
        earlier, and covers at most ``window_minutes``.
        """
        now = int(self.clock() // 60)
        oldest = min([int(self.started_at // 60), *self.minutes])
        first = max(oldest, now - self.window_minutes + 1)
        empty = Tally()
        return [
            {"minute": minute * 60, **self.minutes.get(minute, empty).as_dict()}
            for minute in range(first, now + 1)
        ]

    def _remember(self, record: Mapping[str, Any]) -> None:
        self.served[record["request_id"]] = ServedRequest(
            tenant=record["tenant"],
            tier=record["tier"],
            cost_usd=record["cost_usd"],
            tokens=record["tokens_in"] + record["tokens_out"],
        )
        self.served.move_to_end(record["request_id"])
        while len(self.served) > self.join_size:
            self.served.popitem(last=False)
