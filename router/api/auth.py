"""Tenant identification from the request's API key.

Keys are compared by SHA-256 digest, so the policy contains digests and no key is ever
stored or logged.  A key that matches a policy tenant gets that tenant's name and
overrides; any other key is its own tenant, named by a prefix of its digest, unless the
policy's ``tenants.require_key`` rejects it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from starlette.requests import Request

from router.errors import AuthenticationFailed
from router.policy.schema import Policy, Tenant

ANONYMOUS_TENANT = "anonymous"


@dataclass(frozen=True)
class TenantContext:
    name: str
    config: Tenant | None = None
    """The policy's entry for this tenant, when the key matched one."""


def header(request: Request, name: bytes) -> str | None:
    """Return the first value of header ``name`` (lower case, as ASGI servers send names).

    ``request.headers`` builds Starlette's ``Headers`` and its ``get`` raises and catches a
    KeyError for every absent header, which costs more than this scan of the raw list.
    """
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def bearer_token(request: Request) -> str | None:
    """Return the API key from ``Authorization: Bearer``, or from ``x-api-key`` as Anthropic clients send it."""
    authorization = header(request, b"authorization")
    if not authorization:
        return header(request, b"x-api-key") or None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def identify(request: Request, policy: Policy) -> TenantContext:
    """Identify the tenant; raise AuthenticationFailed when the policy requires a known key."""
    token = bearer_token(request)
    tenants = policy.tenants
    if not token:
        if tenants.require_key:
            raise _missing_key_error(request)
        return TenantContext(ANONYMOUS_TENANT)
    digest = hashlib.sha256(token.encode()).hexdigest()
    name = tenants.tenant_for_digest(digest) if tenants.entries else None
    if name is not None:
        return TenantContext(name, tenants.entries[name])
    if tenants.require_key:
        raise AuthenticationFailed(
            "Invalid API key: this gateway accepts only the keys that its policy lists. "
            "Check the key, or ask the gateway's operators for one."
        )
    return TenantContext("key-" + digest[:16])


def _missing_key_error(request: Request) -> AuthenticationFailed:
    """Return the 401 for a request without a usable key, naming a non-Bearer Authorization header."""
    header = request.headers.get("authorization")
    if header and header.partition(" ")[0].lower() != "bearer":
        # The message does not repeat the scheme, because in a header that contains a bare key
        # the first word is the key.
        return AuthenticationFailed(
            "The Authorization header does not use the Bearer scheme. Send the API key as "
            "'Authorization: Bearer KEY' (or as 'x-api-key: KEY' without an Authorization header).",
            code="missing_api_key",
        )
    return AuthenticationFailed(
        "Missing API key. Send it as 'Authorization: Bearer KEY' (or 'x-api-key: KEY').", code="missing_api_key"
    )


def tenant_of(request: Request, policy: Policy | None = None) -> str:
    """Return the tenant's name without enforcing ``require_key``."""
    if policy is None:
        token = bearer_token(request)
        return "key-" + hashlib.sha256(token.encode()).hexdigest()[:16] if token else ANONYMOUS_TENANT
    try:
        return identify(request, policy).name
    except AuthenticationFailed:
        return ANONYMOUS_TENANT
