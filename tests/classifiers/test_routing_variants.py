"""Tests of the routing-variant comparison in bench/routing_variants.py on synthetic sets."""

from __future__ import annotations

import math

from bench.routing_variants import evaluate_run, markdown_table
from classifiers.outcomes import LabelledPrompt

# (words, mid quality, frontier quality): only the frontier tier solves the integrals, only
# the mid tier writes the limericks, and both say hello.  Integrals come twice per cycle,
# so the frontier tier is better on average, which PGR needs.
KINDS = (
    ("prove the integral of x to the power {i} step by step", 0.0, 1.0),
    ("write a short limerick about the cat named {i}", 1.0, 0.0),
    ("say hello to my friend number {i}", 1.0, 1.0),
    ("prove the integral of x to the power {i} step by step", 0.0, 1.0),
)
SOURCES = {"mmlu": "routellm-mmlu", "gsm8k": "routellm-gsm8k", "ra": "routerarena"}


def synthetic_set(name: str, count: int = 80) -> list[LabelledPrompt]:
    records = []
    for i in range(count):
        words, mid, frontier = KINDS[i % len(KINDS)]
        records.append(LabelledPrompt(
            id=f"{name}/{i}",
            messages=[{"role": "user", "content": words.format(i=f"{name} {i}")}],
            quality={"mid": mid, "frontier": frontier},
            source=f"{SOURCES[name]}/subject{i % 2}",
        ))
    return records


def test_evaluate_run_in_domain_variants() -> None:
    sets = {name: synthetic_set(name) for name in ("mmlu", "gsm8k", "ra")}
    apgr = evaluate_run(sets, "mmlu", ("mmlu", "gsm8k", "ra"), folds=3, seed=0, c=1.0)

    expected = {"shipped", "c=1", "gain", "shipped-gain", "net-gain", "net-gain-si", "gated",
                "subject-prior"}
    assert set(apgr) == expected
    assert all(math.isfinite(value) for value in apgr.values())
    # The gain head sends the integrals to the frontier tier first (random routing is 0.5).
    assert apgr["gain"] > 1.0
    # The loss head also keeps the limericks on the mid tier, so net gain ranks better still.
    assert apgr["net-gain"] > apgr["gain"]


def test_evaluate_run_left_out_set() -> None:
    sets = {name: synthetic_set(name) for name in ("mmlu", "gsm8k", "ra")}
    apgr = evaluate_run(sets, "ra", ("mmlu", "gsm8k"), folds=3, seed=0, c=1.0)

    assert "subject-prior" not in apgr
    assert apgr["net-gain"] > apgr["gain"] > 1.0


def test_markdown_table_left_out_mean() -> None:
    table = markdown_table({"mmlu-in": {"a": 0.7}, "mmlu-lodo": {"a": 0.6}, "rb-pair": {"a": 0.5}})
    lines = table.splitlines()

    assert lines[0] == "| variant | mmlu-in | mmlu-lodo | rb-pair | mean left out |"
    assert lines[2] == "| a | 0.700 | 0.600 | 0.500 | 0.550 |"


def test_markdown_table_missing_run_blank() -> None:
    table = markdown_table({"mmlu-lodo": {"a": 0.6, "b": 0.4}, "rb-pair": {"a": 0.5}})

    assert table.splitlines()[3] == "| b | 0.400 |  |  |"
