"""``POST /v1/embeddings``: OpenAI's embeddings API on the policy's embedding deployments.

Embedding requests are not classified or tiered: ``model`` names an embedding deployment, or
an alias of the policy's ``embeddings`` section whose deployments are tried in order.  They
share the chat endpoints' tenancy: authentication, request and token rate limits, budgets,
the response cache (always, because embeddings are deterministic), outcome records and
metrics.  Errors keep OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import base64
import sys
from array import array
from functools import partial
from typing import Any, Literal

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response
from starlette.types import Receive

from router.api.admission import (
    OFFLOAD_BODY_BYTES,
    admit,
    check_tenant_limits,
    open_outcome,
    parse_json_body,
    read_body,
    run_for_body,
)
from router.api.disconnect import unless_client_leaves
from router.api.recording import (
    finish,
    headers,
    json_response,
    record_cancellation,
    record_gateway_error,
    record_internal_error,
)
from router.api.schemas import reject_forbidden_parameter
from router.cache.entries import decode_embedding_entry, encode_entry
from router.cache.keys import cache_key, embedding_scope
from router.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NoDeploymentAvailable,
    UnsupportedParameter,
    UpstreamFailed,
)
from router.outcomes.record import Outcome, valid_token_count
from router.policy.schema import EmbeddingDeployment, Policy
from router.ratelimits import estimate_prompt_tokens
from router.routing.tokens import count_text_tokens
from router.runtime import Runtime
from router.upstream.dispatch import Dispatcher

log = structlog.get_logger("tierwise.embeddings")
router = APIRouter()

ENDPOINT = "/v1/embeddings"
MAX_INPUTS = 2048
"""Maximum number of inputs in one request, as on OpenAI's API."""
ENDPOINT_LABEL = "embeddings"
"""The ``endpoint`` field of the outcome records of this endpoint."""


