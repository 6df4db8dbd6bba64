"""An embeddings upstream that injects faults and otherwise forwards to a real model server.

Each ``POST /v1/embeddings`` takes the oldest queued action, or the default one when the
queue is empty.  ``forward`` sends the body's ``model`` and ``input`` to ``forward_to`` (a
llama.cpp server on 127.0.0.1), so successful responses carry real vectors. The other actions
fail the way providers do::

    with FakeEmbeddings(forward_to=server.base_url) as fake:
        fake.enqueue("http_500", "forward")
        ...  # first request: HTTP 500; second: the real model's vectors

Received bodies are kept in ``requests`` and their headers in ``headers``, so a test can check
what the gateway sent.
"""

from __future__ import annotations

import asyncio
import base64
import math
import struct
import threading
from collections import deque
from typing import Any, Literal, Self

import aiohttp
from aiohttp import web

Action = Literal[
    "forward", "http_400", "http_500", "http_429", "hang", "malformed_json", "wrong_count",
    "reversed", "duplicate_index", "base64", "invalid_base64", "http_500_quoting_input",
    "nan",
]
"""What the next request gets. ``reversed`` sends the vectors in reverse order, each with its
own index; ``duplicate_index`` gives every vector index 0; ``base64`` encodes the vectors as
OpenAI does for encoding_format=base64; ``invalid_base64`` sends text that is not base64;
``http_500_quoting_input`` is an HTTP 500 whose message quotes the body's input; ``nan``
sets each vector's first value to NaN, which Python's json module writes as a bare NaN."""
HANG_S = 8.0
"""Seconds that ``hang`` waits before it forwards the request, longer than the tests' timeout_s."""


class FakeEmbeddings:
    def __init__(self, forward_to: str) -> None:
        self.forward_to = forward_to.rstrip("/")
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        """The headers of each request in ``requests``, with lower-case names."""
        self._actions: deque[Action] = deque()
        self.default: Action = "forward"
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="fake-embeddings")
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *actions: Action) -> None:
        with self._lock:
            self._actions.extend(actions)

    def reset(self) -> None:
        with self._lock:
            self._actions.clear()
            self.requests.clear()
            self.headers.clear()
        self.default = "forward"

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def _next_action(self) -> Action:
        with self._lock:
            return self._actions.popleft() if self._actions else self.default

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.headers.append({name.lower(): value for name, value in request.headers.items()})
        action = self._next_action()
        if action == "http_400":
            return web.json_response(
                {"error": {"message": "input is not supported", "type": "invalid_request_error",
                           "param": "input"}},
                status=400,
            )
        if action == "http_500":
            return web.json_response(
                {"error": {"message": "injected failure", "type": "server_error"}}, status=500
            )
        if action == "http_500_quoting_input":
            return web.json_response(
                {"error": {"message": f"cannot embed {body.get('input')}", "type": "server_error"}},
                status=500,
            )
        if action == "http_429":
            return web.json_response(
                {"error": {"message": "rate limited", "type": "rate_limit_error"}},
                status=429, headers={"retry-after": "7"},
            )
        if action == "hang":
            await asyncio.sleep(HANG_S)
        if action == "malformed_json":
            return web.Response(body=b'{"data": [', content_type="application/json")
        answer = await self._forward(body)
        if action == "wrong_count":
            answer["data"] = answer["data"][:-1]
        if action == "reversed":
            answer["data"] = answer["data"][::-1]
        if action == "duplicate_index":
            answer["data"] = [{**item, "index": 0} for item in answer["data"]]
        if action == "base64":
            answer["data"] = [
                {**item, "embedding": base64.b64encode(
                    struct.pack(f"<{len(item['embedding'])}f", *item["embedding"])).decode()}
                for item in answer["data"]
            ]
        if action == "nan":
            answer["data"] = [
                {**item, "embedding": [math.nan, *item["embedding"][1:]]} for item in answer["data"]
            ]
        if action == "invalid_base64":
            answer["data"] = [{**item, "embedding": "not base64!"} for item in answer["data"]]
        return web.json_response(answer, headers={"x-request-id": "fake-embeddings-req"})

    async def _forward(self, body: dict[str, Any]) -> dict[str, Any]:
        # llama.cpp's server validates the body, so only the fields it reads are sent.
        payload = {"model": body["model"], "input": body["input"]}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.forward_to}/embeddings", json=payload) as response,
        ):
            answer: dict[str, Any] = await response.json()
            return answer
