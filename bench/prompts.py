"""Prompts for the benchmarks: the public traffic mix when present, else a small stand-in set.

The traffic mix is read from ``$TIERWISE_SHARED_DATA/traffic-mix/tidy/*.jsonl``; the
default folder is ``shared/data`` beside the checkout.  Records whose license is
non-commercial (CC BY-NC) are skipped, so the benchmarks use the same prompts that the
project may train on.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import orjson

from bench.harness import REPO_ROOT

# Used only when the traffic mix is missing: a spread of lengths, from one-liners to a
# long instruction, so that the classifier still does representative work.
FALLBACK_PROMPTS = (
    "Hi there!",
    "What is the capital of Australia?",
    "Translate 'good morning' into French, Spanish and German.",
    "Write a Python function that returns the n-th Fibonacci number iteratively, with tests.",
    ("Explain the difference between a process and a thread, and when to prefer each, "
     "with an example from a web server that handles many slow clients."),
    ("A train leaves at 9:00 travelling 80 km/h; a second leaves the same station at 10:30 "
     "travelling 120 km/h on the same track. When does the second catch the first? Show steps."),
    "Summarise the following text in three bullet points. " + 8 * (
        "The committee met to discuss the budget, the new hiring plan and the office move, "
        "and agreed on next steps. "
    ),
)


def shared_data_dir() -> Path:
    """Return the public data folder: $TIERWISE_SHARED_DATA or shared/data beside the checkout."""
    configured = os.environ.get("TIERWISE_SHARED_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


def traffic_files() -> list[Path]:
    return sorted((shared_data_dir() / "traffic-mix" / "tidy").glob("traffic-*.jsonl"))


def load_traffic_prompts() -> list[dict[str, str]]:
    """Return the traffic mix records (``prompt``, ``source``), non-commercial ones removed."""
    records = []
    for path in traffic_files():
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            record = orjson.loads(line)
            if "BY-NC" in str(record.get("license", "")).upper():
                continue
            if isinstance(record.get("prompt"), str) and record["prompt"]:
                records.append({"prompt": record["prompt"], "source": str(record.get("source"))})
    return records


def load_prompts(limit: int | None = None, seed: int = 7) -> tuple[list[str], str]:
    """Return prompts shuffled with ``seed`` (at most ``limit``) and a label of their origin."""
    records = load_traffic_prompts()
    if records:
        prompts = [record["prompt"] for record in records]
        origin = f"traffic mix ({len(prompts)} prompts, CC BY-NC removed)"
    else:
        prompts = list(FALLBACK_PROMPTS)
        origin = f"{len(prompts)} built-in stand-in prompts (traffic mix not found)"
    random.Random(seed).shuffle(prompts)
    return (prompts[:limit] if limit else prompts), origin
