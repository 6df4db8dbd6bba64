"""``GET /v1/usage``: the calling tenant's own spend and budget; other tenants are never shown."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from router.api.admission import rate_limit_of, token_limit_of
from router.api.auth import identify
from router.runtime import Runtime

router = APIRouter()


@router.get("/v1/usage")
async def get_usage(request: Request) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    tenant = identify(request, runtime.policies.current.policy)
    day, month = await runtime.budgets.spent(tenant.name)
    budget = tenant.config.budget if tenant.config is not None else None
    limit = rate_limit_of(tenant, runtime.policies.current.policy)
    token_limit = token_limit_of(tenant.name, runtime.policies.current.policy)
    return {
        "object": "usage",
        "tenant": tenant.name,
        "spend_usd": {"day": round(day, 8), "month": round(month, 8)},
        "budget_usd": {
            "day": budget.usd_per_day if budget else None,
            "month": budget.usd_per_month if budget else None,
        },
        # Counted only for tenants with a limit, so "used" is None without one.
        "requests_per_minute": {
            "limit": limit,
            "used": await runtime.rate_limits.used(tenant.name) if limit is not None else None,
        },
        "tokens_per_minute": {
            "limit": token_limit,
            "used": (
                await runtime.token_limits.used(tenant.name) if token_limit is not None else None
            ),
        },
    }
