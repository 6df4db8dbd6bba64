"""Progress reporting for the long classifier commands (train, evaluate, calibrate).

Library code calls a ``Progress`` with a description and, when they are known, the
number of finished steps and the total (folds or model fits).  The commands draw that as a rich
progress bar on stderr; library callers that pass nothing get ``silent``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress


class Progress(Protocol):
    """A callback that reports the current step of a long run."""

    def __call__(self, text: str, *, done: int | None = None, total: int | None = None) -> None:
        """Show ``text``, with ``done`` of ``total`` steps finished when both are given."""


def silent(text: str, *, done: int | None = None, total: int | None = None) -> None:
    """Report nothing; the default for library callers."""


@contextmanager
def progress_bar(console: Console) -> Iterator[Progress]:
    """Draw a progress bar on ``console`` while the block runs and yield its callback."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with RichProgress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def report(text: str, *, done: int | None = None, total: int | None = None) -> None:
            bar.update(task, description=text, completed=done or 0, total=total)

        yield report
