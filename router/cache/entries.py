"""The stored form of a cached answer: the completion and the deployment that produced it.

A cache entry is looked up before routing, so it must name the deployment that produced
it; the outcome record and the response headers of a hit name that deployment and its tier.
"""

from __future__ import annotations

from typing import Any

import orjson

from router.policy.schema import Deployment, EmbeddingDeployment, Policy


def encode_entry(deployment: str, completion: dict[str, Any]) -> bytes:
    """Serialise an answer for the cache; the deployment's tier comes from the policy on read."""
    return orjson.dumps({"deployment": deployment, "completion": completion})


def decode_entry(policy: Policy, raw: bytes) -> tuple[str, Deployment, dict[str, Any]] | None:
    """Return (tier, deployment, completion) of a stored entry, or None when it is unusable.

    An entry is unusable when an older version wrote it in another format, or when it names
    a deployment that the policy does not have.  The request is then served as a miss.
    """
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("completion"), dict):
        return None
    found = policy.find_deployment(str(entry.get("deployment")))
    if found is None:
        return None
    tier, deployment = found
    return tier, deployment, entry["completion"]


def decode_embedding_entry(
    candidates: tuple[EmbeddingDeployment, ...], raw: bytes
) -> tuple[EmbeddingDeployment, dict[str, Any]] | None:
    """Return (deployment, response) of a stored embeddings entry, or None when it is unusable.

    An entry is unusable when it is not in this format, or when it names none of
    ``candidates``, the deployments that serve the requested name now.
    """
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("completion"), dict):
        return None
    name = entry.get("deployment")
    for deployment in candidates:
        if deployment.name == name:
            return deployment, entry["completion"]
    return None
