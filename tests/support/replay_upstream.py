"""An OpenAI-compatible upstream on 127.0.0.1 that replays answers real models gave.

Each instance stands for one model. ``POST /v1/chat/completions`` looks up the last user message
among the recorded answers (:mod:`tests.support.recorded`) of the request's ``model``, or of the
instance's model when the request names no recorded model. A prompt without a recorded answer
gets one of that model's other answers, chosen by a hash of the prompt. Response headers
``x-replay-match`` (``exact`` or ``fallback``) and ``x-replay-model`` say which.

Supported: JSON and SSE streaming (``stream_options.include_usage`` adds a usage chunk), ``n``
(the same answer for each index), ``max_tokens``/``max_completion_tokens`` (truncation with
finish_reason ``length``), ``usage`` counted with tiktoken ``cl100k_base``, ``GET /v1/models``
and ``GET /health``. Requests with ``tools`` get a text answer, because a replay has no tool calls.
Every request's headers and JSON body are kept (the newest ``max_recorded_requests``).

Use it in tests as a context manager (the server runs on its own event loop in a thread)::

    with ReplayUpstream("mistralai/mistral-7b-chat") as upstream:
        client = openai.OpenAI(base_url=upstream.base_url, api_key="unused")

or as a process: ``python -m tests.support.replay_upstream --model M --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
import structlog
from aiohttp import web

from tests.support import openai_wire, tokens
from tests.support.recorded import (
    ALL_SOURCES,
    RecordedAnswers,
    RecordedModel,
    UnknownModelError,
    load_recorded,
    shared_data_dir,
)
from tests.support.scenario import Scenario

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 30.0
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """A request the upstream received. Header names are lower case, and ``body`` is parsed JSON."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """Timing and chunking of answers. Delays are in seconds."""

    first_byte_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    chunk_tokens: int = 4
    max_recorded_requests: int = 1000


def bind_socket(port: int) -> socket.socket:
    """Return a TCP socket bound to 127.0.0.1:``port`` (0 picks a free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    return sock


class ReplayUpstream:
    """One replay server for one model; see the module docstring.

    Raises (from the constructor):
        SharedDataMissingError: the public data folder is missing.
        UnknownModelError: ``model`` has no recorded answers.
    """

    def __init__(
        self,
        model: str,
        *,
        port: int = 0,
        options: ReplayOptions | None = None,
        recorded: RecordedAnswers | None = None,
        data_dir: Path | None = None,
        sources: frozenset[str] = ALL_SOURCES,
    ) -> None:
        if recorded is None:
            recorded = load_recorded(data_dir or shared_data_dir(), frozenset(sources))
        self.model = model
        self.options = options or ReplayOptions()
        self._recorded = recorded
        self._default_model = recorded.resolve(model)
        self._port = port
        self._received: deque[ReceivedRequest] = deque(maxlen=self.options.max_recorded_requests)
        self._received_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._startup_error: Exception | None = None

    # Lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port; 0 until the server has started when it was asked to pick one."""
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{HOST}:{self._port}/v1"

    def bind(self) -> socket.socket:
        """Return a socket bound to this server's port, fixing the port when it was 0."""
        sock = bind_socket(self._port)
        self._port = sock.getsockname()[1]
        return sock

    def build_app(self) -> web.Application:
        """Return the aiohttp application (routes and shutdown hooks)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    def start(self) -> Self:
        """Start serving on a background thread and return once the port accepts connections.

        Raises:
            RuntimeError: the server is already running or did not start within 30 s.
        """
        if self._thread is not None:
            raise RuntimeError(f"replay upstream for {self.model!r} is already running")
        sock = self.bind()
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve_in_thread,
            args=(sock, ready),
            name=f"replay-{self._port}",
            daemon=True,
        )
        self._thread.start()
        if not ready.wait(STARTUP_TIMEOUT_S):
            raise RuntimeError(
                f"replay upstream on port {self._port} did not start in {STARTUP_TIMEOUT_S} s"
            )
        if self._startup_error is not None:
            self._thread = None
            raise RuntimeError(
                f"replay upstream on port {self._port} failed to start"
            ) from self._startup_error
        log.info("replay upstream started", model=self.model, url=self.base_url)
        return self

    def stop(self) -> None:
        """Stop the server and wait for its thread; ongoing and silent requests are dropped."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=STARTUP_TIMEOUT_S)
        self._thread = None
        log.info("replay upstream stopped", model=self.model, url=self.base_url)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve_in_thread(self, sock: socket.socket, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=1.0)
        try:
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.SockSite(self._runner, sock).start())
        except Exception as error:  # noqa: BLE001 (start() re-raises it in the caller's thread)
            self._startup_error = error
            self._loop.close()
            return
        finally:
            ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

    async def _on_startup(self, app: web.Application) -> None:
        self._stopping = asyncio.Event()

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._stopping is not None:
            self._stopping.set()

    # Received requests ---------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of the received requests, oldest first."""
        with self._received_lock:
            return list(self._received)

    def clear_requests(self) -> None:
        """Forget the received requests."""
        with self._received_lock:
            self._received.clear()

    def _record(self, request: web.Request, raw: bytes) -> None:
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        with self._received_lock:
            self._received.append(ReceivedRequest(request.method, request.path, headers, body))

    # Answer selection ----------------------------------------------------------------------

    def next_scenario(self) -> Scenario:
        """Return the behaviour for the next request; a replay server always replays."""
        return Scenario.replay()

    def _answering_model(self, requested: str | None) -> RecordedModel:
        if requested:
            with contextlib.suppress(UnknownModelError):
                return self._recorded.resolve(requested)
        return self._default_model

    def _build_completion(
        self, chat: openai_wire.ChatRequest, scenario: Scenario
    ) -> tuple[openai_wire.Completion, dict[str, str]]:
        recorded_model = self._answering_model(chat.model)
        answer, match = recorded_model.lookup(chat.last_user_text())
        text = answer.text if scenario.text is None else scenario.text
        answer_tokens = tokens.encode(text)
        finish_reason = "tool_calls" if scenario.tool_calls else "stop"
        if (
            chat.max_tokens is not None
            and len(answer_tokens) > chat.max_tokens
            and not scenario.tool_calls
        ):
            answer_tokens = answer_tokens[: chat.max_tokens]
            text = tokens.decode_prefix(answer_tokens)
            finish_reason = "length"
        completion = openai_wire.Completion(
            id=f"chatcmpl-replay-{next(self._ids)}",
            created=int(time.time()),
            model=chat.model or self.model,
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=tokens.count_prompt_tokens(chat.messages),
            completion_tokens=self._completion_tokens(len(answer_tokens), scenario),
            n=chat.n,
            reasoning=scenario.reasoning,
            reasoning_tokens=tokens.count_text_tokens(scenario.reasoning or ""),
            tool_calls=scenario.tool_calls,
        )
        headers = {"x-replay-match": match, "x-replay-model": recorded_model.name}
        return completion, headers

    @staticmethod
    def _completion_tokens(answer_tokens: int, scenario: Scenario) -> int:
        if scenario.tool_calls:
            # Approximation: real servers also count the tool-call framing tokens.
            answer_tokens = sum(
                tokens.count_text_tokens(c.name) + tokens.count_text_tokens(c.arguments)
                for c in scenario.tool_calls
            )
        return answer_tokens + tokens.count_text_tokens(scenario.reasoning or "")

    # Handlers ------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, dumps=_dumps)

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, b"")
        data = [{"id": self.model, "object": "model", "created": 0, "owned_by": "replay"}]
        return web.json_response({"object": "list", "data": data}, dumps=_dumps)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self._record(request, raw)
        try:
            chat = openai_wire.parse_chat_request(raw)
        except openai_wire.InvalidRequestError as error:
            body = openai_wire.error_body(str(error), "invalid_request_error", error.param)
            return web.json_response(body, status=400, dumps=_dumps)
        scenario = self.next_scenario()
        if self.options.first_byte_delay_s > 0:
            await asyncio.sleep(self.options.first_byte_delay_s)
        if scenario.silent:
            return await self._stay_silent(request)
        if scenario.status >= 400:
            return _error_response(scenario)
        completion, headers = self._build_completion(chat, scenario)
        headers.update(scenario.headers)
        if chat.stream:
            return await self._stream(request, chat, completion, headers, scenario)
        if scenario.cut_after_events is not None:
            return _abort(request)
        if scenario.body is not None:
            return web.json_response(dict(scenario.body), headers=headers, dumps=_dumps)
        payload = openai_wire.completion_body(completion)
        if scenario.usage is not None:
            payload["usage"] = dict(scenario.usage)
        return web.json_response(payload, headers=headers, dumps=_dumps)

    async def _stay_silent(self, request: web.Request) -> web.StreamResponse:
        assert self._stopping is not None
        await self._stopping.wait()
        return _abort(request)

    async def _stream(
        self,
        request: web.Request,
        chat: openai_wire.ChatRequest,
        completion: openai_wire.Completion,
        headers: dict[str, str],
        scenario: Scenario,
    ) -> web.StreamResponse:
        if scenario.chunks is not None:
            events = [openai_wire.sse_event(chunk) for chunk in scenario.chunks]
            events.append(openai_wire.DONE_EVENT)
        else:
            events = openai_wire.stream_events(
                completion, self.options.chunk_tokens,
                chat.include_usage and not scenario.ignore_include_usage, scenario.usage,
            )
        if scenario.omit_done:
            events = [event for event in events if event is not openai_wire.DONE_EVENT]
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache", **headers}
        )
        await response.prepare(request)
        for position, event in enumerate(events):
            if not await self._before_event(request, response, scenario, position):
                return response
            await response.write(event)
            if self.options.chunk_delay_s > 0 and event is not openai_wire.DONE_EVENT:
                await asyncio.sleep(self.options.chunk_delay_s)
        await response.write_eof()
        return response

    async def _before_event(
        self, request: web.Request, response: web.StreamResponse, scenario: Scenario, position: int
    ) -> bool:
        """Apply the scenario at stream ``position``; return False when the stream must end here."""
        if scenario.pause_after_events == position and scenario.pause_s > 0:
            await asyncio.sleep(scenario.pause_s)
        if scenario.error is not None and scenario.error_after_events == position:
            await response.write(openai_wire.sse_event({"error": dict(scenario.error)}))
            await response.write_eof()
            return False
        if scenario.cut_after_events == position:
            _abort(request)
            return False
        return True


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # Integers past 64 bits, which some tests send on purpose.
        return json.dumps(value)


