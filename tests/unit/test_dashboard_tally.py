"""Counting of failed and rejected requests in the dashboard's tallies."""

from __future__ import annotations

from typing import Any

import pytest

from router.dashboard.aggregates import Tally


def record(status: int, error: str | None = None, cache_hit: bool = False) -> dict[str, Any]:
    return {
        "status": status, "error": error, "cache_hit": cache_hit, "cost_usd": 0.0,
        "baseline_cost_usd": 0.0, "tokens_in": 0, "tokens_out": 0, "tier": None,
    }


@pytest.mark.parametrize(
    ("status", "error", "errors", "rejected"),
    [
        (200, None, 0, 0),
        (400, "invalid_request", 0, 1),
        (429, "rate_limited", 0, 1),
        (499, "client_disconnected", 0, 1),
        (502, "upstream_failed", 1, 0),
        (503, "no_deployment_available", 1, 0),
        (200, "stream_cut", 1, 0),
    ],
)
def test_tally_splits_errors_and_rejections(
    status: int, error: str | None, errors: int, rejected: int
) -> None:
    tally = Tally()
    tally.add(record(status, error))

    assert tally.errors == errors
    assert tally.rejected == rejected


def test_cache_hit_rate_counts_answered_only() -> None:
    tally = Tally()
    for item in (record(200, cache_hit=True), record(200), record(404, "model_not_found"),
                 record(502, "upstream_failed")):
        tally.add(item)

    assert tally.as_dict()["cache_hit_rate"] == pytest.approx(0.5)
