"""Export the outcome stream into date-partitioned files, each record exactly once.

The exporter reads the stream ``{tw}:outcomes`` through a Redis consumer group and writes
each batch to ``DIR/date=YYYY-MM-DD/part-<first id>-<last id>.jsonl`` (or ``.parquet``).
A file is written under a temporary name, fsynced and renamed, and only then are its
entries acknowledged (XACK).  A crash therefore never acknowledges an entry that is not on
disk: at worst the entries of the last batch stay pending.

A one-shot run writes a file per read of up to ``batch`` entries.  A ``follow`` run gathers
the entries of several reads and writes them once they number ``batch`` or the oldest of
them was read ``flush_interval_s`` ago, and at shutdown.  Gathered entries are read but not
yet acknowledged, so they are pending in the group exactly like a batch being written.

After a restart the exporter first reads the entries still pending for its consumer name,
then claims (XAUTOCLAIM) entries that other consumers left pending for longer than
``claim_idle_ms``.  Such an entry may already be in a file, because the crash may have come
between the rename and the XACK, so a recovered batch skips every id that a file of the same
partition already contains.  Entries read with ``>`` are new to the group and are written
without that check.

The partition date is the UTC day of the entry's stream id (the millisecond time Redis gave
the entry when the gateway added it), so one batch always maps to the same file names.

Each exported row is the outcome record with its stream id added as ``stream_id``.  In
Parquet files, nested values (``scores``, ``attempts``, ``messages``) are JSON strings, so
that every file has flat columns whatever the records contain.

Errors: ``ExportError`` for options the exporter cannot work with; Redis errors propagate
from a one-shot run, and a ``follow`` run logs them and retries.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import redis
import structlog

from router.outcomes.log import STREAM_KEY

log = structlog.get_logger("tierwise.export")

RECORD_FIELD = b"record"
DEFAULT_GROUP = "tierwise-export"
DEFAULT_CONSUMER = "exporter"
FORMATS = ("jsonl", "parquet")
# Retry delays (seconds) of a follow run after a Redis error, doubling up to the maximum.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
CLAIM_EVERY_S = 30.0
DEFAULT_FLUSH_INTERVAL_S = 30.0
DEFAULT_CLAIM_IDLE_MS = 60_000

# Consumer names become part of temporary file names.
_CONSUMER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PART_NAME = re.compile(r"^part-(\d+)-(\d+)-(\d+)-(\d+)\.(jsonl|parquet)$")

StreamId = tuple[int, int]
Entry = tuple[str, dict[bytes, bytes] | None]


class ExportError(Exception):
    """Raised for options the exporter cannot work with (format, batch size, output folder)."""


@dataclass(frozen=True)
class ExportOptions:
    """Source stream, consumer group, output folder and batching of one export run.

    ``block_ms`` and ``claim_idle_ms`` are milliseconds.
    """

    out_dir: Path
    stream: str = STREAM_KEY
    group: str = DEFAULT_GROUP
    consumer: str = DEFAULT_CONSUMER
    batch: int = 500
    file_format: str = "jsonl"
    follow: bool = False
    start_id: str = "0"
    """Start position of a new consumer group: ``0`` for the whole stream, ``$`` for new entries."""
    block_ms: int = 1000
    claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S
    """Maximum time (seconds) that a ``follow`` run keeps read entries before writing them."""


@dataclass
class ExportSummary:
    """Counts of one run."""

    records: int = 0
    """Rows written to files."""
    files: int = 0
    recovered: int = 0
    """Entries read again after a restart, or claimed from another consumer."""
    already_exported: int = 0
    """Recovered entries that a file already contained; acknowledged without writing."""
    missing: int = 0
    """Pending entries whose data was trimmed from the stream before they were exported."""
    invalid: int = 0
    """Entries whose ``record`` field was not a JSON object; exported raw."""
    paths: list[Path] = field(default_factory=list)


# Stream ids and partitions -------------------------------------------------------------------


def parse_stream_id(entry_id: str) -> StreamId:
    """Split ``<ms>-<seq>`` into integers, for ordering."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def partition_name(entry_id: str) -> str:
    """Return ``date=YYYY-MM-DD``, the UTC day of the stream id's millisecond time."""
    milliseconds = parse_stream_id(entry_id)[0]
    day = datetime.fromtimestamp(milliseconds / 1000, tz=UTC)
    return f"date={day:%Y-%m-%d}"


def part_file_name(first_id: str, last_id: str, extension: str) -> str:
    return f"part-{first_id}-{last_id}.{extension}"


