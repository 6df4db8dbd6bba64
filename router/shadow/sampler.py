"""Pick finished requests for shadow evaluation and run their jobs in the background.

The request path calls :meth:`ShadowSampler.offer` once the response body is built and
before it is sent.  ``offer`` makes a few comparisons and starts at most one task, and it
never raises into the request.  At most ``shadow.concurrency`` jobs run at once.  A sampled
request beyond that is dropped, not queued, so a burst cannot build a backlog of paid
calls.  ``stop`` cancels the jobs still running and waits for them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import structlog

from router.errors import GatewayError
from router.outcomes.log import OutcomeLog
from router.outcomes.record import Outcome
from router.policy.schema import TIER_ORDER, Deployment, Policy
from router.shadow.budget import ShadowBudget
from router.shadow.job import (
    ShadowJobError,
    ShadowRequest,
    ShadowResult,
    label_record,
    plan_job,
    run_job,
)
from router.shadow.judge import answer_text
from router.shadow.metrics import ShadowMetrics
from router.upstream.base import Transport
from router.upstream.dispatch import Dispatcher

log = structlog.get_logger("tierwise.shadow")


class ShadowSampler:
    """Samples eligible requests and owns the tasks of their shadow jobs."""

    def __init__(
        self,
        direct: Transport,
        litellm: Transport,
        outcomes: OutcomeLog,
        budget: ShadowBudget,
        metrics: ShadowMetrics,
        is_available: Callable[[Deployment], bool],
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.direct = direct
        self.litellm = litellm
        self.outcomes = outcomes
        self.budget = budget
        self.metrics = metrics
        self.is_available = is_available
        self._draw = draw
        self._tasks: set[asyncio.Task[None]] = set()
        # Budget skips since the first one was logged; None while jobs fit in the budget.
        # Once the day's budget is spent every sampled request is skipped, so only the
        # first skip of a run is logged and the rest are counted.
        self._unlogged_budget_skips: int | None = None

    @property
    def running(self) -> int:
        """The number of shadow jobs in flight."""
        return len(self._tasks)

    def offer(
        self, policy: Policy, body: dict[str, Any], outcome: Outcome, completion: dict[str, Any]
    ) -> None:
        """Start a shadow job when the request is eligible and sampled; never raises.

        The client's response is already built, so a fault here (an upstream completion of an
        unexpected shape, for example) is logged and counted instead of failing the request.
        """
        try:
            self._offer(policy, body, outcome, completion)
        except Exception as exc:  # noqa: BLE001 - the client's response must not fail here
            log.warning("shadow_offer_failed", request_id=outcome.request_id,
                        error=type(exc).__name__)
            self.metrics.failed.inc()

    def _offer(
        self, policy: Policy, body: dict[str, Any], outcome: Outcome, completion: dict[str, Any]
    ) -> None:
        """Start a shadow job for this finished request when it is eligible and sampled.

        Eligible: served by one of ``shadow.tiers``, not from the cache, not streamed,
        successful, the response has text, and the tenant and the requested alias may use the
        reference and judge tiers (a tenant's ``blocked_tiers`` and an alias's ``max_tier``
        keep its prompts away from those tiers here too).
        """
        shadow = policy.shadow
        if not shadow.enabled or outcome.tier not in shadow.tiers or outcome.deployment is None:
            return
        if outcome.cache_hit or outcome.stream or outcome.status != 200:
            return
        if _blocks_shadow_tiers(policy, outcome.tenant, outcome.requested_model):
            return
        served_answer = answer_text(completion)
        if served_answer is None or self._draw() >= shadow.sample_rate:
            return
        self.metrics.sampled.inc()
        if len(self._tasks) >= shadow.concurrency:
            self.metrics.dropped.inc()
            return
        request = ShadowRequest(
            request_id=outcome.request_id,
            tenant=outcome.tenant,
            tier=outcome.tier,
            model=outcome.deployment.name,
            body=body,
            served_answer=served_answer,
            tokens_in=outcome.tokens_in,
            tokens_out=outcome.tokens_out,
            policy=policy,
        )
        task = asyncio.create_task(self._run(request), name=f"shadow-{request.request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Wait until every job running now has ended; jobs started meanwhile are not awaited."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        """Cancel the running jobs and wait until each has ended.

        A cancelled job keeps its budget reservation, because what it already spent is unknown.
        """
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, request: ShadowRequest) -> None:
        try:
            await self._evaluate(request)
        except Exception as exc:  # noqa: BLE001 - a background job ends in a count, never an unobserved task error
            log.warning("shadow_error", request_id=request.request_id, error=type(exc).__name__)
            self._fail(request, "internal_error", None)

    async def _evaluate(self, request: ShadowRequest) -> None:
        shadow = request.policy.shadow
        try:
            plan = plan_job(request, self.is_available)
        except ShadowJobError as exc:
            self._fail(request, exc.kind, None)
            return
        reservation = await self.budget.reserve(plan.estimated_usd, shadow.budget_usd_per_day)
        if reservation is None:
            self._skip_for_budget(request, plan.estimated_usd, shadow.budget_usd_per_day)
            return
        if self._unlogged_budget_skips is not None:
            log.info("shadow_budget_available", skipped_since_logged=self._unlogged_budget_skips)
            self._unlogged_budget_skips = None
        try:
            async with asyncio.timeout(shadow.timeout_s):
                result = await run_job(request, plan, Dispatcher(self.direct, self.litellm))
        except TimeoutError:
            self._fail(request, "timeout", reservation.usd)
            return
        except ShadowJobError as exc:
            self._fail(request, exc.kind, reservation.usd)
            return
        except GatewayError as exc:
            self._fail(request, exc.code or "upstream_failed", reservation.usd)
            return
        await self.budget.settle(reservation, result.cost_usd)
        self._finish(request, result)

    def _skip_for_budget(
        self, request: ShadowRequest, estimated_usd: float, cap_usd: float
    ) -> None:
        """Count a job that the day's budget (or an unreachable Redis) does not admit.

        Only the first skip of a run of skips is logged. The next job that fits logs
        ``shadow_budget_available`` with the number of skips in between.
        """
        self.metrics.skipped_budget.inc()
        if self._unlogged_budget_skips is not None:
            self._unlogged_budget_skips += 1
            return
        self._unlogged_budget_skips = 0
        log.info(
            "shadow_skipped_budget",
            request_id=request.request_id,
            estimated_usd=round(estimated_usd, 8),
            budget_usd_per_day=cap_usd,
            hint="a budget below one job's estimate skips every job"
            if estimated_usd > cap_usd
            else None,
            effect="later skips are counted in tierwise_shadow_skipped_budget_total, not logged,"
            " until a job fits in the budget again",
        )

    def _finish(self, request: ShadowRequest, result: ShadowResult) -> None:
        self.outcomes.emit(result.record)
        self.metrics.count_done(result.verdict)
        self.metrics.cost.inc(result.cost_usd)
        log.info(
            "shadow",
            request_id=request.request_id,
            tenant=request.tenant,
            tier=request.tier,
            reference_model=result.record["reference_model"],
            judge=result.record["judge"],
            verdict=result.verdict,
            score=result.record["score"],
            cost_usd=result.record["cost_usd"],
        )

    def _fail(self, request: ShadowRequest, kind: str, reserved_usd: float | None) -> None:
        """Count and record a job that got no verdict.

        Its reservation (``reserved_usd``, None when nothing was reserved) stays charged to
        the budget, because what the calls spent before failing is not known.
        """
        record = label_record(request, None, None, 0.0)
        record.update(verdict="failed", error=kind, cost_usd=None, reserved_usd=reserved_usd)
        self.outcomes.emit(record)
        self.metrics.failed.inc()
        log.warning("shadow_failed", request_id=request.request_id, tier=request.tier, error=kind)


def _blocks_shadow_tiers(policy: Policy, tenant: str, requested: str) -> bool:
    """Return whether ``tenant`` or the alias ``requested`` keeps prompts from the shadow tiers.

    The shadow tiers are the reference tier and the judge's tier. A tenant keeps its prompts
    from the tiers in its ``blocked_tiers``. An alias keeps them from tiers above its
    ``max_tier`` (an alias that keeps prompts on local models, say).
    """
    entry = policy.tenants.entries.get(tenant)
    alias = policy.aliases.get(requested)
    max_tier = alias.max_tier if alias is not None else None
    if (entry is None or not entry.blocked_tiers) and max_tier is None:
        return False
    shadow = policy.shadow
    judge = policy.find_deployment(shadow.judge.deployment) if shadow.judge else None
    tiers = {shadow.reference_tier, judge[0] if judge else shadow.reference_tier}
    if max_tier is not None and any(
        TIER_ORDER.index(tier) > TIER_ORDER.index(max_tier) for tier in tiers
    ):
        return True
    return entry is not None and bool(tiers.intersection(entry.blocked_tiers))
