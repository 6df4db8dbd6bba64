"""Routing metrics: RouteLLM's for two models, cost-quality curves for more tiers.

Two models (weak, strong), after RouteLLM (Ong et al. 2024, "RouteLLM: Learning to
Route LLMs with Preference Data"):

- A router ranks prompts by a score, lowest first, and sends the first ``k`` of ``n``
  to the strong model.  Prompts with equal scores are sent in random order, so the
  curve is averaged over ties (linear between the ends of a tied run).
- ``PGR(k) = (quality(k) - quality_weak) / (quality_strong - quality_weak)``.
- ``APGR`` is the area under PGR over the strong-call share ``k / n`` in [0, 1]
  (trapezoids over every k; RouteLLM samples 10 thresholds, so values differ slightly).
- ``CPT(x)`` is the smallest strong-call share whose PGR reaches ``x``.
- ``PGR(50%)`` is PGR with half of the calls sent to the strong model.

Several tiers with per-call costs, after RouterBench (Hu et al. 2024):

- The gateway's threshold rule gives (mean cost, mean quality) points: each prompt goes
  to the cheapest tier whose routing score is >= that tier's threshold, else to the last
  (frontier) tier.  One threshold shared by the tiers is swept over every distinct score,
  and for three tiers every (edge, mid) pair of a 0.01 grid is added.
- Mixing two routers at random reaches any point between them, so the curve is the
  upper convex hull of the points.  ``AIQ`` is its mean quality over the cost range
  from the cheapest to the frontier tier's cost.  A curve whose points all have one cost
  has no AIQ (None): it would only repeat that point's quality over the whole range.
- ``cost_share_for(x)``: the least cost, as a share of always-frontier cost, at which
  the hull reaches ``x`` times the frontier's quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np


def pgr_curve(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Return PGR for k = 0..n strong calls (length n + 1), averaging over tied scores.

    Raises ValueError when the strong model is not better than the weak one on average,
    because PGR is undefined then.
    """
    gap = float(np.mean(strong) - np.mean(weak))
    if gap <= 0.0:
        raise ValueError(f"strong mean quality must exceed weak; gap is {gap:.4f}")
    gains = _tie_averaged_gains(np.asarray(scores, float), np.asarray(strong, float) - weak)
    cumulative = np.concatenate([[0.0], np.cumsum(gains)]) / len(gains)
    return cumulative / gap


def apgr(curve: np.ndarray) -> float:
    """Return the area under a PGR curve sampled at k / n for k = 0..n."""
    shares = np.linspace(0.0, 1.0, len(curve))
    return float(np.trapezoid(curve, shares))


def cpt(curve: np.ndarray, target: float) -> float:
    """Return the smallest strong-call share k / n with PGR >= ``target`` (1.0 if never)."""
    reached = np.flatnonzero(curve >= target - 1e-12)
    return float(reached[0] / (len(curve) - 1)) if reached.size else 1.0


