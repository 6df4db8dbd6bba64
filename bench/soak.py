"""Soak a Tierwise gateway with mixed traffic while its Redis is killed and paused.

The soak starts its own ``redis-server`` (127.0.0.1, free port, no persistence), three replay
upstreams and ``python -m router serve`` with that Redis, each as a process. It then sends the
traffic-mix prompts that ``bench/replay.py`` may use (so no CC BY-NC record) for a bounded time
and request count. The mix has JSON and streamed chat completions, temperature-0 repeats that the
cache can answer, and feedback posts. The soak keeps the ``x-request-id`` that the gateway returns
for each chat request, which is the outcome record's ``request_id`` and the id feedback refers to.

During the run Redis is killed with SIGKILL and started again, and paused with SIGSTOP and resumed
with SIGCONT. A Redis without persistence loses its stream when killed, so a background thread
keeps a copy of every ``{tw}:outcomes`` entry. Just before the kill the soak pauses Redis writes
(``CLIENT PAUSE ... WRITE``) and reads the stream to its end. Deliveries blocked by that pause time
out in the gateway, whose records stay in its spool folder (``<data dir>/spool``) until Redis
takes them.

At the end the gateway gets SIGTERM (its shutdown delivers what its spool holds). A spool file
left behind is delivered by starting the gateway again on the same data folder and Redis;
records still undelivered after that are read from the files, past the offset Redis stored. Exit status: 0 when every request succeeded and every
outcome record arrived, 1 otherwise, 2 on a usage or setup error.

Examples (from the repository root):

    python bench/soak.py                          # 10 minutes, 8 requests in flight
    python bench/soak.py --minutes 2 --rps-limit 20 --faults kill
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    import httpx
    import openai

    from bench.replay import Prompt

REPO_ROOT = Path(__file__).resolve().parents[1]
# The gateway's stream with the default key prefix (router.outcomes.log.stream_key()).
STREAM_KEY = "{tw}:outcomes"
FAULT_KINDS = ("kill", "pause")
# Shares of the traffic mix. The other requests are chat completions with a new prompt.
FEEDBACK_SHARE = 0.08
REPEAT_SHARE = 0.20
STREAM_SHARE = 0.35
FRESH_TEMPERATURE_ZERO_SHARE = 0.6
RSS_FLAT_TOLERANCE = 0.10
SPOOL_DELIVERY_TIMEOUT_S = 60.0
# Shorter than the gateway's keep-alive timeout (uvicorn's default, 5 s). A client that reuses a
# connection at the moment the server closes it gets a reset before the request reaches the app.
KEEPALIVE_EXPIRY_S = 2.0

# Every request, chat and feedback, goes out under this key, so all belong to one tenant.
SOAK_API_KEY = "soak"
FAILURE_SAMPLES = 20
# The gateway writes every outcome record here, in its data folder, until Redis has it.
SPOOL_FOLDER = "spool"


Seen = tuple[str, str, bool]
"""An outcome record reduced to what the soak checks: type, request id and cache hit."""


def seen(record: dict[str, Any]) -> Seen:
    return str(record.get("type")), str(record.get("request_id")), record.get("cache_hit") is True


class SoakSetupError(RuntimeError):
    """Raised when redis-server or the public data is missing, or Redis does not start."""


@dataclass(frozen=True, slots=True)
class SoakOptions:
    """One soak run; durations are seconds, ``rps_limit`` is requests per second (None: none)."""

    duration_s: float = 600.0
    concurrency: int = 8
    rps_limit: float | None = None
    max_requests: int = 100_000
    faults: tuple[str, ...] = FAULT_KINDS
    down_s: float = 3.0
    pause_s: float = 5.0
    rss_interval_s: float = 5.0
    timeout_s: float = 60.0
    seed: int = 7
    workdir: Path | None = None
    data_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class Planned:
    """One request of the traffic mix: a chat completion, or feedback on ``target``."""

    kind: str
    request_id: str
    text: str = ""
    temperature: float = 0.0
    stream: bool = False
    repeat: bool = False
    target: str = ""


@dataclass(slots=True)
class Tally:
    """The client's view of the run: counts, failure reasons, and ids whose records must arrive."""

    chat_sent: int = 0
    streamed: int = 0
    repeats: int = 0
    feedback_sent: int = 0
    succeeded: int = 0
    cache_hits: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failure_samples: list[str] = field(default_factory=list)
    """The first failures, with request id and seconds since the traffic started."""
    started: float = field(default_factory=time.monotonic)
    answered: set[str] = field(default_factory=set)
    """Chat request ids that got an HTTP response, so the gateway must have a record of them."""
    feedback_accepted: set[str] = field(default_factory=set)
    feedback_targets: deque[str] = field(default_factory=lambda: deque(maxlen=2000))

    @property
    def sent(self) -> int:
        return self.chat_sent + self.feedback_sent

    def fail(self, request_id: str, reason: str) -> None:
        self.failures[reason] += 1
        if len(self.failure_samples) < FAILURE_SAMPLES:
            at_s = time.monotonic() - self.started
            self.failure_samples.append(f"{request_id} at {at_s:.1f} s: {reason}")


