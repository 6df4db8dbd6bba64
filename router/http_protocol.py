"""The gateway's HTTP/1.1 server protocol: uvicorn's httptools protocol with coalesced writes.

It also calls back the request being served when its connection is lost, without a watcher task
per request (see ``router.api.disconnect``), and sends a response of unknown length to an
HTTP/1.0 client unframed instead of chunked (see ``Http10ResponseCycle``).

uvicorn writes a response's status line and headers in one ``transport.write`` and each body
part in another, and uvloop sends each write to the socket at once.  A JSON response therefore
costs two TCP sends, and a loopback send costs about 10 to 18 µs of CPU on a 2-core VM
(measured with a Python loop of ``socket.send`` of 300 bytes).  ``CoalescingTransport``
holds back a write and sends it together with the next one, so headers and body leave in one
send.  A write that no other follows in the same event-loop iteration is sent from a
``call_soon`` callback, so a lone write waits for the rest of that iteration at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

if TYPE_CHECKING:
    from uvicorn._types import ASGISendEvent


class CoalescingTransport:
    """A write transport that sends each pair of consecutive writes in one write.

    The first write is held back, and the second is sent with it at once. A response's body
    therefore leaves before the code after it (the outcome record, the log line) runs. A
    held write that no second one follows is sent by a ``call_soon`` callback.

    Everything but writing and closing is passed to the wrapped transport. Held bytes count
    in ``get_write_buffer_size`` and are sent before ``close`` and ``write_eof`` take
    effect. ``abort`` drops them, as it drops the wrapped transport's buffer.
    """

    __slots__ = ("_flush_scheduled", "_loop", "_pending", "_transport", "on_connection_lost")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: bytes | None = None
        self._flush_scheduled = False
        self.on_connection_lost: Callable[[], None] | None = None
        """Called once when the connection is lost; the request being served sets it."""

    def clear_connection_lost(self) -> None:
        self.on_connection_lost = None

    def connection_lost(self) -> None:
        """Run and clear ``on_connection_lost``; the protocol calls this when the peer is gone."""
        callback, self.on_connection_lost = self.on_connection_lost, None
        if callback is not None:
            callback()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        pending = self._pending
        if pending is None:
            self._pending = bytes(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._scheduled_flush)
            return
        self._pending = None
        if not self._transport.is_closing():
            self._transport.write(pending + data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send the held-back bytes now; a closing transport drops them."""
        pending, self._pending = self._pending, None
        if pending is not None and not self._transport.is_closing():
            self._transport.write(pending)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def get_write_buffer_size(self) -> int:
        pending_bytes = len(self._pending) if self._pending is not None else 0
        return pending_bytes + self._transport.get_write_buffer_size()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def is_closing(self) -> bool:
        # Defined here, not passed on by __getattr__, because uvicorn calls it for every
        # response, and a lookup that reaches __getattr__ first builds an AttributeError.
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Http10ResponseCycle(RequestResponseCycle):
    """uvicorn's request cycle for HTTP/1.0, which sends a body of unknown length unframed.

    uvicorn 0.55 sends ``transfer-encoding: chunked`` with every response that has no
    Content-Length, whatever the request's version. HTTP/1.0 clients cannot parse chunked
    framing, and RFC 9112 section 6.1 forbids sending it to them. Here such a response goes
    out unframed with ``connection: close``, and closing the connection marks its end
    (RFC 9112 section 6.3, rule 8). Responses with a Content-Length are sent as uvicorn sends
    them, and uvicorn closes every HTTP/1.0 connection after its response.
    """

    unframed = False
    """True when the response has no declared length, so that closing the connection ends it."""

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            if self._has_unknown_length(message["status"], message.get("headers", ())):
                self.unframed = True
                self.keep_alive = False
                # uvicorn adds chunked framing only while this is None.
                self.chunked_encoding = False
        elif self.unframed and message["type"] == "http.response.body":
            # uvicorn writes a body part unframed when it is no longer than the Content-Length
            # still expected, and completes the response (closing the connection) when nothing
            # is expected after the last part. Expecting exactly this part's size does both.
            self.expected_content_length = len(message.get("body", b""))
        await super().send(message)

    def _has_unknown_length(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Return whether uvicorn would add chunked framing to this response.

        It would for a response that may have a body (not to HEAD, not 204 or 304) and sets
        neither Content-Length nor ``transfer-encoding: chunked``.
        """
        if self.scope["method"] == "HEAD" or status in (204, 304):
            return False
        for name, value in [*self.default_headers, *headers]:
            name = name.lower()
            if name == b"content-length":
                return False
            if name == b"transfer-encoding" and value.lower() == b"chunked":
                return False
        return True


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a ``CoalescingTransport``.

    An HTTP/1.0 request gets an ``Http10ResponseCycle`` in place of uvicorn's cycle.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # The wrapper has every method of asyncio.Transport that uvicorn calls.
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if isinstance(self.transport, CoalescingTransport):
            self.transport.connection_lost()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # uvicorn builds the request's cycle here and has no hook to choose its class. The
        # cycle's task has not started yet, so switching the class now changes every send of
        # the request.
        cycle = self.cycle
        if type(cycle) is RequestResponseCycle and cycle.scope["http_version"] == "1.0":
            cycle.__class__ = Http10ResponseCycle
