"""Policy diffs read as sentences."""

from __future__ import annotations

from router.policy.diff import describe_changes
from router.policy.schema import Policy

BASE = {
    "tiers": {
        "edge": {
            "deployments": [
                {
                    "name": "small",
                    "model": "openai/small",
                    "price": {"input_per_million": 0.1, "output_per_million": 0.2},
                    "context_window": 4096,
                }
            ]
        }
    },
    "routing": {"thresholds": {"edge": 0.7}},
}


def test_identical_policies_have_no_changes() -> None:
    assert describe_changes(Policy.model_validate(BASE), Policy.model_validate(BASE)) == []


def test_threshold_and_price_changes_are_described() -> None:
    changed = {
        "tiers": {"edge": {"deployments": [{**BASE["tiers"]["edge"]["deployments"][0], "price": {"input_per_million": 0.3, "output_per_million": 0.2}}]}},  # type: ignore[index]
        "routing": {"thresholds": {"edge": 0.5}},
    }
    assert describe_changes(Policy.model_validate(BASE), Policy.model_validate(changed)) == [
        "Deployment 'small': price.input_per_million changes from 0.1 to 0.3.",
        "The edge threshold changes from 0.700 to 0.500, so more requests go to the edge tier.",
    ]
