"""structlog configuration: JSON lines in production, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO, cast

import orjson
import structlog


class _StandardError:
    """A file object that writes to whatever ``sys.stderr`` is at the time of each write.

    Loggers are cached on first use, so binding the stream object itself would keep writing
    to a stream that a test runner or an embedding program has since replaced or closed.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _orjson_dumps(event: dict[str, Any], **kwargs: Any) -> str:
    """Serialize one log event; about 4 µs cheaper per request line than the json module."""
    return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS, **kwargs).decode()


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Configure structlog and the standard library's root logger.

    ``log_format`` is ``json``, ``console`` or ``auto`` (console when stderr is a terminal).
    """
    use_console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
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
            structlog.processors.TimeStamper(fmt="iso", utc=True),
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
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr)
    # litellm logs request details (which can include prompts) at INFO and below.
    for noisy in ("LiteLLM", "litellm", "httpx", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
