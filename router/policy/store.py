"""The live policy, hot-reloaded from its file.

A request reads ``store.current`` once and keeps that object for its whole life, so a
reload never changes the policy under a request that has already started.  A file that
fails validation is logged and ignored: the last good policy keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from router.policy.loader import LoadedPolicy, PolicyError, load_policy

log = structlog.get_logger("tierwise.policy")


class PolicyStore:
    def __init__(self, path: Path, interval_s: float) -> None:
        self.path = path
        self.interval_s = interval_s
        self.current: LoadedPolicy = load_policy(path)
        self.last_error: str | None = None
        self.rejected: dict[str, Any] | None = None
        """When and where the file's last edit failed validation, for ``/readyz``: the time and
        the file's line numbers, never the problems' text, which can quote the file's values."""
        self.published = False
        """True once a policy published through Redis replaced the file's policy."""
        self.file_error: str | None = None
        """The reason the file cannot be read now (deleted, unreadable), or None."""
        self._signature = self._file_signature()
        self._task: asyncio.Task[None] | None = None
        self.on_reload: Callable[[LoadedPolicy], None] | None = None
        """Called with each policy that a file reload or a published version swaps in."""
        self.check_reload: Callable[[LoadedPolicy], list[str]] | None = None
        """Returns the problems that keep a valid edit of the file from applying to this
        process, in the loader's ``file:line: ...`` form. An edit with problems is rejected."""

    def _file_signature(self) -> bytes | None:
        # A digest of the content rather than (mtime, size): copies that keep timestamps, and
        # two saves of equal size within one tick of the file system's coarse clock, change
        # neither.  Policy files are a few kilobytes, so reading one per interval is cheap.
        try:
            signature = hashlib.sha256(self.path.read_bytes()).digest()
        except OSError as exc:
            error = exc.strerror or type(exc).__name__
            if self.file_error != error:
                # Logged once per change: a file moved away by an editor's save comes back
                # at the next check, a deleted one stays missing.
                log.warning("policy_file_unreadable", path=str(self.path), error=error,
                            effect="the policy in use keeps serving until the file is readable")
            self.file_error = error
            return None
        if self.file_error is not None:
            log.info("policy_file_readable", path=str(self.path))
            self.file_error = None
        return signature

    def reload(self) -> bool:
        """Load the file again; return whether a new valid policy was swapped in."""
        try:
            loaded = load_policy(self.path)
            problems = self.check_reload(loaded) if self.check_reload is not None else []
            if problems:
                raise PolicyError(self.path, problems)
        except PolicyError as exc:
            self.last_error = str(exc)
            self.rejected = {
                "at": round(time.time(), 3),
                "problems": len(exc.problems),
                "lines": problem_lines(exc),
            }
            log.error("policy_reload_rejected", path=str(self.path), problems=exc.problems)
            return False
        self.last_error = None
        self.rejected = None
        if loaded.version == self.current.version:
            return False
        previous = self.current.version
        self.current = loaded
        log.info("policy_reloaded", path=str(self.path), previous=previous, version=loaded.version)
        if self.on_reload is not None:
            self.on_reload(loaded)
        return True

    def use_published(self, loaded: LoadedPolicy) -> None:
        """Serve ``loaded``, a validated published policy, and stop following the file.

        The file is no longer reloaded, so that an edit on one replica cannot undo a policy
        that every replica received.
        """
        previous = self.current.version
        self.current = loaded
        self.published = True
        self.last_error = None
        self.rejected = None
        log.info("policy_replaced_by_published", previous=previous, version=loaded.version)
        if self.on_reload is not None:
            self.on_reload(loaded)

    def follow_published(self) -> None:
        """Stop following the file, whose policy is the published version already."""
        if not self.published:
            self.published = True
            # An edit that failed validation can no longer be applied, so /readyz drops it.
            self.last_error = None
            self.rejected = None
            log.info("policy_follows_published", version=self.current.version)

    def check_for_change(self) -> None:
        signature = self._file_signature()
        if signature is None or signature == self._signature:
            return
        self._signature = signature
        if self.published:
            # Logged once per edit, because an operator who edits the file on one replica
            # after a rollout would otherwise see no effect and no reason.
            log.warning(
                "policy_file_change_ignored",
                path=str(self.path),
                serving=self.current.version,
                reason="this gateway serves the policy published through Redis",
                fix="publish the edited file with `tierwise policy publish`",
            )
            return
        self.reload()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.check_for_change()
            except Exception as exc:  # noqa: BLE001 - a failed check must not end the watch
                # The gateway's own fault, for example in a reload hook. Later edits still load,
                # and the log names only the exception's type, because its text can quote the file.
                log.error("policy_watch_failed", path=str(self.path), error=type(exc).__name__,
                          effect="this check was skipped; the watch goes on")

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._watch(), name="policy-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def problem_lines(error: PolicyError) -> list[int]:
    """Return the file line numbers that ``error``'s problems name, in order, without repeats."""
    pattern = re.compile(re.escape(str(error.path)) + r":(\d+):")
    lines: list[int] = []
    for problem in error.problems:
        match = pattern.match(problem)
        if match is not None and int(match.group(1)) not in lines:
            lines.append(int(match.group(1)))
    return lines
