"""Cancelling the upstream call when the client disconnects before the response starts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

from router.errors import ClientDisconnected

T = TypeVar("T")


async def unless_client_leaves(receive: Receive, call: Awaitable[T]) -> T:
    """Await ``call``, and cancel it when the client disconnects first.

    ``receive`` must be the ASGI receive channel of a request whose body was read in full,
    so that its next message is ``http.disconnect``. A cancelled upstream call closes its
    connection, which lets the provider abort the generation, and no fallback tier is tried.

    Raises:
        ClientDisconnected: the client disconnected before ``call`` finished.
    """
    task = asyncio.current_task()
    assert task is not None, "unless_client_leaves must run inside a task"
    client_left = False

    async def cancel_on_disconnect() -> None:
        nonlocal client_left
        while (await receive())["type"] != "http.disconnect":
            pass
        client_left = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(cancel_on_disconnect())
    try:
        return await call
    except asyncio.CancelledError:
        # uncancel() returns the cancellations still pending, such as a server shutdown's,
        # which must propagate.
        if client_left and task.uncancel() == 0:
            raise ClientDisconnected() from None
        raise
    finally:
        watcher.cancel()
