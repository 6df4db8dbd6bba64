"""A bounded closed-loop load generator for OpenAI-compatible chat endpoints on 127.0.0.1.

``concurrency`` workers share one aiohttp session and send chat requests back to back
until ``requests`` have completed or ``time_limit_s`` has passed, after ``warmup``
requests that are not counted.  Each request's body is built from the next prompt of a
fixed list, so every target sees the same sequence.

Figures per run: latency p50/p95/p99 (request start to last body byte), time to first
body byte for streams, throughput, errors, and for each watched process (the server under
test, the mock) CPU milliseconds per request from ``/proc/PID/stat`` and peak RSS from
VmHWM.  The loadgen's own CPU time is reported too, so that a saturated client core is
visible.

Run (the mock and a gateway already started):
``taskset -c 1 python -m bench.loadgen --url http://127.0.0.1:8080/v1/chat/completions \\
--concurrency 16 --requests 2000 --stream --pid GATEWAY_PID``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import numpy as np
import orjson

from bench.harness import CLIENT_CPU, cpu_seconds, memory_kb, pin_self
from bench.prompts import load_prompts

REQUEST_TIMEOUT_S = 60.0


@dataclass
class LoadConfig:
    """One load run against ``url``; ``watch`` maps a label to a PID to measure."""

    url: str
    model: str = "auto"
    stream: bool = False
    concurrency: int = 1
    requests: int = 1000
    warmup: int = 100
    time_limit_s: float = 30.0
    max_tokens: int = 64
    temperature: float | None = None
    api_key: str | None = None
    watch: dict[str, int] = field(default_factory=dict)


@dataclass
class LoadResult:
    """Figures of one run.  Times in milliseconds, CPU in milliseconds per completed request."""

    target: str
    stream: bool
    concurrency: int
    completed: int
    errors: int
    wall_s: float
    throughput_rps: float
    latency_ms: dict[str, float]
    ttfb_ms: dict[str, float] | None
    cpu_ms_per_request: dict[str, float]
    memory_kb: dict[str, dict[str, int]]
    first_error: str | None = None
    cache_hits: int = 0


def build_bodies(prompts: list[str], config: LoadConfig) -> list[bytes]:
    """Return one encoded request body per prompt."""
    bodies = []
    for prompt in prompts:
        body: dict[str, Any] = {
            "model": config.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": config.max_tokens,
        }
        if config.stream:
            body["stream"] = True
        if config.temperature is not None:
            body["temperature"] = config.temperature
        bodies.append(orjson.dumps(body))
    return bodies


def percentiles(samples: list[float]) -> dict[str, float]:
    """Return p50/p95/p99/mean/max of ``samples`` (seconds) in milliseconds."""
    if not samples:
        return {}
    values = np.asarray(samples) * 1000
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99),
            "mean": float(values.mean()), "max": float(values.max())}


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    errors: int = 0
    cache_hits: int = 0
    first_error: str | None = None

    def fail(self, reason: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = reason


async def _one_request(
    session: aiohttp.ClientSession, config: LoadConfig, body: bytes, tally: _Tally | None
) -> None:
    started = time.perf_counter()
    first_byte: float | None = None
    tail = b""
    async with session.post(config.url, data=body) as response:
        if config.stream:
            async for data in response.content.iter_any():
                if first_byte is None:
                    first_byte = time.perf_counter()
                tail = (tail + data)[-64:]
        else:
            tail = await response.read()
        finished = time.perf_counter()
        if tally is None:
            return
        if response.status != 200:
            tally.fail(f"HTTP {response.status}: {tail[:200]!r}")
            return
        if response.headers.get("x-tierwise-cache") == "hit":
            tally.cache_hits += 1
    if config.stream and b"data: [DONE]" not in tail:
        tally.fail("stream ended without data: [DONE]")
        return
    tally.latencies.append(finished - started)
    if first_byte is not None:
        tally.ttfbs.append(first_byte - started)


async def _worker(
    session: aiohttp.ClientSession,
    config: LoadConfig,
    bodies: list[bytes],
    counter: list[int],
    limit: int,
    deadline: float,
    tally: _Tally | None,
) -> None:
    while counter[0] < limit and time.perf_counter() < deadline:
        index = counter[0]
        counter[0] += 1
        try:
            await _one_request(session, config, bodies[index % len(bodies)], tally)
        except (aiohttp.ClientError, TimeoutError) as exc:
            if tally is not None:
                tally.fail(f"{type(exc).__name__}: {exc}")


async def _phase(
    session: aiohttp.ClientSession, config: LoadConfig, bodies: list[bytes], offset: int,
    count: int, tally: _Tally | None,
) -> int:
    """Run ``count`` requests starting at body ``offset``; return how many were started."""
    counter = [offset]
    deadline = time.perf_counter() + config.time_limit_s
    workers = [
        _worker(session, config, bodies, counter, offset + count, deadline, tally)
        for _ in range(config.concurrency)
    ]
    await asyncio.gather(*workers)
    return counter[0] - offset


def _session(config: LoadConfig) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=config.concurrency, force_close=False)
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    return aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout)


async def run_load(
    config: LoadConfig,
    bodies: list[bytes],
    target: str = "",
    before_measure: Callable[[], None] | None = None,
    after_measure: Callable[[], None] | None = None,
) -> LoadResult:
    """Warm up, then run the measured phase and return its figures.

    ``before_measure`` and ``after_measure`` run with no request in flight, right before
    and after the measured phase (``bench.instructions`` resets and dumps its counters there).
    """
    async with _session(config) as session:
        await _phase(session, config, bodies, 0, config.warmup, None)
        if before_measure is not None:
            before_measure()
        tally = _Tally()
        cpu_before = {name: cpu_seconds(pid) for name, pid in config.watch.items()}
        own_before = time.process_time()
        started = time.perf_counter()
        await _phase(session, config, bodies, config.warmup, config.requests, tally)
        wall = time.perf_counter() - started
        if after_measure is not None:
            after_measure()
        own_cpu = time.process_time() - own_before
        cpu_after = {name: cpu_seconds(pid) for name, pid in config.watch.items()}
    completed = len(tally.latencies)
    per_request = max(completed, 1)
    cpu = {name: (cpu_after[name] - cpu_before[name]) * 1000 / per_request for name in cpu_before}
    cpu["loadgen"] = own_cpu * 1000 / per_request
    return LoadResult(
        target=target,
        stream=config.stream,
        concurrency=config.concurrency,
        completed=completed,
        errors=tally.errors,
        wall_s=wall,
        throughput_rps=completed / wall if wall > 0 else 0.0,
        latency_ms=percentiles(tally.latencies),
        ttfb_ms=percentiles(tally.ttfbs) if config.stream else None,
        cpu_ms_per_request=cpu,
        memory_kb={name: memory_kb(pid) for name, pid in config.watch.items()},
        first_error=tally.first_error,
        cache_hits=tally.cache_hits,
    )


def run(
    config: LoadConfig,
    bodies: list[bytes],
    target: str = "",
    before_measure: Callable[[], None] | None = None,
    after_measure: Callable[[], None] | None = None,
) -> LoadResult:
    """Run ``run_load`` on a fresh event loop (uvloop when installed)."""
    load = run_load(config, bodies, target, before_measure, after_measure)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(load)
    return uvloop.run(load)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="Chat completions URL on 127.0.0.1.")
    parser.add_argument("--model", default="auto", help="Model name sent in every request.")
    parser.add_argument("--stream", action="store_true", help="Send streaming requests.")
    parser.add_argument("--concurrency", type=int, default=1, help="Requests in flight.")
    parser.add_argument("--requests", type=int, default=1000, help="Measured requests.")
    parser.add_argument("--warmup", type=int, default=100, help="Requests sent before measuring.")
    parser.add_argument("--time-limit", type=float, default=30.0,
                        help="Upper bound of each phase, in seconds.")
    parser.add_argument("--temperature", type=float, default=None,
                        help="Temperature sent in every request; unset by default.")
    parser.add_argument("--pid", type=int, action="append", default=[],
                        help="PID whose CPU time and memory to measure; repeatable.")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    return parser.parse_args(argv)


def _check_loopback(url: str) -> None:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        sys.exit(f"error: --url must point at 127.0.0.1 or localhost, got host {host!r}")


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    _check_loopback(args.url)
    pin_self(CLIENT_CPU)
    config = LoadConfig(
        url=args.url, model=args.model, stream=args.stream, concurrency=args.concurrency,
        requests=args.requests, warmup=args.warmup, time_limit_s=args.time_limit,
        temperature=args.temperature, watch={f"pid{pid}": pid for pid in args.pid},
    )
    prompts, origin = load_prompts()
    result = run(config, build_bodies(prompts, config), args.url)
    if args.json:
        print(orjson.dumps(asdict(result), option=orjson.OPT_INDENT_2).decode())
        return
    print(f"prompts: {origin}; pinned to CPU {sorted(os.sched_getaffinity(0))}")
    for key, value in asdict(result).items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