# Redis and the copy of its stream ------------------------------------------------------------


class PrivateRedis:
    """A redis-server of the soak's own on 127.0.0.1, without persistence, in ``folder``."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.process_ids: list[int] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout_s: float = 2.0) -> redis.Redis:
        return redis.Redis(
            port=self.port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    def start(self) -> None:
        """Start redis-server and wait for PING.

        Raises:
            SoakSetupError: Redis did not reply to PING within 30 s.
        """
        command = [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
            "--appendonly", "no", "--dir", str(self.folder),
            "--logfile", str(self.folder / f"redis-{len(self.process_ids) + 1}.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.process_ids.append(self.process.pid)
        deadline = time.monotonic() + 30
        with self.client() as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                time.sleep(0.05)
        raise SoakSetupError(
            f"redis-server on port {self.port} did not reply to PING within 30 s; see {self.folder}"
        )

    def send_signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def kill(self) -> None:
        """Kill redis-server with SIGKILL, which loses its data as a crash would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None


class StreamCollector:
    """A background thread that copies every outcome stream entry into memory.

    It polls XRANGE after the last id seen. :meth:`hold` stops the polling while the caller
    drains the stream and restarts Redis, and :meth:`reset` then starts at the new stream's
    first entry.
    """

    def __init__(self, server: PrivateRedis, poll_s: float = 0.25) -> None:
        self.server = server
        self.poll_s = poll_s
        self.records: list[Seen] = []
        self.read_errors = 0
        self._last_id = "0-0"
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-collector", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._lock:
            yield

    def reset(self) -> None:
        """Read the next stream from its first entry (after Redis restarted with no data)."""
        with self._lock:
            self._last_id = "0-0"

    def drain(self) -> None:
        """Read every entry up to the stream's end; redis.RedisError propagates when Redis fails."""
        with self._lock, self.server.client() as client:
            while self._read_batch(client):
                pass

    def _read_batch(self, client: redis.Redis) -> int:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
            STREAM_KEY, min=f"({self._last_id}", count=1000
        )  # redis-py types the reply loosely. Without decode_responses it is bytes.
        for entry_id, fields in entries:
            self.records.append(seen(json.loads(fields[b"record"])))
            self._last_id = entry_id.decode()
        return len(entries)

    def _run(self) -> None:
        with self.server.client(timeout_s=1.0) as client:
            while not self._stop.wait(self.poll_s):
                try:
                    with self._lock:
                        while self._read_batch(client):
                            pass
                except redis.RedisError:
                    # Redis is down or paused on purpose, and the next poll tries again.
                    self.read_errors += 1


