"""Routing metrics on tiny examples whose values are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.metrics import (
    aiq,
    apgr,
    cost_share_for,
    cpt,
    pgr_curve,
    routellm_metrics,
    threshold_points,
    tier_metrics,
    upper_hull,
)

WEAK = np.array([1.0, 0.0, 0.0, 1.0])
STRONG = np.array([1.0, 1.0, 1.0, 0.0])


def test_pgr_curve_follows_score_order() -> None:
    # Lowest scores first: gains +1, +1, -1, 0 over a quality gap of 0.25.
    curve = pgr_curve(np.array([0.9, 0.1, 0.2, 0.8]), WEAK, STRONG)
    np.testing.assert_allclose(curve, [0.0, 1.0, 2.0, 1.0, 1.0])


def test_apgr_is_trapezoid_area() -> None:
    curve = pgr_curve(np.array([0.9, 0.1, 0.2, 0.8]), WEAK, STRONG)
    assert apgr(curve) == pytest.approx(1.125)


def test_cpt_is_first_share_reaching_target() -> None:
    curve = pgr_curve(np.array([0.9, 0.1, 0.2, 0.8]), WEAK, STRONG)
    assert cpt(curve, 0.5) == 0.25
    assert cpt(curve, 2.0) == 0.5
    assert cpt(curve, 2.5) == 1.0


def test_tied_scores_give_random_router() -> None:
    curve = pgr_curve(np.zeros(4), WEAK, STRONG)
    np.testing.assert_allclose(curve, [0.0, 0.25, 0.5, 0.75, 1.0])
    metrics = routellm_metrics(np.zeros(4), WEAK, STRONG)
    assert metrics["apgr"] == pytest.approx(0.5)
    assert metrics["cpt50"] == 0.5
    assert metrics["weak_quality"] == 0.5
    assert metrics["strong_quality"] == 0.75


def test_pgr_rejects_strong_not_better() -> None:
    with pytest.raises(ValueError, match="strong mean quality must exceed weak"):
        pgr_curve(np.zeros(4), STRONG, WEAK * 0.0)


def test_upper_hull_drops_dominated_points() -> None:
    points = np.array([[0.0, 0.5], [1.0, 0.6], [2.0, 0.9], [3.0, 0.9], [1.5, 0.4]])
    np.testing.assert_allclose(upper_hull(points), [[0.0, 0.5], [2.0, 0.9]])


def test_aiq_is_mean_quality_over_cost_range() -> None:
    hull = np.array([[0.0, 0.5], [2.0, 0.9]])
    assert aiq(hull, 0.0, 2.0) == pytest.approx(0.7)


def test_aiq_of_single_cost_curve_is_none() -> None:
    # One point at the frontier's cost: flat extrapolation would give 0.95 over all costs.
    assert aiq(np.array([[2.0, 0.95]]), 0.0, 2.0) is None


def test_aiq_of_empty_cost_range_is_none() -> None:
    hull = np.array([[1.0, 0.5], [2.0, 0.9]])
    assert aiq(hull, 2.0, 2.0) is None


def test_tier_metrics_without_scores_has_no_aiq() -> None:
    # NaN scores meet no threshold, so every threshold sends every row to frontier.
    scores = np.full((4, 3), np.nan)
    quality = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    cost = np.tile([0.001, 0.01, 0.1], (4, 1))

    metrics = tier_metrics(scores, quality, cost)

    assert metrics["curve"] == [[pytest.approx(0.1), 1.0]]
    assert metrics["aiq"] is None


def test_cost_share_interpolates_on_hull() -> None:
    hull = np.array([[0.0, 0.5], [2.0, 0.9]])
    assert cost_share_for(hull, 0.8, 2.0) == pytest.approx(0.75)
    assert cost_share_for(hull, 0.4, 2.0) == 0.0
    assert cost_share_for(hull, 0.95, 2.0) is None


def test_threshold_points_pick_cheapest_passing_tier() -> None:
    probabilities = np.array([[0.9, 0.5], [0.2, 0.8]])
    quality = np.array([[1.0, 1.0], [0.0, 1.0]])
    cost = np.array([[1.0, 10.0], [1.0, 10.0]])
    points = threshold_points(probabilities, quality, cost)
    np.testing.assert_allclose(points, [[1.0, 0.5], [5.5, 1.0], [5.5, 1.0], [5.5, 1.0],
                                        [10.0, 1.0]])
