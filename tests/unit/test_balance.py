"""The weighted draw of a tier's first deployment (``router/routing/balance.py``)."""

from __future__ import annotations

import random
from collections import Counter

from router.policy.schema import Deployment, Price
from router.routing.balance import weighted_first
from router.routing.decide import Candidate


def candidate(tier: str, name: str, weight: float = 1.0) -> Candidate:
    deployment = Deployment(
        name=name, model=f"openai/{name}", api_base="http://127.0.0.1:9/v1",
        price=Price(input_per_million=1, output_per_million=1), context_window=4096,
    )
    # model_copy skips validation, so weights above the schema's MAX_WEIGHT reach the draw too.
    return Candidate(tier, deployment.model_copy(update={"weight": weight}))


CHAIN = (
    candidate("edge", "edge-a", 3),
    candidate("edge", "edge-b", 1),
    candidate("mid", "mid-a"),
    candidate("mid", "mid-b"),
)


def names(chain: object) -> list[str]:
    return [c.deployment.name for c in chain]  # type: ignore[attr-defined]


def test_first_choice_follows_the_weights() -> None:
    rng = random.Random(0)
    firsts = Counter(names(weighted_first(CHAIN, frozenset({"edge"}), rng))[0] for _ in range(4000))

    assert 0.72 < firsts["edge-a"] / 4000 < 0.78
    assert firsts["edge-a"] + firsts["edge-b"] == 4000


def test_fallbacks_keep_policy_order() -> None:
    rng = random.Random(1)
    orders = {tuple(names(weighted_first(CHAIN, frozenset({"edge"}), rng))) for _ in range(200)}

    assert orders == {
        ("edge-a", "edge-b", "mid-a", "mid-b"),
        ("edge-b", "edge-a", "mid-a", "mid-b"),
    }


def test_ordered_tiers_are_left_alone() -> None:
    chain = weighted_first(CHAIN, frozenset({"frontier"}), random.Random(2))

    assert names(chain) == ["edge-a", "edge-b", "mid-a", "mid-b"]


def test_huge_weights_still_draw() -> None:
    chain = (candidate("edge", "edge-a", 1e308), candidate("edge", "edge-b", 1e308))
    rng = random.Random(3)
    firsts = Counter(names(weighted_first(chain, frozenset({"edge"}), rng))[0] for _ in range(400))

    assert set(firsts) == {"edge-a", "edge-b"}
