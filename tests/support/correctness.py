"""Recorded correctness (0 or 1) of models on traffic-mix prompts, for quality-of-routing reports.

Sources, keyed by the traffic-mix record id:

- RouterBench (``routerbench-subset/tidy/routerbench.csv``): a 0/1 score for each of 11 models,
  keyed by ``sample_id``. Each row also carries RouterDC's ``split`` (train or test).
- RouteLLM GSM8K and MMLU (``routellm-evals/tidy/{gsm8k,mmlu}-NN.jsonl``): 0/1 for
  Mixtral-8x7B-Instruct and GPT-4 Turbo, keyed by ``gsm8k/test/N`` and ``mmlu/<subject>/N``.

Model names are canonical recorded-model keys
(:func:`~tests.support.recorded.canonical_model_name`). RouteLLM's Mixtral therefore counts as
``mistralai/mixtral-8x7b-chat``, because RouterBench gives that name to the same weights.
MT-Bench ratings (1-10) are not correctness and are left out.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.recorded import SharedDataMissingError, canonical_model_name

_ROUTERBENCH_TIDY = ("routerbench-subset", "tidy", "routerbench.csv")
_ROUTELLM_TIDY = ("routellm-evals", "tidy")
_NOT_MODEL_COLUMNS = {"sample_id", "split", "eval_name", "question", "prompt_parts", "prompt_chars"}


@dataclass(slots=True)
class Correctness:
    """Per-prompt 0/1 scores by model, and the RouterBench ids of RouterDC's train split."""

    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    routerbench_train_ids: set[str] = field(default_factory=set)
    routerbench_test_ids: set[str] = field(default_factory=set)

    def score(self, record_id: str, model: str) -> float | None:
        """Return the recorded score of ``model`` on ``record_id``, or None when there is none."""
        return self.scores.get(record_id, {}).get(canonical_model_name(model))

    def models(self) -> set[str]:
        """Return every model with at least one score."""
        return {model for by_model in self.scores.values() for model in by_model}


def _jsonl(path: Path) -> Iterator[dict[str, object]]:
    # Not splitlines(): prompts contain U+2028, which it treats as a line break.
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            yield json.loads(line)


def _model_columns(fieldnames: list[str]) -> list[str]:
    return [
        name
        for name in fieldnames
        if name not in _NOT_MODEL_COLUMNS and "|" not in name and "oracle" not in name
    ]


def load_routerbench_scores(data_dir: Path, into: Correctness) -> None:
    """Add RouterBench 0/1 scores; the first row of a repeated ``sample_id`` wins."""
    path = data_dir.joinpath(*_ROUTERBENCH_TIDY)
    if not path.is_file():
        raise SharedDataMissingError(f"RouterBench scores not found at {path}")
    csv.field_size_limit(1 << 30)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        models = _model_columns(list(reader.fieldnames or []))
        for row in reader:
            split_ids = (
                into.routerbench_test_ids if row["split"] == "test" else into.routerbench_train_ids
            )
            split_ids.add(row["sample_id"])
            if row["sample_id"] in into.scores:
                continue
            into.scores[row["sample_id"]] = {
                canonical_model_name(model): float(row[model])
                for model in models
                if row[model] != ""
            }


def load_routellm_scores(data_dir: Path, into: Correctness) -> None:
    """Add RouteLLM GSM8K and MMLU 0/1 scores."""
    folder = data_dir.joinpath(*_ROUTELLM_TIDY)
    if not folder.is_dir():
        raise SharedDataMissingError(f"RouteLLM results not found at {folder}")
    for path in sorted(folder.glob("gsm8k-*.jsonl")) + sorted(folder.glob("mmlu-*.jsonl")):
        for record in _jsonl(path):
            scores = record.get("scores")
            if not isinstance(scores, dict):
                continue
            into.scores[str(record["id"])] = {
                canonical_model_name(model): float(value)
                for model, value in scores.items()
                if value is not None
            }


def load_correctness(data_dir: Path) -> Correctness:
    """Load every correctness source from ``data_dir``.

    Raises:
        SharedDataMissingError: a source file or folder is missing.
    """
    correctness = Correctness()
    load_routerbench_scores(data_dir, correctness)
    load_routellm_scores(data_dir, correctness)
    return correctness
