"""A small pooled HTTP/1.1 client for the direct path's one kind of call.

The direct path sends one POST with a JSON body and reads back either one JSON body or an
SSE stream. aiohttp spent about 0.12 ms of CPU per such call in the gateway's profile, most of
it in general machinery this call never uses (cookie jars, tracing hooks, redirects, multipart,
per-request timer handles). Here each connection is an ``asyncio.Protocol`` and llhttp, through
``httptools`` (already installed with uvicorn), parses the response, chunked framing included.
``bench/transports.py`` measures both clients side by side.

The client keeps connections alive in a pool per origin. It speaks TLS with the default
context for ``https`` bases, decodes gzip and deflate bodies, applies connect and read
timeouts and pauses reading while a stream's consumer falls behind. When a reused connection
closes before any response byte arrives, because the server dropped it while idle, the
request is sent once more on a new connection.
Upstream APIs need no redirects, cookies, proxies or HTTP/2, so the client has none of them.
aiohttp ignored proxy variables too, because ``trust_env`` was off.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

# A pooled connection idle for longer than this is closed rather than reused. Servers close
# idle connections on their own schedule (uvicorn after 5 s, nginx after 75 s by default).
# A short limit makes reusing a closing connection rare, and the retry covers the rest.
IDLE_LIMIT_S = 4.0
# Idle connections kept per origin; a burst's extra connections beyond this are closed.
MAX_IDLE_PER_ORIGIN = 256
# A stream stops reading from the socket while this many bytes wait for the consumer.
PAUSE_ABOVE_BYTES = 1 << 20
_REQUEST_LINE = "POST {path} HTTP/1.1\r\nHost: {host}\r\n"


class ConnectionClosed(Exception):
    """The server closed the connection before the response ended."""

    def __init__(self, received_any: bool) -> None:
        super().__init__("the upstream closed the connection before the response ended")
        self.received_any = received_any


MAX_RESPONSE_HEADERS = 256
MAX_HEADER_BYTES = 256 * 1024
"""Limits of one response's headers; a response past either is a BadResponse."""


class BadResponse(Exception):
    """The server's bytes are not a valid HTTP/1.1 response."""


