"""structlog configuration: JSON lines in production, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO, cast

import orjson
import structlog
from structlog.typing import EventDict


class _StandardError:
    """A file object that writes to whatever ``sys.stderr`` is at the time of each write.

    Loggers are cached on first use, so binding the stream object itself would keep writing
    to a stream that a test runner or an embedding program has since replaced or closed.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class IsoUtcTimestamper:
    """A structlog processor that adds ``timestamp`` in ISO 8601 UTC with a ``Z`` suffix.

    The text is what ``TimeStamper(fmt="iso", utc=True)`` of structlog 26.1 writes, such as
    ``2026-12-06T00:41:38.123456Z``, with the fraction left out when it is zero, as
    ``datetime.isoformat`` leaves it out. The date and time up to the second are formatted
    once per second, which makes a line's timestamp about 3 times cheaper (timeit).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._second: tuple[int, str] = (-1, "")
        """The last second formatted and its text, in one tuple, so that no thread reads a mix."""

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        now = self._clock()
        second = int(now)
        # Rounded half to even, with the carry into the next second, as datetime.fromtimestamp.
        micro = round((now - second) * 1e6)
        if micro == 1_000_000:
            second, micro = second + 1, 0
        cached_second, text = self._second
        if second != cached_second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        event_dict["timestamp"] = f"{text}.{micro:06d}Z" if micro else f"{text}Z"
        return event_dict


def _orjson_dumps(event: dict[str, Any], **kwargs: Any) -> str:
    """Serialize one log event; about 4 µs cheaper per request line than the json module."""
    return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS, **kwargs).decode()


def logs_are_json(log_format: str) -> bool:
    """Tell whether ``log_format`` gives JSON lines: ``console`` and ``auto`` on a terminal do not."""
    return not (log_format == "console" or (log_format == "auto" and sys.stderr.isatty()))


def configure_logging(log_format: str = "auto", level: str = "info") -> bool:
    """Configure structlog and the standard library's root logger; return whether lines are JSON.

    ``log_format`` is ``json``, ``console`` or ``auto`` (console when stderr is a terminal).
    """
    use_console = not logs_are_json(log_format)
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer()
        if use_console
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            IsoUtcTimestamper(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # WriteLogger writes each line and its newline in one call; print() makes two, which
        # are two write() system calls when stderr is unbuffered (PYTHONUNBUFFERED=1).
        # structlog 26.1 annotates the file as TextIO, but WriteLogger only calls its write()
        # and flush().
        logger_factory=structlog.WriteLoggerFactory(file=cast("TextIO", _StandardError())),
        cache_logger_on_first_use=True,
    )
    _route_standard_logging(renderer, max(numeric_level, logging.WARNING))
    # Without this, warnings.warn() in a library prints plain text between the JSON lines.
    # Captured, each warning is a "py.warnings" log record that the root handler renders.
    logging.captureWarnings(True)
    # litellm logs request details (which can include prompts) at INFO and below.
    for noisy in ("LiteLLM", "litellm", "httpx", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return not use_console


def _route_standard_logging(renderer: structlog.types.Processor, level: int) -> None:
    """Render the standard library's log records (uvicorn, OpenTelemetry, asyncio) like structlog's.

    Without this, their lines would be plain text between the JSON lines of production logs.
    Replaces the handler that an earlier call installed and leaves other handlers alone.
    """
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            IsoUtcTimestamper(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # A traceback becomes one "exception" string. The console renderer prints it itself.
            *([] if isinstance(renderer, structlog.dev.ConsoleRenderer)
              else [structlog.processors.format_exc_info]),
            renderer,
        ],
    )
    handler = logging.StreamHandler(cast("TextIO", _StandardError()))
    handler.setFormatter(formatter)
    setattr(handler, _OWN_HANDLER, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OWN_HANDLER, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


_OWN_HANDLER = "_tierwise_handler"
