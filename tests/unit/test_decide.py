"""The routing decision, as a pure function of needs, scores and the policy."""

from __future__ import annotations

import pytest

from router.errors import (
    ContextTooLong,
    NoDeploymentAvailable,
    TierNotAllowed,
    UnsupportedParameter,
)
from router.policy.schema import Policy
from router.routing.decide import RequestNeeds, decide


def make_policy(aliases: dict[str, object] | None = None, **routing: object) -> Policy:
    def deployment(name: str, window: int, **capabilities: bool) -> dict[str, object]:
        return {
            "name": name,
            "model": f"openai/{name}",
            "api_base": "http://127.0.0.1:9/v1",
            "price": {"input_per_million": 1, "output_per_million": 1},
            "context_window": window,
            "capabilities": capabilities,
        }

    return Policy.model_validate(
        {
            "aliases": {"auto": {}, "auto-quality": {"min_tier": "mid"}, **(aliases or {})},
            "tiers": {
                "edge": {"deployments": [deployment("small", 4096, tools=False, json_schema=False)]},
                "mid": {"deployments": [deployment("medium", 32000)]},
                "frontier": {"deployments": [deployment("large", 128000, n=False)]},
            },
            "routing": routing or {"thresholds": {"edge": 0.7, "mid": 0.6}},
        }
    )


SHORT = RequestNeeds(prompt_tokens=100)
ALL_AVAILABLE = {"is_available": lambda d: True}


def names(decision: object) -> list[str]:
    return [c.deployment.name for c in decision.candidates]  # type: ignore[attr-defined]


def test_cheapest_tier_over_threshold_is_chosen() -> None:
    decision = decide(make_policy(), {"edge": 0.9, "mid": 0.9}, SHORT, requested="auto", **ALL_AVAILABLE)
    assert decision.tier == "edge"
    assert names(decision) == ["small", "medium", "large"]
    assert decision.reason == "edge score 0.900 >= threshold 0.700"


def test_low_edge_score_goes_to_mid() -> None:
    decision = decide(make_policy(), {"edge": 0.3, "mid": 0.65}, SHORT, requested="auto", **ALL_AVAILABLE)
    assert decision.tier == "mid"
    assert names(decision) == ["medium", "large"]


def test_no_threshold_met_goes_to_frontier() -> None:
    decision = decide(make_policy(), {"edge": 0.1, "mid": 0.1}, SHORT, requested="auto", **ALL_AVAILABLE)
    assert decision.tier == "frontier"
    assert names(decision) == ["large"]


def test_min_tier_alias_never_uses_edge() -> None:
    policy = make_policy()
    decision = decide(
        policy, {"edge": 1.0, "mid": 1.0}, SHORT, requested="auto-quality", min_tier="mid", **ALL_AVAILABLE
    )
    assert decision.tier == "mid"


def test_max_tier_alias_stops_below_frontier() -> None:
    policy = make_policy({"auto-budget": {"max_tier": "mid"}})
    decision = decide(policy, {"edge": 0.1, "mid": 0.1}, SHORT, requested="auto-budget",
                      **ALL_AVAILABLE)
    # No tier met its threshold, so the most capable tier the alias may use takes it, and a
    # failure does not escalate past it.
    assert decision.tier == "mid"
    assert names(decision) == ["medium"]
    assert decision.reason == (
        "frontier is the fallback tier but it is above the alias's maximum tier mid; no usable "
        "tier met its threshold, so mid is used as the most capable usable tier"
    )


def test_max_tier_alias_down_names_bound() -> None:
    policy = make_policy({"auto-budget": {"max_tier": "edge"}})
    with pytest.raises(NoDeploymentAvailable) as caught:
        decide(policy, {"edge": 0.9}, SHORT, requested="auto-budget",
               is_available=lambda d: d.name != "small")
    assert "above the alias's maximum tier edge" in caught.value.message


def test_tenant_min_tier_above_alias_max_tier() -> None:
    policy = make_policy({"auto-budget": {"max_tier": "mid"}})
    with pytest.raises(TierNotAllowed) as caught:
        decide(policy, {"edge": 0.9}, SHORT, requested="auto-budget", min_tier="frontier",
               **ALL_AVAILABLE)
    assert caught.value.status == 403
    assert caught.value.message == (
        "The model 'auto-budget' uses only the edge and mid tiers, which this API key may not "
        "use. The edge tier is below the minimum tier frontier. The mid tier is below the "
        "minimum tier frontier. Request a router alias that reaches a tier this key may use "
        "(GET /v1/models shows each alias's min_tier and max_tier)."
    )


