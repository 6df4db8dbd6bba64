"""Spread a weighted tier's requests over its deployments.

``decide`` lists each tier's eligible deployments in policy order.  In a tier with
``balance: weighted`` the dispatcher moves one of them, drawn with probability
proportional to its ``weight``, to the front of that tier's run of candidates, and the
others keep their order as fallbacks.  Tiers with ``balance: ordered`` (the default)
are left alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.routing.decide import Candidate


def weighted_first(
    candidates: Sequence[Candidate], weighted_tiers: frozenset[str], rng: random.Random
) -> Sequence[Candidate]:
    """Return ``candidates`` with a weighted draw at the front of each weighted tier's run."""
    result: list[Candidate] = []
    start = 0
    while start < len(candidates):
        tier = candidates[start].tier
        end = start + 1
        while end < len(candidates) and candidates[end].tier == tier:
            end += 1
        run = list(candidates[start:end])
        if tier in weighted_tiers and len(run) > 1:
            # Scaled to at most 1 each, because random.choices rejects weights whose sum
            # overflows to infinity (two weights of 1e308, say).
            largest = max(c.deployment.weight for c in run)
            weights = [c.deployment.weight / largest for c in run]
            chosen = rng.choices(range(len(run)), weights=weights)[0]
            run.insert(0, run.pop(chosen))
        result.extend(run)
        start = end
    return result
