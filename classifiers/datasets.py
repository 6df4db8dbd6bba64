"""Converters from public routing data sets to the labelled-outcomes format.

These are tools for building training and evaluation files; the gateway never needs
them at run time.  Each converter reads the folder layout described in the folder's
``SOURCE.md`` and yields plain-dict records (see ``classifiers.outcomes``).

| name            | folder                  | license     | models (outcome keys)                    |
|-----------------|-------------------------|-------------|------------------------------------------|
| routerbench     | routerbench-subset      | MIT         | 11 RouterBench models, with USD per call |
| routellm-mmlu   | routellm-evals          | Apache-2.0  | Mixtral-8x7B-Instruct, GPT-4-1106        |
| routellm-gsm8k  | routellm-evals          | Apache-2.0  | Mixtral-8x7B-Instruct, GPT-4-1106        |
| gsm8k-openai    | gsm8k-openai            | MIT         | four GPT-3 systems, Mixtral, GPT-4-1106  |
| routerarena     | routerarena-cached      | Apache-2.0  | Claude 3 Haiku, Gemini 2.0 Flash, USD    |

The public data folder is found through ``TIERWISE_SHARED_DATA``; its default is the
``shared/data`` folder beside the repository checkout.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Converted files default to var/, which git ignores.
DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "var" / "data"
_TRUE = frozenset({"true", "1", "1.0"})


class DatasetError(ValueError):
    """Raised when a source folder is missing or does not have the expected files."""


def shared_data_dir() -> Path:
    """Return the public data folder (``TIERWISE_SHARED_DATA`` or ``../shared/data``)."""
    configured = os.environ.get("TIERWISE_SHARED_DATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def routerbench_records(source: Path) -> Iterator[dict[str, Any]]:
    """Yield RouterBench subset records from ``tidy/routerbench.csv``.

    Rows are de-duplicated on ``sample_id``.  An id that occurs in both splits is kept
    as a test row, so no test prompt leaks into training.  Quality is the 0/1 score and
    ``cost_usd`` is RouterBench's recorded ``total_cost`` of the call.
    """
    rows = _read_csv(source / "tidy" / "routerbench.csv")
    models = [name for name in rows[0] if f"{name}|total_cost" in rows[0]] if rows else []
    test_ids = {row["sample_id"] for row in rows if row["split"] == "test"}
    seen: set[str] = set()
    for row in rows:
        sample_id = row["sample_id"]
        if sample_id in seen:
            continue
        seen.add(sample_id)
        yield {
            "id": sample_id,
            "prompt": row["question"],
            "outcomes": {m: _routerbench_outcome(row, m) for m in models if row[m] != ""},
            "split": "test" if sample_id in test_ids else "train",
            "source": f"routerbench/{row['eval_name']}",
        }


def routellm_mmlu_records(source: Path) -> Iterator[dict[str, Any]]:
    """Yield RouteLLM MMLU records (one per unique prompt) from ``mmlu/responses``."""
    folder = source / "routellm" / "evals" / "mmlu" / "responses"
    files = sorted(folder.glob("mmlu_*.csv"))
    if not files:
        raise DatasetError(f"{folder}: no mmlu_*.csv files; expected the routellm-evals folder")
    seen: set[str] = set()
    for path in files:
        subject = path.stem.removeprefix("mmlu_")
        for index, row in enumerate(_read_csv(path)):
            if row["prompt"] in seen:
                continue
            seen.add(row["prompt"])
            yield _two_model_record(f"mmlu/{subject}/{index}", row, f"routellm-mmlu/{subject}")


def routellm_gsm8k_records(source: Path) -> Iterator[dict[str, Any]]:
    """Yield RouteLLM GSM8K records from ``gsm8k/gsm8k_responses.csv``."""
    path = source / "routellm" / "evals" / "gsm8k" / "gsm8k_responses.csv"
    seen: set[str] = set()
    for index, row in enumerate(_read_csv(path)):
        if row["prompt"] in seen:
            continue
        seen.add(row["prompt"])
        yield _two_model_record(f"gsm8k/{index}", row, "routellm-gsm8k")


def gsm8k_openai_records(source: Path) -> Iterator[dict[str, Any]]:
    """Yield GSM8K test records with the six systems of ``tidy/gsm8k_correctness.csv``."""
    rows = _read_csv(source / "tidy" / "gsm8k_correctness.csv")
    skip = {"idx", "question", "gold"}
    seen: set[str] = set()
    for row in rows:
        if row["question"] in seen:
            continue
        seen.add(row["question"])
        models = [k for k in row if k not in skip and "|" not in k and row[k] != ""]
        yield {
            "id": f"gsm8k-openai/{row['idx']}",
            "prompt": row["question"],
            "outcomes": {m: {"quality": float(row[m])} for m in models},
            "source": "gsm8k-openai",
        }


def routerarena_records(source: Path) -> Iterator[dict[str, Any]]:
    """Yield RouterArena records (78 benchmark sources) from ``tidy/routerarena.csv``.

    Quality is RouterArena's 0-1 score (METEOR for translation and NarrativeQA, else
    mostly 0/1), and ``cost_usd`` its recorded inference cost.  Prompts include
    RouterArena's task instruction and answer-format request, as they were sent.
    """
    rows = _read_csv(source / "tidy" / "routerarena.csv")
    models = [key.removesuffix("|score") for key in (rows[0] if rows else {}) if key.endswith("|score")]
    seen: set[str] = set()
    for row in rows:
        if row["question"] in seen:
            continue
        seen.add(row["question"])
        yield {
            "id": f"routerarena/{row['global_index']}",
            "prompt": row["question"],
            "outcomes": {m: _routerarena_outcome(row, m) for m in models if row[f"{m}|score"] != ""},
            "source": f"routerarena/{row['source']}",
        }


CONVERTERS: dict[str, tuple[str, Callable[[Path], Iterator[dict[str, Any]]]]] = {
    "routerbench": ("routerbench-subset", routerbench_records),
    "routellm-mmlu": ("routellm-evals", routellm_mmlu_records),
    "routellm-gsm8k": ("routellm-evals", routellm_gsm8k_records),
    "gsm8k-openai": ("gsm8k-openai", gsm8k_openai_records),
    "routerarena": ("routerarena-cached", routerarena_records),
}


def convert(name: str, source: Path | None = None) -> Iterator[dict[str, Any]]:
    """Yield the records of converter ``name`` reading ``source`` (default: shared data).

    Raises DatasetError for an unknown name or a missing folder.
    """
    if name not in CONVERTERS:
        raise DatasetError(f"unknown data set {name!r}; choose one of {', '.join(CONVERTERS)}")
    folder_name, converter = CONVERTERS[name]
    folder = source if source is not None else shared_data_dir() / folder_name
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found; set TIERWISE_SHARED_DATA or pass --source")
    return converter(folder)


def _two_model_record(record_id: str, row: dict[str, str], source: str) -> dict[str, Any]:
    models = [k for k in row if k != "prompt" and not k.endswith("_response")]
    return {
        "id": record_id,
        "prompt": row["prompt"],
        "outcomes": {m: {"quality": float(row[m].strip().lower() in _TRUE)} for m in models},
        "source": source,
    }


def _routerbench_outcome(row: dict[str, str], model: str) -> dict[str, float]:
    outcome = {"quality": float(row[model])}
    cost = row.get(f"{model}|total_cost", "")
    if cost:
        outcome["cost_usd"] = float(cost)
    return outcome


def _routerarena_outcome(row: dict[str, str], model: str) -> dict[str, float]:
    outcome = {"quality": float(row[f"{model}|score"])}
    for field_name, key in (("cost_usd", "cost_usd"), ("input_tokens", "tokens_in"),
                            ("output_tokens", "tokens_out")):
        value = row.get(f"{model}|{field_name}", "")
        if value:
            outcome[key] = float(value)
    return outcome


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; check the --source folder") from None
