"""OpenTelemetry spans for the chat endpoints and ``/v1/embeddings``.

The traced paths are ``/v1/chat/completions``, ``/v1/completions``, ``/v1/messages``,
``/v1/responses`` and ``/v1/embeddings`` (``TRACED_PATHS``).

Installed by :func:`router.tracing.enable_tracing` only, so the request path of a gateway
without tracing runs none of this. Installing wraps four runtime components and adds one
ASGI middleware:

- :class:`TracingMiddleware` opens the SERVER span of each request, joined to the client's
  W3C ``traceparent``/``tracestate``, and binds ``trace_id`` to structlog's context, so the
  request log line carries it;
- :class:`TracedOutcomeLog` adds ``trace_id`` to the request's outcome record and keeps the
  record, whose tier, deployment, tokens, cost and status the middleware copies onto the
  SERVER span when the request ends;
- :class:`TracedScorer` and :class:`TracedCache` add the ``tierwise.classify`` and
  ``tierwise.cache.lookup`` events to the SERVER span. They are events, not child spans,
  because the Python SDK (1.45) takes tens of microseconds of CPU to record and encode each
  span, and a request's CPU budget is a fraction of a millisecond;
- :class:`TracedTransport` adds a CLIENT span for each upstream attempt (``chat <model>``
  or ``embeddings <model>``) and makes it the current span while the transport sends the
  request, so the transport's propagator writes that span's ``traceparent`` into the
  upstream request.

Attribute names follow the OpenTelemetry HTTP and GenAI semantic conventions
(``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ...); Tierwise's own are under
``tierwise.``. No span carries prompt or completion text, error messages from providers
(they can quote the prompt) or keys.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import structlog
from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.outcomes.log import OutcomeLog
from router.policy.schema import Deployment, EmbeddingDeployment, Policy
from router.runtime import ResponseCache, Runtime, Scorer
from router.upstream.base import Transport, UpstreamError, UpstreamHeaders
from router.upstream.direct import DirectTransport
from router.upstream.litellm_path import LitellmTransport

log = structlog.get_logger("tierwise.tracing")

TRACED_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/responses", "/v1/embeddings"}
)
"""Paths whose POST requests get a SERVER span; every other request passes untouched."""
DEFAULT_SERVICE_NAME = "tierwise"
"""``service.name`` when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES sets one."""

# Only W3C trace context crosses the gateway, in both directions, because the global
# propagator (OTEL_PROPAGATORS) would also forward the client's baggage to providers.
_PROPAGATOR = TraceContextTextMapPropagator()
_REQUEST: contextvars.ContextVar[RequestTrace] = contextvars.ContextVar("tierwise_request_trace")


def build_provider() -> TracerProvider:
    """Build a tracer provider that exports over OTLP/HTTP, configured by ``OTEL_*`` variables.

    The SDK reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default: parentbased_always_on),
    OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME and OTEL_BSP_*; the exporter reads
    OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (default
    http://localhost:4318/v1/traces), OTEL_EXPORTER_OTLP_HEADERS and OTEL_EXPORTER_OTLP_TIMEOUT.
    """
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # shutdown_on_exit=False, because the app's shutdown flushes and stops it.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


@dataclass
class RequestTrace:
    """The tracing state of one request, shared by the tasks that serve it."""

    span: Span
    trace_id: str | None
    """32 hex digits, also for a trace that is not sampled. With the SDK disabled
    (OTEL_SDK_DISABLED=true) it is the client's trace id, or None without a traceparent."""
    attempts: int = 0
    """Upstream attempts started so far; the next attempt's ``tierwise.attempt`` is one more."""
    response_model: str | None = None
    """The ``model`` field of the upstream response that the client got."""
    record: dict[str, Any] | None = None
    """The outcome record, once the request is finished."""


@dataclass
class GatewayTracing:
    """Tracing of one gateway app: the provider, its tracer and the runtime it wraps."""

    runtime: Runtime
    provider: TracerProvider
    tracer: trace.Tracer = field(init=False)
    _tiers: tuple[Policy, dict[str, str]] | None = None
    _targets: dict[int, tuple[Deployment | EmbeddingDeployment, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tracer = self.provider.get_tracer("tierwise")

    @classmethod
    def install(
        cls, app: FastAPI, runtime: Runtime, provider: TracerProvider | None = None
    ) -> GatewayTracing:
        """Wrap ``runtime``'s transports, cache, outcome log and scorer, and add the middleware.

        The module docstring lists what each wrapper records.
        """
        tracing = cls(runtime, provider or build_provider())
        for transport in (runtime.direct, runtime.litellm):
            if isinstance(transport, DirectTransport | LitellmTransport):
                transport.propagate = tracing.upstream_headers
        runtime.direct = TracedTransport(runtime.direct, tracing)
        runtime.litellm = TracedTransport(runtime.litellm, tracing)
        runtime.cache = TracedCache(runtime.cache)
        # TracedOutcomeLog forwards every attribute except emit to the log it wraps, so the
        # cast is safe.
        runtime.outcomes = cast(OutcomeLog, TracedOutcomeLog(runtime.outcomes))
        runtime.scorer = TracedScorer(runtime.scorer)
        app.add_middleware(TracingMiddleware, tracing=tracing)
        log.info(
            "tracing_enabled",
            service_name=tracing.provider.resource.attributes.get(SERVICE_NAME),
            sampler=tracing.provider.sampler.get_description(),
        )
        return tracing

    def shutdown(self) -> None:
        """Export the spans still queued and stop the provider, blocking up to the export timeout."""
        self.provider.shutdown()

    @staticmethod
    def upstream_headers(headers: dict[str, str]) -> dict[str, str]:
        """Return ``headers`` plus the current span's ``traceparent`` (and ``tracestate``)."""
        carrier = dict(headers)
        _PROPAGATOR.inject(carrier)
        return carrier

    def tier_of(self, deployment: Deployment | EmbeddingDeployment) -> str | None:
        """Return the tier of ``deployment`` in the current policy, or None if it has none."""
        policy = self.runtime.policies.current.policy
        cached = self._tiers
        if cached is None or cached[0] is not policy:
            tiers = {
                listed.name: name
                for name, tier in policy.ordered_tiers()
                for listed in tier.deployments
            }
            cached = self._tiers = (policy, tiers)
        return cached[1].get(deployment.name)

    def attempt_attributes(self, deployment: Deployment | EmbeddingDeployment) -> dict[str, Any]:
        """Return the attributes that every attempt span of ``deployment`` carries."""
        cached = self._targets.get(id(deployment))
        if cached is not None and cached[0] is deployment:
            return cached[1]
        provider, _, _ = deployment.model.partition("/")
        model = deployment.upstream_model if deployment.uses_direct_path else deployment.model
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "tierwise.deployment": deployment.name,
            "tierwise.transport": "direct" if deployment.uses_direct_path else "litellm",
        }
        tier = self.tier_of(deployment)
        if tier is not None:
            attributes["tierwise.tier"] = tier
        if deployment.api_base:
            # Only the host and port: an api_base may carry credentials in its user info.
            address = urlsplit(deployment.api_base)
            if address.hostname:
                attributes["server.address"] = address.hostname
            if address.port:
                attributes["server.port"] = address.port
        if len(self._targets) > 1024:
            self._targets.clear()
        self._targets[id(deployment)] = (deployment, attributes)
        return attributes

    def start_attempt(
        self, deployment: Deployment | EmbeddingDeployment, stream: bool, operation: str = "chat"
    ) -> Span:
        """Start the CLIENT span of one upstream attempt, as a child of the current span."""
        attributes = dict(self.attempt_attributes(deployment))
        attributes["tierwise.stream"] = stream
        attributes["gen_ai.operation.name"] = operation
        request = _REQUEST.get(None)
        if request is not None:
            request.attempts += 1
            attributes["tierwise.attempt"] = request.attempts
        return self.tracer.start_span(
            f"{operation} {attributes['gen_ai.request.model']}", kind=SpanKind.CLIENT,
            attributes=attributes,
        )


# Upstream attempts ------------------------------------------------------------------------


class TracedTransport:
    """A transport whose calls each get a CLIENT span, current while the request is sent."""

    def __init__(self, inner: Transport, tracing: GatewayTracing) -> None:
        self.inner = inner
        self.tracing = tracing

    async def close(self) -> None:
        await self.inner.close()

    async def complete(
        self, deployment: Deployment, body: dict[str, Any], seen: UpstreamHeaders | None = None
    ) -> dict[str, Any]:
        span = self.tracing.start_attempt(deployment, stream=False)
        return await _traced(span, self.inner.complete(deployment, body, seen))

    async def embed(
        self,
        deployment: EmbeddingDeployment,
        body: dict[str, Any],
        seen: UpstreamHeaders | None = None,
    ) -> dict[str, Any]:
        span = self.tracing.start_attempt(deployment, stream=False, operation="embeddings")
        return await _traced(span, self.inner.embed(deployment, body, seen))

    async def stream(
        self, deployment: Deployment, body: dict[str, Any], seen: UpstreamHeaders | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        span = self.tracing.start_attempt(deployment, stream=True)
        chunks = self.inner.stream(deployment, body, seen)
        usage: Any = None
        finish_reasons: list[str] = []
        try:
            # Current only while the first chunk is awaited, which is when the transport
            # sends the request. A context attached across a yield would be detached in
            # another task's context, because the relay of later chunks runs in one.
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                first = await chunks.__anext__()
            except StopAsyncIteration:
                # Returning ends this generator, so the caller gets StopAsyncIteration too.
                # Raised inside a generator, StopAsyncIteration would become a RuntimeError.
                span.set_attribute("error.type", "stream")
                span.set_status(StatusCode.ERROR, "empty stream")
                return
            finally:
                otel_context.detach(token)
            _note_response_model(span, first)
            usage = _collect(first, finish_reasons) or usage
            yield first
            async for chunk in chunks:
                usage = _collect(chunk, finish_reasons) or usage
                yield chunk
        except BaseException as exc:
            _attempt_failed(span, exc)
            raise
        finally:
            _set_usage(span, usage, finish_reasons)
            span.end()
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()


async def _traced(span: Span, call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Await one non-streaming upstream ``call`` with ``span`` current, then record and end it.

    A completion's finish reasons and an embeddings response's usage go into the span the
    same way, because an embeddings response has no choices.
    """
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        response = await call
    except BaseException as exc:
        _attempt_failed(span, exc)
        raise
    else:
        _note_response_model(span, response)
        finish_reasons: list[str] = []
        _set_usage(span, _collect(response, finish_reasons), finish_reasons)
    finally:
        otel_context.detach(token)
        span.end()
    return response


def _note_response_model(span: Span, payload: Any) -> None:
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, str) or not model:
        return
    span.set_attribute("gen_ai.response.model", model)
    request = _REQUEST.get(None)
    if request is not None:
        request.response_model = model


def _collect(chunk: Any, finish_reasons: list[str]) -> Any:
    """Add the finish reasons of a chunk or completion to ``finish_reasons`` and return its usage."""
    if not isinstance(chunk, dict):
        return None
    for choice in chunk.get("choices") or ():
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        if isinstance(reason, str):
            finish_reasons.append(reason)
    return chunk.get("usage")


def _set_usage(span: Span, usage: Any, finish_reasons: Sequence[str]) -> None:
    if isinstance(usage, dict):
        for source, name in (
            ("prompt_tokens", "gen_ai.usage.input_tokens"),
            ("completion_tokens", "gen_ai.usage.output_tokens"),
        ):
            value = usage.get(source)
            if type(value) is int:
                span.set_attribute(name, value)
    if finish_reasons:
        span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))


def _attempt_failed(span: Span, exc: BaseException) -> None:
    """Mark an attempt span failed, with the error's kind and status but not its message."""
    if isinstance(exc, UpstreamError):
        span.set_attribute("error.type", exc.kind)
        if exc.status is not None:
            span.set_attribute("http.response.status_code", exc.status)
        span.set_status(StatusCode.ERROR, exc.kind)
    elif isinstance(exc, GeneratorExit):
        # The client or the gateway closed the stream after it was opened.
        span.set_attribute("tierwise.stream_closed", True)
    else:
        name = "cancelled" if isinstance(exc, asyncio.CancelledError) else type(exc).__qualname__
        span.set_attribute("error.type", name)
        span.set_status(StatusCode.ERROR, name)


# Classification, cache and outcome ----------------------------------------------------------


class TracedScorer:
    """A scorer whose ``score`` calls each add a ``tierwise.classify`` event to the request's span."""

    def __init__(self, inner: Scorer) -> None:
        self.inner = inner
        self.version = inner.version
        self.tiers = inner.tiers

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def score(self, messages: list[Any]) -> dict[str, float]:
        started_ns = time.time_ns()
        scores = self.inner.score(messages)
        request = _REQUEST.get(None)
        if request is not None and request.span.is_recording():
            attributes: dict[str, Any] = {
                "tierwise.classifier_version": self.version,
                "tierwise.duration_ms": (time.time_ns() - started_ns) / 1e6,
            }
            for tier, value in scores.items():
                attributes[f"tierwise.score.{tier}"] = value
            request.span.add_event("tierwise.classify", attributes, started_ns)
        return scores


class TracedCache:
    """A response cache whose lookups each add a ``tierwise.cache.lookup`` event to the request's span."""

    def __init__(self, inner: ResponseCache) -> None:
        self.inner = inner
        self.backend = inner.backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, key: str) -> bytes | None:
        started_ns = time.time_ns()
        value = await self.inner.get(key)
        request = _REQUEST.get(None)
        if request is not None and request.span.is_recording():
            attributes: dict[str, Any] = {
                "tierwise.cache.backend": self.backend,
                "tierwise.cache.found": value is not None,
                "tierwise.duration_ms": (time.time_ns() - started_ns) / 1e6,
            }
            request.span.add_event("tierwise.cache.lookup", attributes, started_ns)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        await self.inner.set(key, value, ttl_s)

    async def close(self) -> None:
        await self.inner.close()


class TracedOutcomeLog:
    """An outcome log that adds ``trace_id`` to the record of each traced request.

    Every other attribute is the wrapped log's, so callers use it as an ``OutcomeLog``.
    """

    def __init__(self, inner: OutcomeLog) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def emit(self, record: dict[str, Any]) -> None:
        request = _REQUEST.get(None)
        if request is not None and request.record is None and record.get("type") == "request":
            if request.trace_id is not None:
                record["trace_id"] = request.trace_id
            request.record = record
        self.inner.emit(record)


# Server spans -------------------------------------------------------------------------------


class _AsgiHeaders(Getter[list[tuple[bytes, bytes]]]):
    """Reader of header values from an ASGI scope's list of (lower-case name, value) pairs."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for header, value in carrier if header == name]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier]


_ASGI_HEADERS = _AsgiHeaders()


class TracingMiddleware:
    """Open the SERVER span of each POST to a traced path, and pass other requests untouched.

    The span ends when the response has been sent, or the stream ended or was cut, which
    is when the app returns. An app exception marks it failed with the exception's type,
    never its message.
    """

    def __init__(self, app: ASGIApp, tracing: GatewayTracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in TRACED_PATHS:
            await self.app(scope, receive, send)
            return
        tracing = self.tracing
        runtime = tracing.runtime
        if type(runtime.scorer) is not TracedScorer:
            # A classifier published through Redis replaces the runtime's scorer.
            runtime.scorer = TracedScorer(runtime.scorer)
        parent = _PROPAGATOR.extract(scope["headers"], getter=_ASGI_HEADERS)
        path = scope["path"]
        span = tracing.tracer.start_span(
            f"POST {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "POST",
                "http.route": path,
                "url.path": path,
                "url.scheme": scope.get("scheme", "http"),
                "gen_ai.operation.name": "embeddings" if path == "/v1/embeddings" else "chat",
            },
        )
        span_context = span.get_span_context()
        trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else None
        request = RequestTrace(span, trace_id)
        status: int | None = None

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        request_token = _REQUEST.set(request)
        context_token = otel_context.attach(trace.set_span_in_context(span, parent))
        log_tokens = (
            structlog.contextvars.bind_contextvars(trace_id=trace_id) if trace_id else {}
        )
        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:
            name = "cancelled" if isinstance(exc, asyncio.CancelledError) else type(exc).__qualname__
            span.set_attribute("error.type", name)
            span.set_status(StatusCode.ERROR, name)
            raise
        finally:
            structlog.contextvars.reset_contextvars(**log_tokens)
            otel_context.detach(context_token)
            _REQUEST.reset(request_token)
            _end_request(request, status)


def _end_request(request: RequestTrace, sent_status: int | None) -> None:
    """Copy the outcome record onto the SERVER span and end it.

    The record's status wins over the HTTP status sent, because a stream that failed or was
    cut after its 200 header has a 502 or 499 in the record. Following the OpenTelemetry HTTP
    semantic conventions for SERVER spans, only a status of 500 or more marks the span failed,
    and a client error gets ``error.type`` only.
    """
    span = request.span
    record = request.record
    status = sent_status
    if record is not None and span.is_recording():
        status = record.get("status", status)
        _apply_record(span, record, request.response_model)
    if sent_status is not None:
        span.set_attribute("http.response.status_code", sent_status)
    if status is not None and status >= 500:
        span.set_status(StatusCode.ERROR, str(status))
    span.end()


def _apply_record(span: Span, record: dict[str, Any], response_model: str | None) -> None:
    attributes: dict[str, Any] = {
        "gen_ai.request.model": record.get("requested_model"),
        "gen_ai.response.model": response_model,
        "gen_ai.usage.input_tokens": record.get("tokens_in"),
        "gen_ai.usage.output_tokens": record.get("tokens_out"),
        "tierwise.request_id": record.get("request_id"),
        "tierwise.tenant": record.get("tenant"),
        "tierwise.tier": record.get("tier"),
        "tierwise.deployment": record.get("model"),
        "tierwise.cache_hit": record.get("cache_hit"),
        "tierwise.cost_usd": record.get("cost_usd"),
        "tierwise.stream": record.get("stream"),
        "tierwise.attempts": len(record.get("attempts") or ()),
        "error.type": record.get("error"),
        "tierwise.status": record.get("status"),
    }
    # None is not a valid attribute value, and the SDK would log a warning for each one.
    span.set_attributes({name: value for name, value in attributes.items() if value is not None})
