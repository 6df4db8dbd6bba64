"""Cancelling the upstream call when the client disconnects before the response starts."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.types import Receive

from router.errors import ClientDisconnected
from router.http_protocol import CoalescingTransport

T = TypeVar("T")


async def unless_client_leaves(receive: Receive, call: Awaitable[T]) -> T:
    """Await ``call``, and cancel it when the client disconnects first.

    ``receive`` must be the ASGI receive channel of a request whose body was read in full,
    so that its next message is ``http.disconnect``. A cancelled upstream call closes its
    connection, which lets the provider abort the generation, and no fallback tier is tried.

    Under ``tierwise serve`` the connection's transport calls back when the connection is
    lost, which costs nothing per request. Under other servers a watcher task waits on
    ``receive``, about 6 µs of CPU per call. A client that shuts down only its write side
    after the request counts as gone, because uvicorn closes the connection at its FIN,
    which the server cannot tell from a full close before it writes.

    Raises:
        ClientDisconnected: the client disconnected before ``call`` finished. When uvicorn
            had already lost the connection, ``call`` is closed without being started.
    """
    task = asyncio.current_task()
    assert task is not None, "unless_client_leaves must run inside a task"
    client_left = False

    def cancel() -> None:
        nonlocal client_left
        client_left = True
        task.cancel()

    if client_connected(receive) is False:
        # uvicorn lost the connection while the body was read or the request was routed,
        # before the callback below could be set, so the call is never started.
        if inspect.iscoroutine(call):
            call.close()
        raise ClientDisconnected()
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    stop_watching: Callable[[], object]
    if isinstance(transport, CoalescingTransport):
        transport.on_connection_lost = cancel
        stop_watching = transport.clear_connection_lost
    else:
        stop_watching = _watch_receive(receive, cancel).cancel
    try:
        return await call
    except asyncio.CancelledError:
        # uncancel() returns the cancellations still pending, such as a server shutdown's,
        # which must propagate.
        if client_left and task.uncancel() == 0:
            raise ClientDisconnected() from None
        raise
    finally:
        stop_watching()


def client_connected(receive: Receive | None) -> bool | None:
    """Return whether the client is still connected, or None when the server does not expose it.

    uvicorn passes its request cycle's bound ``receive``, whose cycle has a ``disconnected``
    flag. uvicorn sets that flag only when the connection is lost before the response is
    complete.
    """
    disconnected = getattr(getattr(receive, "__self__", None), "disconnected", None)
    return not disconnected if isinstance(disconnected, bool) else None


def _watch_receive(receive: Receive, cancel: Callable[[], None]) -> asyncio.Task[None]:
    async def cancel_on_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        cancel()

    return asyncio.get_running_loop().create_task(cancel_on_disconnect())
