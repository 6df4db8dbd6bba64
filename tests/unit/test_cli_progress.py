"""Progress bars of long commands: drawn only on a terminal, counted from real work."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rich.progress import Progress

from router.cli.export_progress import export_backlog
from router.cli.progress import TICK_EVERY, Bars, bars_enabled, counting, progress_bars
from router.outcomes.export import ExportOptions
from tests.support.redis_check import require_redis

PROGRESS_REDIS_DB = 11


def test_bars_disabled_by_quiet() -> None:
    assert bars_enabled(quiet=True) is False


def test_bars_disabled_without_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest's captured standard error is not a terminal; rich would treat these variables
    # as a request to draw anyway.
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)

    assert bars_enabled(quiet=False) is False


def test_disabled_bars_do_nothing() -> None:
    with progress_bars(enabled=False) as bars:
        bar = bars.add("work", total=3)
        bars.update(bar, 2)
        bars.finish(bar)
        items = list(counting(range(3), bars, bar))

    assert items == [0, 1, 2]


def test_counting_moves_the_bar() -> None:
    progress = Progress(disable=True)
    bars = Bars(progress)
    bar = bars.add("work", total=TICK_EVERY * 2 + 5)

    for seen, _ in enumerate(counting(range(TICK_EVERY * 2 + 5), bars, bar), start=1):
        if seen == TICK_EVERY + 1:
            assert progress.tasks[bar].completed == TICK_EVERY

    assert progress.tasks[bar].completed == TICK_EVERY * 2 + 5
    assert progress.tasks[bar].finished


def test_finish_completes_open_counter() -> None:
    progress = Progress(disable=True)
    bars = Bars(progress)
    bar = bars.add("export records", total=None)
    bars.update(bar, 7)

    bars.finish(bar)

    assert progress.tasks[bar].total == 7
    assert progress.tasks[bar].finished


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    base = os.environ.get("TIERWISE_TEST_REDIS_URL", "redis://127.0.0.1:6399/15")
    url = base.rsplit("/", 1)[0] + f"/{PROGRESS_REDIS_DB}"
    require_redis(url, "the export backlog test needs database 11 of the test Redis")
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield client
    finally:
        client.close()


def test_export_backlog_counts_unread_entries(redis_client: redis.Redis, tmp_path: Path) -> None:
    stream = f"test:progress:{uuid.uuid4().hex}"
    options = ExportOptions(out_dir=tmp_path, stream=stream, group="exporters")
    try:
        missing_stream = export_backlog(redis_client, options)
        for number in range(5):
            redis_client.xadd(stream, {"record": f'{{"n": {number}}}'})
        new_group_from_start = export_backlog(redis_client, options)
        new_group_from_end = export_backlog(redis_client, _with(options, start_id="$"))
        redis_client.xgroup_create(stream, "exporters", id="0")
        redis_client.xreadgroup("exporters", "one", {stream: ">"}, count=2)
        redis_client.xadd(stream, {"record": '{"n": 5}'})
        existing_group = export_backlog(redis_client, options)
    finally:
        redis_client.delete(stream)

    assert missing_stream == 0
    assert new_group_from_start == 5
    assert new_group_from_end == 0
    # Two entries are read but not acknowledged, and four are not read yet.
    assert existing_group == 6


def _with(options: ExportOptions, **changes: Any) -> ExportOptions:
    from dataclasses import replace

    return replace(options, **changes)
