"""Gateway overhead: direct-to-mock vs through Tierwise vs through LiteLLM's proxy.

One run starts the mock upstream (client core) and, per repetition, each gateway in turn
(server core), then drives it with ``bench.loadgen`` from this process (client core):
non-streaming and 20-chunk streaming requests at concurrency 1, 16 and 64.  Figures are
medians over the repetitions; ratios compare Tierwise with LiteLLM (below 1 means
Tierwise is faster or cheaper).  Raw results go to ``bench/results/overhead-*.json``.

Run from the repository root:

    python -m bench.overhead            # 3 repetitions, 1,500 requests per cell
    python -m bench.overhead --quick    # 3 repetitions, 300 requests per cell
    python -m bench.overhead --targets baseline,tierwise --baseline-checkout /tmp/old \
        --modes stream --concurrency 16    # before/after of a change, interleaved
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.harness import CLIENT_CPU, REPO_ROOT, RESULTS_DIR, memory_kb, pin_self
from bench.loadgen import LoadConfig, LoadResult, build_bodies, run
from bench.prompts import load_prompts
from bench.targets import Target, start_floor, start_litellm, start_mock, start_tierwise

MODES = (("json", False), ("stream", True))
CONCURRENCY = (1, 16, 64)
TARGETS = ("direct", "floor", "baseline", "tierwise", "litellm")
STREAM_CHUNKS = 20
# Every target gets an Authorization header, because LiteLLM's proxy requires its master key;
# Tierwise derives the tenant from it and the mock ignores it.
CLIENT_KEY = "sk-bench-client"


@dataclass(frozen=True)
class Plan:
    """Size of a run: repetitions, and per cell the measured and warm-up request counts."""

    repetitions: int
    requests: int
    warmup: int
    time_limit_s: float


FULL = Plan(repetitions=3, requests=1500, warmup=200, time_limit_s=30.0)
QUICK = Plan(repetitions=3, requests=300, warmup=50, time_limit_s=10.0)


@dataclass(frozen=True)
class Cells:
    """The request modes and concurrency levels of a run."""

    modes: tuple[tuple[str, bool], ...] = MODES
    concurrency: tuple[int, ...] = CONCURRENCY

    def __iter__(self) -> Iterator[tuple[str, bool, int]]:
        for mode, stream in self.modes:
            for level in self.concurrency:
                yield mode, stream, level


@dataclass(frozen=True)
class Setup:
    """Settings of one run, shared by every target."""

    workdir: Path
    plan: Plan
    cells: Cells
    prompts: list[str]
    checkout: Path = REPO_ROOT
    """Source tree of the target ``tierwise``."""
    baseline: Path | None = None
    """Source tree of the target ``baseline``, another version of Tierwise."""


@contextmanager
def _gateway(name: str, mock: Target, setup: Setup) -> Iterator[Target]:
    """Start the named system for one repetition and stop it afterwards."""
    mock_base = mock.chat_url.removesuffix("/v1/chat/completions")
    workdir = setup.workdir
    starters: dict[str, Callable[[], Target]] = {
        "direct": lambda: mock,
        "tierwise": lambda: start_tierwise(workdir, mock_base, checkout=setup.checkout),
        "litellm": lambda: start_litellm(workdir, mock_base),
        "floor": lambda: start_floor(workdir, mock_base),
    }
    if setup.baseline is not None:
        baseline = setup.baseline
        starters["baseline"] = lambda: start_tierwise(workdir, mock_base, checkout=baseline)
    target = starters[name]()
    try:
        yield target
    finally:
        if target is not mock and target.process is not None:
            target.process.stop()


def run_target(name: str, mock: Target, setup: Setup) -> dict[str, Any]:
    """Run every cell against one freshly started system; return its results and memory."""
    plan = setup.plan
    with _gateway(name, mock, setup) as target:
        watch = {"mock": mock.process.pid} if mock.process else {}
        if target is not mock and target.process is not None:
            watch["server"] = target.process.pid
        results: list[dict[str, Any]] = []
        for mode, stream, concurrency in setup.cells:
            config = LoadConfig(
                url=target.chat_url, stream=stream, concurrency=concurrency,
                requests=plan.requests, warmup=plan.warmup, time_limit_s=plan.time_limit_s,
                watch=watch, api_key=target.api_key or CLIENT_KEY,
            )
            result = run(config, build_bodies(setup.prompts, config), name)
            results.append({"mode": mode, **asdict(result)})
            _print_progress(name, mode, result)
        memory = memory_kb(watch["server"]) if "server" in watch else None
        return {"target": name, "startup_s": target.startup_s if target is not mock else None,
                "memory_after_run_kb": memory, "cells": results}


def _print_progress(name: str, mode: str, result: LoadResult) -> None:
    server_cpu = result.cpu_ms_per_request.get("server")
    cpu_text = f"{server_cpu:.2f} ms CPU/req" if server_cpu is not None else "no server"
    print(
        f"  {name:>8} {mode:>6} c={result.concurrency:<3} {result.completed:>5} ok "
        f"{result.errors} errors  p50 {result.latency_ms.get('p50', 0):7.2f} ms  "
        f"{result.throughput_rps:7.0f} req/s  {cpu_text}",
        flush=True,
    )


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarize(repetitions: list[list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Return, per ``target/mode/concurrency``, the median of each figure over repetitions."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for repetition in repetitions:
        for run_record in repetition:
            for cell in run_record["cells"]:
                key = f"{run_record['target']}/{cell['mode']}/{cell['concurrency']}"
                grouped.setdefault(key, []).append(cell)
    summary: dict[str, dict[str, Any]] = {}
    for key, cells in grouped.items():
        summary[key] = {
            "p50_ms": _median([c["latency_ms"].get("p50") for c in cells]),
            "p95_ms": _median([c["latency_ms"].get("p95") for c in cells]),
            "p99_ms": _median([c["latency_ms"].get("p99") for c in cells]),
            "ttfb_p50_ms": _median([(c["ttfb_ms"] or {}).get("p50") for c in cells]),
            "rps": _median([c["throughput_rps"] for c in cells]),
            "server_cpu_ms": _median([c["cpu_ms_per_request"].get("server") for c in cells]),
            "client_cpu_ms": _median([c["cpu_ms_per_request"].get("loadgen") for c in cells]),
            "errors": sum(c["errors"] for c in cells),
            "repetitions": len(cells),
        }
    return summary


def _server_summary(repetitions: list[list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    servers: dict[str, dict[str, list[float | None]]] = {}
    for repetition in repetitions:
        for run_record in repetition:
            if run_record["target"] == "direct":
                continue
            entry = servers.setdefault(run_record["target"], {"startup_s": [], "rss_mb": [], "peak_rss_mb": []})
            memory = run_record["memory_after_run_kb"] or {}
            entry["startup_s"].append(run_record["startup_s"])
            entry["rss_mb"].append(memory.get("rss_kb", 0) / 1024)
            entry["peak_rss_mb"].append(memory.get("peak_rss_kb", 0) / 1024)
    return {name: {figure: _median(values) for figure, values in entry.items()}
            for name, entry in servers.items()}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.2f}"


def render_tables(summary: dict[str, dict[str, Any]], targets: tuple[str, ...]) -> str:
    """Render the per-cell figures, then Tierwise's ratios to LiteLLM and to the baseline."""
    lines = [("| mode | conc | target | p50 ms | p95 ms | p99 ms | TTFB p50 ms | req/s "
              "| server CPU ms/req | added p50 ms |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, _, concurrency in Cells():
        direct = summary.get(f"direct/{mode}/{concurrency}", {})
        for target in targets:
            cell = summary.get(f"{target}/{mode}/{concurrency}")
            if cell is None:
                continue
            added = None
            if direct and target != "direct":
                added = cell["p50_ms"] - direct["p50_ms"]
            lines.append(
                f"| {mode} | {concurrency} | {target} | {_fmt(cell['p50_ms'])} | {_fmt(cell['p95_ms'])} "
                f"| {_fmt(cell['p99_ms'])} | {_fmt(cell['ttfb_p50_ms'])} | {_fmt(cell['rps'], 0)} "
                f"| {_fmt(cell['server_cpu_ms'])} | {_fmt(added)} |"
            )
    for reference in ("litellm", "baseline", "floor"):
        if "tierwise" in targets and reference in targets:
            lines += ["", *_ratio_table(summary, reference)]
    return "\n".join(lines)


def _ratio_table(summary: dict[str, dict[str, Any]], reference: str) -> list[str]:
    lines = [f"Tierwise / {reference} (below 1: Tierwise is faster or uses less CPU):", "",
             "| mode | conc | p50 | p99 | TTFB p50 | req/s | server CPU/req |",
             "|---|---|---|---|---|---|---|"]
    figures = ("p50_ms", "p99_ms", "ttfb_p50_ms", "rps", "server_cpu_ms")
    for mode, _, concurrency in Cells():
        ours = summary.get(f"tierwise/{mode}/{concurrency}")
        theirs = summary.get(f"{reference}/{mode}/{concurrency}")
        if ours is None or theirs is None:
            continue
        ratios = " | ".join(_ratio(ours.get(f), theirs.get(f)) for f in figures)
        lines.append(f"| {mode} | {concurrency} | {ratios} |")
    return lines


def render_servers(servers: dict[str, dict[str, float | None]]) -> str:
    lines = ["| server | startup to ready s | RSS after run MB | peak RSS MB |", "|---|---|---|---|"]
    for name, figures in servers.items():
        lines.append(f"| {name} | {_fmt(figures['startup_s'])} | {_fmt(figures['rss_mb'], 0)} "
                     f"| {_fmt(figures['peak_rss_mb'], 0)} |")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 requests per cell instead of 1,500.")
    parser.add_argument("--targets", default="direct,tierwise,litellm",
                        help="Comma-separated subset of direct,floor,baseline,tierwise,litellm.")
    parser.add_argument("--checkout", type=Path, default=REPO_ROOT,
                        help="Tierwise source tree of the target 'tierwise'; this checkout by default.")
    parser.add_argument("--baseline-checkout", type=Path, default=None,
                        help="Another Tierwise source tree, run as the target 'baseline'.")
    parser.add_argument("--modes", default="json,stream", help="Comma-separated: json, stream.")
    parser.add_argument("--concurrency", default="1,16,64", help="Comma-separated levels.")
    parser.add_argument("--repetitions", type=int, default=None, help="Override the repetitions (>= 1).")
    return parser.parse_args(argv)


def _setup(args: argparse.Namespace) -> tuple[tuple[str, ...], Setup, str]:
    """Return the targets, the run's settings and the prompts' origin; create the workdir."""
    plan = QUICK if args.quick else FULL
    if args.repetitions:
        plan = Plan(args.repetitions, plan.requests, plan.warmup, plan.time_limit_s)
    targets = tuple(name for name in args.targets.split(",") if name in TARGETS)
    if "baseline" in targets and args.baseline_checkout is None:
        raise SystemExit("error: the target 'baseline' needs --baseline-checkout DIR")
    modes = tuple(mode for mode in MODES if mode[0] in args.modes.split(","))
    cells = Cells(modes, tuple(int(level) for level in args.concurrency.split(",")))

    workdir = RESULTS_DIR / f"overhead-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir.mkdir(parents=True, exist_ok=True)
    prompts, origin = load_prompts()
    baseline = args.baseline_checkout.resolve() if args.baseline_checkout else None
    return targets, Setup(workdir, plan, cells, prompts, args.checkout.resolve(), baseline), origin


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    pin_self(CLIENT_CPU)
    targets, setup, origin = _setup(args)
    print(f"prompts: {origin}; plan: {setup.plan}", flush=True)

    mock = start_mock(setup.workdir, chunks=STREAM_CHUNKS)
    repetitions: list[list[dict[str, Any]]] = []
    try:
        for index in range(setup.plan.repetitions):
            print(f"repetition {index + 1}/{setup.plan.repetitions}", flush=True)
            repetitions.append([run_target(name, mock, setup) for name in targets])
    finally:
        assert mock.process is not None
        mock.process.stop()

    summary = summarize(repetitions)
    servers = _server_summary(repetitions)
    report = {"plan": asdict(setup.plan), "prompts": origin, "summary": summary,
              "servers": servers, "runs": repetitions}
    out = setup.workdir.with_suffix(".json")
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"\n{render_tables(summary, targets)}\n\n{render_servers(servers)}")
    print(f"\nraw results: {out.relative_to(RESULTS_DIR.parent.parent)}")


if __name__ == "__main__":
    main()