def part_file_range(path: Path) -> tuple[StreamId, StreamId] | None:
    """Return the first and last stream id a part file's name covers, or None for other files."""
    match = _PART_NAME.match(path.name)
    if match is None:
        return None
    numbers = [int(group) for group in match.groups()[:4]]
    return (numbers[0], numbers[1]), (numbers[2], numbers[3])


def entry_row(entry_id: str, fields: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """Return the exported row of one stream entry, or None when its data was trimmed."""
    if not fields:
        return None
    raw = fields.get(RECORD_FIELD, b"")
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        return {"stream_id": entry_id, "type": "invalid", "raw": raw.decode("utf-8", "replace")}
    return {"stream_id": entry_id, **record}


# File formats --------------------------------------------------------------------------------


class FileFormat(Protocol):
    extension: str

    def write(self, path: Path, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` to ``path`` and fsync the file."""
        ...

    def read_ids(self, path: Path) -> set[str]:
        """Return the ``stream_id`` of every row in ``path``."""
        ...


class JsonlFormat:
    extension = "jsonl"

    def write(self, path: Path, rows: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(row) + b"\n" for row in rows)
        with path.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def read_ids(self, path: Path) -> set[str]:
        ids: set[str] = set()
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if not line:
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or "stream_id" not in row:
                # Exported files are written whole and renamed into place, so such a line
                # comes from another writer or an edit.
                raise ExportError(
                    f"{path}:{number}: the line is not an exported record with a stream_id; "
                    "repair the line or move the file out of the output folder, then run the "
                    "export again"
                )
            ids.add(str(row["stream_id"]))
        return ids


class ParquetFormat:
    extension = "parquet"

    def __init__(self) -> None:
        try:
            import pyarrow  # noqa: F401 - checks that the optional dependency is installed
        except ImportError:
            raise ExportError(
                "the parquet format needs pyarrow: pip install pyarrow, or use --format jsonl"
            ) from None

    def write(self, path: Path, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = [_flatten(row) for row in rows]
        # from_pylist takes its columns from the first row; request and feedback records
        # carry different fields, so every row gets every column (missing ones are null).
        columns = list(dict.fromkeys(key for row in flat for key in row))
        table = pa.Table.from_pylist([{key: row.get(key) for key in columns} for row in flat])
        with path.open("wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())

    def read_ids(self, path: Path) -> set[str]:
        import pyarrow.parquet as pq

        column = pq.read_table(path, columns=["stream_id"]).column("stream_id")
        return {str(value) for value in column.to_pylist()}


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: orjson.dumps(value).decode() if isinstance(value, dict | list) else value
        for key, value in row.items()
    }


def file_format(name: str) -> FileFormat:
    """Return the writer for ``name``; raise ExportError for an unknown name or missing pyarrow."""
    if name == "jsonl":
        return JsonlFormat()
    if name == "parquet":
        return ParquetFormat()
    raise ExportError(f"unknown format {name!r}; expected one of {', '.join(FORMATS)}")


def write_atomically(
    path: Path, rows: list[dict[str, Any]], writer: FileFormat, owner: str
) -> None:
    """Write ``rows`` to a temporary name beside ``path``, fsync, rename, and fsync the folder.

    A reader never sees a partial file, and a crash leaves at most a ``.part-*.<owner>.tmp``
    file.  ``owner`` (the consumer name) keeps exporters that share a folder apart.
    """
    temporary = path.with_name(f".{path.name}.{owner}.tmp")
    writer.write(temporary, rows)
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# The exporter --------------------------------------------------------------------------------


class OutcomeExporter:
    """Copies stream entries into part files and acknowledges them (see the module docstring).

    ``client`` is a synchronous Redis client; its socket timeout must exceed ``block_ms``.
    """

    def __init__(
        self,
        client: redis.Redis,
        options: ExportOptions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if options.batch < 1:
            raise ExportError(f"batch must be at least 1, got {options.batch}")
        if not _CONSUMER_NAME.match(options.consumer):
            raise ExportError(
                f"invalid consumer name {options.consumer!r}: use letters, digits, '.', '_' or '-'"
            )
        if options.follow:
            _check_flush_interval(options)
        self.client = client
        self.options = options
        self.writer = file_format(options.file_format)
        self.summary = ExportSummary()
        self.clock = clock
        """Monotonic time in seconds; tests replace it to control the flush interval."""

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> ExportSummary:
        """Export pending entries, then new ones; return when the stream is drained.

        With ``follow`` the run continues until ``should_stop()`` returns True, which is
        checked between reads, and then writes the entries it has gathered.
        """
        self._prepare_output()
        self._ensure_group()
        log.info(
            "export_started",
            stream=self.options.stream,
            group=self.options.group,
            consumer=self.options.consumer,
            out=str(self.options.out_dir),
        )
        self._recover_own_pending(should_stop)
        self._claim_idle_entries(should_stop)
        if self.options.follow:
            self._follow(should_stop)
        else:
            while not should_stop() and self._export_next_batch(block_ms=None):
                pass
        log.info(
            "export_finished",
            records=self.summary.records,
            files=self.summary.files,
            recovered=self.summary.recovered,
            missing=self.summary.missing,
        )
        return self.summary

    def _prepare_output(self) -> None:
        try:
            self.options.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(
                f"cannot create the output folder {self.options.out_dir}: {exc.strerror}"
            ) from None
        # A temporary file is what a crash before the rename leaves; its entries are pending.
        for stale in self.options.out_dir.glob(f"date=*/.part-*.{self.options.consumer}.tmp"):
            stale.unlink(missing_ok=True)
            log.info("export_stale_file_removed", path=str(stale))

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(
                self.options.stream, self.options.group, id=self.options.start_id, mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return
        log.info("export_group_created", group=self.options.group, start_id=self.options.start_id)

    def _recover_own_pending(self, should_stop: Callable[[], bool]) -> None:
        # Reading id 0 returns this consumer's pending entries in order. Each batch is acked,
        # so the next read starts after it. An empty read means that nothing is pending.
        while not should_stop():
            entries = self._read("0", block_ms=None)
            if not entries:
                return
            self.summary.recovered += len(entries)
            self._export(entries, recovering=True)

    def _claim_idle_entries(self, should_stop: Callable[[], bool]) -> None:
        # NOTE: a consumer that is alive but stalled for longer than claim_idle_ms may still
        # write the batch it holds, so its entries can then appear in two files.
        cursor = "0-0"
        while not should_stop():
            cursor, entries, deleted = self._autoclaim(cursor)
            self.summary.missing += len(deleted)
            if entries:
                self.summary.recovered += len(entries)
                self._export(entries, recovering=True)
            if cursor == "0-0":
                return

    def _autoclaim(self, cursor: str) -> tuple[str, list[Entry], list[str]]:
        response: Any = self.client.xautoclaim(
            self.options.stream, self.options.group, self.options.consumer,
            min_idle_time=self.options.claim_idle_ms, start_id=cursor, count=self.options.batch,
        )  # fmt: skip
        next_cursor, claimed = _text(response[0]), response[1]
        deleted = [_text(entry_id) for entry_id in (response[2] if len(response) > 2 else [])]
        return next_cursor, [(_text(i), fields) for i, fields in claimed], deleted

    def _follow(self, should_stop: Callable[[], bool]) -> None:
        """Gather new entries into files of ``batch`` entries, flushing at least every interval.

        What was gathered when ``should_stop()`` turns True is written before returning.
        """
        delay = RETRY_FIRST_S
        last_claim = self.clock()
        gathered = _Gathered()
        while not should_stop():
            try:
                self._gather(gathered)
                if gathered.entries and (
                    len(gathered.entries) >= self.options.batch
                    or self._seconds_to_flush(gathered) <= 0
                ):
                    self._flush(gathered)
                if self.clock() - last_claim >= CLAIM_EVERY_S:
                    last_claim = self.clock()
                    self._claim_idle_entries(should_stop)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning(
                    "export_redis_error",
                    error=type(exc).__name__,
                    retry_in_s=delay,
                    gathered=len(gathered.entries),
                )
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_FIRST_S
        if gathered.entries:
            self._flush(gathered)

    def _gather(self, gathered: _Gathered) -> None:
        """Read new entries into ``gathered``, at most enough to fill a file of ``batch``."""
        block_ms = self.options.block_ms
        if gathered.entries:
            # Block no longer than the flush is due; Redis reads BLOCK 0 as "forever".
            block_ms = max(1, min(block_ms, int(self._seconds_to_flush(gathered) * 1000)))
        entries = self._read(">", block_ms, count=self.options.batch - len(gathered.entries))
        if entries and not gathered.entries:
            gathered.first_read_at = self.clock()
        gathered.entries.extend(entries)

    def _seconds_to_flush(self, gathered: _Gathered) -> float:
        return gathered.first_read_at + self.options.flush_interval_s - self.clock()

    def _flush(self, gathered: _Gathered) -> None:
        # The entries leave the buffer before the write, so a failed XACK never writes them
        # again under another file name. They stay pending instead. The claim of idle
        # entries, or the next start, then finds their ids on disk and acknowledges them.
        entries, gathered.entries = gathered.entries, []
        self._export(entries, recovering=False)

    def _export_next_batch(self, block_ms: int | None) -> bool:
        """Export one batch of new entries; return False when there was none."""
        entries = self._read(">", block_ms)
        if entries:
            self._export(entries, recovering=False)
        return bool(entries)

    def _read(self, start: str, block_ms: int | None, count: int | None = None) -> list[Entry]:
        # The client's stubs type the reply for both RESP versions; this client speaks RESP2.
        response: Any = self.client.xreadgroup(
            self.options.group, self.options.consumer, {self.options.stream: start},
            count=count or self.options.batch, block=block_ms,
        )  # fmt: skip
        if not response:
            return []
        _, entries = response[0]
        return [(_text(entry_id), fields) for entry_id, fields in entries]

    def _export(self, entries: list[Entry], *, recovering: bool) -> None:
        """Write ``entries`` into part files per partition, then acknowledge all of them."""
        for partition, rows in self._rows_by_partition(entries).items():
            if recovering:
                rows = self._drop_exported(partition, rows)
            if rows:
                self._write_part(partition, rows)
        self.client.xack(self.options.stream, self.options.group, *[i for i, _ in entries])

    def _rows_by_partition(self, entries: list[Entry]) -> dict[str, list[dict[str, Any]]]:
        partitions: dict[str, list[dict[str, Any]]] = {}
        for entry_id, fields in entries:
            row = entry_row(entry_id, fields)
            if row is None:
                self.summary.missing += 1
                log.warning(
                    "outcome_entry_missing",
                    stream_id=entry_id,
                    hint="the stream was trimmed before this entry was exported",
                )
                continue
            if row.get("type") == "invalid":
                self.summary.invalid += 1
                log.warning("outcome_entry_invalid", stream_id=entry_id)
            partitions.setdefault(partition_name(entry_id), []).append(row)
        return partitions

    def _drop_exported(self, partition: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return the rows whose stream id no part file of ``partition`` contains yet."""
        on_disk = self._ids_on_disk(
            partition, parse_stream_id(rows[0]["stream_id"]), parse_stream_id(rows[-1]["stream_id"])
        )
        remaining = [row for row in rows if row["stream_id"] not in on_disk]
        self.summary.already_exported += len(rows) - len(remaining)
        return remaining

    def _ids_on_disk(self, partition: str, first: StreamId, last: StreamId) -> set[str]:
        ids: set[str] = set()
        for path in _part_files(self.options.out_dir / partition):
            covered = part_file_range(path)
            if covered is not None and covered[0] <= last and first <= covered[1]:
                ids |= self.writer.read_ids(path)
        return ids

    def _write_part(self, partition: str, rows: list[dict[str, Any]]) -> None:
        directory = self.options.out_dir / partition
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            _fsync_directory(self.options.out_dir)
        name = part_file_name(rows[0]["stream_id"], rows[-1]["stream_id"], self.writer.extension)
        path = directory / name
        write_atomically(path, rows, self.writer, self.options.consumer)
        self.summary.records += len(rows)
        self.summary.files += 1
        self.summary.paths.append(path)
        log.info("export_file_written", path=str(path), records=len(rows))


@dataclass
class _Gathered:
    """Entries a ``follow`` run has read and not yet written, pending in the group."""

    entries: list[Entry] = field(default_factory=list)
    first_read_at: float = 0.0
    """Clock time (seconds) of the read that brought the first of ``entries``."""


def _check_flush_interval(options: ExportOptions) -> None:
    """Raise ExportError unless gathered entries are written well before they can be claimed.

    Every consumer of the group, this one included, claims entries that stayed pending for
    ``claim_idle_ms``.  A gathered entry is pending for up to ``flush_interval_s`` plus the
    time of the write, so the interval may be at most half of ``claim_idle_ms``.
    """
    interval = options.flush_interval_s
    if not math.isfinite(interval) or interval < 0:
        raise ExportError(f"flush interval must be 0 or more seconds, got {interval}")
    if interval * 1000 * 2 > options.claim_idle_ms:
        raise ExportError(
            f"flush interval {interval:g} s (--flush-interval) must be at most half of the "
            f"claim idle time, {options.claim_idle_ms} ms (--claim-idle-ms), because entries "
            "kept longer can be claimed and written twice; lower the flush interval or raise "
            "the claim idle time"
        )


def _part_files(directory: Path) -> Iterable[Path]:
    if not directory.is_dir():
        return []
    return [path for path in directory.iterdir() if _PART_NAME.match(path.name)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
