"""The FastAPI application factory: wiring only."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from router.api import (
    chat,
    completions,
    dashboard,
    embeddings,
    feedback,
    health,
    messages,
    metrics,
    models,
    responses,
    usage,
)
from router.api.anthropic_format import ENDPOINT as ANTHROPIC_ENDPOINT
from router.api.anthropic_format import MessagesRequest
from router.api.anthropic_format import render_error as render_anthropic_error
from router.api.internal_error import InternalErrorMiddleware
from router.api.openapi import install_request_schemas
from router.api.responses_format import ResponsesRequest
from router.api.schemas import ChatRequest
from router.errors import GatewayError, InvalidRequest, ModelNotFound, render_error
from router.runtime import Runtime, Scorer
from router.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from router.tracing.otel import GatewayTracing

log = structlog.get_logger("tierwise.app")

CHAT_PATH = "/v1/chat/completions"
# Response headers that a browser page may read from a cross-origin response. The official
# clients (openai-python 3.63 and anthropic 2.17 checked) read x-should-retry and the
# retry-after headers to decide on retries, and Anthropic's reads request-id, which
# /v1/messages sends.
CORS_EXPOSED_HEADERS = [
    "x-request-id",
    "request-id",
    "x-tierwise-tier",
    "x-tierwise-model",
    "x-tierwise-score",
    "x-tierwise-cost-usd",
    "x-tierwise-cache",
    "x-tierwise-upstream-request-id",
    "x-should-retry",
    "retry-after",
    "retry-after-ms",
    # OpenAI's rate-limit headers, which the gateway passes on from the deployment.
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
]


class GatewayApp(FastAPI):
    """FastAPI, except that ``POST /v1/chat/completions`` skips the routing machinery.

    That request goes through the user middleware (InternalErrorMiddleware) and Starlette's
    ExceptionMiddleware with the app's handlers, straight to ``chat.chat_completions``.
    It skips four layers:

    - ServerErrorMiddleware, because InternalErrorMiddleware already renders a response for
      every exception;
    - FastAPI's body-limit middleware, because ``create_app`` sets no ``max_body_size`` and
      ``read_json_body`` enforces the gateway's own limit;
    - route matching and FastAPI's request handler.

    Together they took about 0.1 ms of CPU per request in ``python -m bench.profile``.  Every other path takes the full stack, and so
    does a chat request whose ``path`` carries a ``root_path`` prefix.

    NOTE: FastAPI's exception telemetry (active only with an OpenTelemetry provider
    configured) does not see chat requests.
    """

    _chat_stack: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CHAT_PATH and scope["method"] == "POST":
            scope["app"] = self
            if self._chat_stack is None:
                self._chat_stack = self._build_chat_stack()
            await self._chat_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _build_chat_stack(self) -> ASGIApp:
        handlers = {
            key: handler
            for key, handler in self.exception_handlers.items()
            if key not in (500, Exception)
        }
        stack: ASGIApp = ExceptionMiddleware(_chat_endpoint(), handlers=handlers, debug=self.debug)
        for cls, args, kwargs in reversed(self.user_middleware):
            stack = cls(stack, *args, **kwargs)
        return stack


def _chat_endpoint() -> ASGIApp:
    """Return an ASGI app that serves the chat route without FastAPI's request handler."""
    route = next(r for r in chat.router.routes if isinstance(r, APIRoute) and r.path == CHAT_PATH)

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        # The same keys route matching would add, for code that reads them from the scope.
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, {}
        response = await chat.chat_completions(Request(scope, receive, send))
        await response(scope, receive, send)

    return endpoint


