"""The routing decision: a pure function of request needs, classifier scores and the policy.

Nothing here does I/O, so the same function serves the gateway, ``tierwise policy
explain`` and offline simulation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from router.errors import (
    ContextTooLong,
    NoDeploymentAvailable,
    TierNotAllowed,
    UnsupportedParameter,
)
from router.policy.schema import TIER_ORDER, Candidate, Deployment, Policy
from router.routing.skips import (
    Skips,
    describe_capability,
    describe_excluded_alias,
    describe_tier_skips,
    describe_unavailable_alias,
    describe_unavailable_model,
)
from router.routing.tokens import TOKENS_PER_PDF_PAGE


# RequestNeeds and Decision are built for every request. They are not frozen, because a
# frozen dataclass's __init__ sets each field through object.__setattr__, which made them
# 3 to 4 times slower to build (timeit: 4.5 against 1.2 µs for RequestNeeds with nine
# arguments, on a shared 2-core VM). Nothing changes them after they are built.
@dataclass(slots=True)
class RequestNeeds:
    """The capabilities and context a deployment needs to serve the request."""

    prompt_tokens: int
    max_output_tokens: int | None = None
    tools: bool = False
    tool_messages: bool = False
    """The conversation contains tool calls or tool results, as the second request of a tool
    round trip does even when it sends no ``tools``."""
    json_schema: bool = False
    multiple_choices: bool = False
    images: bool = False
    audio: bool = False
    files: bool = False
    file_tokens: int = 0
    """The part of ``prompt_tokens`` estimated for ``file`` parts (``estimate_file_tokens``)."""

    def missing_capability(self, deployment: Deployment) -> str | None:
        """Return the request parameter that ``deployment`` cannot honour, or None.

        Content parts that need a capability return ``messages``, or ``messages:audio`` and
        ``messages:file`` for audio and file parts, and tool calls or tool results in the
        messages return ``messages:tools`` (see ``describe_capability``).
        """
        capabilities = deployment.capabilities
        if self.tools and not capabilities.tools:
            return "tools"
        if self.tool_messages and not capabilities.tools:
            return "messages:tools"
        if self.json_schema and not capabilities.json_schema:
            return "response_format"
        if self.multiple_choices and not capabilities.n:
            return "n"
        if self.images and not capabilities.vision:
            return "messages"
        if self.audio and not capabilities.audio:
            return "messages:audio"
        if self.files and not capabilities.files:
            return "messages:file"
        return None

    def fits_context(self, deployment: Deployment) -> bool:
        reserved = self.max_output_tokens or 1
        return self.prompt_tokens + reserved <= deployment.context_window


@dataclass(slots=True)
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
    unavailable_reason: Callable[[Deployment], str | None] | None = None,
    min_tier: str | None = None,
    blocked_tiers: frozenset[str] = frozenset(),
    category: str | None = None,
) -> Decision:
    """Choose where ``requested`` (a router alias or a deployment name) goes.

    ``category`` is the prompt's category (``router.routing.category``); the policy's
    ``category_floors`` may name a tier for it, below which a router alias does not go while a
    tier at or above it is usable.  Unlike ``min_tier``, a floor never makes a request fail.

    ``unavailable_reason``, when given, replaces ``is_available``: it returns why a deployment
    cannot be used (text a client may see) or None, and that text goes into the errors and
    the decision's reason.  Raises ``ContextTooLong``, ``UnsupportedParameter`` or
    ``NoDeploymentAvailable`` when no deployment can serve the request, and ``TierNotAllowed``
    when ``min_tier`` or ``blocked_tiers`` leave none of the tiers that an alias may use.
    The caller has already checked that ``requested`` names an alias or a deployment.
    """
    reason_of = unavailable_reason or _reason_from_flag(is_available)
    skips = Skips()
    direct = policy.find_deployment(requested)
    if direct is not None:
        tier, deployment = direct
        if tier in blocked_tiers:
            raise TierNotAllowed(
                f"The model '{requested}' is in the {tier} tier, which this API key may not use. "
                "Request a router alias such as 'auto', or another model from GET /v1/models."
            )
        if not _eligible(deployment, needs, reason_of, skips):
            _raise_for(skips, needs, describe_unavailable_model(requested, tier, skips), requested)
        return Decision(tier, (Candidate(tier, deployment),), "model requested by name", None)

    alias = policy.aliases.get(requested)
    max_tier = alias.max_tier if alias is not None else None
    excluded = _excluded_tiers(policy, min_tier, blocked_tiers, max_tier)
    if alias is not None and excluded:
        # When the key's minimum tier or blocked tiers leave none of the alias's own tiers, a
        # retry cannot succeed, so the client gets 403 rather than 503.
        alias_tiers = policy.alias_tiers(requested)
        if alias_tiers and all(tier in excluded for tier in alias_tiers):
            raise TierNotAllowed(describe_excluded_alias(requested, alias_tiers, excluded))
    per_tier: dict[str, list[Candidate]] = {}
    usable: list[str] = []
    # Each tier the request could not use, mapped to a clause that follows "but".
    unused: dict[str, str] = {}
    for tier, tier_config in policy.ordered_tiers():
        if tier in excluded:
            unused[tier] = f"it is {excluded[tier]}"
            continue
        candidates = [
            candidate
            for candidate in policy.tier_candidates(tier)
            if _eligible(candidate.deployment, needs, reason_of, skips)
        ]
        per_tier[tier] = candidates
        if candidates:
            usable.append(tier)
        else:
            unused[tier] = describe_tier_skips(tier_config.deployments, skips)
    if not usable:
        in_scope = [(tier, c.deployments) for tier, c in policy.ordered_tiers() if tier in per_tier]
        _raise_for(skips, needs, describe_unavailable_alias(requested, in_scope, excluded, skips))
    floor = policy.routing.category_floors.get(category) if category is not None else None
    floor_note = None
    if floor is not None:
        at_or_above = tiers_at_or_above(usable, floor)
        if not at_or_above:
            floor_note = (
                f"{category} prompts start at the {floor} tier, but no tier from there up is usable"
            )
        else:
            for tier in usable[: len(usable) - len(at_or_above)]:
                unused[tier] = f"{category} prompts start at the {floor} tier"
            unused = dict(sorted(unused.items(), key=lambda item: TIER_ORDER.index(item[0])))
            usable = at_or_above

    chosen, reason = _choose_tier(usable, scores, policy.thresholds_for(requested), unused)
    if floor_note is not None:
        reason = f"{reason}; {floor_note}"
    chain = list(per_tier[chosen])
    if policy.routing.escalate_on_error:
        for tier in usable[usable.index(chosen) + 1 :]:
            chain.extend(per_tier[tier])
    return Decision(chosen, tuple(chain), reason, scores.get(chosen), skips.codes)


def tiers_at_or_above(tiers: Sequence[str], floor: str) -> list[str]:
    """Return the tiers of ``tiers`` that a category floor of ``floor`` leaves to a router alias.

    ``decide`` and ``tierwise calibrate`` both apply floors through this function.
    """
    return [tier for tier in tiers if TIER_ORDER.index(tier) >= TIER_ORDER.index(floor)]


def highest_tier(*tiers: str | None) -> str | None:
    """Return the most capable of the given tiers, ignoring None (None when all are None)."""
    named = [tier for tier in tiers if tier is not None]
    return max(named, key=TIER_ORDER.index) if named else None


def _choose_tier(
    usable: list[str],
    scores: Mapping[str, float],
    thresholds: Mapping[str, float],
    unused: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Return the first usable tier whose score meets its threshold, or the top one, and why.

    ``unused`` maps each tier the request could not use to a clause that follows "but".
    """
    chosen, reason = _first_adequate_tier(usable, scores, thresholds)
    if not unused:
        return chosen, reason
    fallback = reason.startswith("no tier met")
    # A tier that would have been chosen but could not be used explains why the request went
    # elsewhere, and keeps "no tier met its threshold" from contradicting the scores.
    notes = [
        note
        for tier, why in unused.items()
        if fallback or TIER_ORDER.index(tier) < TIER_ORDER.index(chosen)
        if (note := _unused_tier_note(tier, why, scores, thresholds)) is not None
    ]
    if not notes:
        return chosen, reason
    if fallback:
        reason = f"no usable tier met its threshold, so {chosen} is used as the most capable usable tier"
    return chosen, "; ".join([*notes, reason])


