"""One shadow job: estimate its cost, ask the reference tier, ask the judge, build the label.

The job reuses the gateway's :class:`~router.upstream.dispatch.Dispatcher`, so the reference
call falls back across the reference tier's deployments like a client request would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from router.outcomes.record import valid_token_count
from router.policy.schema import Deployment, Policy
from router.routing.decide import Candidate
from router.routing.tokens import count_prompt_tokens
from router.shadow.judge import answer_text, judge_messages, parse_verdict
from router.upstream.dispatch import Dispatcher

Verdict = Literal["parsed", "unparsable", "failed"]

# The reference answer's max_tokens: four times the served answer's length, at least 256
# tokens, and never more than the client's own limit.  A cap is needed because the budget
# reservation must bound what the call can cost.
REFERENCE_OUTPUT_FACTOR = 4
MIN_REFERENCE_OUTPUT_TOKENS = 256
# An estimate of the judge prompt's own tokens (instructions, headings, message framing).
JUDGE_TEMPLATE_TOKENS = 200


class ShadowJobError(Exception):
    """Raised when a shadow call cannot be made or returns no text; ``kind`` names the cause."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class ShadowRequest:
    """A finished request handed to shadow evaluation.

    ``body`` is the client's request body as the gateway parsed it; the job reads it and
    never changes it.
    """

    request_id: str
    tenant: str
    tier: str
    model: str
    body: dict[str, Any]
    served_answer: str
    tokens_in: int
    tokens_out: int
    policy: Policy


@dataclass(frozen=True, slots=True)
class ShadowPlan:
    """The calls of one job and the upper estimate of their cost, in USD."""

    reference: tuple[Candidate, ...]
    judge: Candidate
    judge_max_tokens: int
    reference_max_tokens: int
    estimated_usd: float


@dataclass(slots=True)
class ShadowResult:
    """The label record of one job and what the job cost."""

    verdict: Verdict
    record: dict[str, Any]
    cost_usd: float


def plan_job(request: ShadowRequest, is_available: Callable[[Deployment], bool]) -> ShadowPlan:
    """Choose the deployments and estimate the cost; raise ShadowJobError when none is usable."""
    policy, shadow = request.policy, request.policy.shadow
    assert shadow.judge is not None  # the policy schema requires a judge when shadow is enabled
    reference = tuple(
        Candidate(shadow.reference_tier, d)
        for d in policy.tiers[shadow.reference_tier].deployments
        if is_available(d)
    )
    found = policy.find_deployment(shadow.judge.deployment)
    if not reference:
        raise ShadowJobError("reference_unavailable")
    if found is None or not is_available(found[1]):
        raise ShadowJobError("judge_unavailable")
    prompt_tokens = request.tokens_in or count_prompt_tokens(request.body["messages"], fits_below=0)
    max_tokens = _reference_max_tokens(request)
    reference_usd = max(c.deployment.cost_usd(prompt_tokens, max_tokens) for c in reference)
    judge_in = prompt_tokens + request.tokens_out + max_tokens + JUDGE_TEMPLATE_TOKENS
    judge_usd = found[1].cost_usd(judge_in, shadow.judge.max_tokens)
    judge = Candidate(found[0], found[1])
    return ShadowPlan(
        reference, judge, shadow.judge.max_tokens, max_tokens, reference_usd + judge_usd
    )


def _reference_max_tokens(request: ShadowRequest) -> int:
    limit = max(MIN_REFERENCE_OUTPUT_TOKENS, REFERENCE_OUTPUT_FACTOR * request.tokens_out)
    client_limit = request.body.get("max_completion_tokens") or request.body.get("max_tokens")
    return min(limit, client_limit) if isinstance(client_limit, int) else limit


async def run_job(request: ShadowRequest, plan: ShadowPlan, dispatcher: Dispatcher) -> ShadowResult:
    """Ask the reference tier, then the judge, and return the label record.

    Raises GatewayError when every deployment of a call fails, ShadowJobError when the
    reference answer has no text.
    """
    reference_body = dict(request.body, n=1, max_tokens=plan.reference_max_tokens)
    reference_body.pop("max_completion_tokens", None)
    answered, reference = await dispatcher.complete(plan.reference, reference_body)
    cost = _call_cost(answered.deployment, reference, plan.estimated_usd)
    reference_text = answer_text(reference)
    if reference_text is None:
        raise ShadowJobError("reference_without_text")

    messages = judge_messages(request.body["messages"], reference_text, request.served_answer)
    judge_body = {
        "model": plan.judge.deployment.name,
        "messages": messages,
        "temperature": 0,
        "max_tokens": plan.judge_max_tokens,
    }
    _, verdict = await dispatcher.complete((plan.judge,), judge_body)
    cost += _call_cost(plan.judge.deployment, verdict, plan.estimated_usd)
    verdict_text = _raw_text(verdict)
    score = parse_verdict(verdict_text)

    record = label_record(request, answered.deployment.name, score, cost)
    if request.policy.shadow.store_prompts:
        record["judge_messages"] = messages
        record["judge_output"] = verdict_text
    return ShadowResult("parsed" if score is not None else "unparsable", record, cost)


def _call_cost(deployment: Deployment, completion: dict[str, Any], fallback_usd: float) -> float:
    """Price the call from its usage, or return ``fallback_usd`` when the upstream sent none."""
    usage = completion.get("usage")
    if not usage or not isinstance(usage, dict):
        return fallback_usd
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    # A count that is not a whole number from 0 to MAX_TOKEN_COUNT is 0, as in the outcome
    # record, so that a faulty upstream can neither fail the job nor use up the shadow budget.
    return deployment.cost_usd(
        valid_token_count(usage.get("prompt_tokens")) or 0,
        valid_token_count(usage.get("completion_tokens")) or 0,
        valid_token_count(cached) or 0,
    )


def _raw_text(completion: dict[str, Any]) -> str | None:
    choices = completion.get("choices") or []
    content = (choices[0].get("message") or {}).get("content") if choices else None
    return content if isinstance(content, str) else None


def label_record(
    request: ShadowRequest, reference_model: str | None, score: float | None, cost_usd: float
) -> dict[str, Any]:
    """Build the outcome-log record of one job.

    A parsed score is a ``feedback`` record, which training joins to the request by its id.
    An unparsable verdict or a failed job is a ``shadow`` record with ``score`` None, so no
    reader of feedback mistakes it for a grade.

    ``classifiers.outcomes`` joins a parsed verdict to its request like client feedback
    (client feedback wins when both exist) and counts ``shadow`` records without a score.
    """
    shadow = request.policy.shadow
    return {
        "type": "feedback" if score is not None else "shadow",
        "source": "shadow",
        "request_id": request.request_id,
        "tenant": request.tenant,
        "score": score,
        "verdict": "parsed" if score is not None else "unparsable",
        "tier": request.tier,
        "model": request.model,
        "reference_tier": shadow.reference_tier,
        "reference_model": reference_model,
        "judge": shadow.judge.deployment if shadow.judge else None,
        "cost_usd": round(cost_usd, 8),
        "ts": round(time.time(), 3),
    }
