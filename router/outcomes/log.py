"""The outcome log: one record per request, plus feedback records that refer to one.

``emit`` appends the record to a local file with one ``write()`` before the response
completes, so a record outlives a killed process (see :mod:`router.outcomes.spool`).
Without Redis that file is the outcome log itself (``outcomes.jsonl``).  With Redis it is
this process's spool segment, and a background task sends new lines to the stream
``{<prefix>}:outcomes`` every 0.2 s, and fsyncs the file in a worker thread.

Exactly-once delivery into the stream: each segment's delivered byte offset is stored in
Redis, at ``{<prefix>}:outcomes:delivered:<segment>``, and one Lua script adds a batch of
lines and moves that offset in the same atomic step.  The script skips lines that end at or
before the stored offset, so sending a batch again (after a timeout whose reply was lost, or
by a process that restarts on the same spool folder) adds nothing twice.  Both keys carry
the hash tag ``{<prefix>}``, so a Redis Cluster runs the script on one node.

At start-up, segments left by dead processes in the spool folder are delivered from their
stored offsets, then deleted.  Only start-up looks for them, so the segment of a process that
dies later waits for the next process that starts on the folder.  A fully delivered segment is deleted at shutdown, or replaced
once it passes 16 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import orjson
import structlog

from router.outcomes.spool import ROTATE_BYTES, Segment, claim_orphans, open_own_segment
from router.redis_link import DEFAULT_KEY_PREFIX, RedisLink

log = structlog.get_logger("tierwise.outcomes")

STREAM_MAX_LENGTH = 1_000_000
FLUSH_INTERVAL_S = 0.2
FLUSH_BATCH = 500
# Lets an offset outlive a Redis outage of a month; a segment delivered after its offset
# expired would be sent again from the start.
DELIVERED_TTL_S = 30 * 86400

# KEYS: the stream, the segment's delivered offset.  ARGV: the byte offset where the first
# line starts, the stream's approximate maximum length, then the lines without newlines.
# Returns the offset after the last line.
DELIVER_SCRIPT = f"""
local done = tonumber(redis.call('GET', KEYS[2]) or '0')
local offset = tonumber(ARGV[1])
for i = 3, #ARGV do
  offset = offset + #ARGV[i] + 1
  if offset > done then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'record', ARGV[i])
  end
end
if offset > done then
  redis.call('SET', KEYS[2], offset, 'EX', {DELIVERED_TTL_S})
end
return offset
"""


def stream_key(prefix: str = DEFAULT_KEY_PREFIX) -> str:
    """Return the outcome stream's key in the namespace ``prefix``."""
    return f"{{{prefix}}}:outcomes"


def delivered_key(prefix: str, segment: str) -> str:
    """Return the key of the delivered byte offset of spool segment ``segment``."""
    return f"{{{prefix}}}:outcomes:delivered:{segment}"


STREAM_KEY = stream_key()


