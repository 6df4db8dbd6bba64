"""The text of ``tierwise policy explain``: features, scores, the deciding rule, the cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from router.api.schemas import ChatRequest, invalid_request
from router.errors import GatewayError
from router.policy.loader import PolicyError, load_policy
from router.policy.schema import TIER_ORDER, Deployment
from router.routing.category import prompt_category
from router.routing.decide import RequestNeeds, decide, highest_tier
from router.routing.tokens import count_file_tokens, count_prompt_tokens
from router.settings import BUNDLED_POLICY


def _read_messages(
    prompt: str | None, messages_file: Path | None
) -> tuple[list[dict[str, Any]], ChatRequest]:
    """Return the messages to explain, and the chat request that the gateway would validate."""
    if messages_file is not None:
        try:
            messages = json.loads(messages_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise typer.BadParameter(f"cannot read messages from {messages_file}: {exc}") from None
        if not isinstance(messages, list) or not messages:
            raise typer.BadParameter(f"{messages_file} must hold a non-empty JSON list of messages")
        return messages, _validate_chat_messages(messages, messages_file)
    if not prompt:
        raise typer.BadParameter("give a PROMPT or --messages FILE")
    messages = [{"role": "user", "content": prompt}]
    return messages, ChatRequest.model_validate({"model": "auto", "messages": messages})


def _validate_chat_messages(messages: list[Any], messages_file: Path) -> ChatRequest:
    """Validate ``messages`` as /v1/chat/completions does; raise BadParameter where it gives a 400.

    Without this check, a part type that routing does not read, such as a Responses
    ``input_file`` or an Anthropic ``document``, would be routed as if it were absent.
    """
    try:
        return ChatRequest.model_validate({"model": "auto", "messages": messages})
    except ValidationError as exc:
        message = invalid_request(exc).message
        raise typer.BadParameter(
            f"{messages_file}: {message} The file must hold Chat Completions messages, as "
            "/v1/chat/completions takes them.",
            param_hint="--messages",
        ) from None


def explain_routing(
    prompt: str | None,
    policy_path: Path | None,
    messages_file: Path | None,
    model: str,
    expected_output_tokens: int,
    classifier_path: Path | None,
    tenant: str | None = None,
) -> str:
    from classifiers import load_artifact, load_default

    messages, chat = _read_messages(prompt, messages_file)
    try:
        loaded = load_policy(policy_path or BUNDLED_POLICY)
    except PolicyError as exc:
        raise typer.BadParameter(str(exc)) from None
    policy = loaded.policy
    scorer = load_artifact(classifier_path) if classifier_path else load_default()
    alias = policy.aliases.get(model)
    if not policy.has_model(model):
        # The gateway answers such a request with 404 model_not_found.
        known = ", ".join([*policy.aliases, *(d.name for d in policy.all_deployments())])
        raise typer.BadParameter(f"the model {model!r} does not exist in this policy; "
                                 f"use a router alias or a deployment name: {known}",
                                 param_hint="--model")
    tenant_config = None
    if tenant is not None:
        tenant_config = policy.tenants.entries.get(tenant)
        if tenant_config is None:
            known = ", ".join(policy.tenants.entries) or "none"
            raise typer.BadParameter(f"the policy has no tenant {tenant!r}; its tenants: {known}",
                                     param_hint="--tenant")
    scores = scorer.score(messages) if alias is not None else {}
    file_tokens = count_file_tokens(messages)
    tokens = count_prompt_tokens(messages, fits_below=0, file_tokens=file_tokens)
    category = prompt_category(messages)
    part_types = chat.content_part_types
    # As at the gateway, a tool-call history goes only to deployments with ``tools``, and
    # image, audio and file parts only to deployments with their capability.
    needs = RequestNeeds(
        prompt_tokens=tokens,
        tool_messages=chat.has_tool_messages,
        images="image_url" in part_types,
        audio="input_audio" in part_types,
        files="file" in part_types,
        file_tokens=file_tokens,
    )
    lines = [f"policy      {loaded.path} (version {loaded.version})", f"classifier  {scorer.version}"]
    if tenant_config is not None:
        blocked = ", ".join(tenant_config.blocked_tiers) or "none"
        lines.append(f"tenant      {tenant} (minimum tier {tenant_config.min_tier or 'none'}, "
                     f"blocked tiers {blocked})")
    features = getattr(scorer, "features", None)
    if callable(features):
        shown = ", ".join(f"{k}={_number(v)}" for k, v in features(messages).items())
        lines.append(f"features    {shown}")
    if part_types & {"image_url", "file"}:
        lines.append(f"tokens      {tokens} prompt tokens (cl100k count, with estimates for "
                     "images and files)")
    else:
        lines.append(f"tokens      {tokens} prompt tokens (cl100k count)")
    floor = policy.routing.category_floors.get(category)
    lines.append(f"category    {category}" + (f" (starts at the {floor} tier)" if floor else ""))
    max_tier = alias.max_tier if alias is not None else None
    for tier, _ in policy.ordered_tiers():
        threshold = policy.thresholds_for(model).get(tier)
        rule = f">= {threshold:.3f} to choose" if threshold is not None else "fallback tier"
        if max_tier is not None and TIER_ORDER.index(tier) > TIER_ORDER.index(max_tier):
            rule = f"above {model}'s maximum tier {max_tier}"
        elif max_tier is not None and tier == policy.alias_tiers(model)[-1]:
            # The most capable tier the alias may use takes what cheaper tiers did not.
            rule = f"fallback tier of {model}"
        score = f"{scores[tier]:.3f}" if tier in scores else "-"
        lines.append(f"score       {tier:<9} {score:>6}   ({rule})")
    unscored = [tier for tier in policy.routing.thresholds if tier not in scorer.tiers]
    if alias is not None and unscored:
        # The gateway logs classifier_cannot_score_tier for the same pairing.
        lines.append(
            f"note        classifier {scorer.version} scores only {', '.join(scorer.tiers)}, so "
            f"score-based routing never picks {', '.join(unscored)}; use a classifier that "
            f"scores {', '.join(unscored)}, or remove that tier from the policy"
        )
    try:
        decision = decide(
            policy,
            scores,
            needs,
            requested=model,
            unavailable_reason=Deployment.unavailable_reason,
            min_tier=highest_tier(
                alias.min_tier if alias else None,
                tenant_config.min_tier if tenant_config else None,
            ),
            blocked_tiers=frozenset(tenant_config.blocked_tiers) if tenant_config else frozenset(),
            category=category if alias is not None else None,
        )
    except GatewayError as exc:
        lines.append(f"decision    no deployment: {exc.message}")
        return "\n".join(lines)
    deployment = decision.candidates[0].deployment
    cost = deployment.cost_usd(tokens, expected_output_tokens)
    lines.append(f"decision    {decision.tier} -> {deployment.name} ({decision.reason})")
    fallbacks = ", ".join(c.deployment.name for c in decision.candidates[1:]) or "none"
    lines.append(f"fallbacks   {fallbacks}")
    if decision.tier in policy.weighted_tiers:
        lines.append(f"balance     the {decision.tier} tier is weighted: each request tries first a "
                     "deployment drawn by weight, so the first choice above may differ")
    for name, why in decision.skipped.items():
        found = policy.find_deployment(name)
        if why == "unavailable" and found is not None:
            why = found[1].unavailable_reason() or why
        lines.append(f"skipped     {name}: {why}")
    lines.append(
        f"cost        ${cost:.6f} expected for {tokens} prompt + {expected_output_tokens} output tokens"
    )
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
