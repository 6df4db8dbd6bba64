"""The direct path's HTTP/1.1 client against small servers that misbehave on purpose.

Each server is a raw asyncio server on 127.0.0.1 that writes fixed protocol bytes, so the
cases cover framing, keep-alive, compression, TLS and failures rather than model output.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Self

import pytest
import trustme

from router.policy.schema import Deployment
from router.upstream import http1
from router.upstream.direct import DirectTransport
from router.upstream.http1 import (
    MAX_RESPONSE_HEADERS,
    BadResponse,
    ConnectionClosed,
    Http1Pool,
    Origin,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEADERS = {"Content-Type": "application/json"}


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """Read one request; return its head and body, or None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def response(body: bytes, *extra: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*parts: bytes) -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
    for part in parts:
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


class Server:
    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self._server: asyncio.base_events.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client left, or the test ended while this handler waited
        finally:
            writer.close()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{port}/v1/chat/completions"


def keep_alive(answer: bytes, server_log: list[tuple[bytes, bytes]] | None = None) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            if server_log is not None:
                server_log.append(request)
            writer.write(answer)
            await writer.drain()

    return handler


@pytest.fixture
async def pool() -> AsyncIterator[Http1Pool]:
    client = Http1Pool()
    yield client
    client.close()


async def test_request_bytes_and_keep_alive_reuse(pool: Http1Pool) -> None:
    log: list[tuple[bytes, bytes]] = []
    async with Server(keep_alive(response(b'{"ok": 1}'), log)) as server:
        for _ in range(3):
            reply = await pool.post(server.url, b'{"a": 1}', HEADERS, connect_timeout=5)
            assert reply.status == 200
            assert await reply.read() == b'{"ok": 1}'
    assert server.connections == 1
    head, body = log[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in head
    assert b"\r\nContent-Length: 8\r\n" in head
    assert body == b'{"a": 1}'


async def test_chunked_stream_arrives_in_order(pool: Http1Pool) -> None:
    events = [b"data: {\"n\": %d}\n\n" % n for n in range(20)]
    async with Server(keep_alive(chunked(*events))) as server:
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        received = b"".join([chunk async for chunk in reply.iter_chunks(5)])
        assert received == b"".join(events)
        # The connection went back to the pool and serves the next request.
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        assert await reply.read() == b"".join(events)
    assert server.connections == 1


async def test_gzip_body_is_decoded(pool: Http1Pool) -> None:
    body = gzip.compress(b'{"zipped": true}')
    async with Server(keep_alive(response(body, "Content-Encoding: gzip"))) as server:
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        assert await reply.read() == b'{"zipped": true}'


@pytest.mark.parametrize("encoded", [False, True], ids=["plain", "gzip"])
async def test_body_over_limit_is_bad_response(pool: Http1Pool, encoded: bool) -> None:
    body = b"x" * 5000
    answer = response(gzip.compress(body), "Content-Encoding: gzip") if encoded else response(body)
    async with Server(keep_alive(answer)) as server:
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        with pytest.raises(BadResponse, match="longer than 4096 bytes"):
            await reply.read(max_bytes=4096)
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        assert await reply.read(max_bytes=5000) == body


async def test_chunked_body_over_limit_is_bad_response(pool: Http1Pool) -> None:
    parts = [b"y" * 3000] * 3
    async with Server(keep_alive(chunked(*parts))) as server:
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        with pytest.raises(BadResponse, match="longer than 4096 bytes"):
            await reply.read(max_bytes=4096)
        # A body read in full leaves a reusable connection, one cut short a closed one.
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        assert await reply.read() == b"".join(parts)


async def test_connection_close_is_not_reused(pool: Http1Pool) -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(b"{}", "Connection: close"))
        await writer.drain()

    async with Server(once) as server:
        for _ in range(2):
            reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
            assert await reply.read() == b"{}"
    assert server.connections == 2


async def test_idle_connection_closed_by_server_is_retried_once(pool: Http1Pool) -> None:
    # The server responds to one request per connection without saying so, then closes.
    # The pooled connection looks alive until the next request finds it closed.
    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(b"{}"))
        await writer.drain()
        await read_request(reader)  # the second request on this connection is dropped

    async with Server(one_then_close) as server:
        for _ in range(3):
            reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
            assert await reply.read() == b"{}"
    assert server.connections == 3


async def test_close_mid_body_is_an_error(pool: Http1Pool) -> None:
    async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\"")
        await writer.drain()

    async with Server(truncated) as server:
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        with pytest.raises(ConnectionClosed):
            await reply.read()


async def test_new_connection_hang_up_is_an_error(pool: Http1Pool) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with Server(hang_up) as server:
        with pytest.raises(ConnectionClosed):
            await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
    assert server.connections == 1


