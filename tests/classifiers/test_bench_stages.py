"""bench.classifier --stages: which stages it times and how it turns passes into figures."""

from __future__ import annotations

from itertools import count

from bench.classifier import stage_report
from classifiers import load_default


def test_stage_report_times_each_stage_per_prompt() -> None:
    conversations = [[{"role": "user", "content": text}] for text in ("Hi", "What is 2 + 2?", "")]
    ticks = count(step=1_000)
    # Each clock read advances 1 µs, so every pass lasts 1 µs, a third of a µs per prompt.
    report = stage_report(load_default(), conversations, repeat=2, clock=lambda: next(ticks))
    assert list(report) == ["view_conversation", "TermHasher.columns", "Scorer.score"]
    for name, value in report.items():
        assert value == 1 / len(conversations), name
