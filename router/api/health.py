"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from router.runtime import Runtime

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready when a policy and a classifier are loaded; Redis trouble only degrades it.

    Without Redis the gateway still serves (cache misses, outcomes spooled to disk), so a
    Redis outage must not take every replica out of the load balancer.  The exception is
    the ``ready_requires_redis`` setting: with it, a replica returns 503 with status
    ``waiting_for_redis`` until its Redis has answered one of these pings, so that a replica
    with a wrong Redis URL never receives traffic.
    """
    runtime: Runtime = request.app.state.runtime
    loaded = runtime.policies.current
    redis_state = await _redis_state(runtime)
    status = _readiness(redis_state, runtime)
    body: dict[str, Any] = {
        "status": status,
        "policy": {
            "path": str(loaded.path),
            "version": loaded.version,
            "last_reload_error": runtime.policies.last_error is not None,
        },
        "classifier": {"version": runtime.scorer.version, "tiers": list(runtime.scorer.tiers)},
        "redis": redis_state,
        "cache": runtime.cache.backend,
        "outcomes": runtime.outcomes.backend,
    }
    if runtime.distribution is not None:
        # Versions published through Redis, including one that this replica rejected.
        body["published"] = runtime.distribution.status()
    return JSONResponse(body, status_code=503 if status == "waiting_for_redis" else 200)


async def _redis_state(runtime: Runtime) -> str:
    """Ping Redis: ``not_configured``, ``ok`` or ``degraded``, and remember a first answer."""
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
