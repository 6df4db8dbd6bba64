"""Run the outcome exporter in a process that SIGKILLs itself at a chosen step, for crash tests.

``--crash-before ack --crash-at 3`` kills the process just before its third XACK (after the
third file was renamed into place); ``--crash-before rename`` kills it before the Nth rename
(after the temporary file was written and fsynced).

Example: python -m tests.scaleout.crashing_export --redis-url redis://127.0.0.1:6399/14
    --stream tw-test:x:outcomes --out /tmp/export --batch 10 --crash-before ack --crash-at 3
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from router.outcomes.export import ExportOptions, OutcomeExporter


def kill_on_call(function: Callable[..., Any], crash_at: int) -> Callable[..., Any]:
    """Wrap ``function`` so that its ``crash_at``-th call SIGKILLs this process instead."""
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return function(*args, **kwargs)

    return wrapper


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--group", default="tierwise-export")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--format", default="jsonl")
    parser.add_argument("--crash-before", choices=("ack", "rename"), required=True)
    parser.add_argument("--crash-at", type=int, required=True)
    args = parser.parse_args(argv)
    if args.crash_before == "ack":
        redis.Redis.xack = kill_on_call(redis.Redis.xack, args.crash_at)  # type: ignore[method-assign]
    else:
        os.replace = kill_on_call(os.replace, args.crash_at)
    client = redis.Redis.from_url(args.redis_url, socket_timeout=10)
    options = ExportOptions(
        out_dir=args.out, stream=args.stream, group=args.group, batch=args.batch,
        file_format=args.format,
    )  # fmt: skip
    OutcomeExporter(client, options).run()


if __name__ == "__main__":
    main()
