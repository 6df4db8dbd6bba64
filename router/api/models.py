"""``GET /v1/models``: router aliases first, then every deployment the policy lists."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from router.runtime import Runtime

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    loaded = runtime.policies.current
    created = int(runtime.started_at)
    data: list[dict[str, Any]] = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "tierwise",
            "description": alias.description,
            "tierwise": {"kind": "router", "policy": loaded.policy.name, "min_tier": alias.min_tier},
        }
        for name, alias in loaded.policy.aliases.items()
    ]
    for tier, config in loaded.policy.ordered_tiers():
        for deployment in config.deployments:
            data.append(
                {
                    "id": deployment.name,
                    "object": "model",
                    "created": created,
                    "owned_by": "tierwise",
                    "tierwise": {
                        "kind": "deployment",
                        "tier": tier,
                        "available": runtime.is_available(deployment),
                        "context_window": deployment.context_window,
                        "price_per_million": deployment.price.model_dump(),
                    },
                }
            )
    return {"object": "list", "data": data}
