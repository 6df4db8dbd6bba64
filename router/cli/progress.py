"""Progress bars for commands that can run for more than a few seconds.

A bar is drawn on standard error only when standard error is a terminal and the user did
not pass ``--quiet``, so piped or logged output never contains control sequences.  While a
bar is shown, lines written to standard error (log lines) are printed above it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

Item = TypeVar("Item")
TICK_EVERY = 1000
"""Items between two bar updates in :func:`counting`, because each update takes a lock."""


class Bars:
    """The progress bars of one command; every method does nothing when they are disabled."""

    def __init__(self, progress: Any | None) -> None:
        self._progress = progress

    def add(self, description: str, total: float | None = None) -> int:
        """Add a bar of ``total`` units (None: a counter without an end); return its id."""
        if self._progress is None:
            return 0
        task_id: int = self._progress.add_task(description, total=total)
        return task_id

    def update(self, bar: int, completed: float, total: float | None = None) -> None:
        """Set the units done on ``bar`` and, when given, its new total."""
        if self._progress is not None:
            self._progress.update(bar, completed=completed, total=total)

    def finish(self, bar: int) -> None:
        """Mark ``bar`` as complete, whatever its total was."""
        if self._progress is not None:
            task = self._progress.tasks[bar]
            self._progress.update(bar, total=task.completed, completed=task.completed)


def bars_enabled(quiet: bool) -> bool:
    """Return whether bars should be drawn: not ``quiet`` and standard error is a terminal."""
    if quiet:
        return False
    from rich.console import Console

    return Console(stderr=True).is_terminal


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Bars]:
    """Yield :class:`Bars` that draw on standard error, or do nothing when not ``enabled``."""
    if not enabled:
        yield Bars(None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield Bars(progress)


def counting(items: Iterable[Item], bars: Bars, bar: int) -> Iterator[Item]:
    """Yield ``items`` and move ``bar`` forward as they are consumed."""
    done = 0
    for item in items:
        yield item
        done += 1
        if done % TICK_EVERY == 0:
            bars.update(bar, done)
    bars.update(bar, done)
