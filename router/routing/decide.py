"""The routing decision: a pure function of request needs, classifier scores and the policy.

Nothing here does I/O, so the same function serves the gateway, ``tierwise policy
explain`` and offline simulation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from router.errors import ContextTooLong, NoDeploymentAvailable, UnsupportedParameter
from router.policy.schema import TIER_ORDER, Deployment, Policy


@dataclass(frozen=True)
class RequestNeeds:
    """The capabilities and context a deployment needs to serve the request."""

    prompt_tokens: int
    max_output_tokens: int | None = None
    tools: bool = False
    json_schema: bool = False
    multiple_choices: bool = False
    images: bool = False

    def missing_capability(self, deployment: Deployment) -> str | None:
        """Return the request parameter that ``deployment`` cannot honour, or None."""
        capabilities = deployment.capabilities
        if self.tools and not capabilities.tools:
            return "tools"
        if self.json_schema and not capabilities.json_schema:
            return "response_format"
        if self.multiple_choices and not capabilities.n:
            return "n"
        if self.images and not capabilities.vision:
            return "messages"
        return None

    def fits_context(self, deployment: Deployment) -> bool:
        reserved = self.max_output_tokens or 1
        return self.prompt_tokens + reserved <= deployment.context_window


@dataclass(frozen=True)
class Candidate:
    tier: str
    deployment: Deployment


@dataclass(frozen=True)
class Decision:
    """The chosen tier and the ordered deployments to try, the first one preferred."""

    tier: str
    candidates: tuple[Candidate, ...]
    reason: str
    score: float | None
    skipped: dict[str, str] = field(default_factory=dict)
    """Deployment name -> why it was not eligible."""


def decide(
    policy: Policy,
    scores: Mapping[str, float],
    needs: RequestNeeds,
    *,
    requested: str,
    is_available: Callable[[Deployment], bool] = lambda d: d.unavailable_reason() is None,
    min_tier: str | None = None,
    blocked_tiers: frozenset[str] = frozenset(),
) -> Decision:
    """Choose where ``requested`` (a router alias or a deployment name) goes.

    Raises ``ContextTooLong``, ``UnsupportedParameter`` or ``NoDeploymentAvailable`` when no
    deployment can serve the request.  The caller has already checked that ``requested``
    names an alias or a deployment.
    """
    skipped: dict[str, str] = {}
    direct = policy.find_deployment(requested)
    if direct is not None:
        tier, deployment = direct
        if tier in blocked_tiers:
            raise NoDeploymentAvailable(
                f"The model '{requested}' is in the {tier} tier, which this API key may not use.",
                code="tier_blocked",
            )
        eligible = _eligible(deployment, needs, is_available, skipped)
        if not eligible:
            _raise_for(skipped, needs)
        return Decision(tier, (Candidate(tier, deployment),), "model requested by name", None)

    per_tier = {
        tier: [
            Candidate(tier, d)
            for d in tier_config.deployments
            if _eligible(d, needs, is_available, skipped)
        ]
        for tier, tier_config in policy.ordered_tiers()
        if (min_tier is None or TIER_ORDER.index(tier) >= TIER_ORDER.index(min_tier))
        and tier not in blocked_tiers
    }
    usable = [tier for tier, candidates in per_tier.items() if candidates]
    if not usable:
        _raise_for(skipped, needs)

    chosen, reason = _choose_tier(usable, scores, policy.routing.thresholds)
    chain = list(per_tier[chosen])
    if policy.routing.escalate_on_error:
        for tier in usable[usable.index(chosen) + 1 :]:
            chain.extend(per_tier[tier])
    return Decision(chosen, tuple(chain), reason, scores.get(chosen), skipped)


def highest_tier(*tiers: str | None) -> str | None:
    """Return the most capable of the given tiers, ignoring None (None when all are None)."""
    named = [tier for tier in tiers if tier is not None]
    return max(named, key=TIER_ORDER.index) if named else None


def _choose_tier(
    usable: list[str], scores: Mapping[str, float], thresholds: Mapping[str, float]
) -> tuple[str, str]:
    for tier in usable:
        threshold = thresholds.get(tier)
        score = scores.get(tier)
        if threshold is None:
            return tier, f"{tier} has no threshold, so it takes what cheaper tiers did not"
        if score is not None and score >= threshold:
            return tier, f"{tier} score {score:.3f} >= threshold {threshold:.3f}"
    top = usable[-1]
    return top, f"no tier met its threshold; {top} is the most capable available tier"


def _eligible(
    deployment: Deployment,
    needs: RequestNeeds,
    is_available: Callable[[Deployment], bool],
    skipped: dict[str, str],
) -> bool:
    if not is_available(deployment):
        skipped[deployment.name] = "unavailable"
        return False
    missing = needs.missing_capability(deployment)
    if missing is not None:
        skipped[deployment.name] = f"capability:{missing}"
        return False
    if not needs.fits_context(deployment):
        skipped[deployment.name] = "context"
        return False
    return True


def _raise_for(skipped: dict[str, str], needs: RequestNeeds) -> None:
    reasons = set(skipped.values())
    if "context" in reasons:
        raise ContextTooLong(
            f"The conversation needs about {needs.prompt_tokens} tokens plus the requested "
            "output, which exceeds the context window of every deployment that could serve it. "
            "Shorten the conversation or lower max_tokens.",
            param="messages",
        )
    capabilities = sorted(r.split(":", 1)[1] for r in reasons if r.startswith("capability:"))
    if capabilities:
        parameter = capabilities[0]
        what = "image input" if parameter == "messages" else f"the '{parameter}' parameter"
        raise UnsupportedParameter(
            f"No available deployment supports {what} of this request. "
            "Remove it, or add a deployment that supports it to the policy.",
            param=parameter,
        )
    raise NoDeploymentAvailable(
        "No deployment is available for this request: every tier is disabled or missing its "
        "provider key. Set the provider keys named in the policy, or start the local edge model."
    )