def freeze_startup_objects() -> int:
    """Move the objects alive after start-up out of the garbage collector's reach.

    Imports, the policy and the classifier leave a few hundred thousand long-lived
    objects.  Without ``gc.freeze`` every full collection walks all of them while
    requests wait; frozen, a full collection walks only what serving created.  Only the
    first app started in a process freezes, so a process that builds many apps, such as
    a test run, does not keep the garbage of earlier ones forever.
    Returns the number of frozen objects.
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
    return gc.get_freeze_count()


def create_app(
    settings: Settings | None = None,
    scorer: Scorer | None = None,
    tracer_provider: TracerProvider | None = None,
) -> GatewayApp:
    """Build the gateway app; raises PolicyError or ArtifactError when a file is invalid.

    With ``settings.tracing``, ``tracer_provider`` replaces the provider built from the
    ``OTEL_*`` environment variables, and TracingUnavailable is raised when the ``otel``
    extra is missing.
    """
    settings = settings or Settings()
    runtime = Runtime.build(settings, scorer)
    tracing: GatewayTracing | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.started_at = time.time()
        await runtime.start()
        frozen = freeze_startup_objects()
        log.info(
            "gateway_started",
            listen=f"http://{settings.host}:{settings.port}",
            policy=str(settings.policy),
            policy_version=runtime.policies.current.version,
            classifier=runtime.scorer.version,
            cache=runtime.cache.backend,
            outcomes=runtime.outcomes.backend,
            gc_frozen_objects=frozen,
        )
        try:
            yield
        finally:
            await runtime.stop()
            if tracing is not None:
                # Exporting the last spans blocks for up to OTEL_EXPORTER_OTLP_TIMEOUT.
                await asyncio.to_thread(tracing.shutdown)
            log.info("gateway_stopped")

    app = GatewayApp(title="Tierwise", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime
    for module in (
        chat, completions, messages, responses, embeddings, models, health, feedback, usage, metrics,
        dashboard,
    ):
        app.include_router(module.router)
    _add_error_handlers(app)
    app.add_middleware(InternalErrorMiddleware)
    # A browser's Origin header never ends in "/", while a URL copied from the address bar
    # does, and Starlette compares origins as exact strings.
    origins = [origin.strip().rstrip("/") for origin in settings.cors_origins.split(",")]
    origins = [origin for origin in origins if origin]
    if origins:
        # Outermost, so that error responses carry the headers too. Browsers send keys as
        # Authorization headers, not cookies, so credentials stay off.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    if settings.tracing:
        # Imported only here, so a gateway without tracing loads no OpenTelemetry SDK.
        from router.tracing import enable_tracing

        tracing = enable_tracing(app, runtime, tracer_provider)
    install_request_schemas(
        app,
        {
            "/v1/chat/completions": ChatRequest,
            "/v1/messages": MessagesRequest,
            "/v1/responses": ResponsesRequest,
            completions.ENDPOINT: completions.CompletionRequest,
            "/v1/feedback": feedback.Feedback,
            embeddings.ENDPOINT: embeddings.EmbeddingRequest,
        },
    )
    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def gateway_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return render_error(exc)

    async def validation_error(_: Request, exc: Exception) -> Response:
        return render_error(InvalidRequest("The request is invalid: check the parameters."))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            error: GatewayError = ModelNotFound(
                f"Unknown path {request.url.path}. This gateway serves /v1/chat/completions, "
                "/v1/completions, /v1/responses, /v1/messages, /v1/messages/count_tokens, /v1/embeddings, /v1/models, "
                "/v1/feedback, "
                "/v1/usage, /metrics, /dashboard, /healthz and /readyz."
                + _base_url_advice(app, request.url.path),
                code="not_found",
            )
        else:
            allowed = (exc.headers or {}).get("Allow")
            hint = f" Use {allowed}." if allowed else ""
            error = InvalidRequest(
                f"{request.method} is not supported on {request.url.path}.{hint}",
                code="method_not_allowed" if exc.status_code == 405 else None,
            )
            if exc.headers:
                error.headers = dict(exc.headers)
        error.status = exc.status_code
        if request.url.path.startswith(ANTHROPIC_ENDPOINT):
            return render_anthropic_error(error)
        return render_error(error)

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def _base_url_advice(app: FastAPI, path: str) -> str:
    """Return advice for a client whose ``base_url`` lacks or repeats the ``/v1`` prefix.

    OpenAI clients append ``/chat/completions`` to a ``base_url`` that must end in ``/v1``,
    while Anthropic clients append ``/v1/messages`` themselves.
    """
    if path.startswith("/v1/v1/") and _is_served(app, path.removeprefix("/v1")):
        return " The client's base_url must not end in /v1 when the client adds /v1 itself."
    if not path.startswith("/v1/") and _is_served(app, "/v1" + path):
        return " Set the client's base_url to end in /v1."
    return ""


def _is_served(app: FastAPI, path: str) -> bool:
    # A partial match is a route for the path with another method, which still shows that
    # the path exists.
    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "headers": []}
    return any(route.matches(scope)[0] != Match.NONE for route in app.routes)