def routellm_metrics(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> dict[str, float]:
    """Return APGR, PGR(50%), CPT(50%), CPT(80%) and the weak/strong mean qualities."""
    curve = pgr_curve(scores, weak, strong)
    half = np.interp(0.5, np.linspace(0.0, 1.0, len(curve)), curve)
    return {"apgr": apgr(curve), "pgr50": float(half), "cpt50": cpt(curve, 0.5),
            "cpt80": cpt(curve, 0.8),
            "weak_quality": float(np.mean(weak)), "strong_quality": float(np.mean(strong))}


def threshold_points(scores: np.ndarray, quality: np.ndarray,
                     cost: np.ndarray) -> np.ndarray:
    """Return (mean cost, mean quality) for every distinct threshold, shape (m, 2).

    All arrays have shape (n, n_tiers) with tiers ordered cheapest first.
    """
    n = scores.shape[0]
    thresholds = np.unique(np.concatenate([scores.ravel(), [np.inf]]))
    points = np.empty((len(thresholds), 2))
    rows = np.arange(n)
    for index, threshold in enumerate(thresholds):
        passing = scores >= threshold
        passing[:, -1] = True
        chosen = np.argmax(passing, axis=1)
        points[index] = cost[rows, chosen].mean(), quality[rows, chosen].mean()
    return points


# Cost spans below this share of the tiers' cost range are float noise in mean costs.
COST_SPAN_TOLERANCE = 1e-9
THRESHOLD_GRID = np.arange(101) / 100  # i / 100 is correctly rounded, so 0.07 equals float("0.07").


def pair_grid_means(scores: np.ndarray, values: np.ndarray,
                    thresholds: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Mean of ``values`` under the gateway's rule for every (edge, mid) threshold pair.

    ``scores`` and ``values`` have shape (n, 3), columns edge, mid, frontier.  A row goes
    to edge when its edge score >= the edge threshold, else to mid when its mid score >=
    the mid threshold, else to frontier.  Returns shape (len(thresholds), len(thresholds)),
    indexed [edge threshold, mid threshold].
    """
    to_edge = (scores[None, :, 0] >= thresholds[:, None]).astype(float)  # (edge grid, rows)
    mid_ok = (scores[None, :, 1] >= thresholds[:, None]).astype(float)   # (mid grid, rows)
    after_edge = mid_ok * values[:, 1] + (1.0 - mid_ok) * values[:, 2]
    return ((to_edge @ values[:, 0])[:, None] + (1.0 - to_edge) @ after_edge.T) / len(scores)


def upper_hull(points: np.ndarray) -> np.ndarray:
    """Return the upper-left convex hull of (cost, quality) points, sorted by cost.

    The hull is non-decreasing: a point that costs more without adding quality is dropped.
    """
    ordered = points[np.lexsort((-points[:, 1], points[:, 0]))]
    hull: list[np.ndarray] = []
    for point in ordered:
        if hull and point[1] <= hull[-1][1]:
            continue
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], point) >= 0:
            hull.pop()
        hull.append(point)
    return np.array(hull)


def hull_quality_at(hull: np.ndarray, cost: float) -> float:
    """Return the hull's quality at ``cost`` (flat beyond its ends)."""
    return float(np.interp(cost, hull[:, 0], hull[:, 1]))


def aiq(hull: np.ndarray, low: float, high: float, samples: int = 2001) -> float | None:
    """Return the mean hull quality over costs in [low, high], or None when undefined.

    AIQ is undefined when the range is empty or the hull's costs span no part of it, as
    for a router that sends every prompt to the same tiers at every threshold.  The hull
    is flat beyond its ends, so such a one-cost curve would otherwise score its single
    quality over the whole range, even above the oracle's AIQ.
    """
    if high <= low or np.ptp(hull[:, 0]) <= COST_SPAN_TOLERANCE * (high - low):
        return None
    # NOTE: a hull that starts above ``low`` still counts its cheapest quality over the
    # costs below its start, which it cannot reach.
    grid = np.linspace(low, high, samples)
    return float(np.trapezoid(np.interp(grid, hull[:, 0], hull[:, 1]), grid) / (high - low))


def cost_share_for(hull: np.ndarray, target_quality: float, frontier_cost: float) -> float | None:
    """Return the least cost / frontier_cost at which the hull reaches ``target_quality``.

    Returns None when the hull never reaches it.
    """
    for (c0, q0), (c1, q1) in pairwise(hull):
        if q0 >= target_quality:
            return float(c0 / frontier_cost)
        if q1 >= target_quality:
            share = (target_quality - q0) / (q1 - q0)
            return float((c0 + share * (c1 - c0)) / frontier_cost)
    if hull[-1][1] >= target_quality:
        return float(hull[-1][0] / frontier_cost)
    return None


def tier_metrics(scores: np.ndarray, quality: np.ndarray, cost: np.ndarray,
                 targets: Sequence[float] = (0.9, 0.95, 1.0)) -> dict[str, object]:
    """Return the curve, AIQ (None when undefined, see ``aiq``) and cost shares at ``targets``.

    Cost shares are those at which the hull reaches ``targets`` x frontier quality.

    ``scores`` are routing scores.  The curve is the hull of the threshold rule's points:
    one threshold shared by the tiers and, for three tiers, every (edge, mid) pair on a
    0.01 grid, as the policy sets them.
    """
    points = threshold_points(scores, quality, cost)
    if scores.shape[1] == 3:
        pairs = np.column_stack([pair_grid_means(scores, cost).ravel(),
                                 pair_grid_means(scores, quality).ravel()])
        points = np.vstack([points, pairs])
    hull = upper_hull(points)
    always_cost = cost.mean(axis=0)
    frontier_quality = float(quality[:, -1].mean())
    result: dict[str, object] = {
        "aiq": aiq(hull, float(always_cost.min()), float(always_cost[-1])),
        "curve": hull.tolist(),
    }
    for target in targets:
        result[f"cost_share_{round(target * 100)}"] = cost_share_for(
            hull, target * frontier_quality, float(always_cost[-1]))
    return result


def _tie_averaged_gains(scores: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Return gains ordered by score ascending, each tied run replaced by its mean."""
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_gains = scores[order], gains[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1]]))
    run_means = np.add.reduceat(sorted_gains, starts) / np.diff(np.append(starts, len(scores)))
    return np.repeat(run_means, np.diff(np.append(starts, len(scores))))


def _cross(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
