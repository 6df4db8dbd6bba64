"""Helpers shared by the scale-out tests: their Redis URL, stream records, exported rows."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis

SCALEOUT_DB = 14
DEFAULT_REDIS_URL = "redis://127.0.0.1:6399"


def scaleout_redis_url() -> str:
    """Return ``$TIERWISE_TEST_REDIS_URL`` (or the local default) switched to database 14."""
    parts = urlsplit(os.environ.get("TIERWISE_TEST_REDIS_URL") or DEFAULT_REDIS_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{SCALEOUT_DB}", parts.query, ""))


def outcome_record(request_id: str) -> dict[str, Any]:
    """Return a small request record of the shape the gateway writes."""
    return {
        "type": "request",
        "request_id": request_id,
        "tenant": "key-test",
        "tier": "edge",
        "scores": {"edge": 0.9, "mid": 0.95, "frontier": 0.97},
        "attempts": [{"deployment": "edge-small", "status": 200}],
        "tokens_in": 12,
        "tokens_out": 30,
    }


def add_records(client: redis.Redis, stream: str, count: int, prefix: str = "req") -> list[str]:
    """Add ``count`` records with request ids ``<prefix>-<n>`` and return their stream ids."""
    pipe = client.pipeline(transaction=False)
    for number in range(count):
        pipe.xadd(stream, {"record": orjson.dumps(outcome_record(f"{prefix}-{number}"))})
    return [entry_id.decode() for entry_id in pipe.execute()]


def stream_ids(client: redis.Redis, stream: str) -> list[str]:
    """Return the id of every entry of ``stream``, oldest first."""
    entries: Any = client.xrange(stream)
    return [entry_id.decode() for entry_id, _ in entries]


def exported_rows(out_dir: Path) -> list[dict[str, Any]]:
    """Return every row of the JSONL and Parquet part files under ``out_dir``."""
    rows: list[dict[str, Any]] = []
    for path in sorted(out_dir.glob("date=*/part-*.jsonl")):
        rows.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line)
    parquet_files = sorted(out_dir.glob("date=*/part-*.parquet"))
    if parquet_files:
        import pyarrow.parquet as pq

        for path in parquet_files:
            rows.extend(pq.read_table(path).to_pylist())
    return rows


def logged_events(log_path: Path) -> list[str]:
    """Return the ``event`` of every JSON line of a gateway log, skipping other lines."""
    events = []
    for line in log_path.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "event" in entry:
            events.append(str(entry["event"]))
    return events


def pending_count(client: redis.Redis, stream: str, group: str) -> int:
    """Return how many entries ``group`` has delivered but not acknowledged."""
    return int(client.xpending(stream, group)["pending"])


def make_artifact(
    directory: Path,
    version: str,
    tiers: tuple[str, ...] = ("edge", "mid", "frontier"),
    seed: int = 0,
) -> Path:
    """Write a small valid classifier artifact (random coefficients) and return its folder.

    The artifact follows the structural features of the installed package, so it loads
    whatever model the package bundles.
    """
    import numpy as np

    from classifiers.artifact import save_artifact
    from classifiers.conversation import STRUCTURAL_FEATURES
    from classifiers.scorer import LinearWeights

    generator = np.random.default_rng(seed)
    n_struct = len(STRUCTURAL_FEATURES)
    weights = LinearWeights(
        word_coef=generator.normal(0.0, 0.5, (1024, len(tiers))),
        struct_coef=generator.normal(0.0, 0.1, (n_struct, len(tiers))),
        intercept=np.linspace(-0.5, 1.5, len(tiers)),
        struct_mean=np.zeros(n_struct),
        struct_scale=np.ones(n_struct),
        struct_weight=1.0,
    )
    save_artifact(directory, version=version, tiers=list(tiers), weights=weights, ngram_max=2)
    (directory / "MODEL_CARD.md").write_text(f"# Test model {version}\n", encoding="utf-8")
    return directory


def delete_namespace(client: redis.Redis, namespace: str) -> None:
    """Delete every key of a distribution namespace (``{namespace}:*``)."""
    keys = list(client.scan_iter(match=f"{{{namespace}}}:*", count=500))
    if keys:
        client.delete(*keys)


# Gateways always use the default namespace, so every test or benchmark that starts gateway
# processes on database 14, or publishes there, takes this lock and clears the namespace.
LOCK_KEY = "tierwise-scaleout:lock"
LOCK_TTL_S = 600
LOCK_WAIT_S = 240.0
_RELEASE_SCRIPT = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


@contextlib.contextmanager
def exclusive_default_namespace(client: redis.Redis) -> Iterator[None]:
    """Hold the scale-out lock, with the ``{tw}`` keys deleted before and after.

    Raises TimeoutError when another run holds the lock for longer than 240 s.  The lock
    expires after 600 s, so a killed run blocks others for at most that long.
    """
    token = uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_WAIT_S
    while not client.set(LOCK_KEY, token, nx=True, ex=LOCK_TTL_S):
        if time.monotonic() > deadline:
            raise TimeoutError(f"another run has held the Redis key {LOCK_KEY} for over 240 s")
        time.sleep(0.5)
    try:
        delete_namespace(client, "tw")
        yield
    finally:
        delete_namespace(client, "tw")
        client.eval(_RELEASE_SCRIPT, 1, LOCK_KEY, token)


# In-process gateways ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def in_process_gateway(settings: Any) -> AsyncIterator[Any]:
    """Run the app of ``settings`` with its lifespan; yield an httpx client bound to it."""
    import httpx

    from router.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            client.app = app  # type: ignore[attr-defined]  # tests read app.state.runtime
            yield client


def cached_chat_body(text: str) -> dict[str, Any]:
    """Return a chat request that the gateway may cache (temperature 0)."""
    return {"model": "auto", "messages": [{"role": "user", "content": text}], "temperature": 0}
