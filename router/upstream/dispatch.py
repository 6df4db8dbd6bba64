"""Try the decision's candidate deployments in order until one answers.

A candidate that fails before anything reached the client (a timeout, a refused
connection, a 5xx, a context-length error, an error event as the first stream event)
hands the request to the next candidate; every attempt is recorded for the outcome log.
A ``client`` error (the request itself is wrong) ends the loop at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from router.errors import (
    GatewayError,
    InvalidRequest,
    NoDeploymentAvailable,
    UpstreamFailed,
    UpstreamRateLimited,
    UpstreamTimeout,
    retry_after_headers,
)
from router.policy.schema import Cooldown, Deployment, EmbeddingDeployment, Policy
from router.routing.balance import weighted_first
from router.routing.decide import Candidate
from router.upstream.base import Transport, UpstreamError, UpstreamHeaders
from router.upstream.health import COUNTED_KINDS, DeploymentHealth

log = structlog.get_logger("tierwise.dispatch")

CANCELLED = "cancelled"
"""Attempt error of a call abandoned because the client disconnected or the server stopped."""


EMBEDDINGS_TIER = "embeddings"
"""The ``tier`` of an embeddings request's attempts, which no tier serves."""

LOCAL_MODEL_STOPPED = (
    "The local edge model stopped while it served this request, and the gateway is restarting "
    "it. Retry the request after the wait in the Retry-After header."
)


@dataclass
class Attempt:
    tier: str
    deployment: str
    error: str | None = None
    latency_ms: float = 0.0

    def as_record(self) -> dict[str, Any]:
        return {"tier": self.tier, "deployment": self.deployment, "error": self.error}


