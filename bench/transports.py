"""CPU per upstream call of the gateway's two paths: direct (aiohttp) and litellm.

Both transports run in this process, pinned to the server core, against the mock upstream
on the client core.  Calls go one after another, so this process's CPU time per call is
the transport's own cost plus the event loop's.  Streams have 20 content chunks.  The
figures back the choice of the direct path for OpenAI-compatible upstreams.

Run from the repository root:

    python -m bench.transports              # 500 calls per cell after 50 warm-up calls
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.harness import RESULTS_DIR, SERVER_CPU, pin_self
from bench.targets import start_mock

# Importing litellm otherwise tries to download its price map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _deployment(mock_base: str) -> Any:
    from router.policy.schema import Deployment

    return Deployment(
        name="mock-mid", model="openai/mock-mid", api_base=f"{mock_base}/v1",
        price={"input_per_million": 0.0, "output_per_million": 0.0}, context_window=128000,
    )


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def cpu_per_call(call: Callable[[], Awaitable[Any]], calls: int, warmup: int) -> float:
    """Return this process's CPU milliseconds per call, after ``warmup`` uncounted calls."""
    for _ in range(warmup):
        await call()
    started = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - started) * 1000 / calls


async def measure(mock_base: str, calls: int, warmup: int) -> dict[str, float]:
    """Measure both transports, non-streaming and streaming."""
    from router.upstream.direct import DirectTransport
    from router.upstream.litellm_path import LitellmTransport

    deployment = _deployment(mock_base)
    body = {"model": "mock-mid", "messages": [{"role": "user", "content": "Hello there"}],
            "max_tokens": 64}
    stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    direct, litellm = DirectTransport(), LitellmTransport()
    cells: dict[str, Callable[[], Awaitable[Any]]] = {
        "direct json": lambda: direct.complete(deployment, body),
        "litellm json": lambda: litellm.complete(deployment, body),
        "direct stream": lambda: _drain(direct.stream(deployment, stream_body)),
        "litellm stream": lambda: _drain(litellm.stream(deployment, stream_body)),
    }
    try:
        return {name: await cpu_per_call(call, calls, warmup) for name, call in cells.items()}
    finally:
        await direct.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="Measured calls per cell.")
    parser.add_argument("--warmup", type=int, default=50, help="Uncounted calls per cell first.")
    parser.add_argument("--repetitions", type=int, default=3, help="Runs; medians are printed.")
    args = parser.parse_args(argv)
    workdir = RESULTS_DIR / f"transports-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir.mkdir(parents=True, exist_ok=True)
    mock = start_mock(workdir)
    assert mock.process is not None
    pin_self(SERVER_CPU)
    runs: list[dict[str, float]] = []
    try:
        mock_base = mock.chat_url.removesuffix("/v1/chat/completions")
        for _ in range(args.repetitions):
            runs.append(asyncio.run(measure(mock_base, args.calls, args.warmup)))
    finally:
        mock.process.stop()

    print("| path | CPU ms per call (median) | all runs |")
    print("|---|---|---|")
    for name in runs[0]:
        values = [run[name] for run in runs]
        print(f"| {name} | {statistics.median(values):.3f} | "
              f"{', '.join(f'{value:.3f}' for value in values)} |")


if __name__ == "__main__":
    main()
