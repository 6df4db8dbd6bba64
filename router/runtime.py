"""The gateway's long-lived components, built from settings and owned by the app."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import structlog

from router.budgets import BudgetLedger
from router.cache.memory import MemoryCache
from router.cache.redis_store import RedisCache
from router.dashboard.aggregates import DashboardAggregates
from router.dashboard.evaluation import EvaluationReport
from router.local_model import (
    LOCAL_MODEL_CLIENT_REASONS,
    LOCAL_MODEL_DOWN,
    retry_after_s,
    supervise,
)
from router.metrics import GatewayMetrics, gateway_state
from router.outcomes.log import OutcomeLog
from router.policy.loader import LoadedPolicy, deployment_field_problem
from router.policy.schema import Deployment, EmbeddingDeployment
from router.policy.store import PolicyStore
from router.ratelimits import RateLimiter, TokenRateLimiter
from router.redis_link import RedisLink
from router.request_ids import RequestIdSigner, keep_shared_secret, load_signer
from router.settings import BUNDLED_POLICY, Settings
from router.shadow.budget import ShadowBudget
from router.shadow.sampler import ShadowSampler
from router.upstream.base import Transport
from router.upstream.direct import DirectTransport
from router.upstream.health import DeploymentHealth
from router.upstream.litellm_path import LitellmTransport

if TYPE_CHECKING:
    from router.distribution.watcher import DistributionWatcher

log = structlog.get_logger("tierwise.runtime")

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
    direct: Transport
    litellm: Transport
    redis: RedisLink | None
    budgets: BudgetLedger
    started_at: float = 0.0
    local_model_status: str = "not started: run `tierwise serve` with the edge extra installed"
    """The reason deployments marked ``local_model`` are unavailable, or "ready"."""
    local_model_state: str = "not_started"
    """A key of ``LOCAL_MODEL_CLIENT_REASONS``, or "ready"; clients see only its text."""
    local_model_serving_at: float | None = None
    """Monotonic time by which a starting or restarting local model should serve, or None."""
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
    rate_limits: RateLimiter = field(init=False)
    """Request counter of the tenants that have ``requests_per_minute``."""
    token_limits: TokenRateLimiter = field(init=False)
    """Token counter of the tenants that have ``tokens_per_minute``."""
    health: DeploymentHealth = field(default_factory=DeploymentHealth)
    """Failures in a row and cooldowns of deployments, shared by every request."""

    def __post_init__(self) -> None:
        # Kept apart from ``litellm``, which tracing wraps.
        self.litellm_loader = self.litellm if isinstance(self.litellm, LitellmTransport) else None
        self.policies.on_reload = lambda _loaded: self._check_reloaded_policy()
        self.metrics = GatewayMetrics(lambda: gateway_state(self))
        self.dashboard = DashboardAggregates()
        self.evaluation = EvaluationReport(self.settings.evaluation_report)
        self.rate_limits = RateLimiter(self.redis, self.settings.redis_key_prefix)
        self.token_limits = TokenRateLimiter(self.budgets, self.settings.redis_key_prefix)
        self.shadow = ShadowSampler(
            self.direct,
            self.litellm,
            self.outcomes,
            ShadowBudget(self.redis, self.settings.redis_key_prefix),
            self.metrics.shadow,
            self.is_available,
        )

    def unavailable_reason(self, deployment: Deployment | EmbeddingDeployment) -> str | None:
        if deployment.local_model and self.local_model_status != "ready":
            return self.local_model_status
        import_error = self._litellm_import_error(deployment)
        if import_error is not None:
            return f"litellm failed to import: {import_error}"
        return deployment.loaded_unavailable_reason

    def _litellm_import_error(self, deployment: Deployment | EmbeddingDeployment) -> str | None:
        """Return why litellm failed to import, for a deployment on the litellm path."""
        loader = self.litellm_loader
        if loader is None or loader.import_error is None or deployment.uses_direct_path:
            return None
        return loader.import_error

    def is_available(self, deployment: Deployment | EmbeddingDeployment) -> bool:
        return self.unavailable_reason(deployment) is None

    def client_unavailable_reason(
        self, deployment: Deployment | EmbeddingDeployment
    ) -> str | None:
        """Like ``unavailable_reason``, in words safe for error messages.

        The local model's status may quote server output, paths and ports, so clients get a
        fixed text per state instead. The gateway log has the details.
        """
        if deployment.local_model and self.local_model_state != "ready":
            return LOCAL_MODEL_CLIENT_REASONS.get(self.local_model_state, LOCAL_MODEL_DOWN)
        if self._litellm_import_error(deployment) is not None:
            return "the gateway failed to import litellm, which calls this deployment (see its log)"
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
            RedisCache(link, prefix, settings.cache_near_entries)
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
        if self.redis is not None and self.request_ids.source == "redis":
            self.extra["secret_task"] = asyncio.create_task(
                keep_shared_secret(self.request_ids, self.redis, self.settings.redis_key_prefix)
            )
        if self.redis is not None:
            await self._start_distribution(self.redis.url)
        self._start_local_model()
        # /readyz waits for this import only. An import that a reload starts must not take
        # every replica out of the load balancer at once.
        self.extra["litellm_import_at_start"] = self._preload_litellm()
        if self.redis is not None and not await self.redis.ping():
            from router.cli.redis_client import redact_url

            log.warning(
                "redis_unreachable_at_start",
                redis=redact_url(self.redis.url),
                hint="serving without cache until it responds. Check --redis-url (or REDIS_URL) "
                "and that Redis is running there",
            )
        elif self.redis is not None and await self.redis.is_persistent() is False:
            log.warning(
                "redis_not_persistent",
                effect="a Redis restart resets spend against budgets, the shadow budget, the "
                "feedback secret and the published classifier and policy versions",
                fix="turn on appendonly or save snapshots in Redis (deploy/ does), or use a "
                "managed Redis that keeps its data",
            )
        self._log_tiers()
        self.warn_unscored_tiers()

    def _preload_litellm(self) -> bool:
        """Start importing litellm when a deployment of the current policy goes through it.

        Returns whether litellm is being imported now.
        """
        policy = self.policies.current.policy
        deployments: list[Any] = list(policy.all_deployments())
        if policy.embeddings is not None:
            deployments.extend(policy.embeddings.deployments)
        if self.litellm_loader is not None and any(not d.uses_direct_path for d in deployments):
            self.litellm_loader.preload()
            return self.litellm_loader.loading
        return False

    def _check_reloaded_policy(self) -> None:
        self._preload_litellm()
        self.warn_unscored_tiers()
        self.warn_local_model_moved()
        self.warn_local_model_context_changed()
        policy = self.policies.current.policy
        cooldowns_on = policy.routing.cooldown.after_failures > 0
        names = {d.name for d in policy.all_deployments()}
        if policy.embeddings is not None:
            names.update(d.name for d in policy.embeddings.deployments)
        self.health.keep_only(names if cooldowns_on else ())
        self.health.limit_cooldowns(policy.routing.cooldown.seconds)

    def warn_local_model_moved(self) -> None:
        """Log a warning when the policy now expects the local model on another port.

        The local model server is started once, so its port changes only with a restart.
        """
        server = self.extra.get("local_model")
        if server is None:
            return
        local = self.policies.current.policy.local_model_deployments()
        expected = urlsplit(local[0].api_base or "").port if local else None
        # The port the server was started with; EdgeModelServer.port raises until it is ready.
        if expected == server.requested_port:
            return
        log.warning(
            "local_model_port_changed",
            running_port=server.requested_port,
            policy_port=expected,
            effect="until the gateway restarts, requests to the local model deployment go to "
            "whatever listens on the policy's port, or fail over to the next tier when nothing "
            "does",
            fix="restart the gateway, or put the running port back into the policy",
        )

    def warn_unscored_tiers(self) -> None:
        """Log a warning for each tier that has a threshold but no classifier score.

        `tierwise policy publish` rejects such a pairing, but a policy file and a classifier
        folder given at start, or a policy file edited later, are not checked against each
        other.
        """
        loaded = self.policies.current
        unscored = sorted(set(loaded.policy.routing.thresholds) - set(self.scorer.tiers))
        for tier in unscored:
            log.warning(
                "classifier_cannot_score_tier",
                tier=tier,
                classifier=self.scorer.version,
                classifier_tiers=list(self.scorer.tiers),
                policy=loaded.version,
                effect=f"score-based routing never picks the {tier} tier because its threshold "
                f"can never be met; {tier} serves only requests that name its deployments, and "
                "requests for which it is the most capable available tier",
                # Deleting only the threshold would not help: a tier without a threshold
                # takes every request that cheaper tiers did not take.
                fix=f"use a classifier that scores {tier}, or remove the {tier} tier from the "
                "policy",
            )

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

    def warn_local_model_context_changed(self) -> None:
        """Log a warning when the policy routes longer conversations than the local model holds.

        The server's context (``n_ctx``) is set when the gateway starts it and is kept by its
        restarts, so a larger ``context_window`` takes effect only with a gateway restart.
        """
        server = self.extra.get("local_model")
        if server is None:
            return
        windows = [
            d.context_window
            for d in self.policies.current.policy.local_model_deployments()
            if isinstance(d, Deployment)
        ]
        if not windows or max(windows) <= server.n_ctx:
            return
        log.warning(
            "local_model_context_changed",
            running_n_ctx=server.n_ctx,
            policy_context_window=max(windows),
            effect="until the gateway restarts, the local model rejects conversations longer "
            "than its running context, which then fall over to the next tier or get a 400 "
            "context_length_exceeded",
            fix="restart the gateway, or put the running context window back into the policy",
        )

    def _start_local_model(self) -> None:
        local = self.policies.current.policy.local_model_deployments()
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
        # The policy validator requires an explicit port in every local_model api_base.
        # One server is started, on the port of the first local_model deployment. An edit of
        # the policy file that changes the port is rejected while it runs, because the port
        # changes only with a restart.
        port = urlsplit(local[0].api_base or "").port
        # The server's context is the largest window the policy routes to it, so memory is
        # not spent on tokens that routing never sends.
        windows = [d.context_window for d in local if isinstance(d, Deployment)]
        server = EdgeModelServer(
            model_dir=self.settings.model_dir,
            port=port,
            port_hint=self._local_port_hint(local[0]),
            **({"n_ctx": max(windows)} if windows else {}),
        )
        self.extra["local_model"] = server
        self.policies.check_reload = self._local_model_reload_problems
        self.local_model_status = self.local_model_state = "starting"
        # The model loads in the background, so the gateway serves the other tiers at once.
        self.extra["local_model_task"] = asyncio.create_task(supervise(self, server))

    def _local_model_reload_problems(self, loaded: LoadedPolicy) -> list[str]:
        """Return a problem when an edited policy file moves the local model to another port.

        The running model keeps its port until the gateway restarts, so such an edit would
        send the local deployments' requests to whatever listens on the new port. A policy
        published through Redis is applied anyway and only logs ``local_model_port_changed``.
        """
        server = self.extra.get("local_model")
        if server is None:
            return []
        for deployment in loaded.policy.local_model_deployments():
            if urlsplit(deployment.api_base or "").port != server.requested_port:
                message = (
                    f"the local model runs on port {server.requested_port} until the gateway "
                    f"restarts; keep port {server.requested_port} here, or restart the gateway "
                    "to move the model"
                )
                return [deployment_field_problem(loaded, deployment.name, "api_base", message)]
        return []

    def _local_port_hint(self, deployment: Deployment | EmbeddingDeployment) -> str:
        """Return how to configure another local model port, worded to end the busy-port error."""
        port_field = f"the port in the api_base of deployment '{deployment.name}'"
        if self.policies.published:
            return (
                "start this gateway with --no-local-model, because it serves the published "
                f"policy {self.policies.current.version}, which gives every gateway on Redis "
                f"{port_field}, and an edit to {self.settings.policy} has no effect"
            )
        if self.settings.policy.resolve() == BUNDLED_POLICY.resolve():
            return (
                f"copy the bundled policy {BUNDLED_POLICY}, change {port_field} in the copy, and "
                "start the gateway with --policy COPY (or TIERWISE_POLICY=COPY)"
            )
        return f"change {port_field} in the policy {self.settings.policy}"

    def local_model_stopped(self) -> bool:
        """Return whether the started local model server is down: exited, killed or restarting.

        A request that fails at a local_model deployment then failed because of the stopped
        process, not the deployment, so it does not count toward the deployment's cooldown.
        """
        server = self.extra.get("local_model")
        if server is None:
            return False
        return self.local_model_state != "ready" or not server.running

    def local_model_retry_after_s(self) -> float | None:
        """Return the seconds until the local model should serve again, or None if it will not."""
        return retry_after_s(self)

    async def stop(self) -> None:
        """Stop the background work, flush the outcome log and close every connection.

        A step that raises is logged and the next steps still run, so that the outcome
        records queued in memory reach their store whatever failed before them.
        """
        # Shadow jobs end first, while the outcome log and the transports still work.
        await _stop_step("shadow", self.shadow.stop())
        if self.distribution is not None:
            await _stop_step("distribution", self.distribution.stop())
        for name in ("local_model_task", "secret_task"):
            task = self.extra.pop(name, None)
            if task is not None:
                task.cancel()
                await _stop_step(name, task)
        server = self.extra.pop("local_model", None)
        if server is not None:
            await _stop_step("local_model", server.stop())
        await _stop_step("policies", self.policies.stop())
        await _stop_step("outcomes", self.outcomes.stop())
        await _stop_step("budgets", self.budgets.stop())
        await _stop_step("direct", self.direct.close())
        await _stop_step("cache", self.cache.close())
        if self.redis is not None:
            await _stop_step("redis", self.redis.close())

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
        embeddings = self.policies.current.policy.embeddings
        for embedding in embeddings.deployments if embeddings is not None else []:
            reason = self.unavailable_reason(embedding)
            if reason is None:
                log.info("deployment_ready", endpoint="embeddings", deployment=embedding.name)
            else:
                log.warning("deployment_unavailable", endpoint="embeddings",
                            deployment=embedding.name, reason=reason)


async def _stop_step(name: str, step: Awaitable[Any]) -> None:
    """Await one step of ``Runtime.stop``; log an exception instead of raising it."""
    try:
        await step
    except asyncio.CancelledError:
        # A background task that stop() cancelled ends this way; a cancellation of stop()
        # itself propagates.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception as exc:  # noqa: BLE001 - the remaining steps must still run
        log.error("shutdown_step_failed", step=name, error=type(exc).__name__, detail=str(exc)[:300])


def load_scorer(settings: Settings) -> Scorer:
    from classifiers import load_artifact, load_default

    scorer: Scorer = load_artifact(settings.classifier) if settings.classifier else load_default()
    return scorer
