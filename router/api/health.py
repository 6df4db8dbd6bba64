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
    Redis outage must not take every replica out of the load balancer.
    """
    runtime: Runtime = request.app.state.runtime
    loaded = runtime.policies.current
    redis_state = "not_configured"
    if runtime.redis is not None:
        redis_state = "ok" if await runtime.redis.ping() else "degraded"
    body: dict[str, Any] = {
        "status": "degraded" if redis_state == "degraded" else "ready",
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
    return JSONResponse(body)
