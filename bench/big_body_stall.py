"""Measure how maximum-size request bodies delay the small requests that a gateway serves.

Starts the mock upstream (client core) and a gateway with the bench policy (server core,
one worker process), then sends, at the same time:

- a steady open-loop stream of small chat requests (``--rate`` per second),
- a ``GET /healthz`` probe every 10 ms, one at a time. The gateway serves it on the event
  loop with no other work, so its latency is how long the loop was blocked (plus about 1 ms),
- in the second phase only, maximum-size bodies of each shape in ``bench.big_body_shapes``,
  one after another, each ``--repeat`` times.

It prints the small requests' p50 and p99 latency and the longest health probe, without and
with the big bodies, and per shape the big request's status and latency and the longest
probe while it ran. With ``--runs N`` every figure is the median of N runs.

Run from the repository root (``--checkout`` runs another source tree's gateway, such as
the main checkout, for a before-and-after comparison):

    python -m bench.big_body_stall
    python -m bench.big_body_stall --checkout /path/to/other/checkout --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from bench.big_body_shapes import DEFAULT_LIMIT, SHAPES
from bench.harness import CLIENT_CPU, REPO_ROOT, SERVER_CPU, ManagedProcess, free_port, pin_self
from bench.targets import write_tierwise_policy

PROBE_INTERVAL_S = 0.01
SMALL_BODY = orjson.dumps({
    "model": "auto",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
})
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer big-body-bench"}


@dataclass
class Phase:
    """Latencies that the small requests and the probes measured during one phase, in ms."""

    small: list[float] = field(default_factory=list)
    small_errors: int = 0
    probes: list[tuple[float, float]] = field(default_factory=list)
    """(start time in s, latency in ms) of each health probe."""

    def summary(self) -> dict[str, float]:
        latencies = np.array(self.small) if self.small else np.array([float("nan")])
        return {
            "small_p50_ms": float(np.percentile(latencies, 50)),
            "small_p99_ms": float(np.percentile(latencies, 99)),
            "small_errors": float(self.small_errors),
            "max_probe_ms": max((latency for _, latency in self.probes), default=float("nan")),
        }


async def _small_stream(session: aiohttp.ClientSession, url: str, rate: float, phase: Phase,
                        stop: asyncio.Event) -> None:
    async def one() -> None:
        start = time.perf_counter()
        try:
            async with session.post(url, data=SMALL_BODY, headers=HEADERS) as response:
                await response.read()
                ok = response.status == 200
        except aiohttp.ClientError:
            ok = False
        if ok:
            phase.small.append((time.perf_counter() - start) * 1000)
        else:
            phase.small_errors += 1

    tasks: set[asyncio.Task[None]] = set()
    next_at = time.perf_counter()
    while not stop.is_set():
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += 1 / rate
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.gather(*tasks)


async def _probe(session: aiohttp.ClientSession, url: str, phase: Phase, stop: asyncio.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
        phase.probes.append((start, (time.perf_counter() - start) * 1000))
        await asyncio.sleep(PROBE_INTERVAL_S)


async def run_once(base: str, rate: float, seconds: float, shapes: list[str], repeat: int,
                   limit: int) -> dict[str, dict[str, float]]:
    """Run the phase without and the phase with big bodies; return their figures."""
    bodies = {name: SHAPES[name][1](limit) for name in shapes}
    results: dict[str, dict[str, float]] = {}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for with_big in (False, True):
            phase, stop = Phase(), asyncio.Event()
            workers = [
                asyncio.create_task(_small_stream(session, f"{base}/v1/chat/completions", rate,
                                                  phase, stop)),
                asyncio.create_task(_probe(session, f"{base}/healthz", phase, stop)),
            ]
            await asyncio.sleep(1.0)
            phase.small.clear()
            phase.probes.clear()
            if with_big:
                for name in shapes:
                    results[f"big {name}"] = await _send_big(session, base, name, bodies[name],
                                                             repeat, phase)
            else:
                await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*workers)
            results["with big bodies" if with_big else "without big bodies"] = phase.summary()
    return results


async def _send_big(session: aiohttp.ClientSession, base: str, name: str, raw: bytes,
                    repeat: int, phase: Phase) -> dict[str, float]:
    latencies, stalls, statuses = [], [], set()
    for _ in range(repeat):
        start = time.perf_counter()
        async with session.post(f"{base}{SHAPES[name][0]}", data=raw, headers=HEADERS) as response:
            await response.read()
            statuses.add(response.status)
        end = time.perf_counter()
        latencies.append((end - start) * 1000)
        # Wait for the probe that was in flight, then take the probes that overlapped the
        # big request.
        await asyncio.sleep(0.2)
        during = [latency for started, latency in phase.probes
                  if started <= end and started + latency / 1000 >= start]
        stalls.append(max(during, default=0.0))
    return {"status": float(max(statuses)), "latency_ms": statistics.median(latencies),
            "max_probe_ms": max(stalls)}


def _start(workdir: Path, port: int, mock_port: int, checkout: Path) -> list[ManagedProcess]:
    mock = ManagedProcess(
        "mock", [sys.executable, "-m", "bench.mock_upstream", "--port", str(mock_port)],
        workdir / "mock.log", cpu=CLIENT_CPU,
    ).start()
    mock.wait_ready(f"http://127.0.0.1:{mock_port}/health", timeout_s=30)
    policy = write_tierwise_policy(workdir / "policy.yaml", f"http://127.0.0.1:{mock_port}")
    gateway = ManagedProcess(
        "tierwise",
        [sys.executable, "-m", "router", "serve", "--policy", str(policy), "--port", str(port),
         "--no-local-model", "--log-format", "json"],
        workdir / "tierwise.log", SERVER_CPU, {"TIERWISE_DATA_DIR": str(workdir / "data")},
        cwd=checkout,
    ).start()
    gateway.wait_ready(f"http://127.0.0.1:{port}/readyz")
    return [mock, gateway]


def _print(results: list[dict[str, dict[str, float]]]) -> None:
    for row in results[0]:
        figures = {key: statistics.median(run[row][key] for run in results)
                   for key in results[0][row]}
        text = ", ".join(f"{key} {value:.0f}" if key != "status" else f"status {value:.0f}"
                         for key, value in figures.items())
        print(f"{row:<34} {text}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=None, help="gateway port (default: a free one)")
    parser.add_argument("--mock-port", type=int, default=None,
                        help="mock upstream port (default: a free one)")
    parser.add_argument("--checkout", type=Path, default=REPO_ROOT,
                        help="source tree whose gateway runs (default: this one)")
    parser.add_argument("--rate", type=float, default=40.0, help="small requests per second")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of the phase without big bodies, in seconds")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shape names")
    parser.add_argument("--repeat", type=int, default=2, help="big requests per shape")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="big body size in bytes")
    parser.add_argument("--runs", type=int, default=1, help="runs; figures are their medians")
    args = parser.parse_args(argv)
    pin_self(CLIENT_CPU)
    shapes = args.shapes.split(",")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="big-body-bench-") as folder:
        port = args.port or free_port()
        mock_port = args.mock_port or free_port()
        processes = _start(Path(folder), port, mock_port, args.checkout.resolve())
        try:
            for _ in range(args.runs):
                results.append(asyncio.run(run_once(
                    f"http://127.0.0.1:{port}", args.rate, args.seconds, shapes, args.repeat,
                    args.limit)))
        finally:
            for process in reversed(processes):
                process.stop()
    print(f"gateway: {args.checkout.resolve()}, {args.rate:g} small requests/s, "
          f"{args.runs} run(s), medians; times in ms")
    _print(results)


if __name__ == "__main__":
    main()
