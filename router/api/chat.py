"""``POST /v1/chat/completions``: validate, route, serve from cache or upstream, record."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from functools import cache, partial
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Receive

from router.api.admission import (
    OFFLOAD_BODY_BYTES,
    admit,
    check_tenant_limits,
    header,
    open_outcome,
    parse_json_body,
    read_body,
    run_for_body,
    run_off_loop,
    token_limit_of,
)
from router.api.auth import TenantContext
from router.api.disconnect import unless_client_leaves
from router.api.recording import (
    finish,
    headers,
    json_response,
    record_cancellation,
    record_gateway_error,
    record_internal_error,
)
from router.api.schemas import ChatRequest, invalid_request, reject_forbidden_parameter
from router.api.streaming import (
    estimate_usage,
    stream_cached,
    stream_upstream,
)
from router.cache.answers import is_whole_answer, replays_as_stream
from router.cache.entries import decode_entry, encode_entry
from router.cache.keys import cache_key, is_cacheable, routing_scope
from router.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
)
from router.outcomes.record import Outcome
from router.policy.loader import LoadedPolicy
from router.policy.schema import TIER_ORDER, Policy
from router.ratelimits import estimate_prompt_tokens
from router.routing.category import prompt_category
from router.routing.decide import Decision, RequestNeeds, decide, highest_tier
from router.routing.tokens import (
    count_attachment_tokens,
    count_file_tokens,
    count_prompt_tokens,
    message_texts,
)
from router.runtime import Runtime
from router.upstream.base import UpstreamHeaders
from router.upstream.dispatch import Dispatcher

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
        raw = await read_body(
            request, runtime.settings.max_body_bytes, runtime.settings.body_timeout_s
        )
        path = request.scope["path"]
        # A big body's parsing, validation, cache key and classification run in a worker
        # thread, so that the event loop keeps serving other requests meanwhile.
        outcome.large_body = len(raw) > OFFLOAD_BODY_BYTES
        body, chat = await run_for_body(outcome.large_body, _parse, raw, translate, outcome, path)
        outcome.requested_model, outcome.stream = chat.model, chat.stream
        if loaded.policy.outcomes.store_prompts:
            outcome.prompt = body["messages"]
        # Before the cache lookup, so that a cache hit counts as a request too.
        file_tokens = _file_token_counter(body["messages"], chat.content_part_types)
        estimate_tokens: Callable[[], int] = partial(_estimate_tokens, body["messages"], file_tokens)
        if outcome.large_body and token_limit_of(tenant.name, loaded.policy) is not None:
            estimate_tokens = partial(int, await run_off_loop(estimate_tokens))
        await check_tenant_limits(runtime, loaded.policy, tenant, outcome, estimate_tokens)
        hint = header(request, b"x-tierwise-min-tier")
        return await _serve(
            runtime, loaded, body, chat, outcome, tenant, hint, request.receive, file_tokens
        )
    except GatewayError as exc:
        record_gateway_error(runtime, loaded.policy, outcome, exc)
        raise
    except asyncio.CancelledError:
        stopped = record_cancellation(runtime, loaded.policy, outcome)
        if stopped is None:
            raise
        raise stopped from None
    except Exception:
        record_internal_error(runtime, loaded.policy, outcome, request.state)
        raise


def _file_token_counter(
    messages: list[dict[str, Any]], part_types: Collection[str]
) -> Callable[[], int]:
    """Return a function that estimates the tokens of the file parts once, then repeats it.

    The token-rate reservation and routing both need the estimate, and a PDF's reads all
    its bytes.
    """
    if "file" not in part_types:
        return _no_file_tokens
    return cache(partial(count_file_tokens, messages))


def _no_file_tokens() -> int:
    return 0


def _estimate_tokens(messages: list[dict[str, Any]], file_tokens: Callable[[], int]) -> int:
    text_tokens = estimate_prompt_tokens(message_texts(messages), len(messages))
    return text_tokens + count_attachment_tokens(messages, files=False) + file_tokens()


def _parse(
    raw: bytes,
    translate: Callable[[dict[str, Any]], dict[str, Any]] | None,
    outcome: Outcome,
    path: str,
) -> tuple[dict[str, Any], ChatRequest]:
    """Parse, translate and validate a request body; return the chat body and its model."""
    body = parse_json_body(raw)
    if translate is not None:
        # The last part of the path: responses, messages or completions.
        outcome.api = path.rsplit("/", 1)[-1]
        body = translate(body)
    return body, parse_chat_request(body)


async def _serve(
    runtime: Runtime,
    loaded: LoadedPolicy,
    body: dict[str, Any],
    chat: ChatRequest,
    outcome: Outcome,
    tenant: TenantContext,
    min_tier_hint: str | None,
    receive: Receive,
    file_tokens: Callable[[], int],
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
        key = await run_for_body(outcome.large_body, cache_key, outcome.tenant, scope, body)
        cached = await runtime.cache.get(key)
        entry = decode_entry(policy, cached) if cached is not None else None
        # A stream is served from an entry only when the replayed chunks carry all of it.
        if entry is not None and (not chat.stream or replays_as_stream(entry[2])):
            outcome.tier, outcome.deployment, completion = entry
            outcome.cache_hit = True
            outcome.messages = body["messages"]
            outcome.set_usage(completion.get("usage"))
            if chat.stream:
                return stream_cached(runtime, policy, completion, chat, outcome, receive)
            return json_response(completion, headers(outcome, None),
                                 on_sent=partial(finish, runtime, policy, outcome), outcome=outcome)

    decision = await run_for_body(
        outcome.large_body, route, runtime, policy, body, chat, outcome, file_tokens, tenant, hint
    )
    dispatcher = Dispatcher(runtime.direct, runtime.litellm, outcome.attempts, outcome.request_id,
                            health=runtime.health, policy=policy,
                            local_model_stopped=runtime.local_model_stopped)
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
        await run_for_body(outcome.large_body, estimate_usage, outcome, chat, completion)
    if key is not None and is_whole_answer(completion, chat.n):
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


def check_model(policy: Policy, model: str) -> None:
    """Raise ModelNotFound unless ``model`` is a router alias or a deployment of ``policy``."""
    if policy.has_model(model):
        return
    if policy.embedding_candidates(model) is not None:
        # GET /v1/models lists embedding names too, so "does not exist" would mislead.
        raise ModelNotFound(
            f"The model '{model}' is an embedding model, which only POST /v1/embeddings "
            "serves. Use a router alias such as 'auto' or a chat model listed by "
            "GET /v1/models.",
            param="model",
        )
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
    file_tokens: Callable[[], int],
    tenant: TenantContext | None = None,
    header_min_tier: str | None = None,
) -> Decision:
    """Score the conversation (for router aliases) and choose the candidate deployments.

    The caller has checked that the policy has ``chat.model`` (``check_model``) and that
    ``header_min_tier`` is an allowed ``x-tierwise-min-tier`` value (``_allowed_hint``).
    ``file_tokens`` returns the estimate of the file parts (``_file_token_counter``).
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
    prompt_file_tokens = file_tokens()
    needs = RequestNeeds(
        prompt_tokens=count_prompt_tokens(
            body["messages"], fits_below=policy.smallest_context_window,
            file_tokens=prompt_file_tokens,
        ),
        max_output_tokens=chat.output_token_limit,
        # The deprecated ``functions`` parameter needs tool support just as ``tools`` does.
        tools=bool(chat.tools or body.get("functions")),
        tool_messages=chat.has_tool_messages,
        json_schema=chat.needs_json_schema,
        multiple_choices=chat.n > 1,
        images="image_url" in part_types,
        audio="input_audio" in part_types,
        files="file" in part_types,
        file_tokens=prompt_file_tokens,
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


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    reject_forbidden_parameter(body)
    try:
        chat = ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None
    if chat.stream_options is not None and not chat.stream:
        # OpenAI's API rejects this combination too, so a client that works here works there.
        raise InvalidRequest(
            "The parameter 'stream_options' is allowed only when 'stream' is true; remove it "
            "or set 'stream': true.",
            param="stream_options",
        )
    return chat