def test_blocked_tiers_cover_alias_tiers() -> None:
    policy = make_policy({"auto-budget": {"max_tier": "mid"}})
    with pytest.raises(TierNotAllowed) as caught:
        decide(policy, {"edge": 0.9}, SHORT, requested="auto-quality",
               blocked_tiers=frozenset({"mid", "frontier"}), **ALL_AVAILABLE)
    assert caught.value.message.startswith(
        "The model 'auto-quality' uses only the mid and frontier tiers, which this API key may "
        "not use. The mid tier is blocked for this API key."
    )


def test_alias_tiers_down_stay_unavailable() -> None:
    # Down deployments within the alias's own tiers are the gateway's problem, not the key's.
    policy = make_policy({"auto-budget": {"max_tier": "mid"}})
    with pytest.raises(NoDeploymentAvailable):
        decide(policy, {"edge": 0.9}, SHORT, requested="auto-budget", min_tier="mid",
               is_available=lambda d: d.name != "medium")


def test_alias_thresholds_replace_the_policy_thresholds() -> None:
    policy = make_policy({"auto-economy": {"thresholds": {"edge": 0.4}}})
    scores = {"edge": 0.5, "mid": 0.65}
    economy = decide(policy, scores, SHORT, requested="auto-economy", **ALL_AVAILABLE)
    default = decide(policy, scores, SHORT, requested="auto", **ALL_AVAILABLE)
    assert (economy.tier, default.tier) == ("edge", "mid")
    assert economy.reason == "edge score 0.500 >= threshold 0.400"
    # The tiers the alias does not name keep the policy's thresholds.
    assert policy.thresholds_for("auto-economy") == {"edge": 0.4, "mid": 0.6}
    assert policy.thresholds_for("auto") == {"edge": 0.7, "mid": 0.6}


def test_escalation_can_be_turned_off() -> None:
    policy = make_policy(thresholds={"edge": 0.7}, escalate_on_error=False)
    decision = decide(policy, {"edge": 0.9}, SHORT, requested="auto", **ALL_AVAILABLE)
    assert names(decision) == ["small"]


def test_tier_too_small_for_context_is_skipped() -> None:
    needs = RequestNeeds(prompt_tokens=5000)
    decision = decide(make_policy(), {"edge": 0.99, "mid": 0.99}, needs, requested="auto", **ALL_AVAILABLE)
    assert decision.tier == "mid"
    assert decision.skipped == {"small": "context"}


def test_max_tokens_counts_against_context() -> None:
    needs = RequestNeeds(prompt_tokens=3000, max_output_tokens=2000)
    decision = decide(make_policy(), {"edge": 0.99, "mid": 0.99}, needs, requested="auto", **ALL_AVAILABLE)
    assert decision.tier == "mid"


def test_too_long_for_every_tier_raises_context_error() -> None:
    with pytest.raises(ContextTooLong) as caught:
        decide(make_policy(), {}, RequestNeeds(prompt_tokens=200_000), requested="auto", **ALL_AVAILABLE)
    assert caught.value.param == "messages"
    assert caught.value.code == "context_length_exceeded"


def test_tools_skip_tiers_without_tool_support() -> None:
    needs = RequestNeeds(prompt_tokens=10, tools=True)
    decision = decide(make_policy(), {"edge": 0.99, "mid": 0.99}, needs, requested="auto", **ALL_AVAILABLE)
    assert decision.tier == "mid"
    assert decision.skipped == {"small": "capability:tools"}


def test_tool_messages_skip_tiers_without_tool_support() -> None:
    needs = RequestNeeds(prompt_tokens=10, tool_messages=True)
    decision = decide(make_policy(), {"edge": 0.99, "mid": 0.99}, needs, requested="auto", **ALL_AVAILABLE)
    assert decision.tier == "mid"
    assert decision.skipped == {"small": "capability:messages:tools"}


def test_tool_messages_on_named_model_names_them() -> None:
    needs = RequestNeeds(prompt_tokens=10, tool_messages=True)
    with pytest.raises(UnsupportedParameter) as caught:
        decide(make_policy(), {}, needs, requested="small", **ALL_AVAILABLE)
    assert caught.value.param == "messages"
    assert caught.value.message == (
        "The model 'small' does not support the tool-call history in the messages of this "
        "request. Remove it, or request a router alias such as 'auto' or another model from "
        "GET /v1/models."
    )


def test_unsupported_parameter_on_named_model_names_it() -> None:
    needs = RequestNeeds(prompt_tokens=10, json_schema=True)
    with pytest.raises(UnsupportedParameter) as caught:
        decide(make_policy(), {}, needs, requested="small", **ALL_AVAILABLE)
    assert caught.value.param == "response_format"
    assert caught.value.message == (
        "The model 'small' does not support the 'response_format' parameter of this request. "
        "Remove it, or request a router alias such as 'auto' or another model from GET /v1/models."
    )


def test_named_deployment_is_served_directly() -> None:
    decision = decide(make_policy(), {}, SHORT, requested="medium", **ALL_AVAILABLE)
    assert decision.tier == "mid"
    assert names(decision) == ["medium"]
    assert decision.reason == "model requested by name"


