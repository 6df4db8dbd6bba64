"""A fast OpenAI-compatible mock upstream for benchmarks, on 127.0.0.1 only.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length request bodies) to serve

- ``POST .../chat/completions``: a JSON completion, or with ``"stream": true`` an SSE
  stream of ``--chunks`` content chunks, a finish chunk, a usage chunk when the request
  has ``stream_options.include_usage``, then ``data: [DONE]``;
- ``GET .../models`` and ``GET /health``: small JSON answers for readiness probes.

The server is a raw asyncio protocol on uvloop, so it spends a few tens of microseconds
per request and stays far from being the bottleneck of the system it measures.
``--delay-ms`` holds each answer back for a fixed time before its first byte, and
``--chunk-delay-ms`` spaces the stream's events; with both at 0 a stream is written in
one ``writelines`` call, one HTTP chunk per SSE event.

Run: ``python -m bench.mock_upstream --port 9100 --chunks 20``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

HOST = "127.0.0.1"
MAX_HEADER_BYTES = 64 * 1024
ANSWER_TEXT = "This is the mock upstream's answer."


@dataclass(frozen=True)
class MockConfig:
    """Shape of the mock's answers; delays in milliseconds."""

    chunks: int = 20
    delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0


def _head(status: str, content_type: bytes, length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type
        + b"\r\n" + framing + b"\r\nConnection: keep-alive\r\n\r\n"
    )


def _json_answer(status: str, payload: Any) -> bytes:
    body = orjson.dumps(payload)
    return _head(status, b"application/json", len(body)) + body


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(model: str, prompt_tokens: int) -> dict[str, Any]:
    """Return the non-streaming completion the mock sends for ``model``."""
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER_TEXT},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(prompt_tokens, 9),
    }


def stream_events(model: str, chunks: int, prompt_tokens: int, include_usage: bool) -> list[bytes]:
    """Return the SSE events (each ``data: ...\\n\\n``) of one streamed answer."""
    head = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}
    payloads: list[dict[str, Any]] = []
    for index in range(chunks):
        delta = {"content": f"word{index} "}
        if index == 0:
            delta["role"] = "assistant"
        payloads.append({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    payloads.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        payloads.append({**head, "choices": [], "usage": _usage(prompt_tokens, chunks)})
    events = [b"data: " + orjson.dumps(payload) + b"\n\n" for payload in payloads]
    events.append(b"data: [DONE]\n\n")
    return events


class MockProtocol(asyncio.Protocol):
    """One client connection: parses pipelined requests and answers each in order."""

    def __init__(self, config: MockConfig) -> None:
        self._config = config
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        # Answers go out in request order, so a delayed answer holds back later ones.
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport, so this is a cast.
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._process()

    def _process(self) -> None:
        while self._transport is not None and not self._busy:
            request = self._next_request()
            if request is None:
                return
            self._answer(*request)

    def _next_request(self) -> tuple[bytes, bytes, bytes] | None:
        """Take one whole request (method, path, body) off the buffer, or None if incomplete."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                self._fail(b"431 Request Header Fields Too Large")
            return None
        head = bytes(self._buffer[:end])
        request_line, _, header_block = head.partition(b"\r\n")
        length = _content_length(header_block)
        if len(self._buffer) < end + 4 + length:
            return None
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        method, path, _ = (request_line.split(b" ", 2) + [b"", b""])[:3]
        return method, path, body

    def _fail(self, status: bytes) -> None:
        if self._transport is not None:
            self._transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
            self._transport.close()

    def _answer(self, method: bytes, path: bytes, body: bytes) -> None:
        path = path.split(b"?", 1)[0]
        if method == b"POST" and path.endswith(b"/chat/completions"):
            self._chat(body)
        elif method == b"GET" and path.endswith(b"/models"):
            self._send([_json_answer("200 OK", {"object": "list", "data": []})])
        elif method == b"GET" and path in (b"/health", b"/healthz"):
            self._send([_json_answer("200 OK", {"status": "ok"})])
        else:
            self._send([_json_answer("404 Not Found", {"error": {"message": "not found"}})])

    def _chat(self, raw: bytes) -> None:
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._send([_json_answer("400 Bad Request", {"error": {"message": "invalid JSON"}})])
            return
        model = str(request.get("model") or "mock")
        prompt_tokens = max(1, len(raw) // 4)
        if not request.get("stream"):
            answer = orjson.dumps(completion_body(model, prompt_tokens))
            self._send([_head("200 OK", b"application/json", len(answer)) + answer])
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        events = stream_events(model, self._config.chunks, prompt_tokens, include_usage)
        parts = [_head("200 OK", b"text/event-stream", None)]
        parts.extend(_http_chunk(event) for event in events)
        parts.append(b"0\r\n\r\n")
        self._send(parts)

    def _send(self, parts: list[bytes]) -> None:
        delay = self._config.delay_ms / 1000
        spacing = self._config.chunk_delay_ms / 1000
        if delay <= 0 and spacing <= 0:
            assert self._transport is not None
            self._transport.writelines(parts)
            return
        self._busy = True
        asyncio.get_running_loop().create_task(self._send_later(parts, delay, spacing))

    async def _send_later(self, parts: list[bytes], delay: float, spacing: float) -> None:
        await asyncio.sleep(delay)
        for index, part in enumerate(parts):
            if self._transport is None:
                return
            if index > 1 and spacing > 0:
                await asyncio.sleep(spacing)
            self._transport.write(part)
        self._busy = False
        self._process()


def _content_length(header_block: bytes) -> int:
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


async def serve(port: int, config: MockConfig, ready: asyncio.Event | None = None) -> None:
    """Serve on 127.0.0.1:``port`` until cancelled; ``ready`` is set once it listens."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(config), HOST, port, backlog=1024)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9100, help="TCP port on 127.0.0.1.")
    parser.add_argument("--chunks", type=int, default=20, help="Content chunks per stream.")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="Fixed wait before each answer's first byte, in milliseconds.")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0,
                        help="Wait between two SSE events of a stream, in milliseconds.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    config = MockConfig(args.chunks, args.delay_ms, args.chunk_delay_ms)
    with contextlib.suppress(KeyboardInterrupt):
        event_loop_runner()(serve(args.port, config))


def event_loop_runner() -> Any:
    """Return ``uvloop.run`` when uvloop is installed, else ``asyncio.run``."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


if __name__ == "__main__":
    main()
