"""``POST /v1/chat/completions``: validate, route, serve from cache or upstream, record."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from router.api.auth import TenantContext, identify
from router.api.disconnect import client_connected, unless_client_leaves
from router.api.internal_error import REQUEST_ID_STATE
from router.api.schemas import ChatRequest, error_parameter, reject_forbidden_parameter
from router.api.streaming import (
    CLIENT_CLOSED_REQUEST,
    SERVER_STOPPED,
    estimate_usage,
    stream_cached,
    stream_upstream,
)
from router.cache.entries import decode_entry, encode_entry
from router.cache.keys import cache_key, is_cacheable, routing_scope
from router.errors import (
    ClientDisconnected,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NoDeploymentAvailable,
    RequestTooLarge,
    ServerShuttingDown,
    UnsupportedMediaType,
)
from router.outcomes.record import Outcome
from router.policy.loader import LoadedPolicy
from router.policy.schema import TIER_ORDER, Policy
from router.ratelimits import estimate_prompt_tokens
from router.routing.category import prompt_category
from router.routing.decide import Decision, RequestNeeds, decide, highest_tier
from router.routing.tokens import count_prompt_tokens, message_texts
from router.runtime import Runtime
from router.upstream.base import UpstreamHeaders
from router.upstream.dispatch import Dispatcher

log = structlog.get_logger("tierwise.request")
router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response:
    return await serve_chat(request)


async def serve_chat(
    request: Request, translate: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> Response:
    """Serve one request through routing, cache and upstream, and record its outcome.

    ``translate`` turns another API's request body into an OpenAI chat body before it is
    validated.  Raises GatewayError with the ``x-request-id`` header set; any other exception
    is the gateway's own fault and is re-raised after its outcome is recorded.
    """
    runtime: Runtime = request.app.state.runtime
    loaded = runtime.policies.current
    outcome, id_problem, client_id_kept = open_outcome(request, runtime, loaded)
    try:
        tenant = admit(request, runtime, loaded.policy, outcome, id_problem, client_id_kept)
        body = await read_json_body(request, runtime.settings.max_body_bytes)
        if translate is not None:
            body = translate(body)
        chat = parse_chat_request(body)
        outcome.requested_model, outcome.stream = chat.model, chat.stream
        if loaded.policy.outcomes.store_prompts:
            outcome.prompt = body["messages"]
        # Before the cache lookup, so that a cache hit counts as a request too.
        messages = body["messages"]
        await check_tenant_limits(
            runtime, loaded.policy, tenant, outcome,
            lambda: estimate_prompt_tokens(message_texts(messages), len(messages)),
        )
        hint = header(request, b"x-tierwise-min-tier")
        return await _serve(runtime, loaded, body, chat, outcome, tenant, hint, request.receive)
    except GatewayError as exc:
        record_gateway_error(runtime, loaded.policy, outcome, exc)
        raise
    except asyncio.CancelledError:
        stopped = record_cancellation(runtime, loaded.policy, outcome)
        if stopped is None:
            raise
        raise stopped from None
    except Exception:
        record_internal_error(runtime, loaded.policy, outcome)
        raise


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
    outcome = Outcome(
        request_id=client_request_id or new_request_id(),
        tenant="unidentified",
        requested_model="",
        policy_version=loaded.version,
        classifier_version=getattr(runtime.scorer, "version", None),
        stream=False,
        client_request_id=replaced_request_id,
    )
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

    Raises InvalidRequest or AuthenticationFailed.
    """
    if id_problem is not None:
        raise InvalidRequest(
            f"The x-request-id header must be 1 to {MAX_REQUEST_ID_CHARS} printable ASCII "
            f"characters; got {len(id_problem)} characters.",
            param="x-request-id",
        )
    tenant = identify(request, policy)
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


def record_gateway_error(
    runtime: Runtime, policy: Policy, outcome: Outcome, exc: GatewayError
) -> None:
    """Record a request that ends with ``exc``, and set the headers its response carries."""
    outcome.error, outcome.status = exc.code, exc.status
    finish(runtime, policy, outcome)
    exc.set_request_id(outcome.request_id)
    if isinstance(exc, NoDeploymentAvailable) and runtime.local_model_state != "starting":
        # Only a local model that is still starting can make a retry succeed; a missing
        # key or a blocked tier needs an operator.  The official OpenAI clients retry
        # every 503 unless this header says otherwise.
        exc.headers = {**(exc.headers or {}), "x-should-retry": "false"}


