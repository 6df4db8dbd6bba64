"""The live gateway's HTTP/1.1 behaviour over raw sockets: framing, disconnects, back-pressure.

Each test serves the app with ``tierwise serve``'s protocol (:class:`LiveGateway`) in front of
fake upstreams on 127.0.0.1. It checks what the client receives and that each request has one
outcome record with the right status. Where a client leaves, it also checks that no upstream
call outlives it.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.app import create_app
from tests.gateway.conftest import (
    GatewayKit,
    LiveGateway,
    StubScorer,
    chat_body,
    open_redis_client,
    parse_sse,
    read_file_records,
    read_stream_records,
    redis_stream_tip,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.recorded import SCRIPTED_ANSWER
from tests.support.replay_upstream import ReplayOptions
from tests.support.scenario import Scenario

EDGE_SCORER = StubScorer(edge=0.99, mid=0.99, frontier=0.99)
CLIENT_GONE = (499, "client_disconnected")


# Raw HTTP/1.1 client --------------------------------------------------------------------------


def request_bytes(
    body: dict[str, Any], *, version: str = "1.1", extra_headers: tuple[str, ...] = ()
) -> bytes:
    """Return a whole chat-completion request as it goes on the wire."""
    raw = orjson.dumps(body)
    head = [
        f"POST /v1/chat/completions HTTP/{version}",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(raw)}",
        *extra_headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class RawConnection:
    """A blocking client socket that parses HTTP/1.1 responses one at a time."""

    def __init__(self, port: int, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        more = self.sock.recv(65536)
        if not more:
            raise ConnectionError(f"the server closed the connection (unread: {self.buffer[:200]!r})")
        self.buffer += more

    def read_until(self, marker: bytes) -> bytes:
        """Return the bytes before ``marker`` and drop both from the buffer."""
        while marker not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_response(self) -> RawResponse:
        """Read one response, interim (1xx) ones included.

        The body is chunked, sized by Content-Length, or, with neither, ends when the server
        closes the connection.
        """
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *lines = head.split("\r\n")
        status = int(status_line.split(" ")[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status < 200:
            return RawResponse(status, headers, b"")
        if headers.get("transfer-encoding") == "chunked":
            parts = []
            while size := int(self.read_until(b"\r\n"), 16):
                parts.append(self._read_exactly(size))
                self.read_until(b"\r\n")
            self.read_until(b"\r\n")
            return RawResponse(status, headers, b"".join(parts))
        if "content-length" in headers:
            return RawResponse(status, headers, self._read_exactly(int(headers["content-length"])))
        return RawResponse(status, headers, self._read_to_eof())

    def _read_to_eof(self) -> bytes:
        while more := self.sock.recv(65536):
            self.buffer += more
        data, self.buffer = self.buffer, b""
        return data

    def at_eof(self) -> bool:
        """Read on; return whether the server closed the connection without sending more."""
        return not self.buffer and self.sock.recv(65536) == b""


# Helpers --------------------------------------------------------------------------------------


def wait_for_records(path: Path, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Poll the outcome file until it has ``count`` records or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    records = read_file_records(path)
    while len(records) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        records = read_file_records(path)
    return records


def settled_records(path: Path, count: int) -> list[dict[str, Any]]:
    """Wait for ``count`` records, then a little longer so that a duplicate would show."""
    wait_for_records(path, count)
    time.sleep(0.3)
    return read_file_records(path)


def established_to(port: int) -> int:
    """Count the established TCP connections whose remote end is 127.0.0.1:``port``."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[3] == "01":
                count += 1
    return count


def loop_task_count(live: LiveGateway) -> int:
    """Count the tasks of the gateway's event loop."""
    loop = live.server.servers[0].get_loop()

    async def count() -> int:
        return len(asyncio.all_tasks())

    return asyncio.run_coroutine_threadsafe(count(), loop).result(5)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class SlowCacheGet:
    """A cache ``get`` that waits ``delay_s`` before each lookup, as a slow Redis would."""

    def __init__(self, cache: Any, delay_s: float) -> None:
        self.get_now = cache.get
        self.delay_s = delay_s
        self.started = threading.Event()

    async def __call__(self, key: str) -> Any:
        self.started.set()
        await asyncio.sleep(self.delay_s)
        return await self.get_now(key)