def _unused_tier_note(
    tier: str, why: str, scores: Mapping[str, float], thresholds: Mapping[str, float]
) -> str | None:
    threshold = thresholds.get(tier)
    if threshold is None:
        return f"{tier} is the fallback tier but {why}"
    score = scores.get(tier)
    if score is None or score < threshold:
        return None
    return f"{tier} met its threshold with {score:.3f} >= {threshold:.3f} but {why}"


def _first_adequate_tier(
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


def _excluded_tiers(
    policy: Policy,
    min_tier: str | None,
    blocked_tiers: frozenset[str],
    max_tier: str | None = None,
) -> dict[str, str]:
    """Map each policy tier the request may not use to the reason, worded to follow "is"."""
    excluded: dict[str, str] = {}
    if min_tier is None and max_tier is None and not blocked_tiers:
        return excluded
    for tier, _ in policy.ordered_tiers():
        if min_tier is not None and TIER_ORDER.index(tier) < TIER_ORDER.index(min_tier):
            excluded[tier] = f"below the minimum tier {min_tier}"
        elif max_tier is not None and TIER_ORDER.index(tier) > TIER_ORDER.index(max_tier):
            excluded[tier] = f"above the alias's maximum tier {max_tier}"
        elif tier in blocked_tiers:
            excluded[tier] = "blocked for this API key"
    return excluded


def _reason_from_flag(is_available: Callable[[Deployment], bool]) -> Callable[[Deployment], str | None]:
    # An empty reason marks the deployment unavailable without saying why.
    return lambda deployment: None if is_available(deployment) else ""


def _eligible(
    deployment: Deployment,
    needs: RequestNeeds,
    reason_of: Callable[[Deployment], str | None],
    skips: Skips,
) -> bool:
    # The request's own limits are checked first. A deployment that could never serve the
    # request counts as too small, not as down, so an over-long conversation gets a 400
    # rather than a 503 that points at the gateway's configuration.
    missing = needs.missing_capability(deployment)
    if missing is not None:
        skips.add(deployment.name, f"capability:{missing}")
        return False
    if not needs.fits_context(deployment):
        skips.add(deployment.name, "context")
        return False
    unavailable = reason_of(deployment)
    if unavailable is not None:  # an empty reason still means unavailable
        skips.add(deployment.name, "unavailable", unavailable)
        skips.local_model_down = skips.local_model_down or deployment.local_model
        return False
    return True


def _context_message(needs: RequestNeeds) -> str:
    if not needs.file_tokens:
        return (
            f"The conversation needs about {needs.prompt_tokens} tokens plus the requested "
            "output, which exceeds the context window of every deployment that could serve it. "
            "Shorten the conversation or lower max_tokens."
        )
    return (
        f"The conversation needs about {needs.prompt_tokens} tokens plus the requested output, "
        f"{needs.file_tokens} of them estimated for its files ({TOKENS_PER_PDF_PAGE} per PDF "
        "page, else one per byte), which exceeds the context window of every deployment that "
        "could serve it. Send fewer or smaller files, shorten the conversation or lower "
        "max_tokens."
    )


def _raise_for(
    skips: Skips, needs: RequestNeeds, unavailable_message: str, requested_model: str | None = None
) -> NoReturn:
    """Raise the error for a request that no deployment can serve.

    ``requested_model`` is the deployment name the client requested, or None for an alias.
    """
    # A deployment that is down but large and capable enough outranks the other reasons:
    # with it running, the request would have been served, so the client learns what to
    # fix in the gateway.
    reasons = set(skips.codes.values())
    if "unavailable" in reasons:
        raise NoDeploymentAvailable(unavailable_message, local_model_down=skips.local_model_down)
    if "context" in reasons:
        raise ContextTooLong(_context_message(needs), param="messages")
    capabilities = sorted(r.split(":", 1)[1] for r in reasons if r.startswith("capability:"))
    if capabilities:
        missing = capabilities[0]
        if requested_model is not None:
            message = (
                f"The model '{requested_model}' does not support {describe_capability(missing)} "
                "of this request. Remove it, or request a router alias such as 'auto' or another "
                "model from GET /v1/models."
            )
        else:
            message = (
                f"No available deployment supports {describe_capability(missing)} of this "
                "request. Remove it, or add a deployment that supports it to the policy."
            )
        raise UnsupportedParameter(message, param=missing.split(":", 1)[0])
    raise NoDeploymentAvailable(unavailable_message)
