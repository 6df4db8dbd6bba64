"""The minimum cost of a Python pass-through gateway: the benchmark target ``floor``.

A bare ASGI application on the same server stack as ``tierwise serve`` (uvicorn with uvloop
and the gateway's HTTP protocol) and the same upstream client (``router.upstream.http1``).
It reads the request body, posts it unchanged to the upstream and returns the upstream's
bytes unchanged, streamed or not. It does no parsing, validation, authentication, routing,
classification, caching, accounting or logging, so its CPU time per request is a floor for
any gateway written this way, and the difference to Tierwise's is what Tierwise's features
cost.

Run: ``python -m bench.floor_proxy --port 9200 --upstream http://127.0.0.1:9100``
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from router.http_protocol import GatewayHttpProtocol
from router.upstream.http1 import Http1Pool

_JSON_HEADERS = [(b"content-type", b"application/json")]
_STREAM_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_UPSTREAM_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer not-needed"}
_TIMEOUT_S = 30.0


class FloorProxy:
    """ASGI application that relays ``POST /v1/chat/completions`` to one upstream."""

    def __init__(self, upstream: str) -> None:
        self.url = upstream.rstrip("/") + "/v1/chat/completions"
        self.pool: Http1Pool | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["method"] == "GET":
            # The readiness URL of the benchmark harness.
            await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        assert self.pool is not None
        response = await self.pool.post(self.url, body, _UPSTREAM_HEADERS, connect_timeout=_TIMEOUT_S)
        if b'"stream":true' not in body.replace(b" ", b""):
            payload = await response.read()
            await send({"type": "http.response.start", "status": response.status,
                        "headers": _JSON_HEADERS})
            await send({"type": "http.response.body", "body": payload})
            return
        await send({"type": "http.response.start", "status": response.status,
                    "headers": _STREAM_HEADERS})
        async for chunk in response.iter_chunks(_TIMEOUT_S):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = Http1Pool()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1.")
    parser.add_argument("--upstream", required=True, help="Base URL of the upstream, without /v1.")
    args = parser.parse_args()
    config = uvicorn.Config(FloorProxy(args.upstream), host="127.0.0.1", port=args.port,
                            loop="uvloop", http=GatewayHttpProtocol, access_log=False,
                            log_level="warning", log_config=None)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