def record_cancellation(
    runtime: Runtime, policy: Policy, outcome: Outcome
) -> ServerShuttingDown | None:
    """Record a request cancelled by the server's shutdown; return the 503 to raise instead.

    uvicorn cancels the requests still running when its graceful shutdown times out.
    Re-raised, the cancellation would make uvicorn send its own plain-text 500, so it is
    withdrawn and the client gets a 503 in the endpoint's error shape. Returns None when a
    further cancellation is still pending (uncancel() above 0), which the caller re-raises.
    """
    outcome.error, outcome.status = "server_shutdown", SERVER_STOPPED
    finish(runtime, policy, outcome)
    task = asyncio.current_task()
    if task is None or task.uncancel() > 0:
        return None
    stopped = ServerShuttingDown()
    stopped.set_request_id(outcome.request_id)
    return stopped


def record_internal_error(runtime: Runtime, policy: Policy, outcome: Outcome) -> None:
    """Record the gateway's own fault, before the exception propagates.

    InternalErrorMiddleware renders the fixed 500 response, and the record keeps only the
    fixed code, never the exception text.
    """
    outcome.error, outcome.status = GatewayError.default_code, GatewayError.status
    finish(runtime, policy, outcome)


async def _serve(
    runtime: Runtime,
    loaded: LoadedPolicy,
    body: dict[str, Any],
    chat: ChatRequest,
    outcome: Outcome,
    tenant: TenantContext,
    min_tier_hint: str | None,
    receive: Receive,
) -> Response:
    policy = loaded.policy
    # Checked before the cache, so that a hit never serves a request that routing rejects.
    check_model(policy, chat.model)
    hint = _allowed_hint(policy, min_tier_hint, chat.model)
    key = None
    if policy.cache.enabled and is_cacheable(body, policy.cache.cache_nonzero_temperature):
        # The key is known before routing, so a hit costs no classification.
        classifier = outcome.classifier_version if chat.model in policy.aliases else None
        scope = routing_scope(chat.model, loaded.routing_version, classifier, hint)
        key = cache_key(outcome.tenant, scope, body)
        cached = await runtime.cache.get(key)
        entry = decode_entry(policy, cached) if cached is not None else None
        if entry is not None:
            outcome.tier, outcome.deployment, completion = entry
            outcome.cache_hit = True
            outcome.messages = body["messages"]
            outcome.set_usage(completion.get("usage"))
            if chat.stream:
                return stream_cached(runtime, policy, completion, chat, outcome, receive)
            return json_response(completion, headers(outcome, None),
                                 on_sent=partial(finish, runtime, policy, outcome), outcome=outcome)

    decision = route(runtime, policy, body, chat, outcome, tenant, hint)
    dispatcher = Dispatcher(runtime.direct, runtime.litellm, outcome.attempts, outcome.request_id,
                            health=runtime.health, policy=policy)
    if chat.stream:
        served, first_chunk, rest = await unless_client_leaves(
            receive, dispatcher.open_stream(decision.candidates, body)
        )
        outcome.tier, outcome.deployment = served.tier, served.deployment
        outcome.upstream = _passed_on(dispatcher, policy)
        return stream_upstream(runtime, policy, chat, outcome, decision, first_chunk, rest, key,
                               receive)

    served, completion = await unless_client_leaves(
        receive, dispatcher.complete(decision.candidates, body)
    )
    outcome.tier, outcome.deployment = served.tier, served.deployment
    outcome.upstream = _passed_on(dispatcher, policy)
    usage = completion.get("usage")
    if usage and isinstance(usage, dict):
        outcome.set_usage(usage)
    else:
        estimate_usage(outcome, chat, completion)
    if key is not None and _complete_answer(completion):
        await runtime.cache.set(key, encode_entry(served.deployment.name, completion),
                                policy.cache.ttl_s)
    if policy.shadow.enabled:
        # Starts a background task at most; the response below does not wait for it.
        runtime.shadow.offer(policy, body, outcome, completion)
    return json_response(completion, headers(outcome, decision),
                         on_sent=partial(finish, runtime, policy, outcome), outcome=outcome)


def _passed_on(dispatcher: Dispatcher, policy: Policy) -> UpstreamHeaders | None:
    """Return the responding upstream's headers for the client, as far as the policy shows them."""
    seen = dispatcher.upstream_headers
    if seen is not None and seen.rate_limits and not policy.tenants.show_upstream_rate_limits:
        seen.rate_limits = {}
    return seen


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


def check_model(policy: Policy, model: str) -> None:
    """Raise ModelNotFound unless ``model`` is a router alias or a deployment of ``policy``."""
    if not policy.has_model(model):
        raise ModelNotFound(
            f"The model '{model}' does not exist on this gateway. "
            "Use a router alias such as 'auto' or a model listed by GET /v1/models.",
            param="model",
        )


