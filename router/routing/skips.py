"""Reasons for the deployments a routing decision skipped, in words a client may see.

The texts name deployments, tiers and environment variable names, never a key's value or
the gateway's internals, because they end up in 503 error messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from router.policy.schema import Deployment

_AVAILABLE_HINT = "(GET /v1/models shows which deployments are available)"


@dataclass
class Skips:
    """The deployments one decision skipped: a code per name, and why unavailable ones are down."""

    codes: dict[str, str] = field(default_factory=dict)
    """Deployment name -> ``unavailable``, ``capability:<parameter>`` or ``context``."""
    details: dict[str, str] = field(default_factory=dict)
    """Deployment name -> why it is unavailable; empty when the caller gave no reason."""
    local_model_down: bool = False
    """Whether a ``local_model`` deployment was skipped as unavailable, not as unfit."""

    def add(self, name: str, code: str, detail: str = "") -> None:
        self.codes[name] = code
        if detail:
            self.details[name] = detail

    def describe(self, name: str) -> str:
        """Return a clause on why deployment ``name`` was skipped, with the name as its subject."""
        code = self.codes[name]
        if code == "unavailable":
            detail = self.details.get(name)
            return f"{name} is unavailable because {detail}" if detail else f"{name} is unavailable"
        if code == "context":
            return f"{name} has a context window too small for this request"
        return f"{name} does not support {describe_capability(code.split(':', 1)[1])}"


CONTENT_INPUTS = {"messages": "image input", "messages:audio": "audio input",
                  "messages:file": "file input",
                  "messages:tools": "the tool-call history in the messages"}
"""Description of each content-part capability code, for error messages."""


def describe_capability(missing: str) -> str:
    """Describe a ``RequestNeeds.missing_capability`` result: ``image input`` or ``the 'tools' parameter``."""
    return CONTENT_INPUTS.get(missing) or f"the '{missing}' parameter"


def describe_tier_skips(deployments: Sequence[Deployment], skips: Skips) -> str:
    """Return why no deployment of a tier was used: one clause per skipped deployment."""
    return ", and ".join(skips.describe(d.name) for d in deployments if d.name in skips.codes)


def describe_unavailable_model(requested: str, tier: str, skips: Skips) -> str:
    """Return the 503 message for a deployment requested by name that is unavailable."""
    detail = skips.details.get(requested)
    cause = f" because {detail}" if detail else ""
    return (
        f"The model '{requested}' ({tier} tier) is unavailable{cause}. "
        f"{next_step(1 if detail else 0)}"
    )


def describe_unavailable_alias(
    requested: str,
    in_scope: Sequence[tuple[str, Sequence[Deployment]]],
    excluded: Mapping[str, str],
    skips: Skips,
) -> str:
    """Return the 503 message for an alias none of whose tiers has a usable deployment.

    ``in_scope`` lists the tiers the request may use with their deployments, cheapest first.
    ``excluded`` maps each other tier to why the request may not use it.
    """
    tiers = [tier for tier, _ in in_scope]
    parts = [f"No deployment is available for model '{requested}', {_scope_clause(tiers)}."]
    causes = [
        skips.describe(d.name).replace(d.name, f"{d.name} ({tier})", 1)
        for tier, deployments in in_scope
        for d in deployments
        if d.name in skips.codes
    ]
    if causes:
        parts.append(f"Deployments: {'; '.join(causes)}.")
    parts.extend(f"The {tier} tier is {why}." for tier, why in excluded.items())
    parts.append(next_step(len(causes) + len(excluded)))
    return " ".join(parts)


def describe_excluded_alias(
    requested: str, alias_tiers: Sequence[str], excluded: Mapping[str, str]
) -> str:
    """Return the 403 message for an alias whose own tiers the API key may not use.

    ``alias_tiers`` lists the tiers within the alias's ``min_tier`` and ``max_tier``.
    ``excluded`` maps each of them to why the request may not use it.
    """
    parts = [f"The model '{requested}' uses {_tier_list(alias_tiers)}, which this API key may not use."]
    parts.extend(f"The {tier} tier is {excluded[tier]}." for tier in alias_tiers)
    parts.append(
        "Request a router alias that reaches a tier this key may use "
        "(GET /v1/models shows each alias's min_tier and max_tier)."
    )
    return " ".join(parts)


def _tier_list(tiers: Sequence[str]) -> str:
    if len(tiers) == 1:
        return f"only the {tiers[0]} tier"
    return f"only the {', '.join(tiers[:-1])} and {tiers[-1]} tiers"


def next_step(cause_count: int) -> str:
    """Return the closing sentence of a 503 message that states ``cause_count`` causes."""
    if cause_count == 0:
        return f"Request a model whose tier is available {_AVAILABLE_HINT}."
    cause = "this cause" if cause_count == 1 else "these causes"
    return f"Fix {cause}, or request a model whose tier is available {_AVAILABLE_HINT}."


def _scope_clause(tiers: Sequence[str]) -> str:
    if not tiers:
        return "which may use no tier"
    if len(tiers) == 1:
        return f"which may use only the {tiers[0]} tier"
    return f"which may use the {', '.join(tiers[:-1])} and {tiers[-1]} tiers"