@dataclass
class Dispatcher:
    direct: Transport
    litellm: Transport
    attempts: list[Attempt] = field(default_factory=list)
    request_id: str | None = None
    """The gateway's id of the request, for the log lines of failed attempts."""
    failures: list[UpstreamError] = field(default_factory=list)
    """The error of every failed attempt, in order."""
    upstream_headers: UpstreamHeaders | None = None
    """The headers to pass on from the deployment whose response is used."""
    health: DeploymentHealth | None = None
    """Record of failures, cooldowns and requests under way that orders the candidates; None
    turns all three off."""
    policy: Policy | None = None
    """The policy that serves the request: its cooldown settings, weighted tiers and in-flight
    limits apply. None means the default cooldown and neither of the others."""
    local_model_stopped: Callable[[], bool] | None = None
    """Returns whether the gateway's local model server is down. A failure of a
    ``local_model`` deployment while it is down does not count toward the deployment's
    cooldown, and when every attempt failed that way the request gets a 503 to retry."""
    _failures_of_stopped_model: int = field(default=0, init=False)

    def transport_for(self, deployment: Deployment | EmbeddingDeployment) -> Transport:
        return self.direct if deployment.uses_direct_path else self.litellm

    async def complete(
        self, candidates: tuple[Candidate, ...], body: dict[str, Any]
    ) -> tuple[Candidate, dict[str, Any]]:
        """Return the first candidate that answered and its completion."""
        last_error: UpstreamError | None = None
        for candidate in self._ordered(candidates):
            attempt = Attempt(candidate.tier, candidate.deployment.name)
            self.attempts.append(attempt)
            started = time.perf_counter()
            seen = UpstreamHeaders()
            release = self._hold(candidate.deployment)
            try:
                completion = await self.transport_for(candidate.deployment).complete(
                    candidate.deployment, _upstream_body(candidate.deployment, body), seen
                )
            except asyncio.CancelledError:
                attempt.error = CANCELLED
                raise
            except UpstreamError as exc:
                attempt.latency_ms = (time.perf_counter() - started) * 1000
                last_error = self._failed(attempt, candidate.deployment, exc, body)
                continue
            finally:
                if release is not None:
                    release()
            attempt.latency_ms = (time.perf_counter() - started) * 1000
            if not _is_completion(completion):
                problem = UpstreamError("server", "the upstream returned a body without choices")
                last_error = self._failed(attempt, candidate.deployment, problem)
                continue
            self.upstream_headers = seen
            if self.health is not None:
                self.health.succeeded(candidate.deployment.name)
            return candidate, completion
        raise self._final_error(last_error)

    async def open_stream(
        self, candidates: tuple[Candidate, ...], body: dict[str, Any]
    ) -> tuple[Candidate, dict[str, Any], AsyncIterator[dict[str, Any]]]:
        """Return the first candidate whose stream produced a first chunk, that chunk, and the rest.

        The deployment's failure count is not cleared here: a stream counts as a success only
        when it ends with ``[DONE]``, which the caller reports to ``health``.
        """
        last_error: UpstreamError | None = None
        for candidate in self._ordered(candidates):
            attempt = Attempt(candidate.tier, candidate.deployment.name)
            self.attempts.append(attempt)
            started = time.perf_counter()
            seen = UpstreamHeaders()
            release = self._hold(candidate.deployment)
            stream = self.transport_for(candidate.deployment).stream(
                candidate.deployment, _upstream_body(candidate.deployment, body, streaming=True), seen
            )
            opened = False
            try:
                first = await stream.__anext__()
                opened = True
            except asyncio.CancelledError:
                attempt.error = CANCELLED
                raise
            except StopAsyncIteration:
                last_error = self._failed(
                    attempt, candidate.deployment, UpstreamError("stream", "empty stream")
                )
                continue
            except UpstreamError as exc:
                attempt.latency_ms = (time.perf_counter() - started) * 1000
                last_error = self._failed(attempt, candidate.deployment, exc, body)
                await _close(stream)
                continue
            finally:
                # Also when _failed raises for a rejected request: only an opened stream
                # keeps its slot.
                if release is not None and not opened:
                    release()
            attempt.latency_ms = (time.perf_counter() - started) * 1000
            self.upstream_headers = seen
            if release is not None:
                stream = _holding(stream, release)
            return candidate, first, stream
        raise self._final_error(last_error)

    async def embed(
        self, candidates: Sequence[EmbeddingDeployment], body: dict[str, Any], inputs: int
    ) -> tuple[EmbeddingDeployment, dict[str, Any]]:
        """Return the first embedding deployment that sent a valid response, and the response.

        Cooling deployments are tried after the others, as for chat. A response that does not
        carry ``inputs`` vectors counts as a server error, so the next deployment gets the
        request.
        """
        ordered = candidates
        if self.health is not None:
            ordered = self.health.order(candidates, _embedding_name)
        last_error: UpstreamError | None = None
        for deployment in ordered:
            attempt = Attempt(EMBEDDINGS_TIER, deployment.name)
            self.attempts.append(attempt)
            started = time.perf_counter()
            seen = UpstreamHeaders()
            try:
                response = await self.transport_for(deployment).embed(
                    deployment, _upstream_embedding_body(deployment, body), seen
                )
            except asyncio.CancelledError:
                attempt.error = CANCELLED
                raise
            except UpstreamError as exc:
                attempt.latency_ms = (time.perf_counter() - started) * 1000
                last_error = self._failed(attempt, deployment, exc, body)
                continue
            attempt.latency_ms = (time.perf_counter() - started) * 1000
            problem = _embedding_response_problem(response, inputs)
            if problem is not None:
                last_error = self._failed(attempt, deployment, UpstreamError("server", problem))
                continue
            self.upstream_headers = seen
            if self.health is not None:
                self.health.succeeded(deployment.name)
            return deployment, _in_index_order(response)
        if last_error is not None and last_error.kind == "context":
            raise InvalidRequest(
                "An input is longer than every eligible embedding deployment accepts. Shorten "
                "or split it.",
                param="input",
                code="context_length_exceeded",
            )
        raise self._final_error(last_error)

    def _ordered(self, candidates: tuple[Candidate, ...]) -> Sequence[Candidate]:
        # Cooling deployments go to the end first, so that the weighted draw picks among the
        # others and a cooling deployment's share is spread by weight, not given to the next
        # one listed.
        ordered: Sequence[Candidate] = candidates
        policy = self.policy
        if self.health is not None:
            ordered = self.health.order(ordered, _deployment_name)
            if policy is not None and policy.limits_in_flight:
                ordered = _busy_last(ordered, self.health)
        if policy is not None and policy.weighted_tiers:
            ordered = weighted_first(ordered, policy.weighted_tiers, _RANDOM)
        return ordered

    def _hold(self, deployment: Deployment) -> Callable[[], None] | None:
        if self.health is None or self.policy is None or not self.policy.limits_in_flight:
            return None
        return self.health.hold(deployment)

    def _failed(
        self,
        attempt: Attempt,
        deployment: Deployment | EmbeddingDeployment,
        exc: UpstreamError,
        body: dict[str, Any] | None = None,
    ) -> UpstreamError:
        """Record a failed attempt and log it, with ``body``'s prompt text cut from the detail."""
        attempt.error = exc.kind
        self.failures.append(exc)
        stopped = (
            deployment.local_model
            and exc.kind in COUNTED_KINDS
            and self.local_model_stopped is not None
            and self.local_model_stopped()
        )
        if stopped:
            self._failures_of_stopped_model += 1
        elif self.health is not None:
            cooldown = self.policy.routing.cooldown if self.policy is not None else _DEFAULT_COOLDOWN
            self.health.failed(attempt.deployment, exc, cooldown)
        log.warning(
            "upstream_failed",
            request_id=self.request_id,
            tier=attempt.tier,
            deployment=attempt.deployment,
            kind=exc.kind,
            status=exc.status,
            detail=without_prompts(exc.message, body)[:300],
            **({"local_model_stopped": True} if stopped else {}),
        )
        if exc.kind == "client":
            raise InvalidRequest(
                f"The model rejected the request: {exc.message[:500]}",
                param=exc.param,
                code="upstream_rejected",
            )
        return exc

    def _final_error(self, last_error: UpstreamError | None) -> GatewayError:
        if self.failures and self._failures_of_stopped_model == len(self.failures):
            return NoDeploymentAvailable(LOCAL_MODEL_STOPPED, local_model_down=True)
        return _final_error(last_error, self.failures, self.attempts)