def route(
    runtime: Runtime,
    policy: Policy,
    body: dict[str, Any],
    chat: ChatRequest,
    outcome: Outcome,
    tenant: TenantContext | None = None,
    header_min_tier: str | None = None,
) -> Decision:
    """Score the conversation (for router aliases) and choose the candidate deployments.

    The caller has checked that the policy has ``chat.model`` (``check_model``) and that
    ``header_min_tier`` is an allowed ``x-tierwise-min-tier`` value (``_allowed_hint``).
    """
    alias = policy.aliases.get(chat.model)
    if alias is not None:
        # One read of runtime.scorer, so that a classifier swapped in meanwhile cannot pair
        # one version's scores with the other's version in the outcome record.
        scorer = runtime.scorer
        outcome.classifier_version = scorer.version
        outcome.scores = scorer.score(body["messages"])
        if policy.routing.category_floors:
            outcome.category = prompt_category(body["messages"])
    # Without category floors the category is only a label, so finish() computes it after
    # the response.
    outcome.messages = body["messages"]
    part_types = chat.content_part_types
    needs = RequestNeeds(
        prompt_tokens=count_prompt_tokens(body["messages"], fits_below=policy.smallest_context_window),
        max_output_tokens=chat.output_token_limit,
        # The deprecated ``functions`` parameter needs tool support just as ``tools`` does.
        tools=bool(chat.tools or body.get("functions")),
        tool_messages=chat.has_tool_messages,
        json_schema=chat.needs_json_schema,
        multiple_choices=chat.n > 1,
        images="image_url" in part_types,
        audio="input_audio" in part_types,
        files="file" in part_types,
    )
    decision = decide(
        policy,
        outcome.scores or {},
        needs,
        requested=chat.model,
        unavailable_reason=runtime.client_unavailable_reason,
        min_tier=highest_tier(
            alias.min_tier if alias is not None else None,
            tenant.config.min_tier if tenant and tenant.config else None,
            header_min_tier,
        ),
        blocked_tiers=frozenset(tenant.config.blocked_tiers) if tenant and tenant.config else frozenset(),
        category=outcome.category,
    )
    outcome.tier = decision.tier
    return decision


def _allowed_hint(policy: Policy, hint: str | None, model: str) -> str | None:
    if hint is None or not policy.tenants.allow_min_tier_header:
        return None
    if hint not in TIER_ORDER:
        raise InvalidRequest(
            f"The x-tierwise-min-tier header must be one of {', '.join(TIER_ORDER)}; got '{hint}'.",
            param="x-tierwise-min-tier",
        )
    alias = policy.aliases.get(model)
    max_tier = alias.max_tier if alias is not None else None
    if max_tier is not None and TIER_ORDER.index(hint) > TIER_ORDER.index(max_tier):
        raise InvalidRequest(
            f"The x-tierwise-min-tier header requests the {hint} tier or above, but the model "
            f"'{model}' never goes above the {max_tier} tier. Remove the header, or request a "
            "router alias that reaches that tier (GET /v1/models shows each alias's max_tier).",
            param="x-tierwise-min-tier",
        )
    return hint


async def read_json_body(request: Request, limit: int) -> dict[str, Any]:
    """Read and parse the body; raise RequestTooLarge, UnsupportedMediaType or InvalidRequest.

    The body is read as it arrives and rejected once it passes ``limit``, so a chunked
    upload without Content-Length cannot fill memory before the check. A client that
    closes the connection before the whole body has arrived raises ClientDisconnected.
    """
    declared = header(request, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    encoding = header(request, b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding '{encoding[:40]}' is not supported; send the JSON body uncompressed.",
            param="content-encoding",
        )
    parts: list[bytes] = []
    size = 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise RequestTooLarge(f"The request body exceeds the limit of {limit} bytes.")
            parts.append(part)
    except ClientDisconnect:
        raise ClientDisconnected() from None
    raw = parts[0] if len(parts) == 1 else b"".join(parts)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON ({exc.msg} at position {exc.pos}).",
            code="invalid_json",
        ) from None
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


MAX_JSON_DEPTH = 128
"""Deepest nesting of objects and arrays accepted in a request body."""


