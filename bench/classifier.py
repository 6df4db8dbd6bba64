"""Classifier cost: per-prompt scoring latency, and training time and memory at scale.

Scoring: every prompt of the public traffic mix (CC BY-NC records removed) is scored once
as a single-turn conversation with the bundled model (or ``--artifact``), once ("cold",
each prompt new to the process) and then ``--repeat`` more times ("warm").  The scorer
keeps no memo, so the passes differ only in CPU cache and allocator state.  Latency is
this thread's CPU time per call (``--clock wall`` for wall time), so waiting for a busy
core is left out.  The process is pinned to one core.

``--stages`` also times each scoring stage over whole passes of the same prompts:
``view_conversation`` (segments and structural features), ``TermHasher.columns`` on
every segment, and ``Scorer.score``, which includes both.  It prints the median time per
prompt over ``--repeat`` passes, on the clock that ``--clock`` selects.

Training (``--train-rows N``): a child process fits the per-tier logistic regressions on N
labelled conversations made by cycling through the traffic mix (each copy made distinct by
a numbered suffix) with synthetic labels from prompt length, and reports fit time and
its own peak RSS.  The labels only give the solver realistic work; the model is thrown away.
``--train-command N`` writes such rows to a JSONL file and times the whole
``python -m classifiers train`` command on it, file reading and artifact writing included.

Run from the repository root:

    python -m bench.classifier                    # scoring latency
    python -m bench.classifier --stages --repeat 9
    python -m bench.classifier --train-rows 100000
    python -m bench.classifier --repeat 1 --train-rows 1000000 --train-command 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import CLIENT_CPU, RESULTS_DIR, pin_self
from bench.prompts import load_traffic_prompts

LENGTH_BUCKETS = ((0, 100), (100, 1_000), (1_000, 10_000), (10_000, 10**9))


def _clock(name: str) -> Callable[[], int]:
    return time.thread_time_ns if name == "cpu" else time.perf_counter_ns


def time_scores(scorer: Any, conversations: list[list[dict[str, str]]], clock: Callable[[], int]) -> np.ndarray:
    """Score each conversation once; return the time of each call in microseconds."""
    samples = np.empty(len(conversations))
    for index, messages in enumerate(conversations):
        started = clock()
        scorer.score(messages)
        samples[index] = (clock() - started) / 1000
    return samples


def describe(samples: np.ndarray) -> dict[str, float]:
    """Return p50/p90/p99/max/mean of ``samples`` (microseconds)."""
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return {"n": int(samples.size), "p50_us": float(p50), "p90_us": float(p90),
            "p99_us": float(p99), "max_us": float(samples.max()), "mean_us": float(samples.mean())}


def by_length(samples: np.ndarray, lengths: np.ndarray) -> dict[str, dict[str, float]]:
    """Return ``describe`` per prompt-length bucket (characters)."""
    result = {}
    for low, high in LENGTH_BUCKETS:
        mask = (lengths >= low) & (lengths < high)
        if mask.any():
            label = f"{low}-{high} chars" if high < 10**9 else f">={low} chars"
            result[label] = describe(samples[mask])
    return result


def scoring_report(artifact: Path | None, repeat: int, clock_name: str, stages: bool = False) -> dict[str, Any]:
    """Measure cold and warm scoring latency over the traffic mix, and optionally each stage."""
    from classifiers import load_artifact, load_default

    scorer = load_artifact(artifact) if artifact else load_default()
    records = load_traffic_prompts()
    if not records:
        raise SystemExit("error: the traffic mix was not found; set TIERWISE_SHARED_DATA")
    conversations = [[{"role": "user", "content": r["prompt"]}] for r in records]
    lengths = np.array([len(r["prompt"]) for r in records])
    clock = _clock(clock_name)
    cold = time_scores(scorer, conversations, clock)
    warm = np.concatenate([time_scores(scorer, conversations, clock) for _ in range(repeat)])
    report = {
        "classifier": scorer.version,
        "prompts": len(records),
        "clock": clock_name,
        "cold": describe(cold),
        "warm": describe(warm),
        "warm_by_length": by_length(warm, np.tile(lengths, repeat)),
    }
    if stages:
        report["stages_us_per_prompt"] = stage_report(scorer, conversations, repeat, clock)
    return report


def stage_report(scorer: Any, conversations: list[list[dict[str, str]]], repeat: int,
                 clock: Callable[[], int]) -> dict[str, float]:
    """Return the median time per prompt, in microseconds, of each scoring stage.

    A stage is timed over a whole pass of the prompts, because reading the CPU clock
    takes about 0.6 µs, a large share of a short ``TermHasher.columns`` call (about 4 µs).
    """
    from classifiers.conversation import view_conversation
    from classifiers.hashing import TermHasher

    features = scorer.metadata["features"]
    hasher = TermHasher(features["n_features"], features["ngram_max"])
    views = [view_conversation(messages) for messages in conversations]
    texts = [text for view in views for text, _ in view.segments]
    stages: dict[str, tuple[Callable[[Any], Any], list[Any]]] = {
        "view_conversation": (view_conversation, conversations),
        "TermHasher.columns": (hasher.columns, texts),
        "Scorer.score": (scorer.score, conversations),
    }
    samples: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(repeat):
        # The stages take turns, so that a busy period of the machine affects all of them.
        for name, (stage, items) in stages.items():
            started = clock()
            for item in items:
                stage(item)
            samples[name].append((clock() - started) / 1000 / len(conversations))
    return {name: float(np.median(values)) for name, values in samples.items()}


def _training_rows(count: int) -> list[Any]:
    from classifiers.outcomes import LabelledPrompt

    prompts = [r["prompt"] for r in load_traffic_prompts()]
    rows = []
    for index in range(count):
        text = f"{prompts[index % len(prompts)]} (variant {index // len(prompts)})"
        length = len(text)
        # Longer prompts are labelled harder, so every tier has both classes.
        quality = {"edge": float(length < 150), "mid": float(length < 600), "frontier": 1.0 - (index % 7 == 0)}
        rows.append(LabelledPrompt(id=str(index), messages=[{"role": "user", "content": text}],
                                   quality=quality))
    return rows


def train_child(count: int) -> None:
    """Fit on ``count`` rows in this process and print the timings as JSON."""
    from classifiers.training import fit_tier_model

    started = time.perf_counter()
    rows = _training_rows(count)
    built = time.perf_counter()
    cpu_before = time.process_time()
    fit_tier_model(rows, ["edge", "mid", "frontier"])
    fit_s = time.perf_counter() - built
    print(json.dumps({"rows": count, "build_rows_s": built - started, "fit_wall_s": fit_s,
                      "fit_cpu_s": time.process_time() - cpu_before}))


def _run_child(command: list[str]) -> tuple[str, float, float]:
    """Run ``command``; return its stdout, wall seconds and peak RSS in MiB (this child only)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"error: {' '.join(command[:4])} failed:\n{err.read().decode()[-2000:]}")
        return out.read().decode(), wall, usage.ru_maxrss / 1024