async def sample_rss(
    pid: int, interval_s: float, samples: list[tuple[float, int]], done: asyncio.Event
) -> None:
    """Append (seconds since the start, VmRSS in kB) of ``pid`` every ``interval_s`` until done."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(OSError, ValueError, StopIteration):
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            line = next(line for line in status if line.startswith("VmRSS:"))
            samples.append((round(time.monotonic() - started, 1), int(line.split()[1])))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), interval_s)
        if done.is_set():
            return


# Traffic -------------------------------------------------------------------------------------


class TrafficPlan:
    """A seeded generator of requests that follows the mix shares."""

    def __init__(self, prompts: Sequence[Prompt], seed: int, run_tag: str) -> None:
        self.prompts = prompts
        self.random = random.Random(seed)
        self.run_tag = run_tag
        self.next_fresh = 0
        self.repeatable: list[str] = []

    def next(self, number: int, tally: Tally) -> Planned:
        request_id = f"soak-{self.run_tag}-{number:06d}"
        draw = self.random.random()
        if draw < FEEDBACK_SHARE and tally.feedback_targets:
            return Planned("feedback", request_id, target=tally.feedback_targets.pop())
        stream = self.random.random() < STREAM_SHARE
        if draw < FEEDBACK_SHARE + REPEAT_SHARE and self.repeatable:
            text = self.random.choice(self.repeatable)
            return Planned("chat", request_id, text, 0.0, stream, repeat=True)
        text = self.prompts[self.next_fresh % len(self.prompts)].text
        self.next_fresh += 1
        if self.random.random() < FRESH_TEMPERATURE_ZERO_SHARE:
            self.repeatable.append(text)
            return Planned("chat", request_id, text, 0.0, stream)
        return Planned("chat", request_id, text, 0.7, stream)


class Pacer:
    """A limiter that spaces request starts ``1 / rps`` seconds apart (no limit when None)."""

    def __init__(self, rps: float | None) -> None:
        self.interval_s = 1.0 / rps if rps else 0.0
        self.next_at = 0.0

    async def wait(self) -> None:
        if not self.interval_s:
            return
        now = time.monotonic()
        slot = max(now, self.next_at)
        self.next_at = slot + self.interval_s
        await asyncio.sleep(slot - now)


@dataclass(slots=True)
class Driver:
    """The traffic loop's shared state: limits, the plan, the tally and the clients."""

    options: SoakOptions
    plan: TrafficPlan
    chat_client: openai.AsyncOpenAI
    http: httpx.AsyncClient
    deadline: float
    pacer: Pacer
    tally: Tally = field(default_factory=Tally)
    issued: int = 0

    def claim(self) -> int | None:
        """Return the next request number, or None when the time or count bound is reached."""
        if self.issued >= self.options.max_requests or time.monotonic() >= self.deadline:
            return None
        self.issued += 1
        return self.issued


async def _read_stream(raw: Any) -> bool:
    finished = False
    async for chunk in raw.parse():
        if any(choice.finish_reason for choice in chunk.choices):
            finished = True
    return finished


async def send_chat(driver: Driver, item: Planned) -> None:
    """Send one chat completion and count the result, or the failure by its reason."""
    import openai

    tally = driver.tally
    tally.chat_sent += 1
    tally.streamed += item.stream
    tally.repeats += item.repeat
    request: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": item.text}],
        "temperature": item.temperature,
    }
    if item.stream:
        request |= {"stream": True, "stream_options": {"include_usage": True}}
    error: str | None = None
    # The gateway accepts feedback only for ids it issued itself, so the soak sends no
    # x-request-id and keeps the one the response carries. A request without a response
    # keeps the planned id, which only labels its failure.
    request_id = item.request_id
    try:
        raw = await driver.chat_client.chat.completions.with_raw_response.create(**request)
        request_id = raw.headers.get("x-request-id") or item.request_id
        tally.answered.add(request_id)
        cache_hit = raw.headers.get("x-tierwise-cache") == "hit"
        if item.stream:
            error = None if await _read_stream(raw) else "stream ended without a finish_reason"
        else:
            error = None if raw.parse().choices else "completion without choices"
    except openai.APIStatusError as exc:
        request_id = exc.response.headers.get("x-request-id") or item.request_id
        tally.answered.add(request_id)
        error = f"HTTP {exc.status_code} {exc.code or ''}".strip()
    except openai.APIError as exc:
        error = type(exc).__name__
    if error is not None:
        tally.fail(request_id, f"chat: {error}")
        return
    tally.succeeded += 1
    tally.cache_hits += cache_hit
    tally.feedback_targets.appendleft(request_id)


