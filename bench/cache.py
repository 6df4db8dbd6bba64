"""Cache-hit round trip through the gateway, with real Redis and with the in-process cache.

For each backend a gateway is started (server core) with caching on, against the mock
upstream; this process (client core) sends temperature-0 requests built from ``--prompts``
distinct traffic-mix prompts:

1. a warm-up pass under one API key (misses, not counted);
2. a miss pass under a second key: every prompt once, each a miss that reaches the mock;
3. a hit pass under the second key: the same prompts ``--hit-rounds`` times, all hits.

The tenant is a hash of the API key, so the second key starts with an empty cache.  Both
non-streaming and streaming requests are measured (a streamed hit is replayed as chunks).
Redis runs twice: with the gateway's in-process copies of Redis entries (the default, so the
hit pass is served from them) and with ``TIERWISE_CACHE_NEAR_ENTRIES=0`` (every hit is a
Redis round trip).
Redis runs at ``--redis-url`` (default database 12 of 127.0.0.1:6379); afterwards the
``tw:cache:*`` keys and the ``{tw}:outcomes`` stream of that database are deleted.

Run from the repository root:

    python -m bench.cache
    python -m bench.cache --redis-url redis://127.0.0.1:6379/12 --prompts 300
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from bench.harness import CLIENT_CPU, REPO_ROOT, RESULTS_DIR, pin_self
from bench.loadgen import LoadConfig, LoadResult, build_bodies, run
from bench.prompts import load_prompts
from bench.targets import Target, start_mock, start_tierwise

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"


def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=2)


def check_redis(url: str) -> None:
    """Exit with a message when Redis at ``url`` does not respond to PING."""
    import redis

    try:
        _redis_client(url).ping()
    except redis.RedisError as exc:
        raise SystemExit(f"error: Redis at {url} did not respond to PING ({exc}); start redis-server "
                         "or pass --redis-url") from None


def clean_redis(url: str) -> int:
    """Delete the gateway's cache keys and outcome stream in the database of ``url``."""
    client = _redis_client(url)
    keys = list(client.scan_iter(match="tw:cache:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.delete("{tw}:outcomes")
    return len(keys)


def _passes(target: Target, stream: bool, concurrency: int, bodies_of: Any, rounds: int,
            prompts: int) -> dict[str, LoadResult]:
    assert target.process is not None
    watch = {"server": target.process.pid}
    stamp = time.time_ns()
    base = LoadConfig(url=target.chat_url, stream=stream, concurrency=concurrency, warmup=0,
                      temperature=0.0, watch=watch, time_limit_s=60.0)
    configs = {
        "warmup": (f"sk-bench-warm-{stamp}", prompts),
        "miss": (f"sk-bench-measure-{stamp}", prompts),
        "hit": (f"sk-bench-measure-{stamp}", prompts * rounds),
    }
    results = {}
    for name, (key, count) in configs.items():
        config = LoadConfig(**{**asdict(base), "api_key": key, "requests": count})
        results[name] = run(config, bodies_of(config), f"{target.name}-{name}")
    return results


def measure_backend(name: str, workdir: Path, mock: Target, redis_url: str | None,
                    args: argparse.Namespace, prompts: list[str],
                    extra_env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Start a caching gateway for one backend and run the passes for each mode."""
    mock_base = mock.chat_url.removesuffix("/v1/chat/completions")
    target = start_tierwise(workdir, mock_base, cache=True, redis_url=redis_url,
                            checkout=args.checkout.resolve(), extra_env=extra_env)
    assert target.process is not None
    rows = []
    try:
        for stream in (False, True):
            results = _passes(target, stream, args.concurrency,
                              lambda config: build_bodies(prompts, config), args.hit_rounds,
                              len(prompts))
            for pass_name in ("miss", "hit"):
                result = results[pass_name]
                rows.append({"backend": name, "mode": "stream" if stream else "json",
                             "pass": pass_name, **asdict(result)})
    finally:
        target.process.stop()
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    lines = ["| backend | mode | pass | requests | hits | p50 ms | p99 ms | req/s | server CPU ms/req |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        latency = row["latency_ms"]
        lines.append(
            f"| {row['backend']} | {row['mode']} | {row['pass']} | {row['completed']} "
            f"| {row['cache_hits']} | {latency.get('p50', 0):.2f} | {latency.get('p99', 0):.2f} "
            f"| {row['throughput_rps']:.0f} | {row['cpu_ms_per_request'].get('server', 0):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                        help="Redis on 127.0.0.1 for the Redis backend; its database is cleaned.")
    parser.add_argument("--prompts", type=int, default=500, help="Distinct prompts per pass.")
    parser.add_argument("--hit-rounds", type=int, default=3, help="Times the hit pass repeats them.")
    parser.add_argument("--concurrency", type=int, default=16, help="Requests in flight.")
    parser.add_argument("--checkout", type=Path, default=REPO_ROOT,
                        help="Tierwise source tree to run; this checkout by default.")
    args = parser.parse_args(argv)
    if "127.0.0.1" not in args.redis_url and "localhost" not in args.redis_url:
        raise SystemExit("error: --redis-url must point at 127.0.0.1 or localhost")
    check_redis(args.redis_url)
    pin_self(CLIENT_CPU)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS_DIR / f"cache-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    prompts, origin = load_prompts(limit=args.prompts)
    print(f"prompts: {origin}, {len(prompts)} used", flush=True)

    mock = start_mock(workdir)
    assert mock.process is not None
    rows: list[dict[str, Any]] = []
    try:
        rows += measure_backend("redis", workdir, mock, args.redis_url, args, prompts)
        clean_redis(args.redis_url)
        rows += measure_backend("redis, no copies", workdir, mock, args.redis_url, args, prompts,
                                {"TIERWISE_CACHE_NEAR_ENTRIES": "0"})
        rows += measure_backend("memory", workdir, mock, None, args, prompts)
    finally:
        mock.process.stop()
        removed = clean_redis(args.redis_url)

    print(render(rows))
    print(f"removed {removed} cache keys and {{tw}}:outcomes from {args.redis_url}")
    out = RESULTS_DIR / f"cache-{stamp}.json"
    out.write_bytes(orjson.dumps({"prompts": origin, "rows": rows}, option=orjson.OPT_INDENT_2))
    print(f"raw results: {out.relative_to(RESULTS_DIR.parent.parent)}")


if __name__ == "__main__":
    main()