def test_unavailable_tiers_fall_back_to_best_available() -> None:
    decision = decide(
        make_policy(),
        {"edge": 0.1, "mid": 0.1},
        SHORT,
        requested="auto",
        is_available=lambda d: d.name != "large",
    )
    assert decision.tier == "mid"
    assert decision.reason == (
        "frontier is the fallback tier but large is unavailable; no usable tier met its threshold, "
        "so mid is used as the most capable usable tier"
    )


def test_nothing_available_raises() -> None:
    with pytest.raises(NoDeploymentAvailable):
        decide(make_policy(), {}, SHORT, requested="auto", is_available=lambda d: False)


def test_unavailable_tier_that_met_threshold_is_named() -> None:
    decision = decide(
        make_policy(),
        {"edge": 0.1, "mid": 0.816},
        SHORT,
        requested="auto",
        unavailable_reason=lambda d: "environment variable MID_KEY is not set" if d.name == "medium" else None,
    )
    assert decision.tier == "frontier"
    assert decision.reason == (
        "mid met its threshold with 0.816 >= 0.600 but medium is unavailable because environment "
        "variable MID_KEY is not set; frontier has no threshold, so it takes what cheaper tiers did not"
    )


def test_tier_below_minimum_that_met_threshold_is_named() -> None:
    decision = decide(
        make_policy(), {"edge": 0.9, "mid": 0.9}, SHORT, requested="auto-quality", min_tier="mid", **ALL_AVAILABLE
    )
    assert decision.tier == "mid"
    assert decision.reason == (
        "edge met its threshold with 0.900 >= 0.700 but it is below the minimum tier mid; "
        "mid score 0.900 >= threshold 0.600"
    )


def test_blocked_tiers_are_named() -> None:
    decision = decide(
        make_policy(),
        {"edge": 0.9, "mid": 0.2},
        SHORT,
        requested="auto",
        blocked_tiers=frozenset({"edge", "frontier"}),
        **ALL_AVAILABLE,
    )
    assert decision.tier == "mid"
    assert decision.reason == (
        "edge met its threshold with 0.900 >= 0.700 but it is blocked for this API key; frontier is "
        "the fallback tier but it is blocked for this API key; no usable tier met its threshold, so "
        "mid is used as the most capable usable tier"
    )


def test_too_small_tier_that_met_threshold_is_named() -> None:
    needs = RequestNeeds(prompt_tokens=5000)
    decision = decide(make_policy(), {"edge": 0.9, "mid": 0.9}, needs, requested="auto", **ALL_AVAILABLE)
    assert decision.tier == "mid"
    assert decision.reason == (
        "edge met its threshold with 0.900 >= 0.700 but small has a context window too small for "
        "this request; mid score 0.900 >= threshold 0.600"
    )


def test_unavailable_deployment_by_name_raises_with_reason() -> None:
    with pytest.raises(NoDeploymentAvailable) as raised:
        decide(make_policy(), {}, SHORT, requested="medium", unavailable_reason=lambda d: "KEY is not set")
    assert raised.value.message.startswith("The model 'medium' (mid tier) is unavailable because KEY is not set.")


FLOORS = {"thresholds": {"edge": 0.7, "mid": 0.6}, "category_floors": {"math": "mid"}}


def test_category_floor_lifts_the_cheapest_tier() -> None:
    decision = decide(make_policy(**FLOORS), {"edge": 0.9, "mid": 0.9}, SHORT, requested="auto",
                      category="math", **ALL_AVAILABLE)
    assert decision.tier == "mid"
    assert names(decision) == ["medium", "large"]
    assert decision.reason == (
        "edge met its threshold with 0.900 >= 0.700 but math prompts start at the mid tier; "
        "mid score 0.900 >= threshold 0.600"
    )


def test_category_without_floor_routes_by_score() -> None:
    decision = decide(make_policy(**FLOORS), {"edge": 0.9, "mid": 0.9}, SHORT, requested="auto",
                      category="chat", **ALL_AVAILABLE)
    assert decision.tier == "edge"


def test_category_floor_falls_back_below() -> None:
    decision = decide(make_policy(**FLOORS), {"edge": 0.9, "mid": 0.9}, SHORT, requested="auto",
                      category="math", is_available=lambda d: d.name == "small")
    assert decision.tier == "edge"
    assert names(decision) == ["small"]
    assert decision.reason.endswith("; math prompts start at the mid tier, but no tier from there up is usable")


def test_category_floor_skips_named_model() -> None:
    decision = decide(make_policy(**FLOORS), {}, SHORT, requested="small", category="math",
                      **ALL_AVAILABLE)
    assert decision.tier == "edge"


def test_unknown_category_in_floors_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown category 'maths'"):
        make_policy(thresholds={"edge": 0.7}, category_floors={"maths": "mid"})
