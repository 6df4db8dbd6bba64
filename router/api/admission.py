"""The steps every model endpoint takes before it serves a request.

The outcome record and the request id it is known by, the tenant, the JSON body, and the
tenant's rate limits, token limit and budget.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import orjson
from fastapi import Request

from router.api.auth import TenantContext, header, identify
from router.api.internal_error import REQUEST_ID_STATE
from router.deadlines import body_deadlines
from router.errors import (
    ClientDisconnected,
    InvalidRequest,
    RequestTimedOut,
    RequestTooLarge,
    UnsupportedMediaType,
)
from router.outcomes.record import Outcome
from router.policy.loader import LoadedPolicy
from router.policy.schema import Policy
from router.runtime import Runtime

T = TypeVar("T")


def open_outcome(
    request: Request, runtime: Runtime, loaded: LoadedPolicy
) -> tuple[Outcome, str | None, bool]:
    """Start the outcome record of a request, with the request id it is known by.

    Returns the record, the client's x-request-id when that id is unusable (``admit``
    rejects it once the record exists), and whether the record keeps the client's id.
    """
    # An empty header counts as absent, so the request gets an id that feedback accepts.
    sent_request_id = header(request, b"x-request-id") or None
    keep_sent_id = runtime.settings.keep_client_request_ids
    id_problem = None
    if keep_sent_id and sent_request_id is not None and not _usable_request_id(sent_request_id):
        # Rejected below, once the outcome record exists; the gateway's own id replaces it.
        id_problem, keep_sent_id = sent_request_id, False
    client_request_id = sent_request_id if keep_sent_id else None
    # A replaced id stays in the record for tracing, cut to a sane length.
    replaced_request_id = None if keep_sent_id or sent_request_id is None else sent_request_id[:256]
    # With a signer, admit() replaces this id with one bound to the tenant, so the random
    # id is made there only when the request fails before the tenant is known.
    signed_later = client_request_id is None and runtime.request_ids is not None
    outcome = Outcome(
        request_id=client_request_id or ("" if signed_later else new_request_id()),
        tenant="unidentified",
        requested_model="",
        policy_version=loaded.version,
        classifier_version=getattr(runtime.scorer, "version", None),
        stream=False,
        client_request_id=replaced_request_id,
    )
    if not signed_later:
        setattr(request.state, REQUEST_ID_STATE, outcome.request_id)
    return outcome, id_problem, client_request_id is not None


def admit(
    request: Request,
    runtime: Runtime,
    policy: Policy,
    outcome: Outcome,
    id_problem: str | None,
    client_id_kept: bool,
) -> TenantContext:
    """Reject an unusable x-request-id, identify the tenant and give the request its final id.

    Raises InvalidRequest or AuthenticationFailed. The outcome has a request id on return and
    when this raises.
    """
    try:
        if id_problem is not None:
            raise InvalidRequest(
                f"The x-request-id header must be 1 to {MAX_REQUEST_ID_CHARS} printable ASCII "
                f"characters; got {len(id_problem)} characters.",
                param="x-request-id",
            )
        tenant = identify(request, policy)
    except BaseException:
        if not outcome.request_id:
            outcome.request_id = new_request_id()
            setattr(request.state, REQUEST_ID_STATE, outcome.request_id)
        raise
    outcome.tenant = tenant.name
    if not client_id_kept and runtime.request_ids is not None:
        # Only an id bound to the tenant can receive feedback (POST /v1/feedback).
        outcome.request_id = runtime.request_ids.issue(tenant.name)
        setattr(request.state, REQUEST_ID_STATE, outcome.request_id)
    return tenant


async def check_tenant_limits(
    runtime: Runtime,
    policy: Policy,
    tenant: TenantContext,
    outcome: Outcome,
    estimate_tokens: Callable[[], int],
) -> None:
    """Count the request against the tenant's rate limits and check its token rate and budget.

    Under a token limit, the admitted request's ``estimate_tokens()`` counts until ``finish``
    replaces it with the tokens used (``router.ratelimits``).
    Raises RequestRateExceeded, TokenRateExceeded or BudgetExceeded.
    """
    limit = rate_limit_of(tenant, policy)
    if limit is not None:
        await runtime.rate_limits.check(tenant.name, limit)
    token_limit = token_limit_of(tenant.name, policy)
    if token_limit is not None:
        await runtime.token_limits.check(tenant.name, token_limit)
        outcome.token_reservation = runtime.token_limits.reserve(tenant.name, estimate_tokens())
    if tenant.config is not None:
        await runtime.budgets.check(tenant.name, tenant.config.budget)


def rate_limit_of(tenant: TenantContext, policy: Policy) -> int | None:
    """Return the tenant's requests_per_minute, or the policy's default for unlisted keys."""
    if tenant.config is not None:
        return tenant.config.requests_per_minute
    return policy.tenants.default_requests_per_minute


def token_limit_of(tenant: str, policy: Policy) -> int | None:
    """Return the tokens_per_minute of the tenant named ``tenant`` under ``policy``.

    Takes the name rather than the tenant's context because ``finish`` has only the name.
    Generated names (unlisted keys, ``anonymous``) never match a policy tenant's name.
    """
    config = policy.tenants.entries.get(tenant)
    if config is not None:
        return config.tokens_per_minute
    return policy.tenants.default_tokens_per_minute


# Media types that a browser sends cross-site without a CORS preflight. If the gateway
# accepted them, any web page that a user opens could send paid requests through a gateway
# that the user's machine reaches, whatever TIERWISE_CORS_ORIGINS allows. A request without
# Content-Type is accepted.
BROWSER_SIMPLE_MEDIA_TYPES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)


async def read_json_body(request: Request, limit: int, timeout_s: float) -> dict[str, Any]:
    """Read the body and parse it as a JSON object.

    Raises what ``read_body`` and ``parse_json_body`` raise. A body of more than
    ``OFFLOAD_BODY_BYTES`` is parsed in the worker thread of ``run_off_loop``.
    """
    raw = await read_body(request, limit, timeout_s)
    return await run_for_body(len(raw) > OFFLOAD_BODY_BYTES, parse_json_body, raw)


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """Read the raw body; raise RequestTooLarge, UnsupportedMediaType or RequestTimedOut.

    A body sent as one of ``BROWSER_SIMPLE_MEDIA_TYPES`` or with a Content-Encoding raises
    UnsupportedMediaType before it is read.

    The body is read as it arrives and rejected once it passes ``limit``, so a chunked
    upload without Content-Length cannot fill memory before the check. A body that is not
    complete ``timeout_s`` seconds after this call starts raises RequestTimedOut, so a client
    that declares more bytes than it sends, or sends headers and no body, cannot hold the
    request open. A client that closes the connection before the whole body has arrived
    raises ClientDisconnected.
    """
    declared = header(request, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    content_type = header(request, b"content-type")
    if content_type is not None:
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type in BROWSER_SIMPLE_MEDIA_TYPES:
            raise UnsupportedMediaType(
                f"Content-Type '{media_type[:40]}' is not supported; send the body as "
                "application/json.",
                param="content-type",
            )
    encoding = header(request, b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding '{encoding[:40]}' is not supported; send the JSON body uncompressed.",
            param="content-encoding",
        )
    receive = request.receive
    parts: list[bytes] = []
    size = 0
    # The deadline covers the first receive too, because a client may send headers and no body.
    task = body_deadlines.start(timeout_s)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                raise RequestTooLarge(f"The request body exceeds the limit of {limit} bytes.")
            if part:
                parts.append(part)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError as exc:
        if not body_deadlines.expired(exc, task):
            raise
        raise RequestTimedOut(
            f"The request body was not complete {timeout_s:g} s after the headers: "
            f"{size} bytes arrived. Send the whole body, with a Content-Length that "
            "matches it."
        ) from None
    finally:
        body_deadlines.finish(task)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """Parse ``raw`` as a JSON object; raise InvalidRequest for anything else."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _invalid_json(raw, exc) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    # orjson parses up to 1,024 levels but serialises only 255, and the gateway serialises
    # the body again for the cache key and the upstream call. Counting brackets is cheap, so
    # only bodies with that many brackets are walked.
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
        raise InvalidRequest(
            f"The request body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep.",
            code="invalid_json",
        )
    return body


