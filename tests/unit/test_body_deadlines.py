"""The shared timer that ends request-body reads past their deadline."""

from __future__ import annotations

import asyncio

import pytest

from router.api.body_deadlines import BodyDeadlines, is_deadline_cancellation


async def read(deadlines: BodyDeadlines, timeout_s: float, wait_s: float) -> str:
    task = deadlines.start(timeout_s)
    try:
        await asyncio.sleep(wait_s)
        return "read"
    except asyncio.CancelledError as exc:
        if not is_deadline_cancellation(exc, task):
            raise
        return "timed out"
    finally:
        deadlines.finish(task)


async def test_only_late_reads_end() -> None:
    deadlines = BodyDeadlines()

    results = await asyncio.gather(
        read(deadlines, timeout_s=0.05, wait_s=5.0),
        read(deadlines, timeout_s=5.0, wait_s=0.01),
        read(deadlines, timeout_s=0.1, wait_s=5.0),
    )

    assert results == ["timed out", "read", "timed out"]
    assert deadlines._reads == {}


async def test_finished_read_is_not_cancelled() -> None:
    deadlines = BodyDeadlines()

    assert await read(deadlines, timeout_s=0.05, wait_s=0.0) == "read"
    # The timer still fires at the old deadline and finds no read.
    await asyncio.sleep(0.1)
    assert deadlines._reads == {}


async def test_other_cancellation_is_kept() -> None:
    deadlines = BodyDeadlines()
    reader = asyncio.create_task(read(deadlines, timeout_s=5.0, wait_s=5.0))
    await asyncio.sleep(0.01)
    reader.cancel()

    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_later_deadline_does_not_delay_earlier() -> None:
    deadlines = BodyDeadlines()
    slow = asyncio.create_task(read(deadlines, timeout_s=30.0, wait_s=60.0))
    await asyncio.sleep(0.01)

    assert await read(deadlines, timeout_s=0.05, wait_s=5.0) == "timed out"
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
