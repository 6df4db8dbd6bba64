"""Differences between two policies, in sentences a reviewer can read."""

from __future__ import annotations

from typing import Any

from router.policy.schema import Deployment, Policy


def describe_changes(old: Policy, new: Policy) -> list[str]:
    """List the changes from ``old`` to ``new``, one sentence each; empty when equal."""
    changes: list[str] = []
    changes += _alias_changes(old, new)
    changes += _deployment_changes(old, new)
    changes += _threshold_changes(old, new)
    changes += _floor_changes(old, new)
    routing_rest = {"thresholds", "category_floors"}
    changes += _section_changes("routing", old.routing.model_dump(exclude=routing_rest),
                                new.routing.model_dump(exclude=routing_rest))
    changes += _section_changes("cache", old.cache.model_dump(), new.cache.model_dump())
    changes += _section_changes("outcomes", old.outcomes.model_dump(), new.outcomes.model_dump())
    changes += _section_changes("shadow", old.shadow.model_dump(), new.shadow.model_dump())
    changes += _section_changes(
        "local_model", old.local_model.model_dump(), new.local_model.model_dump()
    )
    changes += _tenant_changes(old, new)
    changes += _embedding_changes(old, new)
    return changes


def _embedding_changes(old: Policy, new: Policy) -> list[str]:
    """Embedding deployments and aliases added, removed or changed."""
    if old.embeddings is None and new.embeddings is None:
        return []
    if old.embeddings is None:
        return ["An embeddings section is added, so POST /v1/embeddings serves models."]
    if new.embeddings is None:
        return ["The embeddings section is removed, so POST /v1/embeddings serves no model."]
    before = {d.name: d for d in old.embeddings.deployments}
    after = {d.name: d for d in new.embeddings.deployments}
    changes = [
        f"Embedding deployment '{name}' ({after[name].model}) is added."
        for name in sorted(after.keys() - before.keys())
    ]
    changes += [f"Embedding deployment '{name}' is removed." for name in sorted(before.keys() - after.keys())]
    for name in sorted(before.keys() & after.keys()):
        changes += _field_changes(f"Embedding deployment '{name}'", before[name].model_dump(),
                                  after[name].model_dump())
    old_aliases, new_aliases = old.embeddings.aliases, new.embeddings.aliases
    for name in sorted(old_aliases.keys() | new_aliases.keys()):
        a, b = old_aliases.get(name), new_aliases.get(name)
        if a == b:
            continue
        if a is None:
            changes.append(f"Embeddings alias '{name}' is added: {', '.join(b or [])}.")
        elif b is None:
            changes.append(f"Embeddings alias '{name}' is removed.")
        else:
            changes.append(f"Embeddings alias '{name}' changes from {', '.join(a)} to {', '.join(b)}.")
    return changes


def _tenant_changes(old: Policy, new: Policy) -> list[str]:
    """Tenants added, removed or changed; key digests are counted, never printed."""
    before, after = old.tenants, new.tenants
    changes = _section_changes(
        "tenants", before.model_dump(exclude={"entries"}), after.model_dump(exclude={"entries"})
    )
    changes += [f"Tenant '{name}' is added." for name in sorted(after.entries.keys() - before.entries.keys())]
    changes += [f"Tenant '{name}' is removed." for name in sorted(before.entries.keys() - after.entries.keys())]
    for name in sorted(before.entries.keys() & after.entries.keys()):
        a, b = before.entries[name], after.entries[name]
        added = len(set(b.key_sha256) - set(a.key_sha256))
        removed = len(set(a.key_sha256) - set(b.key_sha256))
        if added or removed:
            changes.append(f"Tenant '{name}': {added} API key(s) added, {removed} removed.")
        changes += _field_changes(
            f"Tenant '{name}'", a.model_dump(exclude={"key_sha256"}), b.model_dump(exclude={"key_sha256"})
        )
    return changes