async def send_feedback(driver: Driver, item: Planned) -> None:
    """Post a score for an earlier request, whose feedback record must then reach the stream."""
    import httpx

    tally = driver.tally
    tally.feedback_sent += 1
    score = round(driver.plan.random.random(), 3)
    try:
        response = await driver.http.post(
            "/v1/feedback", json={"request_id": item.target, "score": score}
        )
    except httpx.HTTPError as exc:
        tally.fail(item.target, f"feedback: {type(exc).__name__}")
        return
    if response.status_code != 200:
        tally.fail(item.target, f"feedback: HTTP {response.status_code}")
        return
    tally.succeeded += 1
    tally.feedback_accepted.add(item.target)


async def _worker(driver: Driver) -> None:
    while (number := driver.claim()) is not None:
        await driver.pacer.wait()
        item = driver.plan.next(number, driver.tally)
        await (send_feedback if item.kind == "feedback" else send_chat)(driver, item)


# Faults --------------------------------------------------------------------------------------


def kill_and_restart(server: PrivateRedis, collector: StreamCollector, down_s: float) -> None:
    """Copy the stream, kill Redis with SIGKILL, leave it down ``down_s``, start it again."""
    with collector.hold():
        with server.client() as client:
            # Writes that arrive from here on block, time out in the gateway and are spooled,
            # so the copy below misses no entry that Redis acknowledged.
            client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        collector.drain()
        server.kill()
        time.sleep(down_s)
        server.start()
        collector.reset()


def pause_and_resume(server: PrivateRedis, pause_s: float) -> None:
    """Stop Redis with SIGSTOP for ``pause_s`` seconds, then continue it with SIGCONT."""
    server.send_signal(signal.SIGSTOP)
    try:
        time.sleep(pause_s)
    finally:
        server.send_signal(signal.SIGCONT)


async def inject_faults(
    options: SoakOptions,
    server: PrivateRedis,
    collector: StreamCollector,
    traffic_done: asyncio.Event,
    events: list[dict[str, Any]],
) -> None:
    """Run each fault at an even share of the duration, and no more faults after traffic ends."""
    started = time.monotonic()
    for index, kind in enumerate(options.faults):
        due = started + options.duration_s * (index + 1) / (len(options.faults) + 1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(traffic_done.wait(), max(0.0, due - time.monotonic()))
        if traffic_done.is_set():
            return
        at_s = time.monotonic() - started
        if kind == "kill":
            await asyncio.to_thread(kill_and_restart, server, collector, options.down_s)
        else:
            await asyncio.to_thread(pause_and_resume, server, options.pause_s)
        took_s = time.monotonic() - started - at_s
        events.append({"kind": kind, "at_s": round(at_s, 1), "took_s": round(took_s, 1)})
        print(f"fault: {kind} at {at_s:.1f} s, Redis answering again", flush=True)


async def drive_traffic(
    options: SoakOptions, stack: Stack, plan: TrafficPlan, collector: StreamCollector
) -> Tally:
    """Send the traffic mix while faults run and RSS is sampled; return the client's tally."""
    import httpx
    import openai

    assert stack.gateway is not None
    # openai builds its client on its own httpx flavour, so its Limits class is taken from it.
    chat_limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
        max_connections=1000, max_keepalive_connections=100, keepalive_expiry=KEEPALIVE_EXPIRY_S
    )
    chat_client = openai.AsyncOpenAI(
        base_url=stack.gateway_url,
        api_key=SOAK_API_KEY,
        max_retries=0,
        timeout=options.timeout_s,
        http_client=openai.DefaultAsyncHttpxClient(limits=chat_limits),
    )
    # Feedback goes out under the chat requests' key, because the gateway accepts feedback
    # only from the tenant its request id was issued to.
    http = httpx.AsyncClient(
        base_url=stack.gateway_url.removesuffix("/v1"),
        headers={"Authorization": f"Bearer {SOAK_API_KEY}"},
        timeout=options.timeout_s,
        limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S),
    )
    deadline = time.monotonic() + options.duration_s
    driver = Driver(options, plan, chat_client, http, deadline, Pacer(options.rps_limit))
    done = asyncio.Event()
    background = [
        asyncio.create_task(inject_faults(options, stack.redis, collector, done, stack.faults)),
        asyncio.create_task(
            sample_rss(stack.gateway.pid, options.rss_interval_s, stack.rss_samples, done)
        ),
    ]
    try:
        await asyncio.gather(*(_worker(driver) for _ in range(options.concurrency)))
    finally:
        done.set()
        # A fault that has begun runs to its end, so Redis is never left stopped.
        await asyncio.gather(*background)
        await chat_client.close()
        await http.aclose()
    return driver.tally