def assert_complete_json(response: RawResponse) -> None:
    assert response.status == 200
    completion = orjson.loads(response.body)
    assert completion["choices"][0]["finish_reason"] == "stop"


def assert_complete_stream(response: RawResponse) -> None:
    assert response.status == 200
    events = parse_sse(response.body)
    assert events.done
    assert events.errors == []


def assert_no_internal_error(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    out, err = capfd.readouterr()
    assert "internal_error" not in out + err
    assert "Exception in ASGI application" not in caplog.text


@pytest.fixture
def live(kit: GatewayKit) -> Iterator[LiveGateway]:
    """A live gateway whose tiers are the test's fake upstreams, routing ``auto`` to edge."""
    kit.write_policy(timeout_s=120)
    app = create_app(kit.settings(), EDGE_SCORER)
    with LiveGateway(app) as gateway:
        yield gateway


# Framing --------------------------------------------------------------------------------------


def test_pipelined_json_and_streams(live: LiveGateway) -> None:
    conn = RawConnection(live.port)
    bodies = [chat_body("one"), chat_body("two", stream=True), chat_body("three"),
              chat_body("four", stream=True)]
    conn.sock.sendall(b"".join(request_bytes(body) for body in bodies))
    responses = [conn.read_response() for _ in bodies]
    conn.close()
    records = settled_records(live.runtime.outcomes.path, 4)

    assert_complete_json(responses[0])
    assert_complete_stream(responses[1])
    assert_complete_json(responses[2])
    assert_complete_stream(responses[3])
    assert [r["status"] for r in records] == [200] * 4


def test_http10_answer_then_close(live: LiveGateway) -> None:
    conn = RawConnection(live.port)
    conn.sock.sendall(request_bytes(chat_body(), version="1.0"))
    response = conn.read_response()

    assert_complete_json(response)
    assert response.headers.get("connection") == "close"
    assert conn.at_eof()
    conn.close()


@pytest.mark.parametrize("stream", [False, True])
def test_connection_close_header(live: LiveGateway, stream: bool) -> None:
    conn = RawConnection(live.port)
    conn.sock.sendall(request_bytes(chat_body(stream=stream), extra_headers=("Connection: close",)))
    response = conn.read_response()
    closed = conn.at_eof()
    conn.close()

    if stream:
        assert_complete_stream(response)
    else:
        assert_complete_json(response)
    assert response.headers.get("connection") == "close"
    assert closed


def test_http10_stream_is_not_chunked(live: LiveGateway) -> None:
    conn = RawConnection(live.port)
    conn.sock.sendall(request_bytes(chat_body(stream=True), version="1.0"))
    head = conn.read_until(b"\r\n\r\n")
    conn.close()

    assert b"transfer-encoding" not in head.lower()


def test_http10_stream_ends_at_close(live: LiveGateway) -> None:
    # An HTTP/1.0 client reads an unframed body until the server closes the connection.
    conn = RawConnection(live.port)
    conn.sock.sendall(request_bytes(chat_body(stream=True), version="1.0"))
    response = conn.read_response()
    conn.close()
    records = settled_records(live.runtime.outcomes.path, 1)
    events = parse_sse(response.body)

    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers.get("connection") == "close"
    assert "transfer-encoding" not in response.headers
    assert "content-length" not in response.headers
    assert events.done
    assert events.errors == []
    assert events.text() == SCRIPTED_ANSWER
    assert events.finish_reasons() == {0: "stop"}
    # Chunk sizes would show up between the events as lines that are no SSE field or comment.
    lines = response.body.decode().split("\n")
    assert all(line.startswith(("data: ", ":")) or line == "" for line in lines)
    assert [(r["status"], r["error"], r["stream"]) for r in records] == [(200, None, True)]


def test_expect_100_continue(live: LiveGateway) -> None:
    conn = RawConnection(live.port)
    head, body = request_bytes(chat_body(), extra_headers=("Expect: 100-continue",)).split(
        b"\r\n\r\n", 1
    )
    conn.sock.sendall(head + b"\r\n\r\n")
    interim = conn.read_response()
    conn.sock.sendall(body)
    response = conn.read_response()
    conn.close()

    assert interim.status == 100
    assert_complete_json(response)


# Clients that leave ---------------------------------------------------------------------------


def test_client_gone_during_upload_is_499(
    live: LiveGateway, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    conn = RawConnection(live.port)
    raw = request_bytes(chat_body("x" * 5000))
    conn.sock.sendall(raw[:300])
    time.sleep(0.2)
    conn.close()
    records = settled_records(live.runtime.outcomes.path, 1)

    assert [(r["status"], r["error"]) for r in records] == [CLIENT_GONE]
    assert_no_internal_error(capfd, caplog)


def test_client_gone_after_100_continue_is_499(
    live: LiveGateway, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    conn = RawConnection(live.port)
    head, _ = request_bytes(chat_body(), extra_headers=("Expect: 100-continue",)).split(
        b"\r\n\r\n", 1
    )
    conn.sock.sendall(head + b"\r\n\r\n")
    interim = conn.read_response()
    conn.close()
    records = settled_records(live.runtime.outcomes.path, 1)

    assert interim.status == 100
    assert [(r["status"], r["error"]) for r in records] == [CLIENT_GONE]
    assert_no_internal_error(capfd, caplog)


def test_client_gone_while_routing_skips_upstream(kit: GatewayKit, live: LiveGateway) -> None:
    # The cache lookup is slow, so the client is gone before the upstream call would start.
    kit.fakes["edge"].set_default(Scenario.hang())
    slow = SlowCacheGet(live.runtime.cache, 0.5)
    live.runtime.cache.get = slow
    conn = RawConnection(live.port)
    conn.sock.sendall(request_bytes(chat_body(temperature=0)))
    assert slow.started.wait(5)
    conn.close()
    records = settled_records(live.runtime.outcomes.path, 1)

    assert [(r["status"], r["error"]) for r in records] == [CLIENT_GONE]
    assert kit.fakes["edge"].requests == []
    assert established_to(kit.fakes["edge"].port) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_half_closed_client_counts_as_gone(kit: GatewayKit, live: LiveGateway, stream: bool) -> None:
    # The gateway cannot tell a FIN after the request from a full close before it writes,
    # so a client that only shuts down its write side is treated as gone. The upstream never
    # responds, so the FIN always arrives before the response, even when this thread loses
    # the GIL to the gateway's thread between the request and the shutdown.
    kit.fakes["edge"].set_default(Scenario.hang())
    conn = RawConnection(live.port)
    conn.sock.sendall(request_bytes(chat_body(stream=stream)))
    conn.sock.shutdown(socket.SHUT_WR)
    closed_cleanly = conn.at_eof()
    conn.close()
    records = settled_records(live.runtime.outcomes.path, 1)

    assert closed_cleanly
    assert [(r["status"], r["error"]) for r in records] == [CLIENT_GONE]
    # The FIN may arrive after the upstream call started, which then is cancelled.
    assert established_to(kit.fakes["edge"].port) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_cache_hit_client_gone_is_499(live: LiveGateway, stream: bool) -> None:
    conn = RawConnection(live.port)
    conn.sock.sendall(request_bytes(chat_body(stream=stream, temperature=0)))
    first = conn.read_response()
    slow = SlowCacheGet(live.runtime.cache, 0.3)
    live.runtime.cache.get = slow
    conn.sock.sendall(request_bytes(chat_body(stream=stream, temperature=0)))
    assert slow.started.wait(5)
    conn.close()
    records = settled_records(live.runtime.outcomes.path, 2)

    assert first.status == 200
    assert [(r["cache_hit"], r["status"]) for r in records] == [(False, 200), (True, 499)]


def test_stream_client_gone_before_done_is_499(kit: GatewayKit, live: LiveGateway) -> None:
    conn = RawConnection(live.port)
    conn.sock.sendall(request_bytes(chat_body("count the events", stream=True)))
    events = parse_sse(conn.read_response().body)
    # The upstream pauses before its [DONE], after the gateway relayed the finish chunk.
    kit.fakes["edge"].enqueue(Scenario.pause(after_events=len(events.data) - 1, seconds=0.5))
    conn.sock.sendall(request_bytes(chat_body("leave before done", stream=True)))
    received = b""
    while b'"finish_reason":"stop"' not in received:
        received += conn.sock.recv(65536)
    conn.close()
    records = settled_records(live.runtime.outcomes.path, 2)

    assert [(r["status"], r["error"]) for r in records] == [(200, None), CLIENT_GONE]


def test_keep_alive_reuse_after_client_left(kit: GatewayKit) -> None:
    kit.write_policy(cache_enabled=False, timeout_s=120)
    app = create_app(kit.settings(keepalive_interval_s=0.2), EDGE_SCORER)
    with LiveGateway(app) as live:
        conn = RawConnection(live.port)
        for _ in range(2):
            conn.sock.sendall(request_bytes(chat_body()))
            assert_complete_json(conn.read_response())
        # The client leaves a keep-alive connection while the upstream is silent.
        kit.fakes["edge"].enqueue(Scenario.hang())
        conn.sock.sendall(request_bytes(chat_body()))
        time.sleep(0.3)
        conn.close()
        # Another client leaves between stream events.
        kit.fakes["edge"].enqueue(Scenario.pause(after_events=3, seconds=5))
        conn = RawConnection(live.port)
        conn.sock.sendall(request_bytes(chat_body(stream=True)))
        conn.read_until(b"data: ")
        conn.close()
        wait_for_records(live.runtime.outcomes.path, 4)
        upstream_connections = established_to(kit.fakes["edge"].port)
        # The upstream pool still serves both kinds of call.
        conn = RawConnection(live.port)
        conn.sock.sendall(request_bytes(chat_body(stream=True)))
        stream_response = conn.read_response()
        conn.sock.sendall(request_bytes(chat_body()))
        json_response = conn.read_response()
        conn.close()
        records = settled_records(live.runtime.outcomes.path, 6)

    assert [r["status"] for r in records] == [200, 200, 499, 499, 200, 200]
    # Only the connection of the first, completed calls may stay in the pool.
    assert upstream_connections <= 1
    assert_complete_stream(stream_response)
    assert_complete_json(json_response)


def test_pipelined_requests_client_leaves(kit: GatewayKit, live: LiveGateway) -> None:
    kit.fakes["edge"].enqueue(Scenario.replay(), Scenario.hang())
    conn = RawConnection(live.port)
    bodies = [chat_body("one", stream=True), chat_body("two"), chat_body("three", stream=True)]
    conn.sock.sendall(b"".join(request_bytes(body) for body in bodies))
    first = conn.read_response()
    time.sleep(0.3)
    conn.close()
    records = settled_records(live.runtime.outcomes.path, 2)

    assert_complete_stream(first)
    # The third request never started, so it has no record and reached no upstream.
    assert [(r["status"], r["error"]) for r in records] == [(200, None), CLIENT_GONE]
    assert len(kit.fakes["edge"].requests) == 2


def assert_one_outcome_each(
    records: list[dict[str, Any]],
    plans: list[tuple[str, bool, float | None]],
    results: dict[str, RawResponse],
) -> None:
    """Check one record per planned request: a whole answer for clients that stayed, and
    200 or client_disconnected for clients that left."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_id.setdefault(record["request_id"], []).append(record)
    for request_id, stream, leave_after_s in plans:
        assert len(by_id.get(request_id, [])) == 1, request_id
        status = (by_id[request_id][0]["status"], by_id[request_id][0]["error"])
        if leave_after_s is None:
            assert status == (200, None), request_id
            if stream:
                assert_complete_stream(results[request_id])
            else:
                assert_complete_json(results[request_id])
        else:
            assert status in [(200, None), CLIENT_GONE], request_id

def test_random_disconnects_under_load(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    options = ReplayOptions(chunk_delay_s=0.01)
    fakes = {tier: FakeUpstream(f"fake-{tier}", options=options) for tier in ("edge", "mid", "frontier")}
    with fakes["edge"], fakes["mid"], fakes["frontier"]:
        kit = GatewayKit(tmp_path, fakes)
        kit.write_policy(cache_enabled=False)
        app = create_app(kit.settings(), EDGE_SCORER)
        with LiveGateway(app) as live:
            # A first request opens the upstream pool and starts the gateway's own tasks.
            warm = RawConnection(live.port)
            warm.sock.sendall(request_bytes(chat_body(stream=True)))
            assert_complete_stream(warm.read_response())
            warm.close()
            wait_for_records(live.runtime.outcomes.path, 1)
            tasks_before = loop_task_count(live)
            fds_before = open_fds()

            results: dict[str, RawResponse] = {}

            def run_client(request_id: str, stream: bool, leave_after_s: float | None) -> None:
                conn = RawConnection(live.port)
                body = chat_body(f"question {request_id}", stream=stream)
                conn.sock.sendall(request_bytes(body, extra_headers=(f"x-request-id: {request_id}",)))
                if leave_after_s is None:
                    results[request_id] = conn.read_response()
                else:
                    time.sleep(leave_after_s)
                conn.close()

            rng = random.Random(7)
            plans = [
                (f"load-{n}", n % 2 == 0, rng.choice([None, 0.0, 0.05, 0.15, 0.3]))
                for n in range(60)
            ]
            threads = [threading.Thread(target=run_client, args=plan) for plan in plans]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            records = settled_records(live.runtime.outcomes.path, 1 + len(plans))[1:]
            tasks_after = loop_task_count(live)
            connections_after = len(live.server.server_state.connections)
            # Both ends of each pooled upstream connection are open in this process.
            pooled = established_to(fakes["edge"].port)
            fds_after = open_fds()

    assert_one_outcome_each(records, plans, results)
    assert tasks_after <= tasks_before
    assert connections_after == 0
    assert fds_after <= fds_before + 2 * pooled + 2
    assert_no_internal_error(capfd, caplog)


def test_random_disconnects_with_redis(kit: GatewayKit, redis_url: str) -> None:
    # With Redis, the cache lookup, the cache write and the outcome log all wait on the
    # network, so clients also leave while those are under way.
    kit.fakes["edge"].set_default(Scenario.pause(after_events=2, seconds=0.05))
    kit.write_policy()
    client = open_redis_client(redis_url)
    stream_start = redis_stream_tip(client)
    app = create_app(kit.settings(redis_url=redis_url), EDGE_SCORER)
    prefix = uuid.uuid4().hex[:12]
    results: dict[str, RawResponse] = {}
    with LiveGateway(app) as live:

        def run_client(request_id: str, stream: bool, leave_after_s: float | None) -> None:
            conn = RawConnection(live.port)
            # Every fourth request repeats the primed prompt, so it is a cache hit.
            prompt = "repeated" if int(request_id.rsplit("-", 1)[1]) % 4 == 0 else request_id
            body = chat_body(f"{prefix} {prompt}", stream=stream, temperature=0)
            conn.sock.sendall(request_bytes(body, extra_headers=(f"x-request-id: {request_id}",)))
            if leave_after_s is None:
                results[request_id] = conn.read_response()
            else:
                time.sleep(leave_after_s)
            conn.close()

        # The completion for the repeated prompt is cached before the clients start.
        primer = RawConnection(live.port)
        for stream in (False, True):
            primer.sock.sendall(request_bytes(chat_body(f"{prefix} repeated", stream=stream,
                                                        temperature=0)))
            assert primer.read_response().status == 200
        primer.close()

        rng = random.Random(11)
        plans = [
            (f"{prefix}-{n}", n % 2 == 0, rng.choice([None, 0.0, 0.01, 0.03, 0.1]))
            for n in range(60)
        ]
        threads = [threading.Thread(target=run_client, args=plan) for plan in plans]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        time.sleep(0.5)
        connections_after = len(live.server.server_state.connections)
    records = [
        record
        for record in read_stream_records(client, stream_start, {"anonymous"})
        if record["request_id"].startswith(prefix)
    ]
    client.close()

    assert_one_outcome_each(records, plans, results)
    # The run covers cache hits and clients that left.
    assert any(record["cache_hit"] for record in records)
    assert any(record["status"] == 499 for record in records)
    assert connections_after == 0


# Back-pressure --------------------------------------------------------------------------------


def test_slow_reader_pauses_upstream(kit: GatewayKit) -> None:
    # About 12 MB of events, far more than the socket buffers of both ends hold.
    text = "word " * 200_000
    kit.fakes["edge"].set_default(Scenario(text=text))
    kit.write_policy(cache_enabled=False)
    app = create_app(kit.settings(), EDGE_SCORER)
    with LiveGateway(app) as live:
        conn = RawConnection(live.port)
        conn.sock.sendall(request_bytes(chat_body(stream=True)))
        time.sleep(1.0)
        protocol = next(iter(live.server.server_state.connections))
        buffered = protocol.transport.get_write_buffer_size()
        records_while_paused = read_file_records(live.runtime.outcomes.path)
        events = parse_sse(conn.read_response().body)
        conn.close()
        records = wait_for_records(live.runtime.outcomes.path, 1)

    # The gateway stops reading the upstream instead of buffering the stream.
    assert buffered < 1_000_000
    assert records_while_paused == []
    assert events.done
    assert events.text() == text
    assert [r["status"] for r in records] == [200]


def test_large_json_to_slow_reader(kit: GatewayKit) -> None:
    # About 4 MB of completion text in one JSON body, read only after a pause.
    text = "word " * 800_000
    kit.fakes["edge"].set_default(Scenario(text=text))
    kit.write_policy(cache_enabled=False)
    app = create_app(kit.settings(), EDGE_SCORER)
    with LiveGateway(app) as live:
        conn = RawConnection(live.port)
        conn.sock.sendall(request_bytes(chat_body()))
        time.sleep(1.0)
        response = conn.read_response()
        conn.sock.sendall(request_bytes(chat_body()))
        second = conn.read_response()
        conn.close()
        records = wait_for_records(live.runtime.outcomes.path, 2)

    assert_complete_json(response)
    assert orjson.loads(response.body)["choices"][0]["message"]["content"] == text
    assert_complete_json(second)
    assert [r["status"] for r in records] == [200, 200]


# Shutdown -------------------------------------------------------------------------------------


def test_shutdown_finishes_stream_in_flight(kit: GatewayKit) -> None:
    kit.fakes["edge"].set_default(Scenario.pause(after_events=3, seconds=0.5))
    kit.write_policy()
    app = create_app(kit.settings(), EDGE_SCORER)
    live = LiveGateway(app).start()
    conn = RawConnection(live.port)
    conn.sock.sendall(request_bytes(chat_body(stream=True)))
    time.sleep(0.2)
    live.stop()
    response = conn.read_response()
    conn.close()
    records = read_file_records(live.runtime.outcomes.path)

    assert_complete_stream(response)
    assert [r["status"] for r in records] == [200]


def test_shutdown_records_cancelled_call(kit: GatewayKit) -> None:
    # LiveGateway gives requests 2 s to finish after the stop, and then uvicorn cancels them.
    kit.fakes["edge"].set_default(Scenario.hang())
    kit.write_policy(timeout_s=120)
    app = create_app(kit.settings(), EDGE_SCORER)
    live = LiveGateway(app).start()
    conn = RawConnection(live.port)
    conn.sock.sendall(request_bytes(chat_body()))
    time.sleep(0.3)
    live.stop()
    response = conn.read_response()
    conn.close()
    records = read_file_records(live.runtime.outcomes.path)

    assert [(r["status"], r["error"]) for r in records] == [(503, "server_shutdown")]
    assert response.status == 503
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == records[0]["request_id"]
    assert orjson.loads(response.body)["error"]["code"] == "server_shutdown"


def test_shutdown_records_cut_stream(kit: GatewayKit) -> None:
    kit.fakes["edge"].set_default(Scenario.pause(after_events=3, seconds=10))
    kit.write_policy(timeout_s=120)
    app = create_app(kit.settings(), EDGE_SCORER)
    live = LiveGateway(app).start()
    conn = RawConnection(live.port)
    conn.sock.sendall(request_bytes(chat_body(stream=True)))
    conn.read_until(b"data: ")
    live.stop()
    received = conn.buffer
    while more := conn.sock.recv(65536):
        received += more
    conn.close()
    records = read_file_records(live.runtime.outcomes.path)

    # The stream ends with an error event and without [DONE], so the client sees it as cut,
    # and the chunked body is complete, so uvicorn logs no exception.
    assert received.endswith(b"0\r\n\r\n")
    assert b'"code":"server_shutdown"' in received
    assert b"[DONE]" not in received
    assert [(r["status"], r["error"]) for r in records] == [(503, "server_shutdown")]
