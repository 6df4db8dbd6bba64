"""``GET /dashboard``: a self-contained page over this process's aggregates.

The page, its script and its style ship inside the package and load nothing from other
hosts (the Content-Security-Policy header enforces that in the browser).  The script polls
``GET /dashboard/data``.  Like ``/metrics``, these endpoints need no API key: they show
totals over all tenants, never prompts, keys or tenant names.
"""

from __future__ import annotations

import time
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from router.errors import ModelNotFound
from router.metrics import gateway_state
from router.runtime import Runtime

router = APIRouter()

ASSET_TYPES: dict[str, str] = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
PAGE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def _asset(name: str) -> bytes:
    """Read a packaged asset once; the files never change while the process runs."""
    return resources.files("router.dashboard").joinpath("static", name).read_bytes()


def _asset_response(name: str) -> Response:
    return Response(_asset(name), media_type=ASSET_TYPES[name], headers=PAGE_HEADERS)


@router.get("/dashboard", include_in_schema=False)
async def get_dashboard() -> Response:
    return _asset_response("dashboard.html")


@router.get("/dashboard/static/{name}", include_in_schema=False)
async def get_dashboard_asset(name: str) -> Response:
    if name not in ASSET_TYPES or name.endswith(".html"):
        raise ModelNotFound(f"Unknown dashboard file '{name}'.", code="not_found")
    return _asset_response(name)


@router.get("/dashboard/data", include_in_schema=False)
async def get_dashboard_data(request: Request) -> dict[str, Any]:
    """Return the aggregates the page draws; money in USD, times in Unix seconds."""
    runtime: Runtime = request.app.state.runtime
    state = gateway_state(runtime)
    policy = runtime.policies.current.policy
    return {
        "generated_at": time.time(),
        "policy": {"name": state.policy_name, "version": state.policy_version},
        "classifier": {"version": state.classifier_version},
        "redis": state.redis,
        "tiers": [name for name, _ in policy.ordered_tiers()],
        **runtime.dashboard.snapshot(),
        "evaluation": runtime.evaluation.summary(),
    }
