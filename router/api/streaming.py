"""Server-sent event responses: relaying an upstream stream and replaying a cached answer.

Both end the same way: one usage chunk (``choices: []``) when the client asked for
``stream_options.include_usage``, then ``data: [DONE]``.  A failure after the first byte
becomes an error event and the stream ends without ``[DONE]``, so no client mistakes a
cut answer for a whole one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from router.api.admission import run_for_body
from router.api.disconnect import client_connected
from router.api.spsc_queue import SpscQueue
from router.cache.answers import is_whole_answer
from router.cache.entries import encode_entry
from router.deadlines import keepalive_deadlines
from router.errors import ServerShuttingDown, UpstreamFailed, UpstreamTimeout, sse_error_event
from router.http_protocol import CoalescingTransport
from router.routing.tokens import count_completion_tokens, count_prompt_tokens
from router.upstream.base import StreamEndedWithoutDone, UpstreamError
from router.upstream.dispatch import without_prompts
from router.upstream.sse import DONE, KEEPALIVE, StreamAssembler, completion_to_chunks, encode_event

if TYPE_CHECKING:
    from router.api.schemas import ChatRequest
    from router.outcomes.record import Outcome
    from router.policy.schema import Policy
    from router.routing.decide import Decision
    from router.runtime import Runtime

log = structlog.get_logger("tierwise.stream")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Outcome status of a stream the client abandoned; nginx logs the same case as 499.
CLIENT_CLOSED_REQUEST = 499
# Outcome status of a request that the server cancelled when it stopped.
SERVER_STOPPED = 503


class RelayResponse(StreamingResponse):
    """An SSE response that stops at the first event after the client has gone.

    Starlette's StreamingResponse watches for the client leaving with a second task and an
    anyio task group per response, because uvicorn declares ASGI spec 2.3. That costs about
    0.04 ms of CPU per stream (``bench.profile --stream``). Under uvicorn this class instead
    reads the request cycle's ``disconnected`` flag before each send, and then closes the
    body, whose clean-up records the outcome as 499 and closes the upstream stream. An
    upstream that stays silent is noticed at the next keep-alive comment, at most
    ``keepalive_interval_s`` later. Under other ASGI servers Starlette's own watcher runs.

    Under uvicorn the status line and headers are sent once the first body part is ready,
    and a part that ends with ``final_suffix`` ends the response. ``tierwise serve`` joins
    two writes that follow each other into one socket send (``router.http_protocol``), so
    headers and first part leave together, and so do the last part and the end of the
    chunked body.
    """

    final_suffix: bytes | None = DONE
    """Bytes that end the last part of the body, or None when no part is known to be last.
    Nothing is sent after such a part, but the body iterator still runs to its end."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if client_connected(receive) is None:
            await super().__call__(scope, receive, send)
            return
        # uvicorn's request cycle, whose flag is read directly for each chunk. The ASGI type
        # of receive is a plain callable, which has no __self__ for mypy.
        cycle: Any = receive.__self__  # type: ignore[attr-defined]
        body = aiter(self.body_iterator)
        start = {"type": "http.response.start", "status": self.status_code,
                 "headers": self.raw_headers}
        try:
            try:
                chunk = await anext(body, _END)
            except BaseException:
                # The headers go out first, as they would have before the body was read.
                await send(start)
                raise
            await send(start)
            while chunk is not _END:
                if cycle.disconnected:
                    break
                last = (self.final_suffix is not None and isinstance(chunk, bytes)
                        and chunk.endswith(self.final_suffix))
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                if last:
                    if isinstance(cycle.transport, CoalescingTransport):
                        # Sent now rather than after the outcome record and log line below.
                        cycle.transport.flush()
                    # The body's clean-up after its last part, such as the outcome record,
                    # still runs. The relays of this module yield nothing after [DONE].
                    async for _ in body:
                        pass
                    break
                chunk = await anext(body, _END)
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
        if self.background is not None:
            await self.background()


_END: Any = object()
"""Marks the end of a response body for ``anext``."""


def _response(body: AsyncIterator[bytes], extra_headers: dict[str, str]) -> StreamingResponse:
    return RelayResponse(
        body, media_type="text/event-stream", headers={**STREAM_HEADERS, **extra_headers}
    )


def stream_cached(
    runtime: Runtime,
    policy: Policy,
    completion: dict[str, Any],
    chat: ChatRequest,
    outcome: Outcome,
    receive: Receive | None = None,
) -> StreamingResponse:
    from router.api.recording import finish, headers

    async def replay() -> AsyncIterator[bytes]:
        try:
            for chunk in completion_to_chunks(completion, chat.include_usage):
                yield encode_event(chunk)
            yield DONE
        except (GeneratorExit, asyncio.CancelledError):
            _mark_cut(outcome, receive)
            raise
        finally:
            finish(runtime, policy, outcome)

    return _response(replay(), headers(outcome, None))