class OutcomeLog:
    """Writes records durably at once and delivers them to Redis in the background."""

    def __init__(
        self,
        path: Path,
        link: RedisLink | None,
        spool_dir: Path | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        self.path = path
        self.link = link
        self.spool_dir = spool_dir or path.with_name("spool")
        self.key_prefix = key_prefix
        self.stream = stream_key(key_prefix)
        self._segment: Segment | None = None
        self._orphans: list[Segment] = []
        self._unspooled: list[bytes] = []
        """Lines whose local write failed, e.g. on a full disk, to send or write at the next flush."""
        self._synced = 0
        self._since_wakeup = 0
        self._wakeup = asyncio.Event()
        # One flush at a time, so two deliveries never send the same lines concurrently.
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._write_failed = False
        # Set by flush(last_chance=True) for the Redis calls of that flush only.
        self._last_chance = False

    @property
    def backend(self) -> str:
        return "redis-stream" if self.link is not None else "file"

    @property
    def undelivered_bytes(self) -> int:
        """Bytes of records that the stream (or, without Redis, the file) does not have yet."""
        segments = [self._segment] if self.link is not None and self._segment else []
        pending = sum(segment.undelivered for segment in [*segments, *self._orphans])
        return pending + sum(len(line) for line in self._unspooled)

    @property
    def unwritten_records(self) -> int:
        """Records held only in memory, because the local write failed and no store took them yet."""
        return len(self._unspooled)

    @property
    def file_usable(self) -> bool:
        """Whether the local file (or, with Redis, the spool segment) is open for records."""
        return self._segment is not None

    def emit(self, record: dict[str, Any]) -> None:
        """Append ``record`` to the local file with one write().

        A failed write (OSError) is not raised: the record is kept in memory and retried at
        the next flush, and the failure is logged once until a write succeeds again.
        """
        line = orjson.dumps(record) + b"\n"
        try:
            self._own_segment().append(line)
        except OSError as exc:
            self._unspooled.append(line)
            if not self._write_failed:
                self._write_failed = True
                log.error("outcome_write_failed", path=str(self._target_dir()), error=str(exc))
        else:
            self._note_write_recovered()
        self._since_wakeup += 1
        if self._since_wakeup >= FLUSH_BATCH:
            self._wakeup.set()

    def _note_write_recovered(self) -> None:
        if self._write_failed:
            log.info("outcome_write_recovered", path=str(self._target_dir()),
                     records_waiting=len(self._unspooled))  # fmt: skip
        self._write_failed = False

    def _target_dir(self) -> Path:
        return self.spool_dir if self.link is not None else self.path.parent

    def _own_segment(self) -> Segment:
        if self._segment is None:
            self._segment = self._open_segment()
        return self._segment

    def _open_segment(self) -> Segment:
        if self.link is not None:
            return open_own_segment(self.spool_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        size = os.fstat(fd).st_size
        # Other processes may append to the same file, so it is never truncated.
        return Segment(self.path, fd, written=size, delivered=size, exclusive=False)

    def start(self) -> None:
        """Open the local file, claim spool segments of dead processes, start the writer."""
        if self._task is not None:
            return
        try:
            self._own_segment()
        except OSError as exc:
            # emit() tries again for each record and keeps the records in memory meanwhile.
            log.error("outcome_file_unusable", path=str(self._target_dir()), error=str(exc))
        if self.link is not None:
            self._adopt_legacy_spool()
            own = self._segment.path if self._segment else None
            self._orphans = claim_orphans(self.spool_dir, own)
            if self._orphans:
                log.info(
                    "outcome_spool_found", segments=len(self._orphans), dir=str(self.spool_dir)
                )
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outcome-writer")

    def _adopt_legacy_spool(self) -> None:
        # Earlier versions spooled to <stem>-spool.jsonl beside the outcome file only while
        # Redis was away; its records were never sent, so it becomes a segment at offset 0.
        legacy = self.path.with_name(self.path.stem + "-spool.jsonl")
        if not legacy.exists():
            return
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            legacy.rename(self.spool_dir / f"outcomes-legacy-{uuid.uuid4().hex[:12]}.jsonl")
        except OSError as exc:
            log.warning("outcome_legacy_spool_not_moved", path=str(legacy), error=str(exc))

    async def stop(self) -> None:
        """Let the writer finish its flush, deliver what is left, and close the files.

        The writer is not cancelled, because a cancel during a Redis call would leave its
        reply unknown.  The last flush tries Redis even while the circuit breaker is open,
        because an outage that ended moments ago would otherwise leave every record in the
        spool.  A segment that Redis does not have in full stays in the spool folder for the
        next process that starts on it.
        """
        if self._task is not None:
            self._stopping = True
            self._wakeup.set()
            await self._task
            self._task = None
        await self.flush(last_chance=True)
        await self._close_segments()
        if self._unspooled:
            # Neither the spool folder nor Redis took these records, and memory ends here.
            log.error("outcome_records_lost", count=len(self._unspooled),
                      reason="the spool write and the Redis stream both failed")

    async def _close_segments(self) -> None:
        segment, self._segment = self._segment, None
        if segment is not None:
            if self.link is not None and segment.undelivered == 0:
                await self._retire(segment)
            else:
                await asyncio.to_thread(segment.fsync)
                segment.close()
                if self.link is not None:
                    self._log_kept(segment)
        for orphan in self._orphans:
            self._log_kept(orphan)
            orphan.close()
        self._orphans = []

    def _log_kept(self, segment: Segment) -> None:
        log.warning(
            "outcome_spool_kept", segment=segment.name, undelivered_bytes=segment.undelivered,
            dir=str(self.spool_dir),
            reason="Redis did not take these records; the next gateway started on this spool "
            "folder delivers them",
        )  # fmt: skip

    async def _run(self) -> None:
        while not self._stopping:
            # asyncio.timeout, unlike wait_for on Python 3.11, starts no task for the wait.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL_S):
                    await self._wakeup.wait()
            self._wakeup.clear()
            self._since_wakeup = 0
            await self.flush()

    async def flush(self, last_chance: bool = False) -> None:
        """Deliver new lines (or write failed ones to the file) and fsync off the event loop.

        ``last_chance`` calls Redis even while the circuit breaker is open.
        """
        async with self._flush_lock:
            self._last_chance = last_chance
            try:
                if self.link is None:
                    await self._write_unspooled_to_file()
                else:
                    await self._deliver_own()
                    await self._deliver_orphans()
                    await self._send_unspooled()
            finally:
                self._last_chance = False
            await self._sync()

    async def _sync(self) -> None:
        segment = self._segment
        if segment is None or segment.written <= self._synced:
            return
        target = segment.written
        # An fsync takes milliseconds; on the event loop it would stall every request.
        await asyncio.to_thread(segment.fsync)
        if segment is self._segment:
            self._synced = target

    # Delivery ---------------------------------------------------------------------------------

    async def _deliver_own(self) -> None:
        segment = self._segment
        if segment is None:
            return
        while segment.undelivered > 0:
            if not await self._deliver_chunk(segment):
                return
        if segment.written >= ROTATE_BYTES and segment is self._segment:
            self._segment, self._synced = None, 0
            with contextlib.suppress(OSError):
                self._own_segment()
            await self._retire(segment)

    async def _deliver_orphans(self) -> None:
        while self._orphans:
            orphan = self._orphans[0]
            if not await self._resume(orphan):
                return
            resumed_at = orphan.delivered
            while orphan.undelivered > 0:
                if not await self._deliver_chunk(orphan):
                    return
            self._orphans.pop(0)
            await self._retire(orphan)
            log.info("outcome_spool_delivered", segment=orphan.name, bytes=orphan.written,
                     resumed_at=resumed_at)  # fmt: skip

    async def _resume(self, orphan: Segment) -> bool:
        """Set ``orphan.delivered`` from Redis once; return False when the Redis call failed."""
        if orphan.delivered > 0:
            return True
        key = delivered_key(self.key_prefix, orphan.name)
        stored = await self._call(lambda client: client.get(key), b"")
        if stored == b"":
            return False
        orphan.delivered = min(int(stored or 0), orphan.written)
        return True

    async def _deliver_chunk(self, segment: Segment) -> bool:
        """Send the next lines of ``segment``; return False when nothing could be sent."""
        start = segment.delivered
        lines, end = await asyncio.to_thread(segment.read_lines, start, segment.written)
        if not lines:
            # Only a torn write (a machine crash mid-write) leaves bytes without a newline.
            log.warning("outcome_spool_torn_tail", segment=segment.name, bytes=segment.undelivered)
            segment.delivered = segment.written
            return True
        keys = [self.stream, delivered_key(self.key_prefix, segment.name)]
        arguments = [start, STREAM_MAX_LENGTH, *lines]
        result = await self._call(
            lambda client: client.eval(DELIVER_SCRIPT, 2, *keys, *arguments), None
        )
        if result is None:
            return False
        segment.delivered = end
        return True

    async def _retire(self, segment: Segment) -> None:
        # The file goes first: an offset key without a file is harmless and expires, but a
        # file without its offset key would be delivered again from the start.
        segment.path.unlink(missing_ok=True)
        segment.close()
        key = delivered_key(self.key_prefix, segment.name)
        await self._call(lambda client: client.delete(key), None)

    async def _send_unspooled(self) -> None:
        lines, self._unspooled = self._unspooled, []
        if not lines:
            return

        async def xadd_all(client: Any) -> bool:
            pipe = client.pipeline(transaction=False)
            for line in lines:
                pipe.xadd(self.stream, {"record": line.rstrip(b"\n")},
                          maxlen=STREAM_MAX_LENGTH, approximate=True)  # fmt: skip
            await pipe.execute()
            return True

        if not await self._call(xadd_all, False):
            self._unspooled = lines + self._unspooled

    async def _write_unspooled_to_file(self) -> None:
        lines, self._unspooled = self._unspooled, []
        if not lines:
            return
        try:
            # On the event loop, like emit, so that two appends never race on ``written``.
            self._own_segment().append(b"".join(lines))
        except OSError:
            self._unspooled = lines + self._unspooled
        else:
            self._note_write_recovered()

    async def _call(self, operation: Any, default: Any) -> Any:
        assert self.link is not None
        return await self.link.call(operation, default, last_chance=self._last_chance)
