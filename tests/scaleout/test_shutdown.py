"""Graceful shutdown of ``tierwise serve``: SIGTERM drains streams and flushes outcomes.

uvicorn stops accepting connections on SIGTERM, waits for in-flight responses (at most the
30 s ``timeout_graceful_shutdown`` that ``tierwise serve`` sets), then runs the app's
lifespan shutdown, whose ``OutcomeLog.stop()`` writes the records still buffered.  At
the end uvicorn raises the captured signal again, so the exit status is that of SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from router.outcomes.log import STREAM_KEY
from tests.scaleout.support import exclusive_default_namespace, logged_events, make_artifact
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import REPLAY_STACK, TierUpstream, write_policy
from tests.support.scenario import Scenario
from tests.support.stack import start_gateway, stop_process

PAUSE_S = 3.0


@pytest.fixture
def fake_tiers() -> Iterator[list[FakeUpstream]]:
    upstreams = [FakeUpstream(spec.model) for spec in REPLAY_STACK]
    for upstream in upstreams:
        upstream.start()
    try:
        yield upstreams
    finally:
        for upstream in upstreams:
            upstream.stop()


@dataclass
class RunningGateway:
    process: subprocess.Popen[str]
    base: str
    """``http://127.0.0.1:PORT``, without ``/v1``."""
    log_path: Path


@pytest.fixture
def gateway(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, fake_tiers: list[FakeUpstream]
) -> Iterator[RunningGateway]:
    """A ``tierwise serve`` process on the fakes, with Redis."""
    upstreams = [TierUpstream(spec, fake.base_url) for spec, fake in zip(REPLAY_STACK, fake_tiers)]
    policy = write_policy(tmp_path / "policy.yaml", upstreams, cache_enabled=False)
    env = {
        "TIERWISE_REDIS_URL": redis_url,
        "TIERWISE_CLASSIFIER": str(make_artifact(tmp_path / "model", "shutdown-1")),
    }
    with exclusive_default_namespace(redis_client):
        process, openai_base = start_gateway(policy, tmp_path, env)
        try:
            yield RunningGateway(process, openai_base.removesuffix("/v1"), tmp_path / "gateway.log")
        finally:
            stop_process(process, "gateway")


def chat_body(stream: bool) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "stream": stream,
    }


def read_stream(base: str, request_id: str, first_event: threading.Event) -> dict[str, Any]:
    """Stream one completion; set ``first_event`` at the first ``data:`` line."""
    lines: list[str] = []
    headers = {"x-request-id": request_id}
    with (
        httpx.Client(base_url=base, timeout=60) as client,
        client.stream(
            "POST", "/v1/chat/completions", json=chat_body(True), headers=headers
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data:"):
                lines.append(line[5:].strip())
                first_event.set()
    return {"status": response.status_code, "data": lines}


def wait_until_refused(base: str, deadline_s: float = 20.0) -> bool:
    """Return True once a new connection to ``base`` is refused."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/healthz", timeout=1.0)
        except httpx.ConnectError:
            return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


def stream_records(client: redis.Redis, after: str, request_ids: set[str]) -> list[dict[str, Any]]:
    entries: Any = client.xrange(STREAM_KEY, min=f"({after}", max="+")
    records = [orjson.loads(fields[b"record"]) for _, fields in entries]
    return [record for record in records if record.get("request_id") in request_ids]


def test_sigterm_drains_stream_and_flushes_outcomes(
    gateway: RunningGateway,
    fake_tiers: list[FakeUpstream],
    redis_client: redis.Redis,
) -> None:
    process, base, log_path = gateway.process, gateway.base, gateway.log_path
    newest: Any = redis_client.xrevrange(STREAM_KEY, count=1)
    start = newest[0][0].decode() if newest else "0-0"
    run = os.urandom(4).hex()
    answered = [f"shutdown-{run}-{n}" for n in range(5)]
    for request_id in answered:
        response = httpx.post(
            f"{base}/v1/chat/completions", json=chat_body(False),
            headers={"x-request-id": request_id}, timeout=30,
        )  # fmt: skip
        assert response.status_code == 200
    for fake in fake_tiers:
        fake.enqueue(Scenario.pause(after_events=2, seconds=PAUSE_S))
    streamed_id = f"shutdown-{run}-stream"
    first_event = threading.Event()
    result: dict[str, Any] = {}
    reader = threading.Thread(
        target=lambda: result.update(read_stream(base, streamed_id, first_event))
    )
    reader.start()
    assert first_event.wait(timeout=30), "the stream did not start"

    process.send_signal(signal.SIGTERM)
    refused = wait_until_refused(base)
    streaming_when_refused = reader.is_alive()
    reader.join(timeout=60)
    returncode = process.wait(timeout=60)

    assert refused, "the gateway kept accepting connections after SIGTERM"
    assert streaming_when_refused, "the stream ended before new connections were refused"
    assert result["status"] == 200
    assert result["data"][-1] == "[DONE]"
    assert len(result["data"]) > 3
    # uvicorn raises the captured SIGTERM again once its shutdown is complete.
    assert returncode == -signal.SIGTERM
    records = stream_records(redis_client, start, {*answered, streamed_id})
    assert sorted(record["request_id"] for record in records) == sorted([*answered, streamed_id])
    streamed = next(record for record in records if record["request_id"] == streamed_id)
    assert streamed["stream"] is True
    assert streamed["status"] == 200
    events = logged_events(log_path)
    assert "gateway_stopping" in events
    assert "gateway_stopped" in events
    assert events.index("gateway_stopping") < events.index("gateway_stopped")