def stream_upstream(
    runtime: Runtime,
    policy: Policy,
    chat: ChatRequest,
    outcome: Outcome,
    decision: Decision,
    first_chunk: dict[str, Any],
    rest: AsyncIterator[dict[str, Any]],
    cache_key: str | None,
    receive: Receive | None = None,
) -> StreamingResponse:
    from router.api.recording import finish, headers

    outcome.first_byte_ms = (time.perf_counter() - outcome.started) * 1000

    async def relay() -> AsyncIterator[bytes]:
        assembler = StreamAssembler()
        complete = False
        stopped = False
        batches = _with_keepalive(_prepend(first_chunk, rest), runtime)
        try:
            async for batch in batches:
                if batch is None:
                    yield KEEPALIVE
                    continue
                events = _client_events(batch, assembler)
                if events:
                    yield events
            complete = True
            if outcome.deployment is not None:
                runtime.health.succeeded(outcome.deployment.name)
        except UpstreamError as exc:
            if isinstance(exc, StreamEndedWithoutDone) and assembler.finished_all(chat.n):
                # Each of the n choices has its finish reason, so the completion is whole.
                # Some servers leave out [DONE].
                complete = True
                if outcome.deployment is not None:
                    runtime.health.succeeded(outcome.deployment.name)
                log.info("upstream_stream_without_done", request_id=outcome.request_id,
                         deployment=outcome.deployment.name if outcome.deployment else None)
            else:
                outcome.error, outcome.status = f"stream_{exc.kind}", 502
                deployment = outcome.deployment
                # A stream that broke because the local model server stopped does not count
                # toward the deployment's cooldown, as in the dispatcher.
                stopped = (
                    deployment is not None
                    and deployment.local_model
                    and runtime.local_model_stopped()
                )
                if deployment is not None and not stopped:
                    runtime.health.failed(deployment.name, exc, policy.routing.cooldown)
                # The same fields as the dispatcher's upstream_failed line before the first byte.
                log.warning(
                    "upstream_failed",
                    request_id=outcome.request_id,
                    tier=outcome.tier,
                    deployment=outcome.deployment.name if outcome.deployment else None,
                    kind=exc.kind,
                    status=exc.status,
                    detail=without_prompts(exc.message, {"messages": outcome.messages})[:300],
                    after_first_byte=True,
                )
                error = UpstreamTimeout("The model stopped answering.") if exc.kind == "timeout" else (
                    UpstreamFailed("The model's stream failed before the answer was complete.")
                )
                yield sse_error_event(error)
        except asyncio.CancelledError:
            _mark_cut(outcome, receive)
            if outcome.status != SERVER_STOPPED or not _withdraw_cancellation():
                raise
            # uvicorn cancels the streams still running when its graceful shutdown times
            # out. Re-raised, the cancellation would be logged as an exception in the ASGI
            # application; withdrawn, the stream ends with an error event the client can read.
            stopped = True
        except GeneratorExit:
            _mark_cut(outcome, receive)
            raise
        finally:
            # Closing here stops the upstream read at once, also when this generator is
            # closed while it waits at a yield, where the inner generator would otherwise
            # wait for garbage collection.
            await batches.aclose()
            await _account(assembler, chat, outcome)
            served = outcome.deployment
            if complete and cache_key is not None and served is not None:
                await _store(runtime, policy, cache_key, served.name, assembler, chat, outcome)
            if not complete:
                finish(runtime, policy, outcome)
        if stopped:
            yield sse_error_event(ServerShuttingDown())
        if not complete:
            return
        # The outcome is recorded only after [DONE] was sent, because a client that leaves
        # before [DONE] must treat the stream as cut.
        try:
            # One part, so that the usage chunk and [DONE] leave in one write.
            if chat.include_usage:
                yield encode_event(_usage_chunk(assembler, outcome)) + DONE
            else:
                yield DONE
        except (GeneratorExit, asyncio.CancelledError):
            _mark_cut(outcome, receive)
            raise
        finally:
            finish(runtime, policy, outcome)

    return _response(relay(), headers(outcome, decision))


async def _store(
    runtime: Runtime,
    policy: Policy,
    cache_key: str,
    deployment: str,
    assembler: StreamAssembler,
    chat: ChatRequest,
    outcome: Outcome,
) -> None:
    """Store the completion assembled from a stream, if it is a whole answer and lost no delta field."""
    completion = assembler.completion()
    if assembler.dropped_fields or not is_whole_answer(completion, chat.n):
        return
    # A non-streamed replay of this answer must carry usage like any other.
    completion["usage"] = completion.get("usage") or _usage_of(outcome)
    await runtime.cache.set(cache_key, encode_entry(deployment, completion), policy.cache.ttl_s)


def _withdraw_cancellation() -> bool:
    """Withdraw one cancellation of the current task, and return False if another one is pending."""
    task = asyncio.current_task()
    return task is not None and task.uncancel() == 0