def _error_response(scenario: Scenario) -> web.Response:
    body = (
        dict(scenario.body) if scenario.body is not None else {"error": dict(scenario.error or {})}
    )
    return web.json_response(
        body, status=scenario.status, headers=dict(scenario.headers), dumps=_dumps
    )


def _abort(request: web.Request) -> web.StreamResponse:
    """Close the client connection at once, mid-response, as a crashed upstream would."""
    if request.transport is not None:
        request.transport.abort()
    return web.StreamResponse()


# Command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line of ``python -m tests.support.replay_upstream``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.replay_upstream",
        description="Serve recorded answers of one model as an OpenAI-compatible API on 127.0.0.1.",
        epilog="Example: python -m tests.support.replay_upstream"
        " --model mistralai/mistral-7b-chat --port 9101",
    )
    parser.add_argument(
        "--model", required=True, help="recorded model to answer as, e.g. gpt-4-1106-preview"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a free port)"
    )
    parser.add_argument(
        "--first-byte-delay-ms", type=float, default=0.0, help="delay before each response, in ms"
    )
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="delay after each stream chunk, in ms"
    )
    parser.add_argument(
        "--chunk-tokens", type=int, default=4, help="tokens per streamed content chunk"
    )
    parser.add_argument(
        "--sources",
        default=",".join(sorted(ALL_SOURCES)),
        help="comma-separated recorded sources to load (default: all)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one replay upstream until interrupted; print its base URL once it listens."""
    args = parse_args(argv)
    # stdout carries only the banner line, which a parent process may read through a pipe.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    options = ReplayOptions(
        args.first_byte_delay_ms / 1000, args.chunk_delay_ms / 1000, args.chunk_tokens
    )
    sources = frozenset(name.strip() for name in args.sources.split(",") if name.strip())
    try:
        upstream = ReplayUpstream(args.model, port=args.port, options=options, sources=sources)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sock = upstream.bind()
    print(f"replay upstream for {args.model} listening on {upstream.base_url}", flush=True)
    with contextlib.suppress(ImportError):
        import uvloop  # optional: faster event loop for benchmark runs

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(upstream.build_app(), sock=sock, access_log=None, print=None, shutdown_timeout=1.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
