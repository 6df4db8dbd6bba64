"""The outcome spool: append-only files that hold records until the Redis stream has them.

A gateway appends each record to its own segment file, ``outcomes-<time>-<id>.jsonl`` in the
spool folder, with one ``write()`` call before the response completes.  The kernel's page
cache keeps written bytes when the process is killed (SIGKILL, OOM), so a record the client
saw finish survives the process.  Only a machine crash before the next fsync can lose it.

A segment is locked with ``flock`` while its process lives.  The lock goes away with the
process, which is how a new process tells the segments of dead predecessors from those of
live neighbours sharing the folder.

Delivered bytes are tracked per segment as a byte offset, at record boundaries; see
:mod:`router.outcomes.log` for where that offset is stored.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SEGMENT_GLOB = "outcomes-*.jsonl"
# A fully delivered segment larger than this is replaced with a new one.
ROTATE_BYTES = 16 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024


@dataclass
class Segment:
    """One spool file, open for appending (its own) or for delivery (a dead process's).

    ``written`` and ``delivered`` are byte offsets from the start of the file.
    """

    path: Path
    fd: int
    written: int
    delivered: int = 0
    exclusive: bool = True
    """Whether only this process appends, so a failed append may be truncated away."""
    torn: bool = False
    """Whether an append stopped part-way and its bytes could not be truncated away."""

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def undelivered(self) -> int:
        return self.written - self.delivered

    def append(self, data: bytes) -> None:
        """Append ``data`` with one write() in the normal case; raises OSError (e.g. disk full).

        After a write that stopped part-way, an exclusive segment is truncated back to its
        last complete line, so that the next line does not start inside a torn one.  A shared
        file cannot be truncated, because another process may have appended since, so the
        next append ends the torn line with a newline first.

        NOTE: a line that another process appends to a shared file right after the torn bytes
        still joins them, and a reader gets one invalid line in place of that record.
        """
        if self.torn:
            data = self._newline_after_torn_tail() + data
        view = memoryview(data)
        try:
            while view:
                count = os.write(self.fd, view)
                view = view[count:]
        except OSError:
            if len(view) < len(data):
                self.torn = not (self.exclusive and self._truncate_to_written())
            raise
        self.torn = False
        self.written += len(data)

    def _truncate_to_written(self) -> bool:
        try:
            os.ftruncate(self.fd, self.written)
        except OSError:
            return False
        return True

    def _newline_after_torn_tail(self) -> bytes:
        # The torn bytes are in the file now, so ``written`` counts them to stay a file offset.
        self.written = os.fstat(self.fd).st_size
        if self.written == 0 or os.pread(self.fd, 1, self.written - 1) == b"\n":
            return b""
        return b"\n"

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)  # closing also releases the flock

    def read_lines(self, start: int, end: int) -> tuple[list[bytes], int]:
        """Return the complete lines in ``[start, end)`` (without newlines) and where they end.

        Reads at most about 1 MiB, or one line if that line is longer.  The end offset equals
        ``start`` when no complete line is there, e.g. after a torn write at a machine crash.
        """
        size = min(end - start, READ_CHUNK_BYTES)
        data = os.pread(self.fd, size, start)
        cut = data.rfind(b"\n")
        if cut < 0 and size < end - start:
            data = os.pread(self.fd, end - start, start)
            cut = data.rfind(b"\n")
        if cut < 0:
            return [], start
        return data[:cut].split(b"\n"), start + cut + 1


def open_own_segment(directory: Path) -> Segment:
    """Create and lock a new segment for this process; raises OSError when the folder is unusable."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = directory / f"outcomes-{stamp}-{uuid.uuid4().hex[:12]}.jsonl"
    # Read-write, because delivery reads the segment back with pread.
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        # Another gateway starting on this folder took the new, empty file for an orphan.
        os.close(fd)
        raise
    return Segment(path, fd, written=0)


def claim_orphans(directory: Path, own: Path | None) -> list[Segment]:
    """Lock and return the segments that no live process holds, oldest name first.

    A segment locked by another process (a live gateway sharing the folder) is skipped.
    """
    if not directory.is_dir():
        return []
    orphans = []
    for path in sorted(directory.glob(SEGMENT_GLOB)):
        if path == own:
            continue
        segment = _lock_existing(path)
        if segment is not None:
            orphans.append(segment)
    return orphans


def _lock_existing(path: Path) -> Segment | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # delivered and removed by its owner meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    status = os.fstat(fd)
    if not _names_inode(path, status):
        # Its owner delivered and deleted it between our open() and flock().
        os.close(fd)
        return None
    return Segment(path, fd, written=status.st_size)


def _names_inode(path: Path, status: os.stat_result) -> bool:
    try:
        current = path.stat()
    except FileNotFoundError:
        return False
    return (current.st_dev, current.st_ino) == (status.st_dev, status.st_ino)
