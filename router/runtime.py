"""The gateway's long-lived components, built from settings and owned by the app."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import structlog

from router.budgets import BudgetLedger
from router.cache.memory import MemoryCache
from router.cache.redis_store import RedisCache
from router.dashboard.aggregates import DashboardAggregates
from router.dashboard.evaluation import EvaluationReport
from router.metrics import GatewayMetrics, gateway_state
from router.outcomes.log import OutcomeLog
from router.policy.schema import Deployment
from router.policy.store import PolicyStore
from router.redis_link import RedisLink
from router.request_ids import RequestIdSigner, load_signer
from router.settings import Settings
from router.shadow.budget import ShadowBudget
from router.shadow.sampler import ShadowSampler
from router.upstream.direct import DirectTransport
from router.upstream.litellm_path import LitellmTransport

if TYPE_CHECKING:
    from router.distribution.watcher import DistributionWatcher

log = structlog.get_logger("tierwise.runtime")

_LOCAL_MODEL_DOWN = "the local edge model is not running"
LOCAL_MODEL_CLIENT_REASONS: dict[str, str] = {
    "not_started": f"{_LOCAL_MODEL_DOWN} (it starts with `tierwise serve`)",
    "disabled": f"{_LOCAL_MODEL_DOWN} (disabled by --no-local-model or TIERWISE_LOCAL_MODEL=false)",
    "not_installed": f"{_LOCAL_MODEL_DOWN} (the edge extra is not installed)",
    "starting": "the local edge model is still starting",
    "failed": f"{_LOCAL_MODEL_DOWN} (it failed to start, and the gateway log has the cause)",
}


class Scorer(Protocol):
    version: str
    tiers: tuple[str, ...]

    def score(self, messages: list[Any]) -> dict[str, float]: ...


class ResponseCache(Protocol):
    backend: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...

    async def close(self) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    policies: PolicyStore
    scorer: Scorer
    cache: ResponseCache
    outcomes: OutcomeLog
    direct: DirectTransport
    litellm: LitellmTransport
    redis: RedisLink | None
    budgets: BudgetLedger
    started_at: float = 0.0
    local_model_status: str = "not started: run `tierwise serve` with the edge extra installed"
    """The reason deployments marked ``local_model`` are unavailable, or "ready"."""
    local_model_state: str = "not_started"
    """A key of ``LOCAL_MODEL_CLIENT_REASONS``, or "ready"; clients see only its text."""
    extra: dict[str, Any] = field(default_factory=dict)
    request_ids: RequestIdSigner | None = None
    """Issues and checks tenant-bound request ids; set by ``start``."""
    distribution: DistributionWatcher | None = None
    """Applies classifiers and policies published through Redis; None without Redis."""
    metrics: GatewayMetrics = field(init=False)
    dashboard: DashboardAggregates = field(init=False)
    evaluation: EvaluationReport = field(init=False)
    shadow: ShadowSampler = field(init=False)
    """Runs shadow evaluation jobs; idle unless the policy enables ``shadow``."""

    def __post_init__(self) -> None:
        self.metrics = GatewayMetrics(lambda: gateway_state(self))
        self.dashboard = DashboardAggregates()
        self.evaluation = EvaluationReport(self.settings.evaluation_report)
        self.shadow = ShadowSampler(
            self.direct,
            self.litellm,
            self.outcomes,
            ShadowBudget(self.redis, self.settings.redis_key_prefix),
            self.metrics.shadow,
            self.is_available,
        )

    def unavailable_reason(self, deployment: Deployment) -> str | None:
        if deployment.local_model and self.local_model_status != "ready":
            return self.local_model_status
        return deployment.loaded_unavailable_reason

    def is_available(self, deployment: Deployment) -> bool:
        return self.unavailable_reason(deployment) is None

    def client_unavailable_reason(self, deployment: Deployment) -> str | None:
        """Like ``unavailable_reason``, in words safe for error messages.

        The local model's status may quote server output, paths and ports, so clients get a
        fixed text per state instead. The gateway log has the details.
        """
        if deployment.local_model and self.local_model_state != "ready":
            return LOCAL_MODEL_CLIENT_REASONS.get(self.local_model_state, _LOCAL_MODEL_DOWN)
        return deployment.loaded_unavailable_reason

    @classmethod
    def build(cls, settings: Settings, scorer: Scorer | None = None) -> Runtime:
        """Build every component; raises PolicyError or ArtifactError on bad files."""
        policies = PolicyStore(settings.policy, settings.policy_reload_interval_s)
        link = (
            RedisLink(settings.redis_url, settings.redis_timeout_s, settings.redis_cluster)
            if settings.redis_url
            else None
        )
        prefix = settings.redis_key_prefix
        cache: ResponseCache = (
            RedisCache(link, prefix)
            if link is not None
            else MemoryCache(policies.current.policy.cache.max_entries)
        )
        return cls(
            settings=settings,
            policies=policies,
            scorer=scorer or load_scorer(settings),
            cache=cache,
            outcomes=OutcomeLog(
                settings.resolved_outcomes_path, link, settings.resolved_spool_dir, prefix
            ),
            direct=DirectTransport(),
            litellm=LitellmTransport(),
            redis=link,
            budgets=BudgetLedger(link, prefix),
        )

    async def start(self) -> None:
        self.policies.start()
        self.outcomes.start()
        self.budgets.start()
        self.request_ids = await load_signer(
            secret.get_secret_value() if (secret := self.settings.feedback_secret) else None,
            self.redis,
            self.settings.redis_key_prefix,
            self.settings.data_dir,
        )
        if self.redis is not None:
            await self._start_distribution(self.redis.url)
        self._start_local_model()
        if self.redis is not None and not await self.redis.ping():
            log.warning("redis_unreachable_at_start", hint="serving without cache until it responds")
        self._log_tiers()

    async def _start_distribution(self, redis_url: str) -> None:
        from router.distribution.keys import DistributionKeys
        from router.distribution.watcher import DistributionWatcher

        self.distribution = DistributionWatcher(
            self,
            redis_url,
            keys=DistributionKeys(self.settings.redis_key_prefix),
            connect_timeout_s=self.settings.redis_timeout_s,
            cluster=self.settings.redis_cluster,
        )
        await self.distribution.start()

    def _start_local_model(self) -> None:
        local = [d for d in self.policies.current.policy.all_deployments() if d.local_model]
        if not local:
            return
        if not self.settings.local_model:
            self.local_model_status = "disabled by settings (TIERWISE_LOCAL_MODEL=false)"
            self.local_model_state = "disabled"
            return
        from router.edge import EdgeModelServer

        available, reason = EdgeModelServer.is_available()
        if not available:
            self.local_model_status = f"edge extra unavailable: {reason}"
            self.local_model_state = "not_installed"
            return
        port = urlsplit(local[0].api_base or "").port
        server = EdgeModelServer(port=port)
        self.extra["local_model"] = server
        self.local_model_status = self.local_model_state = "starting"
        # The model loads in the background, so the gateway serves the other tiers at once.
        self.extra["local_model_task"] = asyncio.create_task(self._run_local_model(server))

    async def _run_local_model(self, server: Any) -> None:
        from router.edge import EdgeModelError

        try:
            await server.start()
        except EdgeModelError as exc:
            self.local_model_status = f"failed to start: {exc}"
            self.local_model_state = "failed"
            log.warning("local_model_unavailable", reason=str(exc))
            return
        self.local_model_status = self.local_model_state = "ready"

    async def stop(self) -> None:
        # Shadow jobs end first, while the outcome log and the transports still work.
        await self.shadow.stop()
        if self.distribution is not None:
            await self.distribution.stop()
        task = self.extra.pop("local_model_task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server = self.extra.pop("local_model", None)
        if server is not None:
            await server.stop()
        await self.policies.stop()
        await self.outcomes.stop()
        await self.budgets.stop()
        await self.direct.close()
        await self.cache.close()
        if self.redis is not None:
            await self.redis.close()

    def _log_tiers(self) -> None:
        for tier, config in self.policies.current.policy.ordered_tiers():
            for deployment in config.deployments:
                reason = self.unavailable_reason(deployment)
                if reason is None:
                    log.info("deployment_ready", tier=tier, deployment=deployment.name)
                else:
                    log.warning(
                        "deployment_unavailable", tier=tier, deployment=deployment.name, reason=reason
                    )


def load_scorer(settings: Settings) -> Scorer:
    from classifiers import load_artifact, load_default

    scorer: Scorer = load_artifact(settings.classifier) if settings.classifier else load_default()
    return scorer
