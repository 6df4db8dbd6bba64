"""The outcome spool: records are on disk at emit, and a restart delivers them exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import resource
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from router.outcomes.log import DELIVER_SCRIPT, OutcomeLog, delivered_key, stream_key
from router.outcomes.spool import claim_orphans
from router.redis_link import RedisLink
from tests.scaleout.support import delete_namespace, outcome_record

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of its own, so that parallel runs never share a stream."""
    name = f"tw-test-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        delete_namespace(redis_client, name)


def request_ids(client: redis.Redis, prefix: str) -> list[str]:
    entries: Any = client.xrange(stream_key(prefix))
    return [orjson.loads(fields[b"record"])["request_id"] for _, fields in entries]


def spool_files(spool: Path) -> list[Path]:
    return sorted(spool.glob("outcomes-*.jsonl"))


async def test_emit_writes_spool_before_flush(tmp_path: Path, redis_url: str, prefix: str) -> None:
    outcomes = OutcomeLog(tmp_path / "outcomes.jsonl", RedisLink(redis_url, 5.0),
                          tmp_path / "spool", prefix)  # fmt: skip

    outcomes.emit(outcome_record("req-1"))

    files = spool_files(tmp_path / "spool")
    assert len(files) == 1
    assert [orjson.loads(line)["request_id"] for line in files[0].read_bytes().splitlines()] == [
        "req-1"
    ]
    assert outcomes.undelivered_bytes == files[0].stat().st_size
    await outcomes.stop()
    assert spool_files(tmp_path / "spool") == []