def _alias_changes(old: Policy, new: Policy) -> list[str]:
    changes = [f"Router alias '{name}' is added." for name in new.aliases.keys() - old.aliases.keys()]
    changes += [f"Router alias '{name}' is removed." for name in old.aliases.keys() - new.aliases.keys()]
    for name in sorted(old.aliases.keys() & new.aliases.keys()):
        a, b = old.aliases[name], new.aliases[name]
        for field, words in (("min_tier", "minimum"), ("max_tier", "maximum")):
            if getattr(a, field) != getattr(b, field):
                changes.append(
                    f"Router alias '{name}' {words} tier changes from "
                    f"{getattr(a, field) or 'none'} to {getattr(b, field) or 'none'}."
                )
        changes += _alias_threshold_changes(name, old, new)
    return sorted(changes)


def _alias_threshold_changes(name: str, old: Policy, new: Policy) -> list[str]:
    """Describe the alias's own thresholds that change, with the value that applies instead."""
    before, after = old.aliases[name].thresholds, new.aliases[name].thresholds
    return [
        f"Router alias '{name}' {tier} threshold changes from "
        f"{_alias_threshold(before.get(tier), old, tier)} to {_alias_threshold(after.get(tier), new, tier)}."
        for tier in ("edge", "mid", "frontier")
        if before.get(tier) != after.get(tier)
    ]


def _alias_threshold(own: float | None, policy: Policy, tier: str) -> str:
    # Without its own value, an alias uses the policy's threshold, if the policy has one.
    if own is not None:
        return f"{own:.3f}"
    shared = policy.routing.thresholds.get(tier)
    return f"the policy's {shared:.3f}" if shared is not None else "no threshold"


def _placement(policy: Policy) -> dict[str, tuple[str, Deployment]]:
    return {d.name: (tier, d) for tier, config in policy.ordered_tiers() for d in config.deployments}


def _deployment_changes(old: Policy, new: Policy) -> list[str]:
    before, after = _placement(old), _placement(new)
    changes = [
        f"Deployment '{name}' ({after[name][1].model}) is added to the {after[name][0]} tier."
        for name in sorted(after.keys() - before.keys())
    ]
    changes += [
        f"Deployment '{name}' is removed from the {before[name][0]} tier."
        for name in sorted(before.keys() - after.keys())
    ]
    for name in sorted(before.keys() & after.keys()):
        (old_tier, old_d), (new_tier, new_d) = before[name], after[name]
        if old_tier != new_tier:
            changes.append(f"Deployment '{name}' moves from the {old_tier} tier to the {new_tier} tier.")
        changes += _field_changes(f"Deployment '{name}'", old_d.model_dump(), new_d.model_dump())
    return changes


def _threshold_changes(old: Policy, new: Policy) -> list[str]:
    changes = []
    for tier in ("edge", "mid", "frontier"):
        a, b = old.routing.thresholds.get(tier), new.routing.thresholds.get(tier)
        if a == b:
            continue
        if a is None or b is None:
            changes.append(f"The {tier} threshold changes from {a} to {b}.")
            continue
        direction = "fewer" if b > a else "more"
        # A cheaper tier's threshold also changes what reaches this one, so the sentence
        # speaks of the requests that reach the tier, not of its overall share.
        changes.append(
            f"The {tier} threshold changes from {a:.3f} to {b:.3f}, so the {tier} tier "
            f"accepts {direction} of the requests that reach it."
        )
    return changes


def _floor_changes(old: Policy, new: Policy) -> list[str]:
    before, after = old.routing.category_floors, new.routing.category_floors
    changes = []
    for category in sorted(before.keys() | after.keys()):
        a, b = before.get(category), after.get(category)
        if a == b:
            continue
        if b is None:
            changes.append(f"{category.capitalize()} prompts lose their floor ({a}), so the "
                           "scores alone choose their tier.")
        elif a is None:
            changes.append(f"{category.capitalize()} prompts now start at the {b} tier.")
        else:
            changes.append(f"{category.capitalize()} prompts start at the {b} tier instead of {a}.")
    return changes


def _section_changes(section: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return _field_changes(f"Setting '{section}'", old, new)


def _field_changes(subject: str, old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _field_changes(subject, a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{subject}: {prefix}{key} changes from {a!r} to {b!r}.")
    return changes