# The stack -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Stack:
    """The processes of one soak, what happened to them, and the folders they write to."""

    workdir: Path
    redis: PrivateRedis
    processes: list[tuple[str, subprocess.Popen[str]]] = field(default_factory=list)
    policy_path: Path | None = None
    gateway: subprocess.Popen[str] | None = None
    gateway_url: str = ""
    gateway_exit_codes: list[int | None] = field(default_factory=list)
    process_ids: list[int] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    rss_samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        """The gateway's data folder, shared by every start so that a spool survives a restart."""
        return self.workdir / "data"


def start_upstreams(stack: Stack) -> None:
    """Start one replay upstream per tier and write the policy that points at them."""
    from tests.support.fixtures import REPLAY_STACK, TierUpstream, write_policy
    from tests.support.recorded import BENCH_SOURCES
    from tests.support.stack import start_replay_process

    upstreams: list[TierUpstream] = []
    for spec in REPLAY_STACK:
        log_path = stack.workdir / f"replay-{spec.tier}.log"
        process, url = start_replay_process(spec, log_path, BENCH_SOURCES)
        stack.processes.append((f"replay {spec.model}", process))
        stack.process_ids.append(process.pid)
        upstreams.append(TierUpstream(spec, url))
    stack.policy_path = write_policy(stack.workdir / "policy.yaml", upstreams)


def start_gateway(stack: Stack) -> None:
    """Start the gateway on the soak's Redis and data folder; each start logs to its own folder."""
    from tests.support.stack import start_gateway as start_gateway_process

    assert stack.policy_path is not None
    log_dir = stack.workdir / f"gateway-{len(stack.gateway_exit_codes) + 1}"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {"TIERWISE_REDIS_URL": stack.redis.url, "TIERWISE_DATA_DIR": str(stack.data_dir)}
    stack.gateway, stack.gateway_url = start_gateway_process(stack.policy_path, log_dir, env)
    stack.process_ids.append(stack.gateway.pid)


def stop_gateway(stack: Stack) -> None:
    """Send SIGTERM (SIGKILL after 15 s), whose graceful shutdown flushes queued outcomes."""
    from tests.support.stack import stop_process

    if stack.gateway is not None:
        stop_process(stack.gateway, "gateway")
        stack.gateway_exit_codes.append(stack.gateway.returncode)
        stack.gateway = None


def spool_files(stack: Stack) -> list[Path]:
    return sorted((stack.data_dir / SPOOL_FOLDER).glob("outcomes-*.jsonl"))


def deliver_spool(stack: Stack) -> bool:
    """Start the gateway again until it has sent its spool to Redis; return whether it did."""
    if not spool_files(stack):
        return True
    print(f"spool files were left in {stack.data_dir / SPOOL_FOLDER}; starting the gateway "
          "again to deliver them", flush=True)  # fmt: skip
    start_gateway(stack)
    deadline = time.monotonic() + SPOOL_DELIVERY_TIMEOUT_S
    while spool_files(stack) and time.monotonic() < deadline:
        time.sleep(0.25)
    stop_gateway(stack)
    return not spool_files(stack)


def stop_all(stack: Stack) -> None:
    """Stop the gateway, the replay upstreams and Redis, also after an error."""
    from tests.support.stack import stop_process

    stop_gateway(stack)
    for name, process in reversed(stack.processes):
        stop_process(process, name)
    stack.processes.clear()
    stack.redis.stop()


# Accounting and report -----------------------------------------------------------------------