async def test_garbage_is_a_bad_response(pool: Http1Pool) -> None:
    async with Server(keep_alive(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")) as server:
        with pytest.raises(BadResponse):
            await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)


async def test_chunks_already_received_come_as_one(pool: Http1Pool) -> None:
    events = [b"data: {\"n\": %d}\n\n" % n for n in range(20)]
    async with Server(keep_alive(chunked(*events))) as server:
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        await asyncio.sleep(0.2)  # let the whole body arrive before reading
        pieces = [chunk async for chunk in reply.iter_chunks(5)]
        assert pieces == [b"".join(events)]


async def test_silent_stream_times_out_and_is_not_reused(pool: Http1Pool) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    async with Server(stall) as server:
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        chunks = reply.iter_chunks(0.2)
        assert await anext(chunks) == b"hello"
        with pytest.raises(TimeoutError):
            await anext(chunks)
        assert pool._take_idle(Origin.parse(server.url)) is None


async def test_abandoned_stream_closes_its_connection(pool: Http1Pool) -> None:
    async def unfinished(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked(b"data: {}\n\n")[:-5])  # without the final empty chunk
        await writer.drain()
        await asyncio.sleep(30)

    async with Server(unfinished) as server:
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        chunks = reply.iter_chunks(5)
        await anext(chunks)
        await chunks.aclose()
        assert pool._take_idle(Origin.parse(server.url)) is None


async def test_large_stream_pauses_and_resumes_reading(pool: Http1Pool) -> None:
    part = b"x" * 65536
    parts = [part] * 64  # 4 MiB, past the pause threshold
    async with Server(keep_alive(chunked(*parts))) as server:
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        await asyncio.sleep(0.2)  # let the client's buffer fill before reading
        total = 0
        async for chunk in reply.iter_chunks(5):
            total += len(chunk)
        assert total == len(part) * 64


async def test_refused_port_raises_oserror(pool: Http1Pool) -> None:
    async with Server(keep_alive(b"")) as server:
        url = server.url
    with pytest.raises(OSError):
        await pool.post(url, b"{}", HEADERS, connect_timeout=5)


async def test_https_with_a_private_ca() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    pool = Http1Pool(client_context)
    try:
        async with Server(keep_alive(response(b'{"tls": 1}')), tls=server_context) as server:
            for _ in range(2):
                reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
                assert await reply.read() == b'{"tls": 1}'
        assert server.connections == 1
    finally:
        pool.close()


async def test_https_rejects_an_unknown_certificate(pool: Http1Pool) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_context)
    async with Server(keep_alive(response(b"{}")), tls=server_context) as server:
        with pytest.raises(ssl.SSLError):
            await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)


def test_origin_parsing() -> None:
    origin = Origin.parse("https://api.example.com/v1/chat/completions")
    assert (origin.host, origin.port, origin.tls) == ("api.example.com", 443, True)
    assert origin.host_header == "api.example.com"
    assert origin.path == "/v1/chat/completions"
    assert Origin.parse("http://[::1]:8000/x?y=1").host_header == "[::1]:8000"
    assert Origin.parse("http://[::1]:8000/x?y=1").path == "/x?y=1"
    with pytest.raises(ValueError):
        Origin.parse("ftp://example.com/")


async def test_body_without_length_ends_when_the_server_closes(pool: Http1Pool) -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        for n in range(3):
            writer.write(b"data: {\"n\": %d}\n\n" % n)
            await writer.drain()
        writer.write(b"data: [DONE]\n\n")

    async with Server(http10) as server:
        reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        body = b"".join([chunk async for chunk in reply.iter_chunks(5)])
        assert body.count(b"data:") == 4
        assert body.endswith(b"data: [DONE]\n\n")


async def test_unknown_encoding_is_bad_response(pool: Http1Pool) -> None:
    async with Server(keep_alive(response(b"\x1b\x00", "Content-Encoding: br"))) as server:
        with pytest.raises(BadResponse):
            await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
        assert pool._take_idle(Origin.parse(server.url)) is None


async def test_idle_connections_closed_after_burst(
    pool: Http1Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http1, "IDLE_LIMIT_S", 0.1)
    async with Server(keep_alive(response(b"{}"))) as server:

        async def one() -> bytes:
            reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
            return await reply.read()

        assert await asyncio.gather(*(one() for _ in range(8))) == [b"{}"] * 8
        opened = len(pool._idle[Origin.parse(server.url).key])
        await asyncio.sleep(0.35)  # no request in the meantime

        assert opened == 8
        assert Origin.parse(server.url).key not in pool._idle


async def test_idle_pool_is_bounded(pool: Http1Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "MAX_IDLE_PER_ORIGIN", 3)
    async with Server(keep_alive(response(b"{}"))) as server:

        async def one() -> bytes:
            reply = await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)
            return await reply.read()

        await asyncio.gather(*(one() for _ in range(8)))

        assert len(pool._idle[Origin.parse(server.url).key]) == 3


async def test_too_many_headers_is_bad_response(pool: Http1Pool) -> None:
    many = [f"X-Filler-{index}: {index}" for index in range(MAX_RESPONSE_HEADERS + 1)]
    async with Server(keep_alive(response(b"{}", *many))) as server:
        with pytest.raises(BadResponse, match="more than"):
            await pool.post(server.url, b"{}", HEADERS, connect_timeout=5)


async def test_direct_stream_closes_its_generators() -> None:
    """A finished stream leaves no async generator for the event loop's finalizer hook."""
    finalized: list[str] = []
    firstiter, finalizer = sys.get_asyncgen_hooks()

    def record(agen: Any) -> None:
        finalized.append(agen.__qualname__)
        if finalizer is not None:
            finalizer(agen)

    events = [b'data: {"choices": []}\n\n', b"data: [DONE]\n\n"]
    transport = DirectTransport()
    async with Server(keep_alive(chunked(*events))) as server:
        deployment = Deployment.model_validate({
            "name": "d", "model": "openai/m", "api_base": server.url.removesuffix("/chat/completions"),
            "transport": "direct", "price": {"input_per_million": 1, "output_per_million": 1},
            "context_window": 1000,
        })
        sys.set_asyncgen_hooks(firstiter, record)
        try:
            received = [chunk async for chunk in transport.stream(deployment, {"model": "m"})]
            gc.collect()
        finally:
            sys.set_asyncgen_hooks(firstiter, finalizer)
    await transport.close()

    assert received == [{"choices": []}]
    assert finalized == []