OFFLOAD_BODY_BYTES = 16 * 1024
"""Size in bytes above which a body is parsed, validated and classified off the event loop.

The slowest valid shape measured, a body of many two-character messages, took about
0.6 ms per KiB in those steps on a shared 2-core machine (``bench/big_body_steps.py``), so
a body of this size blocks the event loop for about 10 ms. A call in the worker thread
costs about 0.12 ms more than the same call inline, 20 times the parsing of a 4 KiB body,
so small bodies stay on the event loop.
"""

# One thread, so that big bodies queue for it rather than share the GIL with one another
# and with the event loop. While the thread works, the event loop waits for the GIL at most
# about sys.getswitchinterval() (5 ms by default) each time it needs it.
_PARSE_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierwise-parse")


async def run_off_loop(function: Callable[..., T], *args: Any) -> T:
    """Run ``function(*args)`` in the parsing thread and return its result or raise its error.

    The call runs in a copy of the caller's context, as with ``asyncio.to_thread``, so log
    and trace context variables reach it. Cancelling the await does not stop the call.
    """
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = partial(context.run, _without_collection, function, *args)
    return await loop.run_in_executor(_PARSE_EXECUTOR, call)


async def run_for_body(large_body: bool, function: Callable[..., T], *args: Any) -> T:
    """Return ``function(*args)``, run by ``run_off_loop`` when ``large_body`` is set.

    ``large_body`` is whether the request body exceeded ``OFFLOAD_BODY_BYTES``. Callers pass
    steps whose time grows with the body, which would block the event loop for too long.
    """
    if large_body:
        return await run_off_loop(function, *args)
    return function(*args)


