"""Tenant identification from the request's API key."""

from __future__ import annotations

import hashlib

from starlette.requests import Request

ANONYMOUS_TENANT = "anonymous"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return request.headers.get("x-api-key")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def tenant_of(request: Request) -> str:
    """Identify the tenant: a hash of the API key, so that keys are never stored or logged.

    Requests without a key share the anonymous tenant.
    """
    token = bearer_token(request)
    if not token:
        return ANONYMOUS_TENANT
    return "key-" + hashlib.sha256(token.encode()).hexdigest()[:16]
