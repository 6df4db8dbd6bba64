"""Profile the Tierwise gateway under load with py-spy and summarise where its CPU goes.

The mock upstream and the gateway are started as in ``bench.overhead``; while this process
sends requests (client core), ``py-spy record`` samples the gateway (server core) without
pausing it.  The collapsed stacks are written to ``bench/results/profile-*.txt`` (flamegraph.pl or
speedscope draw them), and the summary lists the hottest functions by own time and by
inclusive time, as a share of all samples.

Needs py-spy (``pip install py-spy``) and permission to ptrace the gateway (root, or
``kernel.yama.ptrace_scope`` 0).

Run from the repository root:

    python -m bench.profile                 # non-streaming, concurrency 16, 20 s
    python -m bench.profile --stream        # 20-chunk streams
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from bench.harness import CLIENT_CPU, REPO_ROOT, RESULTS_DIR, pin_self
from bench.loadgen import LoadConfig, LoadResult, build_bodies, run
from bench.prompts import load_prompts
from bench.targets import start_mock, start_tierwise

SAMPLE_RATE_HZ = 200
# Components of the request path, matched against each frame's file path (py-spy prints
# it relative to sys.path) from the innermost frame outwards; the first match takes the sample.  Frames of other
# libraries (numpy, orjson's callers) fall through to the project code that called them.
COMPONENTS = (
    ("(classifiers/", "classifier (classifiers/)"),
    ("(router/outcomes/", "outcome log (router/outcomes)"),
    ("(structlog/", "request log line (structlog)"),
    ("(aiohttp/", "upstream HTTP client (aiohttp)"),
    ("(router/upstream/", "upstream dispatch (router/upstream)"),
    ("(router/api/streaming.py", "SSE relay (router/api/streaming.py)"),
    ("(router/routing/", "routing and policy (router/routing, router/policy)"),
    ("(router/policy/", "routing and policy (router/routing, router/policy)"),
    ("(router/", "request handling (other router/ code)"),
    ("(pydantic", "validation (pydantic)"),
    ("(uvicorn/", "HTTP server (uvicorn, httptools)"),
    ("(starlette/", "framework (FastAPI, Starlette)"),
    ("(fastapi/", "framework (FastAPI, Starlette)"),
    ("(asyncio/", "event loop (asyncio, uvloop)"),
    ("(uvloop/", "event loop (asyncio, uvloop)"),
)


def record(pid: int, seconds: float, out: Path, native: bool = False) -> None:
    """Run ``py-spy record`` on ``pid`` for ``seconds``, writing collapsed stacks to ``out``.

    ``native`` adds the C frames (uvloop, httptools, orjson, the kernel's entry points).
    """
    # A venv's scripts are not on PATH unless the venv is activated.
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        raise SystemExit("error: py-spy not found; install it with `pip install py-spy`")
    argv = ["taskset", "-c", str(CLIENT_CPU), py_spy, "record", "--pid", str(pid),
            "--duration", str(int(seconds)), "--rate", str(SAMPLE_RATE_HZ), "--nonblocking",
            "--format", "raw", "--output", str(out)]
    if native:
        # py-spy reads C stacks only from a paused process, so --native drops --nonblocking
        # and the measured CPU per request includes the pauses.
        argv.remove("--nonblocking")
        argv.append("--native")
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """Parse py-spy's collapsed format (``frame;frame;... count``) into (frames, count)."""
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames:
            stacks.append((frames.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    """Turn ``function (path/to/module.py:12)`` into ``function (module.py)``."""
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{name} ({module})" if module else name


def component_of(frames: list[str]) -> str:
    """Return the component of a stack: the first ``COMPONENTS`` match from the innermost frame."""
    for frame in reversed(frames):
        for marker, component in COMPONENTS:
            if marker in frame:
                return component
    return "other"


def summarise(stacks: list[tuple[list[str], int]], cpu_ms: float | None, top: int = 20) -> str:
    """Return the CPU share per component and the hottest functions by own samples.

    With ``cpu_ms`` (the gateway's measured CPU per request) each share is also given in
    milliseconds per request.
    """
    total = sum(count for _, count in stacks) or 1
    components: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in stacks:
        components[component_of(frames)] += count
        own[_short(frames[-1])] += count
    lines = [f"{total} samples", "", "| component | share % | ms per request |", "|---|---|---|"]
    for name, count in components.most_common():
        per_request = "-" if cpu_ms is None else f"{cpu_ms * count / total:.3f}"
        lines.append(f"| {name} | {100 * count / total:.1f} | {per_request} |")
    lines += ["", "| own % | function |", "|---|---|"]
    lines += [f"| {100 * n / total:.1f} | {name} |" for name, n in own.most_common(top)]
    return "\n".join(lines)


def _load_in_background(
    config: LoadConfig, bodies: list[bytes], results: list[LoadResult]
) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: results.append(run(config, bodies, "tierwise")), daemon=True
    )
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", action="store_true", help="Profile 20-chunk streams.")
    parser.add_argument("--concurrency", type=int, default=16, help="Requests in flight.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Sampling time.")
    parser.add_argument("--checkout", type=Path, default=REPO_ROOT,
                        help="Tierwise source tree to profile; this checkout by default.")
    parser.add_argument("--native", action="store_true",
                        help="Sample C frames too (py-spy --native), to see inside uvloop.")
    args = parser.parse_args(argv)
    pin_self(CLIENT_CPU)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS_DIR / f"profile-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    mock = start_mock(workdir)
    mock_base = mock.chat_url.removesuffix("/v1/chat/completions")
    gateway = start_tierwise(workdir, mock_base, checkout=args.checkout.resolve())
    assert mock.process is not None and gateway.process is not None
    try:
        config = LoadConfig(url=gateway.chat_url, stream=args.stream, concurrency=args.concurrency,
                            requests=10**7, warmup=300, time_limit_s=args.seconds + 3,
                            api_key="sk-bench-client", watch={"server": gateway.process.pid})
        prompts, origin = load_prompts()
        # Without the traffic mix (TIERWISE_SHARED_DATA unset outside the main checkout) the
        # load is 7 short stand-in prompts, which cost the classifier less than real ones.
        print(f"prompts: {origin}")
        results: list[LoadResult] = []
        load = _load_in_background(config, build_bodies(prompts, config), results)
        time.sleep(2.0)  # past the warm-up
        raw = RESULTS_DIR / f"profile-{stamp}.txt"
        record(gateway.process.pid, args.seconds, raw, native=args.native)
        load.join()
    finally:
        gateway.process.stop()
        mock.process.stop()
    cpu_ms = results[0].cpu_ms_per_request.get("server") if results else None
    if results:
        print(f"{results[0].completed} requests, {results[0].throughput_rps:.0f} req/s, "
              f"gateway CPU {cpu_ms:.3f} ms per request (py-spy running)")
    print(summarise(read_stacks(raw), cpu_ms))
    print(f"\ncollapsed stacks: {raw.relative_to(RESULTS_DIR.parent.parent)}")


if __name__ == "__main__":
    main()