async def test_emit_without_redis_appends_file_at_once(tmp_path: Path) -> None:
    outcomes = OutcomeLog(tmp_path / "outcomes.jsonl", None)

    outcomes.emit(outcome_record("req-1"))
    outcomes.emit(outcome_record("req-2"))

    lines = (tmp_path / "outcomes.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines] == ["req-1", "req-2"]
    await outcomes.stop()
    assert (tmp_path / "outcomes.jsonl").read_bytes().count(b"\n") == 2


async def test_killed_writer_spool_delivered_once(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    spool = tmp_path / "spool"
    command = [sys.executable, "-m", "tests.scaleout.crashing_writer", "--redis-url", redis_url,
               "--prefix", prefix, "--spool", str(spool), "--delivered", "5", "--spooled", "7"]  # fmt: skip
    crashed = await asyncio.to_thread(
        subprocess.run, command, check=False, cwd=REPO_ROOT, capture_output=True, timeout=60
    )

    assert crashed.returncode == -9, crashed.stderr.decode()
    assert len(request_ids(redis_client, prefix)) == 5
    assert len(spool_files(spool)) == 1

    restarted = OutcomeLog(tmp_path / "outcomes.jsonl", RedisLink(redis_url, 5.0), spool, prefix)
    restarted.start()
    await restarted.flush()
    await restarted.stop()

    assert request_ids(redis_client, prefix) == [f"{prefix}-{n}" for n in range(12)]
    assert spool_files(spool) == []
    assert list(redis_client.scan_iter(match=f"{{{prefix}}}:outcomes:delivered:*")) == []


def test_deliver_script_skips_delivered_lines(redis_client: redis.Redis, prefix: str) -> None:
    lines = [orjson.dumps(outcome_record(f"req-{n}")) for n in range(3)]
    keys = [stream_key(prefix), delivered_key(prefix, "segment-1")]
    second_start = len(lines[0]) + 1

    first_end = redis_client.eval(DELIVER_SCRIPT, 2, *keys, 0, 1000, *lines[:2])
    # A retry of the same batch, then a batch that overlaps it by one line.
    again_end = redis_client.eval(DELIVER_SCRIPT, 2, *keys, 0, 1000, *lines[:2])
    last_end = redis_client.eval(DELIVER_SCRIPT, 2, *keys, second_start, 1000, *lines[1:])

    assert first_end == again_end == second_start + len(lines[1]) + 1
    assert last_end == sum(len(line) + 1 for line in lines)
    assert request_ids(redis_client, prefix) == ["req-0", "req-1", "req-2"]
    assert int(redis_client.get(keys[1]) or 0) == last_end


async def test_live_segment_is_not_claimed(tmp_path: Path, redis_url: str, prefix: str) -> None:
    spool = tmp_path / "spool"
    live = OutcomeLog(tmp_path / "outcomes.jsonl", RedisLink(redis_url, 5.0), spool, prefix)
    live.emit(outcome_record("req-1"))

    claimed = claim_orphans(spool, own=None)

    assert claimed == []
    assert len(spool_files(spool)) == 1
    await live.stop()


async def test_torn_tail_delivers_complete_lines(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    complete = b"".join(orjson.dumps(outcome_record(f"req-{n}")) + b"\n" for n in range(2))
    (spool / "outcomes-20261204T000000-torn.jsonl").write_bytes(complete + b'{"type": "requ')

    outcomes = OutcomeLog(tmp_path / "outcomes.jsonl", RedisLink(redis_url, 5.0), spool, prefix)
    outcomes.start()
    await outcomes.flush()
    await outcomes.stop()

    assert request_ids(redis_client, prefix) == ["req-0", "req-1"]
    assert spool_files(spool) == []


async def test_redis_down_keeps_records_in_spool(tmp_path: Path) -> None:
    # Port 1 on 127.0.0.1 refuses connections, so every delivery fails at once.
    outcomes = OutcomeLog(tmp_path / "outcomes.jsonl", RedisLink("redis://127.0.0.1:1/0", 0.2),
                          tmp_path / "spool", "tw-test-down")  # fmt: skip
    outcomes.start()
    outcomes.emit(outcome_record("req-1"))
    await outcomes.flush()
    await outcomes.stop()

    files = spool_files(tmp_path / "spool")
    assert len(files) == 1
    assert orjson.loads(files[0].read_bytes())["request_id"] == "req-1"


async def test_unusable_spool_still_delivers(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    # A file where the spool folder should be makes every spool write fail.
    blocked = tmp_path / "spool"
    blocked.write_text("not a folder", encoding="utf-8")
    outcomes = OutcomeLog(tmp_path / "outcomes.jsonl", RedisLink(redis_url, 5.0), blocked, prefix)
    outcomes.start()

    outcomes.emit(outcome_record("req-1"))
    pending = outcomes.undelivered_bytes
    await outcomes.stop()

    assert pending > 0
    assert request_ids(redis_client, prefix) == ["req-1"]
    assert outcomes.undelivered_bytes == 0


async def test_delivered_segment_is_rotated(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr("router.outcomes.log.ROTATE_BYTES", 200)
    spool = tmp_path / "spool"
    outcomes = OutcomeLog(tmp_path / "outcomes.jsonl", RedisLink(redis_url, 5.0), spool, prefix)
    outcomes.start()
    for number in range(3):
        outcomes.emit(outcome_record(f"req-{number}"))
    first = spool_files(spool)
    await outcomes.flush()
    rotated = spool_files(spool)
    outcomes.emit(outcome_record("req-3"))
    await outcomes.stop()

    assert len(first) == 1
    assert len(rotated) == 1
    assert rotated != first
    assert request_ids(redis_client, prefix) == [f"req-{n}" for n in range(4)]
    assert spool_files(spool) == []


async def test_stop_delivers_while_breaker_open(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    # Redis responds again, but the breaker still counts the failures of an outage that has
    # just ended, as at a SIGTERM shortly after Redis came back.
    link = RedisLink(redis_url, 5.0)
    spool = tmp_path / "spool"
    outcomes = OutcomeLog(tmp_path / "outcomes.jsonl", link, spool, prefix)
    outcomes.start()
    for _ in range(3):
        link.breaker.record_failure(TimeoutError())
    outcomes.emit(outcome_record("req-1"))
    await outcomes.stop()

    assert request_ids(redis_client, prefix) == ["req-1"]
    assert spool_files(spool) == []


async def test_file_after_partial_write_stays_parseable(tmp_path: Path) -> None:
    # RLIMIT_FSIZE simulates a full disk: the write that crosses it stops part-way, later
    # ones fail with EFBIG (Python ignores SIGXFSZ), as writes to a full file system do.
    path = tmp_path / "outcomes.jsonl"
    outcomes = OutcomeLog(path, None)
    outcomes.emit(outcome_record("req-1"))
    size = path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, hard))
    try:
        outcomes.emit(outcome_record("req-2"))
        outcomes.emit(outcome_record("req-3"))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    torn_size = path.stat().st_size
    outcomes.emit(outcome_record("req-4"))
    await outcomes.stop()

    assert torn_size == size + 20
    parsed = []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed.append(orjson.loads(line)["request_id"])
    assert sorted(parsed) == ["req-1", "req-2", "req-3", "req-4"]


def test_claim_skips_segment_retired_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The owner delivers, deletes and unlocks its segment between our open() and flock().
    # Claiming that file would send it again from offset 0, whose key the owner deletes too.
    segment = tmp_path / "outcomes-20260101T000000-000000000000.jsonl"
    segment.write_bytes(orjson.dumps(outcome_record("req-1")) + b"\n")
    real_flock = fcntl.flock

    def flock_after_retire(fd: int, operation: int) -> None:
        segment.unlink(missing_ok=True)
        real_flock(fd, operation)

    monkeypatch.setattr("router.outcomes.spool.fcntl.flock", flock_after_retire)

    assert claim_orphans(tmp_path, None) == []
