"""The FastAPI application factory: wiring only."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from router.api import chat, dashboard, feedback, health, messages, metrics, models, usage
from router.api.anthropic_format import MessagesRequest
from router.api.internal_error import InternalErrorMiddleware
from router.api.openapi import install_request_schemas
from router.api.schemas import ChatRequest
from router.errors import GatewayError, InvalidRequest, ModelNotFound, render_error
from router.runtime import Runtime, Scorer
from router.settings import Settings

log = structlog.get_logger("tierwise.app")


def create_app(settings: Settings | None = None, scorer: Scorer | None = None) -> FastAPI:
    """Build the gateway app; raises PolicyError or ArtifactError when a file is invalid."""
    settings = settings or Settings()
    runtime = Runtime.build(settings, scorer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.started_at = time.time()
        await runtime.start()
        log.info(
            "gateway_started",
            policy=str(settings.policy),
            policy_version=runtime.policies.current.version,
            classifier=runtime.scorer.version,
            cache=runtime.cache.backend,
            outcomes=runtime.outcomes.backend,
        )
        try:
            yield
        finally:
            await runtime.stop()
            log.info("gateway_stopped")

    app = FastAPI(title="Tierwise", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime
    for module in (chat, messages, models, health, feedback, usage, metrics, dashboard):
        app.include_router(module.router)
    _add_error_handlers(app)
    app.add_middleware(InternalErrorMiddleware)
    install_request_schemas(
        app,
        {
            "/v1/chat/completions": ChatRequest,
            "/v1/messages": MessagesRequest,
            "/v1/feedback": feedback.Feedback,
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
                "/v1/messages, /v1/models, /v1/feedback, /v1/usage, /metrics and /dashboard.",
                code="not_found",
            )
        else:
            error = InvalidRequest(f"{request.method} is not supported on {request.url.path}.")
        error.status = exc.status_code
        return render_error(error)

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