PROMPT_PLACEHOLDER = "[prompt]"
MIN_REDACTED_LENGTH = 8
"""Shorter prompt texts stay in log lines, because replacing them would also replace common
words of the provider's own message."""


def without_prompts(message: str, body: dict[str, Any] | None) -> str:
    """Return a provider's error message with each prompt text of ``body`` replaced.

    Providers quote inputs in error messages, and log lines must not contain prompts. The
    texts are the embedding inputs and the messages' text content.
    """
    if body is None:
        return message
    # NOTE: only whole texts are replaced. A provider that quotes part of a prompt, or an
    # escaped form of it, still gets that part into the log line.
    texts = [text for text in _prompt_texts(body) if len(text) >= MIN_REDACTED_LENGTH]
    for text in sorted(texts, key=len, reverse=True):
        message = message.replace(text, PROMPT_PLACEHOLDER)
    return message


def _prompt_texts(body: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    inputs = body.get("input")
    if isinstance(inputs, str):
        texts.append(inputs)
    elif isinstance(inputs, list):
        texts.extend(item for item in inputs if isinstance(item, str))
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                part["text"] for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return texts


def _busy_last(candidates: Sequence[Candidate], health: DeploymentHealth) -> Sequence[Candidate]:
    """Move the candidates whose deployment has ``max_in_flight`` requests under way to the end."""
    free: list[Candidate] = []
    busy: list[Candidate] = []
    for candidate in candidates:
        (busy if health.busy(candidate.deployment) else free).append(candidate)
    return free + busy if busy else candidates


def _holding(
    stream: AsyncIterator[dict[str, Any]], release: Callable[[], None]
) -> AsyncIterator[dict[str, Any]]:
    """Return ``stream`` as an iterator that calls ``release`` once it ends or is dropped.

    A relay that never starts leaves the generator unstarted, and an unstarted generator runs
    no ``finally``, so a finalizer releases it when it is garbage collected.
    """

    async def relay() -> AsyncIterator[dict[str, Any]]:
        try:
            async for chunk in stream:
                yield chunk
        finally:
            release()
            await _close(stream)

    wrapped = relay()
    weakref.finalize(wrapped, release)
    return wrapped


_DEFAULT_COOLDOWN = Cooldown()
_RANDOM = random.Random()


def _deployment_name(candidate: Candidate) -> str:
    return candidate.deployment.name


def _embedding_name(deployment: EmbeddingDeployment) -> str:
    return deployment.name


def _upstream_embedding_body(deployment: EmbeddingDeployment, body: dict[str, Any]) -> dict[str, Any]:
    upstream = dict(body)
    upstream["model"] = deployment.upstream_model if deployment.uses_direct_path else deployment.model
    if not deployment.accepts_dimensions:
        # The endpoint sends such a deployment only requests without dimensions or with its
        # own (EmbeddingDeployment.takes_dimensions), so dropping the parameter changes no
        # vector, and a model that rejects the parameter still serves the request.
        upstream.pop("dimensions", None)
    return upstream


def _embedding_response_problem(response: Any, inputs: int) -> str | None:
    """Describe why ``response`` is not an embeddings response with ``inputs`` vectors, or None."""
    if not isinstance(response, dict) or not isinstance(response.get("data"), list):
        return "the upstream returned a body without a data list"
    data = response["data"]
    if len(data) != inputs:
        return f"the upstream returned {len(data)} embeddings for {inputs} inputs"
    if not all(isinstance(item, dict) for item in data):
        return "the upstream returned an embedding that is not an object"
    indexes = [item.get("index") for item in data]
    # Without any index, the list order is the input order. With indexes, each input needs one.
    if any(index is not None for index in indexes) and sorted(
        index if type(index) is int else -1 for index in indexes
    ) != list(range(inputs)):
        return "the upstream returned embeddings whose indexes are not 0 to n-1, one per input"
    for item in data:
        vector = item.get("embedding")
        if isinstance(vector, str):
            if not _is_float32_base64(vector):
                return "the upstream returned a base64 embedding that is not float32 values"
            continue
        # llama.cpp returns one vector per token (a list of lists) when the model has no
        # pooling. Checking every element took about 40 µs per 1,000 numbers (timeit, 2 cores).
        if not isinstance(vector, list) or not vector or not all(
            type(value) is float or type(value) is int for value in vector
        ):
            return "the upstream returned an embedding that is not one vector of numbers"
        if not _is_finite_sum(vector):
            return "the upstream returned an embedding with NaN or infinite values"
    return None


def _is_finite_sum(vector: list[float | int]) -> bool:
    """Return whether the sum of ``vector`` is a finite float.

    The sum is not finite for a NaN, an infinity, an integer beyond float's range, or values
    near float64's maximum, none of which a float32 embedding contains. Only the litellm
    transport returns such values, because Python's json module parses NaN and Infinity, and
    orjson would write them as null. One sum costs less than a check of every value (about
    3.4 µs per 1,000 numbers, timeit, 2 cores).
    """
    try:
        return math.isfinite(sum(vector))
    except OverflowError:
        return False


def _is_float32_base64(text: str) -> bool:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(raw) and len(raw) % 4 == 0


def _in_index_order(response: dict[str, Any]) -> dict[str, Any]:
    """Return ``response`` with its data sorted by index and every item's index set.

    OpenAI's API returns the vectors in input order. openai-python 3.63 does not reorder
    them, so a caller that reads ``data`` by position relies on that order.
    """
    data = response["data"]
    if all(item.get("index") is None for item in data):
        ordered = [{**item, "index": position} for position, item in enumerate(data)]
    elif all(item["index"] == position for position, item in enumerate(data)):
        return response
    else:
        ordered = sorted(data, key=lambda item: item["index"])
    return {**response, "data": ordered}


def _upstream_body(
    deployment: Deployment, body: dict[str, Any], streaming: bool = False
) -> dict[str, Any]:
    upstream = dict(body)
    upstream["model"] = deployment.upstream_model if deployment.uses_direct_path else deployment.model
    if deployment.developer_as_system or deployment.local_model:
        upstream["messages"] = [
            _adapted_message(message, deployment.developer_as_system, deployment.local_model)
            for message in upstream["messages"]
        ]
    limit_param = deployment.sent_output_limit_param
    if limit_param == "max_tokens" and "max_completion_tokens" in upstream:
        # Some servers, the bundled llama.cpp server (llama-cpp-python 0.3.36) among them,
        # ignore max_completion_tokens, the limit that current OpenAI clients send. This limit
        # wins over a max_tokens sent beside it, as in the gateway's context-window check. A
        # null is dropped too, so that such a server never receives the name.
        limit = upstream.pop("max_completion_tokens")
        if limit is not None:
            upstream["max_tokens"] = limit
    elif limit_param == "max_completion_tokens" and "max_tokens" in upstream:
        # OpenAI's reasoning models reject max_tokens; every OpenAI chat model reads this one.
        limit = upstream.pop("max_tokens")
        if upstream.get("max_completion_tokens") is None:
            upstream["max_completion_tokens"] = limit
    if (
        deployment.default_max_tokens is not None
        and upstream.get("max_tokens") is None
        and upstream.get("max_completion_tokens") is None
    ):
        upstream[limit_param or "max_tokens"] = deployment.default_max_tokens
    if streaming:
        # Usage is always asked for, because cost accounting needs it; the gateway drops the
        # usage chunk again when the client did not ask for it.
        upstream["stream"] = True
        upstream["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    else:
        upstream.pop("stream", None)
        upstream.pop("stream_options", None)
    return upstream


def _adapted_message(
    message: dict[str, Any], developer_as_system: bool, join_text: bool
) -> dict[str, Any]:
    """Return ``message`` with role developer as system and text parts joined, as asked."""
    if developer_as_system and message.get("role") == "developer":
        message = {**message, "role": "system"}
    return _with_text_content(message) if join_text else message


def _with_text_content(message: dict[str, Any]) -> dict[str, Any]:
    """Join content that consists only of text parts into one string, newline-separated.

    The local model's server (llama-cpp-python 0.3.36) returns a 500 for content sent as a
    list of parts, text parts included, in every role, while OpenAI's API accepts them.
    An assistant's refusal parts count as text, because they are its earlier output. Content
    with parts of other types is left as sent.
    """
    content = message.get("content")
    if not isinstance(content, list) or not content:
        return message
    texts: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            return message
    return {**message, "content": "\n".join(texts)}


def _is_completion(completion: Any) -> bool:
    """Tell whether an upstream body has the shape of a chat completion: a list of choices."""
    if not isinstance(completion, dict):
        return False
    choices = completion.get("choices")
    return isinstance(choices, list) and bool(choices) and all(isinstance(c, dict) for c in choices)


_FAILURE_WORDS = {
    "timeout": "timed out",
    "connection": "connection failed",
    "stream": "broken stream",
    "server": "invalid response",
}


def _describe_failures(failures: list[UpstreamError], attempts: list[Attempt]) -> str:
    """Name each failed deployment with its HTTP status or failure kind, never the provider's text.

    ``_failed`` appends to both lists together, so the failed attempts pair with ``failures``.
    """
    failed = [attempt for attempt in attempts if attempt.error not in (None, CANCELLED)]
    parts = []
    for attempt, failure in zip(failed, failures, strict=False):
        cause = f"HTTP {failure.status}" if failure.status else _FAILURE_WORDS.get(failure.kind, failure.kind)
        parts.append(f"{attempt.deployment} ({cause})")
    return ", ".join(dict.fromkeys(parts)) or "no deployment answered"


def _final_error(
    last_error: UpstreamError | None, failures: list[UpstreamError], attempts: list[Attempt]
) -> GatewayError:
    if failures and all(failure.status == 429 for failure in failures):
        # The client's retry can succeed once the soonest deployment takes requests again, so
        # it gets a 429 with that wait instead of a 502 that it retries after its own backoff.
        waits = [f.retry_after_s for f in failures if f.retry_after_s is not None]
        wait = min(waits) if waits else None
        advice = f"Retry after {wait:g} s." if wait is not None else "Retry later."
        return UpstreamRateLimited(
            f"Every eligible deployment is rate limited by its provider. {advice}", wait
        )
    if last_error is not None and last_error.kind == "context":
        return InvalidRequest(
            "The conversation is too long for every eligible deployment's context window. "
            "Shorten it or lower max_tokens.",
            param="messages",
            code="context_length_exceeded",
        )
    error: GatewayError
    if failures and all(failure.kind == "timeout" for failure in failures):
        # Deployment names are public (GET /v1/models lists them), and the operator's fix is
        # usually a longer timeout_s for one of them.
        names = ", ".join(dict.fromkeys(a.deployment for a in attempts if a.error == "timeout"))
        error = UpstreamTimeout(
            f"Every eligible deployment timed out: {names}. Retry later, or ask the gateway's "
            "operators to raise these deployments' timeout_s."
        )
    else:
        error = UpstreamFailed(
            f"Every eligible deployment failed: {_describe_failures(failures, attempts)}. Retry "
            "later, or report this response's x-request-id to the gateway's operators."
        )
    if failures and all(failure.retry_after_s is not None for failure in failures):
        # Every deployment named a wait (a 503 with retry-after, say), so the client's retry
        # waits for the soonest one too.
        waits = [f.retry_after_s for f in failures if f.retry_after_s is not None]
        error.headers = retry_after_headers(min(waits))
    elif isinstance(error, UpstreamTimeout):
        # The request already waited out the timeouts of every candidate. The official OpenAI
        # clients would retry the 504 twice at once, and each retry waits for all of them
        # again, multiplying the load on providers that are already slow.
        error.headers = {"x-should-retry": "false"}
    return error


async def _close(stream: AsyncIterator[dict[str, Any]]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
