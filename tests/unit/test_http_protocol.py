"""The gateway's uvicorn protocol: writes of one loop iteration leave in one send, and an
HTTP/1.0 client never gets a chunked body.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest
import uvicorn

from router.http_protocol import CoalescingTransport, GatewayHttpProtocol


class RecordingTransport(asyncio.Transport):
    """A transport that records each write and whether it was closed or aborted."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False
        self.buffered = 0

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def write_eof(self) -> None:
        self.events.append("eof")

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000)}.get(name, default)


async def _next_iteration() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_second_write_sends_both_at_once() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")
    assert inner.writes == []
    assert transport.get_write_buffer_size() == 19
    transport.write(memoryview(b"{}"))
    # Sent before the caller's next statement, so code after the response does not delay it.
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    assert transport.get_write_buffer_size() == 0


async def test_lone_write_sent_after_iteration() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"one")
    assert inner.writes == []
    await _next_iteration()
    assert inner.writes == [b"one"]


async def test_third_write_waits_for_a_partner() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.writelines([b"two", b"three", b"four"])
    assert inner.writes == [b"twothree"]
    await _next_iteration()
    assert inner.writes == [b"twothree", b"four"]
    transport.write(b"five")
    await _next_iteration()
    assert inner.writes == [b"twothree", b"four", b"five"]


async def test_close_sends_held_bytes_first() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"last answer")
    transport.close()
    await _next_iteration()
    assert inner.writes == [b"last answer"]
    assert inner.events == ["write", "close"]


async def test_write_eof_sends_held_bytes_first() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"tail")
    transport.write_eof()
    assert inner.events == ["write", "eof"]


async def test_abort_drops_held_bytes() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"never sent")
    transport.abort()
    await _next_iteration()
    assert inner.writes == []
    assert inner.events == ["abort"]


async def test_closed_transport_gets_no_write() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"too late")
    inner.closing = True  # the peer went away before the flush
    await _next_iteration()
    assert inner.writes == []


async def test_other_methods_reach_the_wrapped_transport() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    inner.buffered = 7
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5000)
    assert transport.is_closing() is False
    assert transport.get_write_buffer_size() == 7
    inner.closing = True
    assert transport.is_closing() is True


async def test_connection_lost_calls_back_once() -> None:
    transport = CoalescingTransport(RecordingTransport(), asyncio.get_running_loop())
    calls: list[str] = []
    transport.on_connection_lost = lambda: calls.append("lost")
    transport.connection_lost()
    transport.connection_lost()
    assert calls == ["lost"]


async def test_cleared_callback_is_not_called() -> None:
    transport = CoalescingTransport(RecordingTransport(), asyncio.get_running_loop())
    calls: list[str] = []
    transport.on_connection_lost = lambda: calls.append("lost")
    transport.clear_connection_lost()
    transport.connection_lost()
    assert calls == []


# A live server -----------------------------------------------------------------------------


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b'{"ok":true}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _parts(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Send the body ``one``, ``two`` in two parts without a Content-Length, as a stream does."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"one", "more_body": True})
    await send({"type": "http.response.body", "body": b"two", "more_body": False})


async def _serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/parts":
        await _parts(scope, receive, send)
    else:
        await _hello(scope, receive, send)


SOCKET_WRITES: list[bytes] = []
"""Every write that reached a live connection's socket transport, in order."""


class _CountingProxy:
    """Passes everything to a socket transport and records its writes in SOCKET_WRITES."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        SOCKET_WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CountingProtocol(GatewayHttpProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CountingProxy(transport))  # type: ignore[arg-type]


@pytest.fixture
def live_port() -> Any:
    """Serve ``_parts`` at /parts and ``_hello`` elsewhere with GatewayHttpProtocol on a free port."""
    SOCKET_WRITES.clear()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_serve, http=_CountingProtocol, lifespan="off",
                                           log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start within 30 s"
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def _read_response(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b'{"ok":true}'):
        more = conn.recv(65536)
        if not more:
            break
        data += more
    return data


def test_live_response_is_one_socket_write(live_port: int) -> None:
    with socket.create_connection(("127.0.0.1", live_port), timeout=10) as conn:
        for _ in range(3):  # keep-alive: the connection serves several requests
            conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            response = _read_response(conn)
            assert response.startswith(b"HTTP/1.1 200 OK\r\n")
            assert response.endswith(b'\r\n\r\n{"ok":true}')
    assert len(SOCKET_WRITES) == 3
    assert all(write.endswith(b'{"ok":true}') for write in SOCKET_WRITES)


def test_live_pipelined_requests_answered_in_order(live_port: int) -> None:
    with socket.create_connection(("127.0.0.1", live_port), timeout=10) as conn:
        conn.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b'{"ok":true}') < 2 and time.monotonic() < deadline:
            received += conn.recv(65536)
        assert received.count(b"HTTP/1.1 200 OK") == 2
        assert received.count(b'{"ok":true}') == 2


def test_live_connection_close_after_answer(live_port: int) -> None:
    with socket.create_connection(("127.0.0.1", live_port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK")
        assert received.endswith(b'{"ok":true}')


def _read_to_eof(conn: socket.socket) -> tuple[bytes, bytes]:
    """Read until the server closes the connection, and return the lower-cased head and the body."""
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head.lower(), body


def test_live_http10_parts_unframed(live_port: int) -> None:
    with socket.create_connection(("127.0.0.1", live_port), timeout=10) as conn:
        conn.sendall(b"GET /parts HTTP/1.0\r\nHost: t\r\n\r\n")
        head, body = _read_to_eof(conn)

    assert head.startswith(b"http/1.1 200 ok")
    assert b"transfer-encoding" not in head
    assert b"content-length" not in head
    assert b"connection: close" in head.split(b"\r\n")
    assert body == b"onetwo"


def test_live_http11_parts_still_chunked(live_port: int) -> None:
    with socket.create_connection(("127.0.0.1", live_port), timeout=10) as conn:
        conn.sendall(b"GET /parts HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head, body = _read_to_eof(conn)

    assert b"transfer-encoding: chunked" in head.split(b"\r\n")
    assert body == b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"


def test_live_http10_sized_body_keeps_length(live_port: int) -> None:
    with socket.create_connection(("127.0.0.1", live_port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        head, body = _read_to_eof(conn)

    assert b"content-length: 11" in head.split(b"\r\n")
    assert b"transfer-encoding" not in head
    assert body == b'{"ok":true}'
