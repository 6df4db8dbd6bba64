"""The shared timer that ends awaits past their deadline."""

from __future__ import annotations

import asyncio

import pytest

from router.deadlines import Deadlines


async def read(deadlines: Deadlines, timeout_s: float, wait_s: float) -> str:
    task = deadlines.start(timeout_s)
    try:
        await asyncio.sleep(wait_s)
        return "read"
    except asyncio.CancelledError as exc:
        if not deadlines.expired(exc, task):
            raise
        return "timed out"
    finally:
        deadlines.finish(task)


async def test_only_late_reads_end() -> None:
    deadlines = Deadlines("test deadline passed")

    results = await asyncio.gather(
        read(deadlines, timeout_s=0.05, wait_s=5.0),
        read(deadlines, timeout_s=5.0, wait_s=0.01),
        read(deadlines, timeout_s=0.1, wait_s=5.0),
    )

    assert results == ["timed out", "read", "timed out"]
    assert deadlines._deadlines == {}


async def test_finished_read_is_not_cancelled() -> None:
    deadlines = Deadlines("test deadline passed")

    assert await read(deadlines, timeout_s=0.05, wait_s=0.0) == "read"
    # The timer still fires at the old deadline and finds no read.
    await asyncio.sleep(0.1)
    assert deadlines._deadlines == {}


async def test_other_cancellation_is_kept() -> None:
    deadlines = Deadlines("test deadline passed")
    reader = asyncio.create_task(read(deadlines, timeout_s=5.0, wait_s=5.0))
    await asyncio.sleep(0.01)
    reader.cancel()

    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_later_deadline_does_not_delay_earlier() -> None:
    deadlines = Deadlines("test deadline passed")
    slow = asyncio.create_task(read(deadlines, timeout_s=30.0, wait_s=60.0))
    await asyncio.sleep(0.01)

    assert await read(deadlines, timeout_s=0.05, wait_s=5.0) == "timed out"
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow


async def test_other_instance_cancellation_is_kept() -> None:
    deadlines = Deadlines("test deadline passed")
    other = Deadlines("other deadline passed")
    task = other.start(0.05)
    try:
        with pytest.raises(asyncio.CancelledError) as raised:
            await asyncio.sleep(5.0)
        assert not deadlines.expired(raised.value, task)
        assert other.expired(raised.value, task)
    finally:
        other.finish(task)