def read_spool(stack: Stack) -> list[Seen]:
    """Return the records of the spool files that Redis does not have, by its stored offsets."""
    from router.outcomes.log import delivered_key
    from router.redis_link import DEFAULT_KEY_PREFIX

    client = stack.redis.client(timeout_s=5.0)
    records: list[Seen] = []
    try:
        for path in spool_files(stack):
            stored = client.get(delivered_key(DEFAULT_KEY_PREFIX, path.stem))
            lines = path.read_bytes()[int(stored or 0) :].split(b"\n")
            records.extend(seen(json.loads(line)) for line in lines if line.strip())
    finally:
        client.close()
    return records


def account_records(stream: list[Seen], spool: list[Seen], tally: Tally) -> dict[str, Any]:
    """Compare the records that arrived with the ids the client expects, as counts and a sample."""
    found = Counter((kind, request_id) for kind, request_id, _ in stream + spool)
    expected = {("request", request_id) for request_id in tally.answered}
    expected |= {("feedback", request_id) for request_id in tally.feedback_accepted}
    missing = sorted(expected - found.keys())
    in_stream = {(kind, request_id) for kind, request_id, _ in stream}
    return {
        "expected_records": len(expected),
        "stream_request_ids": sum(1 for kind, _ in in_stream if kind == "request"),
        "stream_feedback_ids": sum(1 for kind, _ in in_stream if kind == "feedback"),
        "spool_records": len(spool),
        "missing": len(missing),
        "missing_sample": [f"{kind} {request_id}" for kind, request_id in missing[:10]],
        "duplicates": sum(count - 1 for count in found.values()),
        "unexpected": len(found.keys() - expected),
        "record_cache_hits": len({request_id for _, request_id, hit in stream + spool if hit}),
    }


def rss_figures(samples: list[tuple[float, int]], duration_s: float) -> dict[str, Any]:
    """RSS (kB) first, after warm-up ("start"), at the middle and at the end, and whether flat.

    Warm-up is the first tenth of the run (at least 5 s), while imports, caches and connection
    pools still grow. Flat means the middle and end samples are within 10% of the start sample.
    """
    if not samples:
        return {"flat": None}
    warmup_s = max(5.0, duration_s / 10)
    after = [sample for sample in samples if sample[0] >= warmup_s] or samples[-1:]
    start, end = after[0][1], after[-1][1]
    middle = min(after, key=lambda sample: abs(sample[0] - duration_s / 2))[1]
    change = max(abs(middle - start), abs(end - start)) / start
    return {
        "first_kb": samples[0][1],
        "start_kb": start,
        "middle_kb": middle,
        "end_kb": end,
        "peak_kb": max(kilobytes for _, kilobytes in samples),
        "warmup_s": warmup_s,
        "max_change": round(change, 4),
        "flat": change <= RSS_FLAT_TOLERANCE,
        "samples": samples,
    }


