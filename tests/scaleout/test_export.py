"""The outcome exporter: partitioned files, exactly once across crashes and restarts."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from router.outcomes.export import (
    ExportError,
    ExportOptions,
    ExportSummary,
    OutcomeExporter,
    ParquetFormat,
    part_file_range,
)
from tests.scaleout.support import add_records, exported_rows, pending_count, stream_ids
from tests.support.recorded import repo_root

GROUP = "tierwise-export"
HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None


def run_export(client: redis.Redis, stream: str, out: Path, **options: object) -> ExportSummary:
    exporter = OutcomeExporter(client, ExportOptions(out_dir=out, stream=stream, **options))  # type: ignore[arg-type]
    return exporter.run()


def assert_exported_once(client: redis.Redis, stream: str, out: Path) -> list[dict[str, Any]]:
    """Assert that the files hold every stream entry exactly once and nothing is pending."""
    rows = exported_rows(out)
    exported = [str(row["stream_id"]) for row in rows]
    assert len(exported) == len(set(exported)), "an entry was exported twice"
    assert sorted(set(exported)) == sorted(stream_ids(client, stream)), "an entry is missing"
    assert pending_count(client, stream, GROUP) == 0
    return rows


def run_crashing_export(
    redis_url: str, stream: str, out: Path, crash_before: str, crash_at: int, batch: int = 10
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "tests.scaleout.crashing_export", "--redis-url", redis_url,
        "--stream", stream, "--out", str(out), "--batch", str(batch),
        "--crash-before", crash_before, "--crash-at", str(crash_at),
    ]  # fmt: skip
    return subprocess.run(
        command, check=False, cwd=repo_root(), capture_output=True, text=True, timeout=120
    )


def test_export_writes_each_record_once(
    redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    add_records(redis_client, stream_key, 120)

    summary = run_export(redis_client, stream_key, tmp_path, batch=50)

    assert summary.records == 120
    assert summary.files == 3
    rows = assert_exported_once(redis_client, stream_key, tmp_path)
    assert sorted(row["request_id"] for row in rows) == sorted(f"req-{n}" for n in range(120))
    assert run_export(redis_client, stream_key, tmp_path, batch=50).records == 0


def test_export_names_files_by_stream_ids(
    redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    ids = add_records(redis_client, stream_key, 25)

    summary = run_export(redis_client, stream_key, tmp_path, batch=10)

    names = sorted(path.name for path in summary.paths)
    expected = sorted(
        f"part-{ids[start]}-{ids[min(start + 9, 24)]}.jsonl" for start in range(0, 25, 10)
    )
    assert names == expected
    for path in summary.paths:
        assert part_file_range(path) is not None


def test_export_partitions_by_utc_day(
    redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    # 2023-11-14 22:13:20 UTC, then two entries two hours later, on the next day.
    for entry_id in ("1700000000000-0", "1700007200000-0", "1700007200000-1"):
        redis_client.xadd(stream_key, {"record": b'{"request_id": "r"}'}, id=entry_id)

    summary = run_export(redis_client, stream_key, tmp_path, batch=10)

    assert sorted(str(path.relative_to(tmp_path)) for path in summary.paths) == [
        "date=2023-11-14/part-1700000000000-0-1700000000000-0.jsonl",
        "date=2023-11-15/part-1700007200000-0-1700007200000-1.jsonl",
    ]


def test_crash_before_ack_then_restart(
    redis_url: str, redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    add_records(redis_client, stream_key, 100)

    crashed = run_crashing_export(redis_url, stream_key, tmp_path, "ack", crash_at=3)

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert len(list(tmp_path.glob("date=*/part-*.jsonl"))) == 3
    assert pending_count(redis_client, stream_key, GROUP) == 10
    summary = run_export(redis_client, stream_key, tmp_path, batch=10)
    assert summary.recovered == 10
    assert summary.already_exported == 10
    assert summary.records == 70
    assert_exported_once(redis_client, stream_key, tmp_path)


def test_crash_before_rename_then_restart(
    redis_url: str, redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    add_records(redis_client, stream_key, 100)

    crashed = run_crashing_export(redis_url, stream_key, tmp_path, "rename", crash_at=2)

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    temporary_files = list(tmp_path.glob("date=*/.part-*.exporter.tmp"))
    assert len(temporary_files) == 1
    other_consumer_file = temporary_files[0].with_name(".part-1-0-2-0.jsonl.other.tmp")
    other_consumer_file.write_bytes(b"")

    summary = run_export(redis_client, stream_key, tmp_path, batch=10)

    assert summary.recovered == 10
    assert summary.already_exported == 0
    assert list(tmp_path.glob("date=*/.part-*.exporter.tmp")) == []
    assert other_consumer_file.exists()
    assert_exported_once(redis_client, stream_key, tmp_path)


def test_restart_with_other_batch_size(
    redis_url: str, redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    add_records(redis_client, stream_key, 100)
    crashed = run_crashing_export(redis_url, stream_key, tmp_path, "ack", crash_at=4, batch=10)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    summary = run_export(redis_client, stream_key, tmp_path, batch=7)

    assert summary.already_exported == 10
    assert_exported_once(redis_client, stream_key, tmp_path)


def test_kill_during_follow_then_restart(
    redis_url: str, redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    add_records(redis_client, stream_key, 2000, prefix="before")
    command = [
        sys.executable, "-m", "router", "outcomes", "export", "--redis-url", redis_url,
        "--stream", stream_key, "--out", str(tmp_path), "--batch", "5", "--follow",
        "--log-format", "json",
    ]  # fmt: skip
    exporter = subprocess.Popen(
        command, cwd=repo_root(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    producer = threading.Thread(
        target=add_records, args=(redis_client, stream_key, 500), kwargs={"prefix": "during"}
    )
    try:
        producer.start()
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("date=*/part-*.jsonl"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(exporter.pid, signal.SIGKILL)
    finally:
        producer.join()
        exporter.kill()
        exporter.wait(timeout=30)

    assert exporter.returncode == -signal.SIGKILL
    first_run = len(exported_rows(tmp_path))
    assert first_run < 2500, "the exporter finished before it was killed"
    run_export(redis_client, stream_key, tmp_path, batch=50)
    rows = assert_exported_once(redis_client, stream_key, tmp_path)
    assert len(rows) == 2500


def test_trimmed_pending_entry_is_counted(
    redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    ids = add_records(redis_client, stream_key, 10)
    redis_client.xgroup_create(stream_key, GROUP, id="0")
    redis_client.xreadgroup(GROUP, "exporter", {stream_key: ">"}, count=10)
    redis_client.xdel(stream_key, ids[4])

    summary = run_export(redis_client, stream_key, tmp_path, batch=10)

    assert summary.missing == 1
    assert summary.records == 9
    assert_exported_once(redis_client, stream_key, tmp_path)


def test_claims_entries_of_dead_consumer(
    redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    add_records(redis_client, stream_key, 30)
    redis_client.xgroup_create(stream_key, GROUP, id="0")
    redis_client.xreadgroup(GROUP, "gone", {stream_key: ">"}, count=20)

    summary = run_export(redis_client, stream_key, tmp_path, batch=10, claim_idle_ms=0)

    assert summary.recovered == 20
    assert summary.records == 30
    assert_exported_once(redis_client, stream_key, tmp_path)


def test_invalid_record_is_exported_raw(
    redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    redis_client.xadd(stream_key, {"record": b"not json"})
    add_records(redis_client, stream_key, 2)

    summary = run_export(redis_client, stream_key, tmp_path)

    assert summary.invalid == 1
    rows = assert_exported_once(redis_client, stream_key, tmp_path)
    assert rows[0]["type"] == "invalid"
    assert rows[0]["raw"] == "not json"


class TrickleProducer:
    """A ``should_stop`` callback that adds a few records before each check, like slow traffic.

    Each call also moves a fake clock forward by ``seconds_per_read``.  After the last
    chunk was added, the next call asks the exporter to stop, so every chunk is read first.
    """

    def __init__(
        self, client: redis.Redis, stream: str, chunks: int, chunk_size: int,
        seconds_per_read: float = 0.0,
    ) -> None:  # fmt: skip
        self.client, self.stream = client, stream
        self.chunks_left, self.chunk_size = chunks, chunk_size
        self.seconds_per_read = seconds_per_read
        self.now = 0.0
        self.checks = 0

    def clock(self) -> float:
        return self.now

    def __call__(self) -> bool:
        self.checks += 1
        self.now += self.seconds_per_read
        if self.chunks_left == 0:
            return True
        add_records(self.client, self.stream, self.chunk_size, prefix=f"chunk{self.chunks_left}")
        self.chunks_left -= 1
        return False


def run_follow(
    client: redis.Redis, stream: str, out: Path, producer: TrickleProducer, **options: object
) -> ExportSummary:
    exporter = OutcomeExporter(
        client,
        ExportOptions(out_dir=out, stream=stream, follow=True, block_ms=50, **options),  # type: ignore[arg-type]
        clock=producer.clock,
    )
    return exporter.run(producer)


def test_follow_fills_files_to_batch(
    redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    producer = TrickleProducer(redis_client, stream_key, chunks=70, chunk_size=3)

    summary = run_follow(
        redis_client, stream_key, tmp_path, producer, batch=50, flush_interval_s=30.0
    )

    assert producer.checks > 70, "the exporter stopped before it read every chunk"
    assert summary.records == 210
    assert summary.files == 5
    sizes = sorted(len(path.read_bytes().splitlines()) for path in summary.paths)
    assert sizes == [10, 50, 50, 50, 50], "the last 10 are written at shutdown"
    assert_exported_once(redis_client, stream_key, tmp_path)


def test_follow_flushes_after_interval(
    redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    producer = TrickleProducer(
        redis_client, stream_key, chunks=40, chunk_size=3, seconds_per_read=1.0
    )

    summary = run_follow(
        redis_client, stream_key, tmp_path, producer, batch=1000, flush_interval_s=5.0
    )

    assert summary.records == 120
    # One read per second and a flush every 5 s give files of about 5 reads, not 40 files.
    assert 2 <= summary.files <= 40 // 5 + 1
    for path in summary.paths[:-1]:
        assert len(path.read_bytes().splitlines()) >= 5 * 3
    assert_exported_once(redis_client, stream_key, tmp_path)


def test_follow_zero_interval_writes_every_read(
    redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    producer = TrickleProducer(redis_client, stream_key, chunks=4, chunk_size=3)

    summary = run_follow(
        redis_client, stream_key, tmp_path, producer, batch=1000, flush_interval_s=0.0
    )

    assert summary.records == 12
    assert summary.files >= 2
    assert_exported_once(redis_client, stream_key, tmp_path)


def test_flush_interval_above_half_claim_idle_is_rejected(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    options = ExportOptions(
        out_dir=tmp_path, follow=True, flush_interval_s=31.0, claim_idle_ms=60_000
    )

    expected = r"flush interval 31 s \(--flush-interval\) must be at most half"
    with pytest.raises(ExportError, match=expected):
        OutcomeExporter(redis_client, options)


def test_negative_flush_interval_is_rejected(redis_client: redis.Redis, tmp_path: Path) -> None:
    options = ExportOptions(out_dir=tmp_path, follow=True, flush_interval_s=-1.0)

    with pytest.raises(ExportError, match="flush interval must be 0 or more seconds, got -1"):
        OutcomeExporter(redis_client, options)


def test_sigterm_writes_gathered_records(
    redis_url: str, redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    add_records(redis_client, stream_key, 7)
    command = [
        sys.executable, "-m", "router", "outcomes", "export", "--redis-url", redis_url,
        "--stream", stream_key, "--out", str(tmp_path), "--batch", "100", "--follow",
        "--flush-interval", "25", "--log-format", "json",
    ]  # fmt: skip
    exporter = subprocess.Popen(
        command, cwd=repo_root(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # The 7 records are read at once and held, pending, until the interval or a signal.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and exporter.poll() is None:
            if redis_client.exists(stream_key) and _group_pending(redis_client, stream_key) == 7:
                break
            time.sleep(0.05)
        assert list(tmp_path.glob("date=*/part-*.jsonl")) == []
        exporter.send_signal(signal.SIGTERM)
        stdout, stderr = exporter.communicate(timeout=60)
    finally:
        exporter.kill()
        exporter.wait(timeout=30)

    assert exporter.returncode == 0, stderr
    assert f"exported 7 records into 1 file under {tmp_path}" in stdout
    assert len(list(tmp_path.glob("date=*/part-*.jsonl"))) == 1
    assert_exported_once(redis_client, stream_key, tmp_path)


def _group_pending(client: redis.Redis, stream: str) -> int:
    groups: Any = client.xinfo_groups(stream)
    return sum(int(group["pending"]) for group in groups if group["name"] == GROUP.encode())


def test_batch_below_one_is_rejected(redis_client: redis.Redis, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="batch must be at least 1, got 0"):
        OutcomeExporter(redis_client, ExportOptions(out_dir=tmp_path, batch=0))


def test_consumer_name_with_slash_is_rejected(redis_client: redis.Redis, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="invalid consumer name 'a/b'"):
        OutcomeExporter(redis_client, ExportOptions(out_dir=tmp_path, consumer="a/b"))


def test_unknown_format_is_rejected(redis_client: redis.Redis, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown format 'csv'; expected one of jsonl, parquet"):
        OutcomeExporter(redis_client, ExportOptions(out_dir=tmp_path, file_format="csv"))


@pytest.mark.skipif(
    not HAS_PYARROW, reason="the parquet format needs pyarrow (pip install pyarrow)"
)
def test_parquet_export_after_crash(
    redis_url: str, redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    add_records(redis_client, stream_key, 40)
    command = [
        sys.executable, "-m", "tests.scaleout.crashing_export", "--redis-url", redis_url,
        "--stream", stream_key, "--out", str(tmp_path), "--batch", "10", "--format", "parquet",
        "--crash-before", "ack", "--crash-at", "2",
    ]  # fmt: skip
    crashed = subprocess.run(
        command, check=False, cwd=repo_root(), capture_output=True, text=True, timeout=120
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    summary = run_export(redis_client, stream_key, tmp_path, batch=10, file_format="parquet")

    assert summary.already_exported == 10
    rows = assert_exported_once(redis_client, stream_key, tmp_path)
    assert orjson.loads(str(rows[0]["scores"])) == {"edge": 0.9, "mid": 0.95, "frontier": 0.97}



@pytest.mark.skipif(
    not HAS_PYARROW, reason="the parquet format needs pyarrow (pip install pyarrow)"
)
def test_parquet_keeps_later_row_fields(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    rows = [
        {"stream_id": "1-0", "request_id": "r1", "tier": "edge"},
        {"stream_id": "2-0", "type": "feedback", "request_id": "r1", "score": 0.25, "ts": 7.5},
    ]
    path = tmp_path / "mixed.parquet"
    ParquetFormat().write(path, rows)

    read = pq.read_table(path).to_pylist()
    assert read[1]["score"] == 0.25
    assert read[1]["ts"] == 7.5
    assert read[1]["type"] == "feedback"
    assert read[0]["score"] is None
    assert read[0]["tier"] == "edge"

def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run ``tierwise`` in a child process, because the command configures logging globally."""
    command = [sys.executable, "-m", "router", *arguments, "--log-format", "json"]
    return subprocess.run(
        command, check=False, cwd=repo_root(), capture_output=True, text=True, timeout=120
    )


def test_cli_export_prints_counts(
    redis_url: str, redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    add_records(redis_client, stream_key, 12)

    result = run_cli(
        "outcomes", "export", "--redis-url", redis_url, "--stream", stream_key,
        "--out", str(tmp_path), "--batch", "5",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert f"exported 12 records into 3 files under {tmp_path}" in result.stdout


def test_cli_unreachable_redis_hides_password(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        result = run_cli(
            "outcomes", "export", "--redis-url", f"redis://user:s3cret@127.0.0.1:{port}/0",
            "--out", str(tmp_path),
        )  # fmt: skip

    assert result.returncode == 1
    assert f"error: Redis at redis://127.0.0.1:{port}/0 failed:" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
