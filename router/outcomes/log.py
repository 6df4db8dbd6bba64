"""The outcome log: one record per request, plus feedback records that refer to one.

Records are buffered in memory and written by a background task, so a request never waits
on a disk or on Redis.  With Redis they go to the stream ``tw:outcomes``; without it, or
while Redis is unreachable, they go to a local JSONL file.  Records spooled while Redis was
away are sent to the stream once it answers again, then the spool file is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import orjson
import structlog

from router.redis_link import RedisLink

log = structlog.get_logger("tierwise.outcomes")

STREAM_KEY = "tw:outcomes"
STREAM_MAX_LENGTH = 1_000_000
FLUSH_INTERVAL_S = 0.2
FLUSH_BATCH = 500


class OutcomeLog:
    def __init__(self, path: Path, link: RedisLink | None) -> None:
        self.path = path
        self.spool_path = path.with_name(path.stem + "-spool.jsonl")
        self.link = link
        self._pending: list[dict[str, Any]] = []
        self._wakeup = asyncio.Event()
        # One flush at a time, so two batches never append to a file concurrently.
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0

    @property
    def backend(self) -> str:
        return "redis-stream" if self.link is not None else "file"

    def emit(self, record: dict[str, Any]) -> None:
        """Queue ``record`` for writing; never blocks and never raises."""
        self._pending.append(record)
        if len(self._pending) >= FLUSH_BATCH:
            self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="outcome-writer")

    async def stop(self) -> None:
        """Let the writer finish the flush it is running, then write everything still queued.

        The writer is not cancelled, because a cancel during a Redis write would drop the
        batch that the flush had already taken from the queue.
        """
        if self._task is not None:
            self._stopping = True
            self._wakeup.set()
            await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), FLUSH_INTERVAL_S)
            self._wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        async with self._flush_lock:
            await self._flush_pending()

    async def _flush_pending(self) -> None:
        batch, self._pending = self._pending, []
        # The write and its fsync run in a worker thread: an fsync takes milliseconds, and on
        # the event loop it would stall every request in flight.
        if self.link is None:
            if batch:
                await asyncio.to_thread(self._append, self.path, batch)
            return
        if batch and not await self._send(batch):
            await asyncio.to_thread(self._append, self.spool_path, batch)
            return
        await self._drain_spool()

    async def _send(self, batch: list[dict[str, Any]]) -> bool:
        assert self.link is not None

        async def xadd_all(client: Any) -> bool:
            pipe = client.pipeline(transaction=False)
            for record in batch:
                pipe.xadd(
                    STREAM_KEY,
                    {"record": orjson.dumps(record)},
                    maxlen=STREAM_MAX_LENGTH,
                    approximate=True,
                )
            await pipe.execute()
            return True

        sent = await self.link.call(xadd_all, False)
        if sent:
            self.written += len(batch)
        return sent

    async def _drain_spool(self) -> None:
        if not self.spool_path.exists():
            return
        records = [orjson.loads(line) for line in self.spool_path.read_bytes().splitlines() if line]
        if records and await self._send(records):
            self.spool_path.unlink()
            log.info("outcome_spool_delivered", records=len(records))

    def _append(self, path: Path, batch: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(orjson.dumps(record) + b"\n" for record in batch)
        with path.open("ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path == self.path:
            self.written += len(batch)