def gateway_log_events(workdir: Path) -> dict[str, int]:
    """Count warning and error events (and lines that are not JSON) in every gateway log."""
    events: Counter[str] = Counter()
    for path in sorted(workdir.glob("gateway-*/gateway.log")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = None
            if not isinstance(entry, dict):
                events["(not JSON)"] += bool(line.strip())
            elif entry.get("level") not in ("info", "debug"):
                events[f"{entry.get('level')} {entry.get('event')}"] += 1
    return dict(events.most_common())


def build_report(
    options: SoakOptions, stack: Stack, tally: Tally, records: dict[str, Any], traffic_s: float
) -> dict[str, Any]:
    """Return the soak's figures, where ``passed`` is False if a request failed or a record is missing."""
    return {
        "traffic_s": round(traffic_s, 1),
        "concurrency": options.concurrency,
        "rps_limit": options.rps_limit,
        "sent": tally.sent,
        "chat_sent": tally.chat_sent,
        "streamed": tally.streamed,
        "repeats": tally.repeats,
        "feedback_sent": tally.feedback_sent,
        "succeeded": tally.succeeded,
        "failures": dict(tally.failures.most_common()),
        "failure_samples": tally.failure_samples,
        "cache_hits": tally.cache_hits,
        "records": records,
        "faults": stack.faults,
        "rss": rss_figures(stack.rss_samples, traffic_s),
        "gateway_exit_codes": stack.gateway_exit_codes,
        "log_events": gateway_log_events(stack.workdir),
        "process_ids": [*stack.process_ids, *stack.redis.process_ids],
        "workdir": str(stack.workdir),
        "passed": not tally.failures and records["missing"] == 0 and tally.succeeded > 0,
    }


def print_report(report: dict[str, Any]) -> None:
    """Print the soak's figures as a short plain-text summary."""
    records, rss = report["records"], report["rss"]
    rate = f"at most {report['rps_limit']} requests/s" if report["rps_limit"] else "no rate limit"
    print(f"traffic: {report['traffic_s']:.0f} s, concurrency {report['concurrency']}, {rate}")
    print(
        f"requests sent: {report['sent']} (chat {report['chat_sent']}: {report['streamed']}"
        f" streamed, {report['repeats']} temperature-0 repeats; feedback {report['feedback_sent']})"
    )

    print(f"succeeded: {report['succeeded']}  failed: {sum(report['failures'].values())}")
    for reason, count in report["failures"].items():
        print(f"  {count:6d}  {reason}")
    for sample in report["failure_samples"]:
        print(f"  {sample}")
    print(
        f"outcome records: {records['stream_request_ids']} request ids and"
        f" {records['stream_feedback_ids']} feedback ids in the stream,"
        f" {records['spool_records']} in the spool file; expected {records['expected_records']},"
        f" missing {records['missing']}, duplicates {records['duplicates']},"
        f" unexpected {records['unexpected']}"
    )
    if records["missing_sample"]:
        print("  missing, first 10: " + ", ".join(records["missing_sample"]))

    print(f"cache hits: {report['cache_hits']} responses, {records['record_cache_hits']} records")
    faults = ", ".join(f"{f['kind']} at {f['at_s']} s ({f['took_s']} s)" for f in report["faults"])
    print(f"redis faults: {faults or 'none'}")
    if rss["flat"] is not None:
        megabytes = {
            key: rss[f"{key}_kb"] / 1024 for key in ("first", "start", "middle", "end", "peak")
        }
        print(
            "gateway RSS (MB): "
            + ", ".join(f"{key} {value:.0f}" for key, value in megabytes.items())
            + f"; start is after {rss['warmup_s']:.0f} s of warm-up; max change"
            f" {100 * rss['max_change']:.1f}%: {'flat' if rss['flat'] else 'NOT flat'}"
        )

    print(f"gateway exit codes: {report['gateway_exit_codes']}; log warnings and errors:")
    for event, count in report["log_events"].items():
        print(f"  {count:6d}  {event}")
    print(f"result: {'PASS' if report['passed'] else 'FAIL'} (files in {report['workdir']})")


# Running -------------------------------------------------------------------------------------


def load_soak_prompts(data_dir: Path, seed: int) -> list[Prompt]:
    """Return every prompt ``bench/replay.py`` may send, shuffled with ``seed``."""
    from bench.replay import load_prompts
    from tests.support.correctness import load_correctness

    return load_prompts(data_dir, load_correctness(data_dir), count=sys.maxsize, seed=seed)


def soak(options: SoakOptions, stack: Stack, prompts: list[Prompt]) -> dict[str, Any]:
    """Run traffic and faults on a started stack, stop the gateway, and return the report."""
    collector = StreamCollector(stack.redis)
    plan = TrafficPlan(prompts, options.seed, run_tag=f"{int(time.time()):x}")
    collector.start()
    started = time.monotonic()
    try:
        tally = asyncio.run(drive_traffic(options, stack, plan, collector))
        traffic_s = time.monotonic() - started
        print(f"traffic stopped after {traffic_s:.0f} s; stopping the gateway", flush=True)
    finally:
        stop_gateway(stack)
        delivered = deliver_spool(stack)
        collector.stop()
    collector.drain()
    spool = [] if delivered else read_spool(stack)
    records = account_records(collector.records, spool, tally)
    return build_report(options, stack, tally, records, traffic_s)


def run_soak(options: SoakOptions) -> dict[str, Any]:
    """Start Redis, the replay upstreams and the gateway, soak, stop everything, return the report.

    Raises:
        SoakSetupError: redis-server or the public data folder is missing, or Redis did not start.
        tests.support.stack.StackStartError: a replay upstream or the gateway did not start.
    """
    from tests.support.recorded import shared_data_dir
    from tests.support.stack import free_port

    if shutil.which("redis-server") is None:
        raise SoakSetupError(
            "redis-server not found on PATH. Install it: apt-get install redis-server"
        )
    data_dir = (options.data_dir or shared_data_dir()).resolve()
    if not data_dir.is_dir():
        raise SoakSetupError(
            f"public data folder not found at {data_dir}. Pass --data-dir or set"
            " TIERWISE_SHARED_DATA."
        )
    prompts = load_soak_prompts(data_dir, options.seed)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="tierwise-soak-"))
    stack = Stack(workdir, PrivateRedis(workdir / "redis", free_port()))
    for folder in (stack.redis.folder, stack.data_dir):
        folder.mkdir(parents=True, exist_ok=True)
    print(f"{len(prompts)} prompts; the policy, logs and gateway data go to {workdir}", flush=True)
    try:
        stack.redis.start()
        start_upstreams(stack)
        start_gateway(stack)
        print(f"gateway {stack.gateway_url}, Redis {stack.redis.url}", flush=True)
        return soak(options, stack, prompts)
    finally:
        stop_all(stack)