def _mark_cut(outcome: Outcome, receive: Receive | None) -> None:
    """Set the outcome of a stream that was closed or cancelled before its end.

    A cut response recorded as a success would mislead cost reports and retraining. Under
    uvicorn, a stream cut while its client is still connected was stopped by the server,
    which cancels it when its graceful shutdown times out. Other servers do not expose the
    connection, so there the client is taken to have left.

    NOTE: a stream that failed because a send to a connected client raised is recorded as
    ``server_shutdown`` too.
    """
    if client_connected(receive) is True:
        outcome.error, outcome.status = "server_shutdown", SERVER_STOPPED
    else:
        outcome.error, outcome.status = "client_disconnected", CLIENT_CLOSED_REQUEST


def _client_events(batch: list[dict[str, Any]], assembler: StreamAssembler) -> bytes:
    """Add ``batch`` to ``assembler`` and return its SSE events for the client as one write.

    Chunks that arrived together go out in one ASGI message, because each message costs
    the server a send() call. The bytes on the wire are the same as with one write per event.
    """
    events = []
    for chunk in batch:
        assembler.add(chunk)
        # Usage goes to the client once, at the end: a usage chunk without choices is left
        # out, and one with choices is sent without its usage.
        if "usage" not in chunk:
            events.append(chunk)
        elif chunk.get("choices"):
            events.append({key: value for key, value in chunk.items() if key != "usage"})
    if not events:
        return b""
    # The same bytes as encode_event per chunk, with orjson.dumps called from C by map().
    return b"data: " + b"\n\ndata: ".join(map(orjson.dumps, events)) + b"\n\n"


def _usage_chunk(assembler: StreamAssembler, outcome: Outcome) -> dict[str, Any]:
    return {
        **assembler.head,
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": assembler.usage or _usage_of(outcome),
    }


def _usage_of(outcome: Outcome) -> dict[str, int]:
    return {
        "prompt_tokens": outcome.tokens_in,
        "completion_tokens": outcome.tokens_out,
        "total_tokens": outcome.tokens_in + outcome.tokens_out,
    }


async def _account(assembler: StreamAssembler, chat: ChatRequest, outcome: Outcome) -> None:
    if assembler.usage and isinstance(assembler.usage, dict):
        outcome.set_usage(assembler.usage)
        return
    await run_for_body(outcome.large_body, estimate_usage, outcome, chat, assembler.completion())


def estimate_usage(outcome: Outcome, chat: ChatRequest, completion: dict[str, Any]) -> None:
    """Count the tokens of a request and its completion for an upstream that sent no usage.

    Without the estimate, cost and the tenant's tokens_per_minute would count nothing.
    """
    answers = [choice.get("message") for choice in completion.get("choices") or ()]
    outcome.tokens_in = count_prompt_tokens([m.model_dump() for m in chat.messages], fits_below=0)
    outcome.tokens_out = count_completion_tokens([a for a in answers if isinstance(a, dict)])


async def _prepend(
    first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for chunk in rest:
        yield chunk


async def _with_keepalive(
    chunks: AsyncIterator[dict[str, Any]], runtime: Runtime
) -> AsyncGenerator[list[dict[str, Any]] | None, None]:
    """Yield the chunks in lists of those already queued, and None whenever the upstream was
    silent for the keep-alive interval.

    A pump task reads the upstream, because cancelling a read on a timeout would break the
    upstream connection. Waiting on the queue, by contrast, can be cancelled safely.
    """
    interval = runtime.settings.keepalive_interval_s
    queue: SpscQueue[tuple[str, Any]] = SpscQueue(maxsize=64)

    async def pump() -> None:
        try:
            async for chunk in chunks:
                await queue.put(("chunk", chunk))
            await queue.put(("end", None))
        except UpstreamError as exc:
            await queue.put(("error", exc))
        except Exception as exc:  # noqa: BLE001 - a dead pump would leave only keep-alives
            log.error("stream_pump_failed", error=type(exc).__name__)
            await queue.put(("error", UpstreamError("stream", type(exc).__name__)))

    task = asyncio.create_task(pump())
    try:
        while True:
            if queue.empty():
                # keepalive_deadlines bounds the wait with one timer per event loop, because
                # wait_for starts a task per call on Python 3.11 and asyncio.timeout arms a
                # timer per wait.
                silent = False
                waiter = keepalive_deadlines.start(interval)
                try:
                    kind, value = await queue.get()
                except asyncio.CancelledError as exc:
                    if not keepalive_deadlines.expired(exc, waiter):
                        raise
                    silent = True
                finally:
                    keepalive_deadlines.finish(waiter)
                if silent:
                    yield None
                    continue
            else:
                kind, value = queue.get_nowait()
            # Events that arrived in one read are already queued: take them all at once.
            batch = []
            while kind == "chunk":
                batch.append(value)
                if queue.empty():
                    break
                kind, value = queue.get_nowait()
            if batch:
                yield batch
            if kind == "end":
                return
            if kind == "error":
                raise value
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
