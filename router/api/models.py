"""``GET /v1/models``: router aliases, chat deployments, then embedding deployments and aliases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from router.errors import ModelNotFound
from router.policy.schema import Embeddings
from router.runtime import Runtime

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": _model_entries(request.app.state.runtime)}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    for entry in _model_entries(request.app.state.runtime):
        if entry["id"] == model_id:
            return entry
    raise ModelNotFound(
        f"The model '{model_id}' does not exist on this gateway. GET /v1/models lists the "
        "router aliases and deployments.",
        param="model",
    )


def _model_entries(runtime: Runtime) -> list[dict[str, Any]]:
    loaded = runtime.policies.current
    created = int(runtime.started_at)
    data: list[dict[str, Any]] = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "tierwise",
            "description": alias.description,
            "tierwise": {
                "kind": "router",
                "policy": loaded.policy.name,
                "min_tier": alias.min_tier,
                "max_tier": alias.max_tier,
            },
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
                        "price_per_million": deployment.price.model_dump(exclude_none=True),
                    },
                }
            )
    embeddings = loaded.policy.embeddings
    if embeddings is not None:
        data.extend(_embedding_entries(runtime, embeddings, created))
    return data


def _embedding_entries(runtime: Runtime, embeddings: Embeddings, created: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = [
        {
            "id": deployment.name,
            "object": "model",
            "created": created,
            "owned_by": "tierwise",
            "tierwise": {
                "kind": "embedding",
                "available": runtime.is_available(deployment),
                "dimensions": deployment.dimensions,
                "price_per_million": deployment.price.model_dump(),
            },
        }
        for deployment in embeddings.deployments
    ]
    for alias, targets in embeddings.aliases.items():
        entries.append(
            {
                "id": alias,
                "object": "model",
                "created": created,
                "owned_by": "tierwise",
                "tierwise": {"kind": "embedding_alias", "deployments": list(targets)},
            }
        )
    return entries
