"""Cache key derivation.

The key covers the tenant, the routing scope (``routing_scope``: the requested model and
what decides its routing), and the whole request body except the fields that only change
how the answer is delivered.  Unknown parameters are part of the key, so a parameter this
gateway has never heard of can only cause a miss, never a wrong hit.  The key is known
before routing, so a hit skips the classifier.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from router.policy.schema import EmbeddingDeployment

# Fields that do not change the answer's content: delivery format and client bookkeeping.
DELIVERY_ONLY_FIELDS = frozenset({"model", "stream", "stream_options", "user", "metadata", "store"})

KEY_PREFIX = "cache:"


def routing_scope(model: str, routing_version: str, classifier_version: str | None,
                  min_tier: str | None) -> str:
    """Return what, besides the body, decides which deployment answers a request.

    ``routing_version`` hashes the policy's aliases, tiers, routing and tenant settings
    (``router.policy.loader.routing_version``); the classifier version matters only for a
    router alias.  A change to either starts a new set of entries, and the old ones expire by
    their TTL.
    """
    return f"model={model}|routing={routing_version}|classifier={classifier_version}|min_tier={min_tier}"


def cache_key(tenant: str, scope: str, body: dict[str, Any]) -> str:
    """Derive the cache key of a request body for ``tenant`` within a routing ``scope``.

    The body is serialized with sorted keys, so field order does not matter; message parts,
    including image URLs and data URIs, are hashed byte for byte.  The key is
    ``cache:<sha256>``; the Redis store adds the deployment's key prefix in front.
    """
    content = {k: v for k, v in body.items() if k not in DELIVERY_ONLY_FIELDS}
    material = orjson.dumps(
        {"tenant": tenant, "scope": scope, "request": content},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    )
    return KEY_PREFIX + hashlib.sha256(material).hexdigest()


def is_cacheable(body: dict[str, Any], cache_nonzero_temperature: bool) -> bool:
    """Whether an answer to ``body`` may be served again.

    A missing temperature means 1, OpenAI's default, so only an explicit 0 is deterministic
    enough to cache unless the policy allows caching sampled answers.
    """
    if cache_nonzero_temperature:
        return True
    temperature = body.get("temperature")
    return temperature is not None and float(temperature) == 0.0


def embedding_scope(model: str, candidates: tuple[EmbeddingDeployment, ...]) -> str:
    """Return the cache-key scope of an embeddings request.

    The scope is what, besides the body, sets the vectors: the requested name and, for each
    deployment that may serve it, the settings that choose the model. An edit to them starts
    new entries, while an edit to prices or timeouts keeps them. The ``api_base`` of a
    ``local_model`` deployment is left out, as in ``routing_version``.
    """
    material = [
        (d.name, d.model, None if d.local_model else d.api_base, d.transport, d.dimensions,
         d.accepts_dimensions)
        for d in candidates
    ]
    digest = hashlib.sha256(orjson.dumps(material)).hexdigest()[:12]
    return f"embeddings|model={model}|deployments={digest}"
