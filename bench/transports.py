"""CPU per upstream call of the gateway's two paths, direct and litellm, and of aiohttp.

The direct path (``router/upstream/direct.py``) speaks HTTP/1.1 itself; the aiohttp cells
make the same call through one pooled ``aiohttp.ClientSession``, the client the direct path
used before.  All run in this process, pinned to the server core, against the mock upstream
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

import orjson

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


class AiohttpReference:
    """The direct path's call made through aiohttp, for comparison."""

    def __init__(self) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        )

    async def complete(self, url: str, body: dict[str, Any]) -> Any:
        async with self._session.post(
            url, data=orjson.dumps(body), headers={"Content-Type": "application/json"},
            timeout=self._aiohttp.ClientTimeout(total=60),
        ) as response:
            return orjson.loads(await response.read())

    async def stream(self, url: str, body: dict[str, Any]) -> None:
        from router.upstream.direct import _parse_events

        async with self._session.post(
            url, data=orjson.dumps(body), headers={"Content-Type": "application/json"},
            timeout=self._aiohttp.ClientTimeout(total=None, sock_read=60),
        ) as response:
            async for _ in _parse_events(response.content.iter_any()):
                pass

    async def close(self) -> None:
        await self._session.close()


async def measure(
    mock_base: str, calls: int, warmup: int, skip_litellm: bool = False
) -> dict[str, float]:
    """Measure each transport, non-streaming and streaming."""
    from router.upstream.direct import DirectTransport
    from router.upstream.litellm_path import LitellmTransport

    deployment = _deployment(mock_base)
    body = {"model": "mock-mid", "messages": [{"role": "user", "content": "Hello there"}],
            "max_tokens": 64}
    stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    url = f"{mock_base}/v1/chat/completions"
    direct, litellm, reference = DirectTransport(), LitellmTransport(), AiohttpReference()
    cells: dict[str, Callable[[], Awaitable[Any]]] = {
        "direct json": lambda: direct.complete(deployment, body),
        "aiohttp json": lambda: reference.complete(url, body),
        "litellm json": lambda: litellm.complete(deployment, body),
        "direct stream": lambda: _drain(direct.stream(deployment, stream_body)),
        "aiohttp stream": lambda: reference.stream(url, stream_body),
        "litellm stream": lambda: _drain(litellm.stream(deployment, stream_body)),
    }
    if skip_litellm:
        cells = {name: call for name, call in cells.items() if not name.startswith("litellm")}
    try:
        return {name: await cpu_per_call(call, calls, warmup) for name, call in cells.items()}
    finally:
        await direct.close()
        await reference.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="Measured calls per cell.")
    parser.add_argument("--warmup", type=int, default=50, help="Uncounted calls per cell first.")
    parser.add_argument("--repetitions", type=int, default=3, help="Runs; medians are printed.")
    parser.add_argument("--no-litellm", action="store_true", help="Skip the litellm cells.")
    parser.add_argument("--uvloop", action="store_true", help="Run on uvloop, as the gateway does.")
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
            coroutine = measure(mock_base, args.calls, args.warmup, args.no_litellm)
            if args.uvloop:
                import uvloop

                runs.append(uvloop.run(coroutine))
            else:
                runs.append(asyncio.run(coroutine))
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
