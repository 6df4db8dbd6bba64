"""The bounded queue between a stream's pump task and its relay."""

from __future__ import annotations

import asyncio

import pytest

from router.api.spsc_queue import SpscQueue


async def test_items_come_out_in_order() -> None:
    queue: SpscQueue[int] = SpscQueue(maxsize=8)
    for item in range(5):
        await queue.put(item)

    assert queue.qsize() == 5
    assert [queue.get_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert queue.empty()


async def test_get_nowait_on_empty_queue_raises() -> None:
    queue: SpscQueue[int] = SpscQueue(maxsize=1)

    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


def test_maxsize_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        SpscQueue(maxsize=0)


async def test_get_waits_for_put() -> None:
    queue: SpscQueue[str] = SpscQueue(maxsize=2)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()

    await queue.put("event")

    assert await getter == "event"


async def test_full_queue_holds_put_until_get() -> None:
    queue: SpscQueue[int] = SpscQueue(maxsize=2)
    await queue.put(1)
    await queue.put(2)
    putter = asyncio.create_task(queue.put(3))
    await asyncio.sleep(0)
    assert not putter.done()
    assert queue.qsize() == 2

    assert queue.get_nowait() == 1
    await putter

    assert [await queue.get(), await queue.get()] == [2, 3]


async def test_cancelled_get_leaves_later_items() -> None:
    queue: SpscQueue[int] = SpscQueue(maxsize=2)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter

    await queue.put(7)

    assert await queue.get() == 7


async def test_cancelled_put_adds_nothing() -> None:
    queue: SpscQueue[int] = SpscQueue(maxsize=1)
    await queue.put(1)
    putter = asyncio.create_task(queue.put(2))
    await asyncio.sleep(0)
    putter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putter

    assert queue.get_nowait() == 1
    assert queue.empty()
    await queue.put(3)
    assert queue.get_nowait() == 3


async def test_producer_and_consumer_pass_many_items() -> None:
    queue: SpscQueue[int] = SpscQueue(maxsize=3)

    async def produce() -> None:
        for item in range(100):
            await queue.put(item)

    producer = asyncio.create_task(produce())
    received = [await queue.get() for _ in range(100)]
    await producer

    assert received == list(range(100))