def parse_args(argv: Sequence[str] | None) -> tuple[SoakOptions, Path | None]:
    """Parse the command line into options and the JSON report path; argparse exits 2 on errors."""
    parser = argparse.ArgumentParser(
        prog="python bench/soak.py",
        description="Soak a Tierwise gateway with mixed traffic while its Redis is killed and"
        " paused, then check that every request succeeded and every outcome record arrived.",
        epilog="Example: python bench/soak.py --minutes 10 --concurrency 8",
    )
    add = parser.add_argument
    add("--minutes", type=float, default=10.0, help="traffic duration in minutes (default 10)")
    add("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    add("--rps-limit", type=float, help="max requests started per second (default: no limit)")
    add("--max-requests", type=int, default=100_000, help="request bound (default 100000)")
    add(
        "--faults",
        default=",".join(FAULT_KINDS),
        help="Redis faults in order, spread evenly over the run: kill (SIGKILL, then start"
        " again) and pause (SIGSTOP, then SIGCONT); 'none' for no fault (default kill,pause)",
    )
    add("--down-s", type=float, default=3.0, help="seconds Redis stays killed (default 3)")
    add("--pause-s", type=float, default=5.0, help="seconds Redis stays stopped (default 5)")
    add("--rss-interval", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    add("--seed", type=int, default=7, help="seed of the prompt order and the mix (default 7)")
    add("--workdir", type=Path, help="folder for logs and data (default: a new temporary one)")
    add("--data-dir", type=Path, help="public data (default: $TIERWISE_SHARED_DATA)")
    add("--json-out", type=Path, help="also write the report as JSON to this file")

    args = parser.parse_args(argv)
    faults = tuple(
        kind.strip() for kind in args.faults.split(",") if kind.strip() not in ("", "none")
    )
    unknown = sorted(set(faults) - set(FAULT_KINDS))
    if unknown:
        parser.error(f"unknown fault {', '.join(unknown)}; expected kill, pause or none")
    if min(args.minutes, args.concurrency, args.max_requests) <= 0:
        parser.error("--minutes, --concurrency and --max-requests must be positive")

    options = SoakOptions(
        duration_s=args.minutes * 60, concurrency=args.concurrency, rps_limit=args.rps_limit,
        max_requests=args.max_requests, faults=faults, down_s=args.down_s, pause_s=args.pause_s,
        rss_interval_s=args.rss_interval, seed=args.seed, workdir=args.workdir,
        data_dir=args.data_dir,
    )  # fmt: skip
    return options, args.json_out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak and return 0 if it passed, 1 if an invariant failed, 2 on a setup error."""
    options, json_out = parse_args(argv)
    # The helpers live in tests/support and bench/, but a script run puts only bench/ on sys.path.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.support.stack import StackStartError

    try:
        report = run_soak(options)
    except (SoakSetupError, StackStartError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_report(report)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