class EmbeddingRequest(BaseModel):
    """The request body as the OpenAPI document shows it.

    ``parse_embedding_request`` does the validation. Parameters that the gateway does not
    interpret are kept and forwarded, as on the chat endpoint.
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="An embedding deployment or alias from GET /v1/models.")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string, a list of strings, a token array, or a list of token arrays; "
        f"at most {MAX_INPUTS} inputs, none empty."
    )
    encoding_format: Literal["float", "base64"] | None = Field(
        default=None,
        description="float (default) or base64: little-endian float32 values, base64-encoded.",
    )
    dimensions: int | None = Field(default=None, gt=0, description="Length of the vectors.")
    user: str | None = None


class ParsedEmbeddingRequest:
    """A validated embeddings request: the fields the gateway reads."""

    __slots__ = ("dimensions", "encoding_format", "inputs", "model", "texts", "token_ids")

    def __init__(self, model: str, inputs: int, texts: list[str], token_ids: int,
                 encoding_format: str, dimensions: int | None) -> None:
        self.model = model
        self.inputs = inputs
        """Number of inputs, and so of vectors in the response."""
        self.texts = texts
        """String inputs, whose tokens the gateway counts when the upstream reports no usage."""
        self.token_ids = token_ids
        """Number of token ids in the token-array inputs."""
        self.encoding_format = encoding_format
        self.dimensions = dimensions


@router.post(ENDPOINT, response_model=None)
async def create_embeddings(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    loaded = runtime.policies.current
    policy = loaded.policy
    outcome, id_problem, client_id_kept = open_outcome(request, runtime, loaded)
    outcome.endpoint = ENDPOINT_LABEL
    try:
        tenant = admit(request, runtime, policy, outcome, id_problem, client_id_kept)
        raw = await read_body(
            request, runtime.settings.max_body_bytes, runtime.settings.body_timeout_s
        )
        # A big body is parsed, checked and hashed for the cache key in a worker thread, so
        # that the event loop keeps serving other requests meanwhile.
        off_loop = len(raw) > OFFLOAD_BODY_BYTES
        body, parsed = await run_for_body(off_loop, _parse, raw)
        outcome.requested_model = parsed.model
        if policy.outcomes.store_prompts:
            outcome.prompt = body["input"]
        # Before the cache lookup, so that a cache hit counts as a request too.
        await check_tenant_limits(
            runtime, policy, tenant, outcome,
            lambda: estimate_prompt_tokens(parsed.texts, 0) + parsed.token_ids,
        )
        return await _serve(runtime, policy, body, parsed, outcome, request.receive, off_loop)
    except GatewayError as exc:
        record_gateway_error(runtime, policy, outcome, exc)
        raise
    except asyncio.CancelledError:
        stopped = record_cancellation(runtime, policy, outcome)
        if stopped is None:
            raise
        raise stopped from None
    except Exception:
        record_internal_error(runtime, policy, outcome, request.state)
        raise


def _parse(raw: bytes) -> tuple[dict[str, Any], ParsedEmbeddingRequest]:
    body = parse_json_body(raw)
    return body, parse_embedding_request(body)


async def _serve(
    runtime: Runtime,
    policy: Policy,
    body: dict[str, Any],
    parsed: ParsedEmbeddingRequest,
    outcome: Outcome,
    receive: Receive,
    off_loop: bool = False,
) -> Response:
    # Resolved before the cache lookup, so that a hit never serves a request that would be
    # rejected (an unknown model or an unsupported ``dimensions``).
    candidates = _candidates(policy, parsed)
    key = None
    if policy.cache.enabled:
        scope = embedding_scope(parsed.model, candidates)
        # A missing encoding_format means float, so both forms share one entry.
        keyed_body = {**body, "encoding_format": parsed.encoding_format}
        key = await run_for_body(off_loop, cache_key, outcome.tenant, scope, keyed_body)
        cached = await runtime.cache.get(key)
        entry = decode_embedding_entry(candidates, cached) if cached is not None else None
        if entry is not None:
            outcome.deployment, response = entry
            outcome.cache_hit = True
            await _record_usage(outcome, response, parsed)
            return json_response(response, _headers(outcome),
                                 on_sent=partial(finish, runtime, policy, outcome), outcome=outcome)

    available = tuple(d for d in candidates if runtime.client_unavailable_reason(d) is None)
    if not available:
        reasons = "; ".join(f"{d.name}: {runtime.client_unavailable_reason(d)}" for d in candidates)
        raise NoDeploymentAvailable(
            f"No deployment can serve the embedding model '{parsed.model}' now ({reasons}). "
            "Retry later, or ask the gateway's operators to fix these causes.",
            local_model_down=any(d.local_model for d in candidates),
        )
    dispatcher = Dispatcher(runtime.direct, runtime.litellm, outcome.attempts, outcome.request_id,
                            health=runtime.health, policy=policy,
                            local_model_stopped=runtime.local_model_stopped)
    deployment, response = await unless_client_leaves(
        receive, dispatcher.embed(available, body, parsed.inputs)
    )
    outcome.deployment = deployment
    outcome.upstream = dispatcher.upstream_headers
    if outcome.upstream is not None and not policy.tenants.show_upstream_rate_limits:
        outcome.upstream.rate_limits = {}
    try:
        response = convert_vectors(response, parsed.encoding_format)
    except ValueError as exc:
        # The upstream sent the invalid vector, so the client gets a 502, not a 400.
        log.warning("upstream_embedding_invalid", request_id=outcome.request_id,
                    deployment=deployment.name, detail=str(exc)[:200])
        raise UpstreamFailed(
            f"The deployment '{deployment.name}' returned an embedding that is not a list of "
            "numbers. Retry later, or report the request id."
        ) from None
    await _record_usage(outcome, response, parsed)
    if key is not None:
        await runtime.cache.set(key, encode_entry(deployment.name, response), policy.cache.ttl_s)
    return json_response(response, _headers(outcome),
                         on_sent=partial(finish, runtime, policy, outcome), outcome=outcome)


def _candidates(policy: Policy, parsed: ParsedEmbeddingRequest) -> tuple[EmbeddingDeployment, ...]:
    """Return the deployments that may serve the request, in order.

    Raises ModelNotFound for an unknown model, and UnsupportedParameter when no deployment
    returns vectors of the requested ``dimensions`` or accepts the token arrays in the input.
    """
    if policy.embeddings is None:
        raise ModelNotFound(
            f"The model '{parsed.model}' does not exist on this gateway: its policy has no "
            "embeddings section, so POST /v1/embeddings serves no model. The gateway's "
            "operators can add one with at least one deployment (see 'Embeddings' in the "
            "README).",
            param="model",
        )
    candidates = policy.embedding_candidates(parsed.model)
    if candidates is None:
        names = ", ".join(policy.embeddings.candidate_names)
        raise ModelNotFound(
            f"The model '{parsed.model}' does not exist on this gateway's embeddings endpoint. "
            f"Use one of {names} (GET /v1/models lists them with kind 'embedding').",
            param="model",
        )
    eligible = tuple(d for d in candidates if d.takes_dimensions(parsed.dimensions))
    if not eligible:
        sizes = sorted({d.dimensions for d in candidates if d.dimensions is not None})
        size_text = f" {', '.join(map(str, sizes))}-dimensional" if sizes else ""
        raise UnsupportedParameter(
            f"The model '{parsed.model}' returns{size_text} vectors and cannot shorten them to "
            f"{parsed.dimensions} dimensions. Remove 'dimensions' from the request.",
            param="dimensions",
        )
    if parsed.token_ids:
        eligible = tuple(d for d in eligible if d.takes_token_ids)
        if not eligible:
            raise UnsupportedParameter(
                f"The model '{parsed.model}' takes only strings as input, not token arrays, "
                "because none of its deployments accepts token ids. Send the text as a string "
                "or a list of strings.",
                param="input",
            )
    return eligible


def parse_embedding_request(body: dict[str, Any]) -> ParsedEmbeddingRequest:
    """Validate an embeddings body as OpenAI's API does.

    Raises InvalidRequest, with ``param`` naming the invalid parameter.
    """
    reject_forbidden_parameter(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "expected the name of an embedding model as a non-empty string")
    if "input" not in body:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input",
                             code="missing_required_parameter")
    inputs, texts, token_ids = _count_inputs(body["input"])
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    elif encoding_format not in ("float", "base64"):
        raise _invalid("encoding_format", "expected 'float' or 'base64'")
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise _invalid("dimensions", "expected an integer of at least 1")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid("user", "expected a string")
    return ParsedEmbeddingRequest(model, inputs, texts, token_ids, encoding_format, dimensions)


def _count_inputs(value: Any) -> tuple[int, list[str], int]:
    """Return the number of inputs, the string inputs and the number of token ids.

    Raises InvalidRequest for an input that OpenAI's API rejects too.
    """
    if isinstance(value, str):
        if not value:
            raise _invalid("input", "expected a non-empty string")
        return 1, [value], 0
    if not isinstance(value, list) or not value:
        raise _invalid("input", "expected a non-empty string, a non-empty list of strings, a "
                       "token array, or a list of token arrays")
    if all(_is_token(item) for item in value):
        return 1, [], len(value)
    if len(value) > MAX_INPUTS:
        raise _invalid("input", f"expected at most {MAX_INPUTS} inputs, got {len(value)}")
    texts: list[str] = []
    token_ids = 0
    for index, item in enumerate(value):
        if isinstance(item, str):
            if not item:
                raise _invalid(f"input[{index}]", "expected a non-empty string")
            texts.append(item)
        elif isinstance(item, list):
            if not item or not all(_is_token(token) for token in item):
                raise _invalid(f"input[{index}]", "expected a non-empty array of token ids "
                               "(integers of at least 0)")
            token_ids += len(item)
        else:
            raise _invalid(f"input[{index}]", "expected a string or an array of token ids")
    kinds = {type(item) for item in value}
    if len(kinds) > 1:
        raise _invalid("input", "expected only strings or only token arrays, not both")
    return len(value), texts, token_ids


def _is_token(value: Any) -> bool:
    return type(value) is int and value >= 0


def _invalid(param: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid value for '{param}': {reason}.", param=param)


def convert_vectors(response: dict[str, Any], encoding_format: str) -> dict[str, Any]:
    """Return ``response`` with every vector in ``encoding_format``.

    ``response`` itself is returned when no vector needs converting. Upstreams that ignore
    ``encoding_format`` (llama.cpp's server, for one) return floats. A base64 vector is
    OpenAI's format: little-endian float32 values, base64-encoded. Raises ValueError for a
    vector that is neither a list of numbers nor valid base64 of float32 values.
    """
    data = response["data"]
    wants_base64 = encoding_format == "base64"
    if all(isinstance(item["embedding"], str) == wants_base64 for item in data):
        return response
    converted = []
    for item in data:
        vector = item["embedding"]
        if wants_base64 and not isinstance(vector, str):
            vector = _to_base64(vector)
        elif not wants_base64 and isinstance(vector, str):
            vector = _from_base64(vector)
        converted.append({**item, "embedding": vector})
    return {**response, "data": converted}


def _to_base64(vector: list[Any]) -> str:
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vector):
        raise ValueError("a vector contains a value that is not a number")
    try:
        values = array("f", vector)
    except OverflowError:
        # An integer beyond float's range, which Python's json module parses.
        raise ValueError("a vector contains a number that is not a float32 value") from None
    if sys.byteorder == "big":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def _from_base64(text: str) -> list[float]:
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 4:
        raise ValueError("a base64 vector is not a whole number of float32 values")
    values = array("f", raw)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


async def _record_usage(
    outcome: Outcome, response: dict[str, Any], parsed: ParsedEmbeddingRequest
) -> None:
    """Set the outcome's input tokens from the response's usage, or to an estimate without it."""
    usage = response.get("usage")
    prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if prompt_tokens is not None and valid_token_count(prompt_tokens) is not None:
        outcome.set_usage({"prompt_tokens": prompt_tokens})
        return
    # The estimate is the cl100k_base token count of the strings plus the ids of token arrays.
    # Counting a few MB of text takes a fraction of a second (0.19 s for 4 MB), so long inputs
    # are counted in a worker thread while other requests proceed.
    texts = parsed.texts
    if sum(map(len, texts)) > THREADED_COUNT_CHARS:
        counted = await asyncio.to_thread(count_text_tokens, texts)
    else:
        counted = count_text_tokens(texts) if texts else 0
    outcome.tokens_in = counted + parsed.token_ids


THREADED_COUNT_CHARS = 100_000
"""Characters of input above which the token estimate runs in a worker thread."""


def _headers(outcome: Outcome) -> dict[str, str]:
    result = headers(outcome, None)
    # No tier serves embeddings.
    del result["x-tierwise-tier"]
    return result
