"""The gateway freezes its start-up objects once per process."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
from router.app import freeze_startup_objects
first = freeze_startup_objects()
new_objects = [object() for _ in range(10)]
second = freeze_startup_objects()
print(first, second, gc.get_freeze_count())
"""


def test_freeze_runs_once_per_process() -> None:
    # A child process, so that this test run's own collector is left alone.
    completed = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                               check=True, timeout=60)
    first, second, count = map(int, completed.stdout.split())

    assert first > 10_000
    assert second == first
    assert count == first