def _without_collection(function: Callable[..., T], *args: Any) -> T:
    """Call ``function(*args)`` with the cyclic garbage collector turned off.

    A collection holds the GIL, and so blocks the event loop, for as long as it walks the
    objects. Parsing a body creates up to a few million of them, which set off collections
    that walk ever more of them. ``orjson.loads`` of a 4 MiB body of 1.7 million small
    arrays took 1.0 to 1.7 s with the collector on and 0.16 to 0.22 s with it off
    (``bench/big_body_steps.py``). The objects that survive are collected later as usual. Nothing else in the gateway turns
    the collector off or on, and the parsing thread runs one call at a time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return function(*args)
    finally:
        if was_enabled:
            gc.enable()


def _invalid_json(raw: bytes, exc: orjson.JSONDecodeError) -> InvalidRequest:
    """Return the 400 for a body that orjson rejected.

    orjson 3.13 checks the encoding before parsing and reports invalid UTF-8 as "str is not
    valid UTF-8: surrogates not allowed" at position 0, so the bytes are decoded again here to
    find the first invalid one.
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as decode_error:
        return InvalidRequest(
            f"The request body is not valid UTF-8 (invalid byte at position {decode_error.start}). "
            "Encode the JSON body as UTF-8.",
            code="invalid_json",
        )
    return InvalidRequest(
        f"The request body is not valid JSON ({exc.msg} at position {exc.pos}).",
        code="invalid_json",
    )


MAX_JSON_DEPTH = 128
"""Deepest nesting of objects and arrays accepted in a request body."""


def json_depth(value: Any) -> int:
    """Return how many levels of objects and arrays ``value`` nests (0 for a scalar).

    Counts ``dict`` and ``list`` objects only, the types that ``orjson.loads`` returns, and
    not their subclasses, because exact type checks make the walk about twice as fast.
    """
    depth = 0
    level = [value] if type(value) is dict or type(value) is list else []
    while level:
        depth += 1
        level = [
            child
            for container in level
            for child in (container.values() if type(container) is dict else container)
            if type(child) is dict or type(child) is list
        ]
    return depth


MAX_REQUEST_ID_CHARS = 256
"""Maximum length of a client request id that the gateway keeps as the request's own id."""


def _usable_request_id(value: str) -> bool:
    return len(value) <= MAX_REQUEST_ID_CHARS and value.isascii() and value.isprintable()


def new_request_id() -> str:
    """Return ``req-`` and 16 bytes of ``os.urandom`` in hex: the shape of ``uuid4().hex``, at
    about a third of its cost (1.0 µs against 3.6 µs, timeit)."""
    return f"req-{os.urandom(16).hex()}"
