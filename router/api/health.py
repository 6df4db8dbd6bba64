"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from router.runtime import Runtime

router = APIRouter()


# One route per method: FastAPI gives both methods of one route the same operationId, and
# OpenAPI requires every operationId to be unique.
@router.get("/healthz")
@router.head("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
@router.head("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready when a policy and a classifier are loaded; Redis trouble only degrades it.

    Without Redis the gateway still serves (cache misses, outcomes spooled to disk), so a
    Redis outage must not take every replica out of the load balancer.  The exception is
    the ``ready_requires_redis`` setting: with it, a replica returns 503 with status
    ``waiting_for_redis`` until its Redis has answered one of these pings, so that a replica
    with a wrong Redis URL never receives traffic.

    While litellm is imported for the policy's litellm deployments after a start (seconds),
    it returns 503 with status ``loading_litellm``.

    A replica with no available deployment at all (no provider key set, the local model
    not running) returns 503 with status ``no_deployment_available``: every chat request
    would fail there, so the load balancer should send traffic elsewhere.

    While outcome records wait in memory because the local file did not take them (a full or
    read-only data folder), or the file could not be opened, and Redis is not configured or
    does not respond, it returns 503 with status ``outcome_log_unwritable``.

    When the policy has ``local_model`` deployments, ``local_model`` gives the state of the
    local model server.
    """
    runtime: Runtime = request.app.state.runtime
    loaded = runtime.policies.current
    redis_state = await _redis_state(runtime)
    available = _available_deployments(runtime)
    status = _readiness(redis_state, runtime)
    outcomes = runtime.outcomes
    if (outcomes.unwritten_records or not outcomes.file_usable) and redis_state != "ok":
        # Those records, or the records of the next requests, are lost if the process stops
        # now, so traffic should go elsewhere. While Redis responds, the writer sends them to
        # the stream within 0.2 s.
        status = "outcome_log_unwritable"
    if not any(available.values()):
        status = "no_deployment_available"
    loader = runtime.litellm_loader
    if loader is not None and loader.loading and runtime.extra.get("litellm_import_at_start"):
        # A request to a litellm deployment would wait for the import, up to seconds.
        status = "loading_litellm"
    body: dict[str, Any] = {
        "status": status,
        "policy": {
            "path": str(loaded.path),
            "version": loaded.version,
            "last_reload_error": runtime.policies.last_error is not None,
            "rejected_edit": runtime.policies.rejected,
            "file_error": runtime.policies.file_error,
        },
        "classifier": {"version": runtime.scorer.version, "tiers": list(runtime.scorer.tiers)},
        "available_deployments": available,
        "embeddings": _embedding_deployments(runtime),
        "cooling_down": runtime.health.cooling(),
        "in_flight": runtime.health.in_flight(),
        "redis": redis_state,
        "cache": runtime.cache.backend,
        "outcomes": runtime.outcomes.backend,
    }
    if loaded.policy.local_model_deployments():
        # "ready", or the key in LOCAL_MODEL_CLIENT_REASONS (router/local_model.py) of the
        # reason why the local model's deployments are unavailable.
        body["local_model"] = runtime.local_model_state
    if runtime.distribution is not None:
        # Versions published through Redis, including one that this replica rejected.
        body["published"] = runtime.distribution.status()
    not_ready = status in (
        "waiting_for_redis", "no_deployment_available", "loading_litellm", "outcome_log_unwritable"
    )
    return JSONResponse(body, status_code=503 if not_ready else 200)


def _available_deployments(runtime: Runtime) -> dict[str, int]:
    """Count, per tier, the deployments that can take a request now."""
    policy = runtime.policies.current.policy
    return {
        tier: sum(runtime.is_available(deployment) for deployment in config.deployments)
        for tier, config in policy.ordered_tiers()
    }


def _embedding_deployments(runtime: Runtime) -> dict[str, str] | None:
    """Map each embedding deployment to ``available`` or why it is not; None without any.

    Embeddings do not count towards readiness, because chat is what the gateway is for.
    """
    embeddings = runtime.policies.current.policy.embeddings
    if embeddings is None:
        return None
    return {
        deployment.name: runtime.client_unavailable_reason(deployment) or "available"
        for deployment in embeddings.deployments
    }


async def _redis_state(runtime: Runtime) -> str:
    """Ping Redis and return ``not_configured``, ``ok`` or ``degraded``; record the first reply."""
    if runtime.redis is None:
        return "not_configured"
    if not await runtime.redis.ping():
        return "degraded"
    runtime.extra["redis_answered"] = True
    return "ok"


def _readiness(redis_state: str, runtime: Runtime) -> str:
    if redis_state != "degraded":
        return "ready"
    if runtime.settings.ready_requires_redis and not runtime.extra.get("redis_answered"):
        return "waiting_for_redis"
    return "degraded"