def json_depth(value: Any) -> int:
    """Return how many levels of objects and arrays ``value`` nests (0 for a scalar)."""
    depth = 0
    level = [value]
    while level:
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            break
        depth += 1
        level = [
            child
            for container in containers
            for child in (container.values() if isinstance(container, dict) else container)
        ]
    return depth


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    reject_forbidden_parameter(body)
    try:
        chat = ChatRequest.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = error_parameter(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise InvalidRequest(f"Invalid value for '{param}': {message}.", param=param) from None
    if chat.stream_options is not None and not chat.stream:
        # OpenAI's API rejects this combination too, so a client that works here works there.
        raise InvalidRequest(
            "The parameter 'stream_options' is allowed only when 'stream' is true; remove it "
            "or set 'stream': true.",
            param="stream_options",
        )
    return chat


def _complete_answer(completion: dict[str, Any]) -> bool:
    choices = completion.get("choices") or []
    return bool(choices) and all(c.get("finish_reason") in ("stop", "tool_calls", "length") for c in choices)


def headers(outcome: Outcome, decision: Decision | None) -> dict[str, str]:
    result = {
        "x-request-id": outcome.request_id,
        "x-tierwise-tier": outcome.tier or "",
        "x-tierwise-model": outcome.deployment.name if outcome.deployment else "",
        "x-tierwise-cache": "hit" if outcome.cache_hit else "miss",
    }
    if decision is not None and decision.score is not None:
        result["x-tierwise-score"] = f"{decision.score:.4f}"
    if not outcome.stream or outcome.cache_hit:
        result["x-tierwise-cost-usd"] = f"{outcome.cost_usd():.8f}"
    upstream = outcome.upstream
    if upstream is not None:
        if upstream.request_id is not None:
            result["x-tierwise-upstream-request-id"] = upstream.request_id
        result.update(upstream.rate_limits)
    return result


class RecordingResponse(Response):
    """A JSON response that runs ``on_sent`` once its body is sent, or sending failed.

    A served request's outcome record, metrics and log line are written by ``on_sent``,
    so the client does not wait for them.  uvicorn's ``send`` writes to the socket
    without yielding, so no other request runs between the body and ``on_sent``.
    """

    media_type = "application/json"

    def __init__(self, content: bytes, headers: dict[str, str],
                 on_sent: Callable[[], None] | None = None,
                 outcome: Outcome | None = None) -> None:
        super().__init__(content, headers=headers)
        self.on_sent = on_sent
        self.outcome = outcome
        """The record that ``on_sent`` writes, marked 499 when the client left first."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.outcome is not None and client_connected(receive) is False:
                # The client got nothing, so a 200 in the record would count the request as
                # served in reports and retraining.
                self.outcome.error = "client_disconnected"
                self.outcome.status = CLIENT_CLOSED_REQUEST
            self.run_on_sent()

    def run_on_sent(self) -> None:
        """Run ``on_sent`` unless it has run; callers that drop the response call this."""
        on_sent, self.on_sent = self.on_sent, None
        if on_sent is not None:
            on_sent()


def json_response(payload: dict[str, Any], response_headers: dict[str, str],
                  on_sent: Callable[[], None] | None = None,
                  outcome: Outcome | None = None) -> RecordingResponse:
    return RecordingResponse(orjson.dumps(payload), response_headers, on_sent, outcome)


def finish(runtime: Runtime, policy: Policy, outcome: Outcome) -> None:
    """Emit the outcome record, count it in metrics and the dashboard, and log one summary line."""
    if outcome.category is None and outcome.messages is not None:
        outcome.category = prompt_category(outcome.messages)
    record = outcome.as_record(policy)
    runtime.outcomes.emit(record)
    runtime.budgets.record(outcome.tenant, record["cost_usd"])
    reservation = outcome.token_reservation
    if reservation is not None or token_limit_of(outcome.tenant, policy) is not None:
        used = 0 if outcome.cache_hit else outcome.tokens_in + outcome.tokens_out
        runtime.token_limits.record(outcome.tenant, used, reservation)
    runtime.metrics.observe(record, policy, outcome.category)
    runtime.dashboard.observe(record, outcome.category)
    log.info(
        "request",
        request_id=outcome.request_id,
        tenant=outcome.tenant,
        tier=record["tier"],
        model=record["model"],
        tokens_in=record["tokens_in"],
        tokens_out=record["tokens_out"],
        cost_usd=record["cost_usd"],
        latency_ms=record["latency_ms"],
        cache="hit" if outcome.cache_hit else "miss",
        status=outcome.status,
        error=outcome.error,
        fallbacks=max(0, len(outcome.attempts) - 1),
    )


def header(request: Request, name: bytes) -> str | None:
    """Return the first value of header ``name`` (lower case, as ASGI servers send names).

    ``request.headers.get`` raises and catches a KeyError for every absent header, which
    costs more than this scan of the raw list.
    """
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


MAX_REQUEST_ID_CHARS = 256
"""Maximum length of a client request id that the gateway keeps as the request's own id."""


def _usable_request_id(value: str) -> bool:
    return len(value) <= MAX_REQUEST_ID_CHARS and value.isascii() and value.isprintable()


def new_request_id() -> str:
    """Return ``req-`` and 16 bytes of ``os.urandom`` in hex: the shape of ``uuid4().hex``, at
    about a third of its cost (1.0 µs against 3.6 µs, timeit)."""
    return f"req-{os.urandom(16).hex()}"


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
