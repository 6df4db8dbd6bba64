"""Emit outcome records in a process that SIGKILLs itself, for spool recovery tests.

The process emits ``--delivered`` records and flushes them to the stream, emits
``--spooled`` more without flushing, prints the spool folder, and kills itself.

Example: python -m tests.scaleout.crashing_writer --redis-url redis://127.0.0.1:6399/14
    --prefix tw-test-1 --spool /tmp/spool --delivered 5 --spooled 7
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from router.outcomes.log import OutcomeLog
from router.redis_link import RedisLink
from tests.scaleout.support import outcome_record


async def emit_then_die(args: argparse.Namespace) -> None:
    link = RedisLink(args.redis_url, timeout_s=5.0)
    outcomes = OutcomeLog(args.spool / "outcomes.jsonl", link, args.spool, args.prefix)
    outcomes.start()
    for number in range(args.delivered):
        outcomes.emit(outcome_record(f"{args.prefix}-{number}"))
    await outcomes.flush()
    for number in range(args.delivered, args.delivered + args.spooled):
        outcomes.emit(outcome_record(f"{args.prefix}-{number}"))
    print(outcomes.spool_dir, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument(
        "--prefix", required=True, help="Redis key prefix, also the request id prefix"
    )
    parser.add_argument("--spool", type=Path, required=True, help="spool folder")
    parser.add_argument("--delivered", type=int, default=5, help="records flushed before the kill")
    parser.add_argument("--spooled", type=int, default=5, help="records only spooled")
    asyncio.run(emit_then_die(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
