"""Gateway memory over a long run: VmRSS after warm-up and after every block of requests.

The mock upstream and the gateway start as in ``bench.overhead`` (gateway on the server
core, mock and load generator on the client core).  After the warm-up, requests go in
blocks of ``--step``, each block half non-streaming and half 20-chunk streams, until
``--requests`` have been sent.  The gateway's VmRSS is read from ``/proc`` after the
warm-up and after each block.  Memory counts as flat when every sample from the first
block on stays within 10% of the first block's.  The samples go to
``bench/results/rss-*.json``.

Run from the repository root:

    python -m bench.rss                              # 100,000 requests, a sample every 10,000
    python -m bench.rss --requests 20000 --step 5000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.harness import CLIENT_CPU, REPO_ROOT, RESULTS_DIR, memory_kb, pin_self
from bench.loadgen import LoadConfig, build_bodies, run
from bench.prompts import load_prompts
from bench.targets import start_mock, start_tierwise

FLAT_TOLERANCE = 0.10
CLIENT_KEY = "sk-bench-client"


@dataclass(frozen=True)
class Sample:
    """The gateway's memory after ``requests`` requests (warm-up included)."""

    requests: int
    rss_mib: float
    peak_rss_mib: float
    errors: int


def _send(url: str, prompts: list[str], count: int, stream: bool, concurrency: int) -> int:
    """Send ``count`` requests and return how many failed."""
    config = LoadConfig(
        url=url, stream=stream, concurrency=concurrency, requests=count, warmup=0,
        time_limit_s=3600.0, api_key=CLIENT_KEY,
    )
    result = run(config, build_bodies(prompts, config), "tierwise")
    return result.errors + (count - result.completed - result.errors)


def _sample(pid: int, requests: int, errors: int) -> Sample:
    memory = memory_kb(pid)
    return Sample(requests, memory["rss_kb"] / 1024, memory["peak_rss_kb"] / 1024, errors)


def measure(args: argparse.Namespace, workdir: Path) -> tuple[list[Sample], float]:
    """Run the gateway through the warm-up and every block; return the samples and startup seconds."""
    prompts, _ = load_prompts()
    mock = start_mock(workdir)
    try:
        mock_base = mock.chat_url.removesuffix("/v1/chat/completions")
        gateway = start_tierwise(workdir, mock_base, checkout=args.checkout)
        assert gateway.process is not None
        try:
            errors = _send(gateway.chat_url, prompts, args.warmup, False, args.concurrency)
            samples = [_sample(gateway.process.pid, args.warmup, errors)]
            print(f"warm-up {args.warmup}: {samples[0].rss_mib:.0f} MiB", flush=True)
            sent = args.warmup
            while sent - args.warmup < args.requests:
                half = args.step // 2
                errors = _send(gateway.chat_url, prompts, half, False, args.concurrency)
                errors += _send(gateway.chat_url, prompts, args.step - half, True, args.concurrency)
                sent += args.step
                samples.append(_sample(gateway.process.pid, sent, errors))
                print(f"{sent - args.warmup} requests: {samples[-1].rss_mib:.0f} MiB", flush=True)
            return samples, gateway.startup_s or 0.0
        finally:
            if gateway.process is not None:
                gateway.process.stop()
    finally:
        if mock.process is not None:
            mock.process.stop()


def render(samples: list[Sample], warmup: int) -> str:
    """Render the samples as a Markdown table and the flatness verdict."""
    reference = samples[1].rss_mib if len(samples) > 1 else samples[0].rss_mib
    lines = ["| requests after warm-up | RSS MiB | change vs first block | peak RSS MiB | errors |",
             "|---|---|---|---|---|"]
    for sample in samples:
        change = (sample.rss_mib - reference) / reference
        lines.append(f"| {sample.requests - warmup:,} | {sample.rss_mib:.0f} | {change:+.1%} "
                     f"| {sample.peak_rss_mib:.0f} | {sample.errors} |")
    worst = max(abs(s.rss_mib - reference) / reference for s in samples[1:]) if len(samples) > 1 else 0.0
    verdict = "flat" if worst <= FLAT_TOLERANCE else "not flat"
    lines += ["", f"max change from the first block: {worst:.1%} ({verdict}, tolerance ±10%)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000, help="Requests after warm-up.")
    parser.add_argument("--step", type=int, default=10_000, help="Requests between two samples.")
    parser.add_argument("--warmup", type=int, default=2_000, help="Requests before the first sample.")
    parser.add_argument("--concurrency", type=int, default=16, help="Requests in flight.")
    parser.add_argument("--checkout", type=Path, default=REPO_ROOT,
                        help="Tierwise source tree to run; this checkout by default.")
    args = parser.parse_args(argv)
    if args.step < 2 or args.requests < args.step:
        parser.error("--step must be at least 2 and at most --requests")
    workdir = RESULTS_DIR / f"rss-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir.mkdir(parents=True, exist_ok=True)
    pin_self(CLIENT_CPU)
    samples, startup_s = measure(args, workdir)
    print(f"\nstartup to ready: {startup_s:.2f} s\n")
    print(render(samples, args.warmup))
    out = workdir.with_suffix(".json")
    out.write_bytes(orjson.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                  "startup_s": startup_s, "samples": samples}))
    print(f"\nsamples: {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