def training_report(count: int) -> dict[str, Any]:
    """Run ``train_child`` in a child process; add its peak RSS in MiB."""
    stdout, _, peak = _run_child([sys.executable, "-m", "bench.classifier", "--train-child", str(count)])
    report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    report["peak_rss_mb"] = peak
    return report


def command_report(count: int) -> dict[str, Any]:
    """Write ``count`` rows to a JSONL file and time ``python -m classifiers train`` on it.

    Unlike ``training_report``, this includes reading and parsing the file, merging
    duplicate conversations and writing the artifact.
    """
    with tempfile.TemporaryDirectory(prefix="tierwise-bench-train-") as scratch:
        data = Path(scratch) / "rows.jsonl"
        with data.open("w", encoding="utf-8") as out:
            for row in _training_rows(count):
                outcomes = {tier: {"quality": quality} for tier, quality in row.quality.items()}
                out.write(json.dumps({"id": row.id, "messages": row.messages, "outcomes": outcomes}) + "\n")
        command = [sys.executable, "-m", "classifiers", "train", "--data", str(data),
                   "--out", str(Path(scratch) / "model"), "--version", "bench"]
        _, wall, peak = _run_child(command)
    return {"rows": count, "wall_s": wall, "peak_rss_mb": peak}


def _print_scoring(report: dict[str, Any]) -> None:
    print(f"classifier {report['classifier']}, {report['prompts']} prompts, {report['clock']} time")
    print("| pass | n | p50 us | p90 us | p99 us | max us | mean us |")
    print("|---|---|---|---|---|---|---|")
    rows = [("cold", report["cold"]), ("warm", report["warm"]), *report["warm_by_length"].items()]
    for name, figures in rows:
        print(f"| {name} | {figures['n']} | {figures['p50_us']:.0f} | {figures['p90_us']:.0f} "
              f"| {figures['p99_us']:.0f} | {figures['max_us']:.0f} | {figures['mean_us']:.0f} |")
    if "stages_us_per_prompt" in report:
        print(f"| stage | median us per prompt ({report['clock']} time) |")
        print("|---|---|")
        for name, value in report["stages_us_per_prompt"].items():
            print(f"| {name} | {value:.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=None,
                        help="Classifier artifact folder; the bundled model when unset.")
    parser.add_argument("--repeat", type=int, default=3, help="Warm passes over all prompts.")
    parser.add_argument("--stages", action="store_true",
                        help="Also time view_conversation, TermHasher.columns and Scorer.score over "
                             "--repeat passes each, and print the median per prompt in microseconds.")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: this thread's CPU time; wall: elapsed time.")
    parser.add_argument("--train-rows", type=int, default=0,
                        help="Also time training on this many rows (0: skip).")
    parser.add_argument("--train-command", type=int, default=0,
                        help="Also time `python -m classifiers train` on a file of this many rows (0: skip).")
    parser.add_argument("--train-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pin_self(CLIENT_CPU)
    if args.train_child:
        train_child(args.train_child)
        return
    report: dict[str, Any] = {"scoring": scoring_report(args.artifact, args.repeat, args.clock, args.stages)}
    _print_scoring(report["scoring"])
    if args.train_rows:
        report["training"] = training_report(args.train_rows)
        print(json.dumps(report["training"]))
    if args.train_command:
        report["train_command"] = command_report(args.train_command)
        print(json.dumps(report["train_command"]))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"classifier-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"raw results: {out.relative_to(RESULTS_DIR.parent.parent)}")


if __name__ == "__main__":
    main()
