"""Chat requests skip FastAPI's routing stack but keep the app's middleware and scope keys."""

from __future__ import annotations

from typing import Any, ClassVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.gateway.conftest import GatewayKit

MESSAGES = [{"role": "user", "content": "Say hello."}]


class RecordingMiddleware:
    """Pure ASGI middleware that marks every response and records the scope's route."""

    seen_routes: ClassVar[list[Any]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def marked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-test-middleware", b"seen")]
            await send(message)

        await self.app(scope, receive, marked_send)
        route = scope.get("route")
        RecordingMiddleware.seen_routes.append(getattr(route, "path", None))


async def test_user_middleware_runs_on_chat(kit: GatewayKit) -> None:
    RecordingMiddleware.seen_routes = []
    async with kit.running() as gateway:
        gateway.app.add_middleware(RecordingMiddleware)
        chat = await gateway.chat({"model": "auto", "messages": MESSAGES})
        models = await gateway.client.get(
            "/v1/models", headers={"Authorization": f"Bearer {gateway.api_key}"}
        )

    assert chat.status_code == 200
    assert chat.headers["x-test-middleware"] == "seen"
    assert models.headers["x-test-middleware"] == "seen"
    assert RecordingMiddleware.seen_routes == ["/v1/chat/completions", "/v1/models"]


async def test_chat_gateway_error_keeps_handler(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.chat({"model": "no-such-model", "messages": MESSAGES})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert response.headers["x-request-id"].startswith("req-")


async def test_chat_path_with_slash_uses_full_stack(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.post(
            "/v1/chat/completions/",
            json={"model": "auto", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {gateway.api_key}"},
            follow_redirects=False,
        )

    # Starlette's router redirects to the path without the slash; the fast path never does.
    assert response.status_code == 307
    assert response.headers["location"] == "http://127.0.0.1/v1/chat/completions"