@dataclass(frozen=True, slots=True)
class Origin:
    """The host, port, scheme and request path of a URL, parsed once per URL."""

    host: str
    port: int
    tls: bool
    host_header: str
    path: str

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the URL must start with http:// or https:// and name a host")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        default_port = port == (443 if tls else 80)
        host = parts.hostname
        host_for_header = f"[{host}]" if ":" in host else host
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return cls(
            host=host,
            port=port,
            tls=tls,
            host_header=host_for_header if default_port else f"{host_for_header}:{port}",
            path=path,
        )

    @property
    def key(self) -> tuple[str, int, bool]:
        return (self.host, self.port, self.tls)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; it carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self.headers_done: asyncio.Future[None] | None = None
        self.complete = False
        self.received_any = False
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The event loop passes the socket transport it created for this protocol.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.complete:
            # Bytes that no request asked for: the connection is in an unknown state.
            self.close()
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the upstream asked to switch protocols"))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, BadResponse) else BadResponse(f"invalid HTTP response: {exc}"))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"invalid HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if exc is None and self._ends_at_close():
            # A body with neither Content-Length nor chunked framing ends when the server
            # closes the connection (RFC 9112, section 6.3). Some HTTP/1.0 SSE servers do that.
            self.complete = True
            self._wake()
            return
        self._fail(ConnectionClosed(self.received_any))

    def _ends_at_close(self) -> bool:
        if self.headers_done is None or not self.headers_done.done() or not self.status:
            return False
        return self.header(b"content-length") is None and b"chunked" not in (
            self.header(b"transfer-encoding") or b""
        ).lower()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if len(self.headers) >= MAX_RESPONSE_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            # httptools turns this into HttpParserCallbackError, which data_received handles.
            raise BadResponse(
                f"the upstream sent more than {MAX_RESPONSE_HEADERS} headers or "
                f"{MAX_HEADER_BYTES} bytes of them"
            )
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.headers_done is not None and not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._queued += len(body)
        if self._queued > PAUSE_ABOVE_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        if not self._parser.should_keep_alive():
            self.closed = True
        self._wake()

    # Methods used by Http1Pool and Response

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self.closed = True
        if self.headers_done is not None and not self.headers_done.done():
            self.headers_done.set_exception(exc)
        self._wake()
        if self.transport is not None:
            self.transport.close()

    def send(self, head: bytes, body: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self._reset()
        self.headers_done = asyncio.get_running_loop().create_future()
        self.transport.write(head + body)
        return self.headers_done

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def next_chunk(self, read_timeout: float | None = None) -> bytes | None:
        """Return the body bytes received since the last call, or None once the body has ended.

        Raises TimeoutError when nothing arrives for ``read_timeout`` seconds.
        """
        while True:
            if self._chunks:
                # Everything already received goes out in one piece. A streamed response often
                # arrives as one HTTP chunk per SSE event, and the SSE parser in direct.py
                # took 50 µs for 24 such pieces against 36 µs for the same bytes in one piece.
                if len(self._chunks) == 1:
                    data = self._chunks.popleft()
                else:
                    data = b"".join(self._chunks)
                    self._chunks.clear()
                self._queued -= len(data)
                if self._paused and self._queued <= PAUSE_ABOVE_BYTES // 2:
                    self._paused = False
                    if self.transport is not None:
                        self.transport.resume_reading()
                return data
            if self._error is not None:
                raise self._error
            if self.complete:
                return None
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None
            if read_timeout is not None:
                timer = loop.call_later(read_timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def drain_now(self) -> bytes | None:
        """Return the whole body if it has already arrived, else None."""
        if not self.complete or self._error is not None:
            return None
        if len(self._chunks) == 1:
            data = self._chunks.popleft()
        else:
            data = b"".join(self._chunks)
            self._chunks.clear()
        self._queued = 0
        return data

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


MAX_BODY_BYTES = 256 * 1024 * 1024
"""Maximum length in bytes of a response body that ``Response.read`` accepts. 2,048 vectors
of 3,072 floats, the largest embeddings response of OpenAI's API, take about 125 MB as JSON
(an estimate at about 20 characters per number)."""


class Response:
    """A response whose headers have arrived; the body is read with ``read`` or ``iter_chunks``."""

    def __init__(self, pool: Http1Pool, origin: Origin, connection: _Connection) -> None:
        self._pool = pool
        self._origin = origin
        self._connection: _Connection | None = connection
        self.status = connection.status
        encoding = connection.header(b"content-encoding")
        self._decoder = _decoder(encoding)

    def header(self, name: bytes) -> str | None:
        """Return the first value of header ``name`` (lower case), or None once the body is read."""
        if self._connection is None:
            return None
        value = self._connection.header(name)
        return value.decode("latin-1") if value is not None else None

    def header_pairs(self) -> list[tuple[bytes, bytes]]:
        """Return every header as received, names in lower case; empty once the body is read."""
        return self._connection.headers if self._connection is not None else []

    async def read(self, max_bytes: int = MAX_BODY_BYTES) -> bytes:
        """Return the whole body, decoded; BadResponse when it is longer than ``max_bytes``.

        The limit applies to the received and to the decompressed bytes, so neither a huge
        body nor a small gzip bomb can fill the gateway's memory.
        """
        connection = self._connection
        assert connection is not None
        try:
            data = connection.drain_now()
            if data is None:
                parts = []
                size = 0
                while (chunk := await connection.next_chunk()) is not None:
                    size += len(chunk)
                    if size > max_bytes:
                        # The rest of the body is never read, so the connection is not reused.
                        connection.close()
                        raise BadResponse(f"response body longer than {max_bytes} bytes")
                    parts.append(chunk)
                data = b"".join(parts)
            elif len(data) > max_bytes:
                raise BadResponse(f"response body longer than {max_bytes} bytes")
        finally:
            self.release()
        if self._decoder is not None:
            data = self._decoder.decompress(data, max_bytes + 1)
            if len(data) > max_bytes or self._decoder.unconsumed_tail:
                raise BadResponse(f"decompressed response body longer than {max_bytes} bytes")
            data += self._decoder.flush()
        return data

    async def iter_chunks(self, read_timeout: float | None = None) -> AsyncGenerator[bytes, None]:
        """Yield body bytes as they arrive; TimeoutError after ``read_timeout`` s of silence."""
        connection = self._connection
        assert connection is not None
        try:
            while (chunk := await connection.next_chunk(read_timeout)) is not None:
                if self._decoder is not None:
                    chunk = self._decoder.decompress(chunk)
                    if not chunk:
                        continue
                yield chunk
        finally:
            self.release()

    def release(self) -> None:
        """Give the connection back to the pool if its response ended, else close it."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if connection.complete and not connection.closed:
            self._pool.put_back(self._origin, connection)
        else:
            connection.close()


def _decoder(encoding: bytes | None) -> zlib._Decompress | None:
    if not encoding or encoding.strip().lower() == b"identity":
        return None
    name = encoding.strip().lower()
    if name in (b"gzip", b"x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == b"deflate":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)
    raise BadResponse(f"unsupported Content-Encoding {name.decode(errors='replace')}")


class Http1Pool:
    """Keep-alive connections per origin, for POST requests with a JSON body."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._origins: dict[str, Origin] = {}
        # The default context verifies certificates against the system's CAs; OpenSSL also
        # reads SSL_CERT_FILE and SSL_CERT_DIR for a private CA.
        self._ssl = ssl_context
        self._sweep_handle: asyncio.TimerHandle | None = None

    def origin(self, url: str) -> Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = Origin.parse(url)
            if len(self._origins) > 1024:
                self._origins.clear()
            self._origins[url] = origin
        return origin

    def put_back(self, origin: Origin, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        idle = self._idle.setdefault(origin.key, [])
        idle.append(connection)
        if len(idle) > MAX_IDLE_PER_ORIGIN:
            idle.pop(0).close()  # the connection idle for the longest time
        if self._sweep_handle is None:
            self._sweep_handle = asyncio.get_running_loop().call_later(IDLE_LIMIT_S, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for IDLE_LIMIT_S or longer; run again while any remain.

        Requests take the most recently used connection, so without this a burst would leave
        its extra connections open for as long as the server allows.
        """
        self._sweep_handle = None
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            # Connections are appended as they become idle, so the oldest come first.
            while idle and (idle[0].closed or now - idle[0].idle_since >= IDLE_LIMIT_S):
                idle.pop(0).close()
            if not idle:
                del self._idle[key]
        if self._idle:
            self._sweep_handle = asyncio.get_running_loop().call_later(IDLE_LIMIT_S, self._sweep)

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin.key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_LIMIT_S:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin, connect_timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        context = None
        if origin.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        async with asyncio.timeout(connect_timeout):
            _, connection = await loop.create_connection(
                _Connection, origin.host, origin.port, ssl=context,
                server_hostname=origin.host if context else None,
            )
        return connection

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        connect_timeout: float | None,
    ) -> Response:
        """Send the POST and return once the response's headers arrive.

        The caller bounds the whole wait with its own timeout; ``connect_timeout`` bounds
        opening a new connection.  On cancellation the connection is closed, never reused.
        """
        origin = self.origin(url)
        lines = [_REQUEST_LINE.format(path=origin.path, host=origin.host_header)]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        head = "".join(lines).encode("latin-1")
        connection = self._take_idle(origin)
        reused = connection is not None
        if connection is None:
            connection = await self._connect(origin, connect_timeout)
        try:
            try:
                await connection.send(head, body)
            except ConnectionClosed as exc:
                if not (reused and not exc.received_any):
                    raise
                connection = await self._connect(origin, connect_timeout)
                await connection.send(head, body)
            return Response(self, origin, connection)
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
