"""Redis faults: a paused or killed Redis costs cache hits, never requests or outcome records.

Each test runs its own redis-server on a free port, because it pauses or kills it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from router.outcomes.log import STREAM_KEY
from router.redis_link import RedisLink
from tests.gateway.conftest import GatewayKit, chat_body

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed; `make test` installs the Debian package",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, without persistence."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def signal(self, number: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, number)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stream_request_ids(self) -> list[str]:
        client = redis.Redis(port=self.port)
        entries = client.xrange(STREAM_KEY)
        return [orjson.loads(fields[b"record"])["request_id"] for _, fields in entries]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_paused_redis_degrades_to_misses_and_loses_no_outcome(
    kit: GatewayKit, private_redis: PrivateRedis
) -> None:
    kit.write_policy()
    settings = kit.settings(redis_timeout_s=0.2).model_copy(update={"redis_url": private_redis.url})
    async with kit.running(settings=settings) as gateway:
        sent: list[str] = []
        for index in range(5):
            response = await gateway.chat(chat_body(f"Before the pause, request {index}.", temperature=0))
            assert response.status_code == 200
            sent.append(response.headers["x-request-id"])

        private_redis.signal(signal.SIGSTOP)
        paused_latencies = []
        for index in range(20):
            started = time.perf_counter()
            response = await gateway.chat(chat_body(f"During the pause, request {index}.", temperature=0))
            paused_latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
            assert response.headers["x-tierwise-cache"] == "miss"
            sent.append(response.headers["x-request-id"])
        await gateway.runtime.outcomes.flush()
        ready = (await gateway.client.get("/readyz")).json()
        spooled = gateway.runtime.outcomes.undelivered_bytes > 0

        private_redis.signal(signal.SIGCONT)
        await asyncio.sleep(0.1)
        # The breaker lets a probe through after its reset interval; then the spool drains.
        deadline = time.monotonic() + 15
        while gateway.runtime.outcomes.undelivered_bytes and time.monotonic() < deadline:
            await gateway.runtime.outcomes.flush()
            await asyncio.sleep(0.25)

    assert ready["status"] == "degraded"
    assert ready["redis"] == "degraded"
    assert spooled
    # After the breaker opens, a request no longer waits on Redis at all.
    assert sorted(paused_latencies)[len(paused_latencies) // 2] < 1.0
    delivered = private_redis.stream_request_ids()
    assert sorted(delivered) == sorted(sent)


async def test_gateway_starts_and_serves_with_redis_down(kit: GatewayKit, tmp_path: Path) -> None:
    kit.write_policy()
    down_url = f"redis://127.0.0.1:{free_port()}/0"
    settings = kit.settings(redis_timeout_s=0.2).model_copy(update={"redis_url": down_url})
    async with kit.running(settings=settings) as gateway:
        response = await gateway.chat(chat_body("Hello while Redis is down.", temperature=0))
        ready = (await gateway.client.get("/readyz")).json()
        await gateway.runtime.outcomes.flush()
        spool_dir = gateway.runtime.outcomes.spool_dir
        lines = b"".join(path.read_bytes() for path in spool_dir.glob("outcomes-*.jsonl"))
        spooled = [orjson.loads(line) for line in lines.splitlines()]

    assert response.status_code == 200
    assert ready["redis"] == "degraded"
    assert [record["request_id"] for record in spooled] == [response.headers["x-request-id"]]


async def test_killed_redis_records_arrive_after_restart(
    kit: GatewayKit, private_redis: PrivateRedis
) -> None:
    kit.write_policy()
    settings = kit.settings(redis_timeout_s=0.2).model_copy(update={"redis_url": private_redis.url})
    async with kit.running(settings=settings) as gateway:
        sent = []
        private_redis.stop()
        for index in range(10):
            response = await gateway.chat(chat_body(f"Redis is gone, request {index}.", temperature=0))
            assert response.status_code == 200
            sent.append(response.headers["x-request-id"])
        await gateway.runtime.outcomes.flush()
        private_redis.start()
        deadline = time.monotonic() + 15
        while gateway.runtime.outcomes.undelivered_bytes and time.monotonic() < deadline:
            await gateway.runtime.outcomes.flush()
            await asyncio.sleep(0.25)

    assert sorted(private_redis.stream_request_ids()) == sorted(sent)


async def test_persistence_check_matches_redis_config(
    redis_url: str, redis_client: redis.Redis
) -> None:
    aof = int(redis_client.info("persistence").get("aof_enabled", 0))
    save = str(redis_client.config_get("save").get("save", "")).strip()
    link = RedisLink(redis_url, timeout_s=1.0)
    try:
        persistent = await link.is_persistent()
    finally:
        await link.close()

    assert persistent is bool(aof or save)


async def test_persistence_unknown_when_redis_is_down() -> None:
    link = RedisLink("redis://127.0.0.1:1/0", timeout_s=0.2)
    try:
        assert await link.is_persistent() is None
    finally:
        await link.close()
