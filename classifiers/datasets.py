"""Converters from public routing data sets to the labelled-outcomes format.

These are tools for building training and evaluation files; the gateway never needs
them at run time.  Each converter reads the files that the data set's repository
publishes, at the same relative paths inside the source folder (``CONVERTERS`` lists
the repository and the files), and yields plain-dict records (see
``classifiers.outcomes``).  The routerbench, gsm8k-openai, routerarena and alpacaeval2
converters also accept a folder that has only derived ``tidy/`` files of the same data,
and read the published files whenever those are present.

| name            | folder                  | license          | models (outcome keys)                    |
|-----------------|-------------------------|------------------|------------------------------------------|
| routerbench     | routerbench-subset      | none for data    | 11 RouterBench models, with USD per call |
| routellm-mmlu   | routellm-evals          | Apache-2.0       | Mixtral-8x7B-Instruct, GPT-4-1106        |
| routellm-gsm8k  | routellm-evals          | Apache-2.0       | Mixtral-8x7B-Instruct, GPT-4-1106        |
| gsm8k-openai    | gsm8k-openai            | MIT + Apache-2.0 | four GPT-3 systems, Mixtral, GPT-4-1106  |
| routerarena     | routerarena-cached      | Apache-2.0       | Claude 3 Haiku, Gemini 2.0 Flash, USD    |
| alpacaeval2     | alpacaeval2-annotations | CC BY-NC 4.0     | 7 chat models, each vs GPT-4 Turbo       |

RouterBench's code is MIT-licensed, but its data and RouterDC's split of it state no
license.  AlpacaEval's repository is Apache-2.0, but its instructions are CC BY-NC 4.0,
so ``import-data alpacaeval2`` prints that the records are for evaluation only.  The
public data folder is found through ``TIERWISE_SHARED_DATA``; its default is the
``shared/data`` folder beside the repository checkout.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Converted files default to var/data in the current folder, where the other commands'
# examples read them, and which git ignores in a checkout. A path beside the package would be
# inside site-packages for an installed wheel.
DEFAULT_OUT_DIR = Path("var") / "data"
_TRUE = frozenset({"true", "1", "1.0"})

# RouterDC's train/test split of RouterBench's 0-shot data, in sorted file-name order.
ROUTERBENCH_FILES = tuple(
    f"datasets/routerbench_zs/{task}_{split}.csv"
    for task in ("arc_challenge", "mbpp", "winograde")
    for split in ("test", "train")
)
ROUTELLM_MMLU_FOLDER = "routellm/evals/mmlu/responses"
ROUTELLM_GSM8K_FILE = "routellm/evals/gsm8k/gsm8k_responses.csv"
GSM8K_TEST_FILE = "grade_school_math/data/test.jsonl"
GSM8K_SOLUTIONS_FILE = "grade_school_math/data/example_model_solutions.jsonl"
ROUTERARENA_RESULTS_FOLDER = "cached_results"
ROUTERARENA_COST_FILE = "model_cost/cost.json"
ALPACAEVAL_ANNOTATIONS = "results/*/weighted_alpaca_eval_gpt4_turbo/annotations.json"
# AlpacaEval 2.0 compares every model with this baseline, GPT-4 Turbo (1106 preview).
ALPACAEVAL_BASELINE = "gpt4_1106_preview"

# Outcome keys of the four GPT-3 systems (6B and 175B, fine-tuned or re-ranked by a
# verifier) whose solutions grade-school-math publishes in example_model_solutions.jsonl.
_GSM8K_SYSTEMS = {
    "6b_finetuning": "gpt3-6b-finetune",
    "6b_verification": "gpt3-6b-verifier",
    "175b_finetuning": "gpt3-175b-finetune",
    "175b_verification": "gpt3-175b-verifier",
}
# Outcome keys that gsm8k-openai gives RouteLLM's GSM8K correctness columns.
_ROUTELLM_GSM8K_MODELS = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b-instruct",
    "gpt-4-1106-preview": "gpt-4-1106-preview",
}


class DatasetError(ValueError):
    """Raised when a source folder is missing or does not have the expected files."""


@dataclass(frozen=True)
class PublicDataSet:
    """A public data set that ``convert`` reads, and where to download it."""

    folder: str
    """Folder name under ``TIERWISE_SHARED_DATA``."""
    repository: str
    """URL of the public repository that publishes the files."""
    files: tuple[str, ...]
    """Paths inside the folder, the same as inside the repository."""
    read: Callable[[Path], Iterator[dict[str, Any]]]
    license_warning: str | None = None
    """Restriction on use that ``import-data`` prints after it writes the records, or None."""


def shared_data_dir() -> Path:
    """Return the public data folder (``TIERWISE_SHARED_DATA`` or ``../shared/data``)."""
    configured = os.environ.get("TIERWISE_SHARED_DATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


# --- RouterBench (RouterDC's split) -------------------------------------------------


def routerbench_records(source: Path) -> Iterator[dict[str, Any]]:
    """Read the RouterBench subset from RouterDC's six CSV files in ``source``.

    Rows are de-duplicated on ``sample_id``.  An id that occurs in both splits is kept
    as a test row, so no test prompt leaks into training.  The prompt is the last
    question without the few-shot examples before it: the text after the last blank
    line of the last string in the CSV's ``prompt`` list.  Quality is the 0/1 score
    and ``cost_usd`` is RouterBench's recorded ``total_cost`` of the call.  When the
    CSV files are absent, ``tidy/routerbench.csv`` (the same columns, with the prompt
    already cut to the question) is read instead.

    Raises DatasetError when neither is present.
    """
    missing = _missing_files(source, ROUTERBENCH_FILES)
    if not missing:
        return _routerbench_from_rows(list(_routerbench_original_rows(source)))
    tidy = source / "tidy" / "routerbench.csv"
    if tidy.is_file():
        return _routerbench_from_rows(_read_csv(tidy))
    raise _source_error("routerbench", source, missing)


def _routerbench_original_rows(source: Path) -> Iterator[dict[str, str]]:
    for relative in ROUTERBENCH_FILES:
        path = source / relative
        split = "test" if path.stem.endswith("_test") else "train"
        rows = _read_csv(path)
        _require_fields(rows[:1], ("sample_id", "prompt", "eval_name"), path)
        for row in rows:
            row["split"] = split
            row["question"] = _routerbench_question(row["prompt"], path, row["sample_id"])
            yield row


def _routerbench_question(prompt: str, path: Path, sample_id: str) -> str:
    # RouterDC stores each prompt as the repr of a Python list of strings.  The few-shot
    # examples and the question inside the last string are separated by blank lines.
    try:
        parts = ast.literal_eval(prompt)
    except (ValueError, SyntaxError):
        parts = None
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise DatasetError(f"{path}: sample {sample_id}: prompt is not a Python list of strings")
    return parts[-1].rsplit("\n\n", 1)[-1]


def _routerbench_from_rows(rows: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
    header = rows[0] if rows else {}
    models = [key.removesuffix("|total_cost") for key in header if key.endswith("|total_cost")]
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


def _routerbench_outcome(row: dict[str, str], model: str) -> dict[str, float]:
    outcome = {"quality": float(row[model])}
    cost = row.get(f"{model}|total_cost", "")
    if cost:
        outcome["cost_usd"] = float(cost)
    return outcome


# --- RouteLLM evaluation results ----------------------------------------------------


def routellm_mmlu_records(source: Path) -> Iterator[dict[str, Any]]:
    """Read RouteLLM's MMLU responses, one record per unique prompt.

    Raises DatasetError when the folder has no ``mmlu_*.csv`` files.
    """
    files = sorted((source / ROUTELLM_MMLU_FOLDER).glob("mmlu_*.csv"))
    if not files:
        raise _source_error("routellm-mmlu", source, [f"{ROUTELLM_MMLU_FOLDER}/mmlu_*.csv"])
    return _routellm_mmlu_from_files(files)


def _routellm_mmlu_from_files(files: list[Path]) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for path in files:
        subject = path.stem.removeprefix("mmlu_")
        for index, row in enumerate(_read_csv(path)):
            if row["prompt"] in seen:
                continue
            seen.add(row["prompt"])
            yield _two_model_record(f"mmlu/{subject}/{index}", row, f"routellm-mmlu/{subject}")


def routellm_gsm8k_records(source: Path) -> Iterator[dict[str, Any]]:
    """Read RouteLLM's GSM8K responses, one record per unique prompt.

    Raises DatasetError when ``gsm8k_responses.csv`` is missing.
    """
    missing = _missing_files(source, [ROUTELLM_GSM8K_FILE])
    if missing:
        raise _source_error("routellm-gsm8k", source, missing)
    return _routellm_gsm8k_from_rows(_read_csv(source / ROUTELLM_GSM8K_FILE))


def _routellm_gsm8k_from_rows(rows: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if row["prompt"] in seen:
            continue
        seen.add(row["prompt"])
        yield _two_model_record(f"gsm8k/{index}", row, "routellm-gsm8k")


def _two_model_record(record_id: str, row: dict[str, str], source: str) -> dict[str, Any]:
    models = [k for k in row if k != "prompt" and not k.endswith("_response")]
    return {
        "id": record_id,
        "prompt": row["prompt"],
        "outcomes": {m: {"quality": float(row[m].strip().lower() in _TRUE)} for m in models},
        "source": source,
    }


# --- GSM8K (OpenAI) -----------------------------------------------------------------


def gsm8k_openai_records(source: Path) -> Iterator[dict[str, Any]]:
    """Read the GSM8K test set with the correctness of six systems.

    The four GPT-3 systems come from ``example_model_solutions.jsonl``, whose lines
    follow ``test.jsonl``.  The record id is the 0-based line number.  Mixtral-8x7B and
    GPT-4-1106 come from RouteLLM's ``gsm8k_responses.csv``, joined on the exact
    question text.  That file is looked up in a ``routellm-evals`` folder beside
    ``source``, then under ``TIERWISE_SHARED_DATA``.  Without it the records have the
    four GPT-3 systems only, and a warning is logged.  When the GSM8K files are absent,
    ``tidy/gsm8k_correctness.csv`` (question, 0/1 column per system) is read instead.

    Raises DatasetError when neither is present or the two GSM8K files disagree.
    """
    missing = _missing_files(source, [GSM8K_TEST_FILE, GSM8K_SOLUTIONS_FILE])
    if not missing:
        return _gsm8k_openai_original_records(source, _routellm_gsm8k_outcomes(source))
    tidy = source / "tidy" / "gsm8k_correctness.csv"
    if tidy.is_file():
        return _gsm8k_openai_tidy_records(_read_csv(tidy))
    raise _source_error("gsm8k-openai", source, missing)


def _gsm8k_openai_original_records(
    source: Path, routellm: dict[str, dict[str, dict[str, float]]]
) -> Iterator[dict[str, Any]]:
    tests = _read_jsonl(source / GSM8K_TEST_FILE)
    solutions = _read_jsonl(source / GSM8K_SOLUTIONS_FILE)
    _require_fields(tests, ("question",), source / GSM8K_TEST_FILE)
    _require_fields(solutions, ("question",), source / GSM8K_SOLUTIONS_FILE)
    if len(tests) != len(solutions):
        raise DatasetError(f"{source / GSM8K_SOLUTIONS_FILE}: {len(solutions)} lines, but "
                           f"{GSM8K_TEST_FILE} has {len(tests)}; expected one line per question")
    seen: set[str] = set()
    for index, (test, solved) in enumerate(zip(tests, solutions)):
        question = test["question"]
        if solved["question"] != question:
            raise DatasetError(f"{source / GSM8K_SOLUTIONS_FILE}: line {index + 1} has another "
                               f"question than line {index + 1} of {GSM8K_TEST_FILE}")
        if question in seen:
            continue
        seen.add(question)
        outcomes = {
            key: {"quality": float(solved[system]["is_correct"])}
            for system, key in _GSM8K_SYSTEMS.items()
            if system in solved
        }
        outcomes.update(routellm.get(question, {}))
        yield {
            "id": f"gsm8k-openai/{index}",
            "prompt": question,
            "outcomes": outcomes,
            "source": "gsm8k-openai",
        }


def _routellm_gsm8k_outcomes(source: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Map each GSM8K question to RouteLLM's Mixtral and GPT-4 outcomes ({} if absent)."""
    candidates = [source.parent / "routellm-evals", shared_data_dir() / "routellm-evals"]
    path = next((c / ROUTELLM_GSM8K_FILE for c in candidates
                 if (c / ROUTELLM_GSM8K_FILE).is_file()), None)
    if path is None:
        logger.warning("gsm8k-openai: %s not found under %s, so the records have the four "
                       "GPT-3 systems only", ROUTELLM_GSM8K_FILE,
                       " or ".join(str(c) for c in dict.fromkeys(candidates)))
        return {}
    outcomes: dict[str, dict[str, dict[str, float]]] = {}
    for row in _read_csv(path):
        outcomes.setdefault(row["prompt"], {
            key: {"quality": float(row[column].strip().lower() in _TRUE)}
            for column, key in _ROUTELLM_GSM8K_MODELS.items()
            if row.get(column, "") != ""
        })
    return outcomes


def _gsm8k_openai_tidy_records(rows: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
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


# --- RouterArena ----------------------------------------------------------------------


def routerarena_records(source: Path) -> Iterator[dict[str, Any]]:
    """Read RouterArena's cached results, one record per unique prompt.

    Each ``cached_results/<model>.jsonl`` file adds the outcome key ``<model>``.
    Prompts keep the order of the first file by name, followed by prompts that only
    later files have.  The source is the ``global_index`` without its trailing
    ``_<number>`` (78 benchmark sources in the 809-prompt split).  Quality is
    RouterArena's 0-1 score (METEOR for translation and NarrativeQA, else mostly 0/1),
    and ``cost_usd`` its recorded inference cost.  A result without a recorded cost
    is priced from its token counts and ``model_cost/cost.json``, when that lists the
    model.  Prompts include RouterArena's task instruction and answer-format request,
    as they were sent.  When ``cached_results`` has no files, ``tidy/routerarena.csv``
    is read instead.

    Raises DatasetError when neither is present.
    """
    files = sorted((source / ROUTERARENA_RESULTS_FOLDER).glob("*.jsonl"))
    if files:
        return _routerarena_original_records(files, _routerarena_prices(source))
    tidy = source / "tidy" / "routerarena.csv"
    if tidy.is_file():
        return _routerarena_tidy_records(_read_csv(tidy))
    raise _source_error("routerarena", source, [f"{ROUTERARENA_RESULTS_FOLDER}/*.jsonl"])


def _routerarena_original_records(
    files: list[Path], prices: dict[str, tuple[float, float]]
) -> Iterator[dict[str, Any]]:
    prompts: dict[str, str] = {}
    outcomes: dict[str, dict[str, dict[str, float]]] = {}
    for path in files:
        model = path.stem
        results = _read_jsonl(path)
        _require_fields(results, ("global_index", "question"), path)
        for result in results:
            index = result["global_index"]
            prompts.setdefault(index, result["question"])
            outcome = _routerarena_result_outcome(result, prices.get(model))
            if outcome is not None:
                outcomes.setdefault(index, {})[model] = outcome
    seen: set[str] = set()
    for index, question in prompts.items():
        if question in seen:
            continue
        seen.add(question)
        yield {
            "id": f"routerarena/{index}",
            "prompt": question,
            "outcomes": outcomes.get(index, {}),
            "source": f"routerarena/{index.rsplit('_', 1)[0]}",
        }


def _routerarena_result_outcome(
    result: dict[str, Any], price: tuple[float, float] | None
) -> dict[str, float] | None:
    """Return the outcome of one cached result, or None when it has no score."""
    evaluation = result.get("evaluation_result") or {}
    if evaluation.get("score") is None:
        return None
    usage = result.get("token_usage") or {}
    tokens_in = usage.get("input_tokens")
    tokens_out = usage.get("output_tokens")
    cost = evaluation.get("inference_cost")
    if cost is None and price is not None and tokens_in is not None and tokens_out is not None:
        cost = (tokens_in * price[0] + tokens_out * price[1]) / 1_000_000
    outcome = {"quality": float(evaluation["score"])}
    if cost is not None:
        outcome["cost_usd"] = float(cost)
    if tokens_in is not None:
        outcome["tokens_in"] = float(tokens_in)
    if tokens_out is not None:
        outcome["tokens_out"] = float(tokens_out)
    return outcome


def _routerarena_prices(source: Path) -> dict[str, tuple[float, float]]:
    """Map model names to (input, output) USD per million tokens from ``cost.json``."""
    path = source / ROUTERARENA_COST_FILE
    if not path.is_file():
        return {}
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        return {
            model: (float(entry["input_token_price_per_million"]),
                    float(entry["output_token_price_per_million"]))
            for model, entry in table.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: invalid price table ({exc}); expected "
                           "{model: {input_token_price_per_million, "
                           "output_token_price_per_million}}") from None


def _routerarena_tidy_records(rows: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
    models = [key.removesuffix("|score") for key in (rows[0] if rows else {}) if key.endswith("|score")]
    seen: set[str] = set()
    for row in rows:
        if row["question"] in seen:
            continue
        seen.add(row["question"])
        yield {
            "id": f"routerarena/{row['global_index']}",
            "prompt": row["question"],
            "outcomes": {m: _routerarena_tidy_outcome(row, m) for m in models if row[f"{m}|score"] != ""},
            "source": f"routerarena/{row['source']}",
        }


def _routerarena_tidy_outcome(row: dict[str, str], model: str) -> dict[str, float]:
    outcome = {"quality": float(row[f"{model}|score"])}
    for field_name, key in (("cost_usd", "cost_usd"), ("input_tokens", "tokens_in"),
                            ("output_tokens", "tokens_out")):
        value = row.get(f"{model}|{field_name}", "")
        if value:
            outcome[key] = float(value)
    return outcome


# --- AlpacaEval 2.0 judge preferences -------------------------------------------------


def alpacaeval2_records(source: Path) -> Iterator[dict[str, Any]]:
    """Read AlpacaEval 2.0's per-instruction judge preferences, one record per instruction.

    Each ``results/<model>/weighted_alpaca_eval_gpt4_turbo/annotations.json`` lists the
    805 instructions with two outputs: ``output_1`` from the baseline (``generator_1``,
    GPT-4 Turbo as ``gpt4_1106_preview``) and ``output_2`` from the model
    (``generator_2``).  ``preference`` - 1 is the probability, judged by GPT-4 Turbo,
    that the model's output is better.  A comparison is zero-sum, so each file adds two
    outcome keys: the model with quality p, and ``<baseline>-vs-<model>`` with quality
    1 - p.  The baseline's quality therefore differs per model, and a tier map pairs a
    model with its own baseline key.  p is rounded to 6 decimals, as
    ``tidy/winprob.csv`` stores it, so both inputs give equal records.  A comparison
    without a preference is left out.

    Records keep the order of the first file by path, followed by instructions that only
    later files have.  The source is ``alpacaeval2/<dataset>`` (selfinstruct, oasst,
    koala, helpful_base or vicuna).  When no annotation file is present,
    ``tidy/instructions.jsonl`` (idx, instruction, dataset) and ``tidy/winprob.csv``
    (idx, dataset, one column of p per model) are read instead.

    Raises DatasetError when neither is present, or on a record without the expected
    fields or with a preference outside [1, 2].
    """
    files = sorted(source.glob(ALPACAEVAL_ANNOTATIONS))
    if files:
        return _alpacaeval2_original_records(files)
    instructions = source / "tidy" / "instructions.jsonl"
    winprob = source / "tidy" / "winprob.csv"
    if instructions.is_file() and winprob.is_file():
        return _alpacaeval2_tidy_records(_read_jsonl(instructions), _read_csv(winprob))
    raise _source_error("alpacaeval2", source, [ALPACAEVAL_ANNOTATIONS])


def _alpacaeval2_original_records(files: list[Path]) -> Iterator[dict[str, Any]]:
    datasets: dict[str, str] = {}
    outcomes: dict[str, dict[str, dict[str, float]]] = {}
    for path in files:
        annotations = _read_json_list(path)
        _require_fields(annotations, ("instruction", "dataset", "generator_1", "generator_2",
                                      "preference"), path)
        for number, annotation in enumerate(annotations, start=1):
            instruction = annotation["instruction"]
            datasets.setdefault(instruction, annotation["dataset"])
            win = _alpacaeval2_win_probability(annotation["preference"], path, number)
            if win is not None:
                outcomes.setdefault(instruction, {}).update(
                    _alpacaeval2_pair(annotation["generator_1"], annotation["generator_2"], win))
    for index, (instruction, dataset) in enumerate(datasets.items()):
        yield _alpacaeval2_record(index, instruction, dataset, outcomes.get(instruction, {}))


def _alpacaeval2_win_probability(preference: Any, path: Path, number: int) -> float | None:
    """Return preference - 1 rounded to 6 decimals, or None when the judge gave none."""
    if preference is None or preference == "":
        return None
    try:
        value = float(preference)
    except (TypeError, ValueError):
        value = float("nan")
    if not 1.0 <= value <= 2.0:
        raise DatasetError(f"{path}: record {number}: preference {preference!r} is not a "
                           "number in [1, 2]; expected 1 + the probability that output_2 is "
                           "better")
    return round(value - 1.0, 6)


def _alpacaeval2_pair(baseline: str, model: str, win: float) -> dict[str, dict[str, float]]:
    return {model: {"quality": win}, f"{baseline}-vs-{model}": {"quality": 1.0 - win}}


def _alpacaeval2_record(index: int, instruction: str, dataset: str,
                        outcomes: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {
        "id": f"alpacaeval2/{index}",
        "prompt": instruction,
        "outcomes": outcomes,
        "source": f"alpacaeval2/{dataset}",
    }


def _alpacaeval2_tidy_records(instructions: list[dict[str, Any]],
                              rows: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
    models = [key for key in (rows[0] if rows else {}) if key not in ("idx", "dataset")]
    wins = {row["idx"]: row for row in rows}
    for entry in instructions:
        row = wins.get(str(entry["idx"]), {})
        outcomes: dict[str, dict[str, float]] = {}
        for model in models:
            if row.get(model, "") != "":
                outcomes.update(_alpacaeval2_pair(ALPACAEVAL_BASELINE, model, float(row[model])))
        yield _alpacaeval2_record(int(entry["idx"]), entry["instruction"], entry["dataset"],
                                  outcomes)


# --- Data set table and entry point ---------------------------------------------------


CONVERTERS: dict[str, PublicDataSet] = {
    "routerbench": PublicDataSet(
        "routerbench-subset", "https://github.com/shuhao02/RouterDC",
        ROUTERBENCH_FILES, routerbench_records),
    "routellm-mmlu": PublicDataSet(
        "routellm-evals", "https://github.com/lm-sys/RouteLLM",
        (f"{ROUTELLM_MMLU_FOLDER}/mmlu_<subject>.csv (57 files)",), routellm_mmlu_records),
    "routellm-gsm8k": PublicDataSet(
        "routellm-evals", "https://github.com/lm-sys/RouteLLM",
        (ROUTELLM_GSM8K_FILE,), routellm_gsm8k_records),
    "gsm8k-openai": PublicDataSet(
        "gsm8k-openai", "https://github.com/openai/grade-school-math",
        (GSM8K_TEST_FILE, GSM8K_SOLUTIONS_FILE), gsm8k_openai_records),
    "routerarena": PublicDataSet(
        "routerarena-cached", "https://github.com/RouteWorks/RouterArena",
        (f"{ROUTERARENA_RESULTS_FOLDER}/<model>.jsonl (one or more)", ROUTERARENA_COST_FILE),
        routerarena_records),
    "alpacaeval2": PublicDataSet(
        "alpacaeval2-annotations", "https://github.com/tatsu-lab/alpaca_eval",
        (f"{ALPACAEVAL_ANNOTATIONS} (one or more models)",), alpacaeval2_records,
        license_warning=(
            "the AlpacaEval instructions are licensed CC BY-NC 4.0 (Hugging Face data set "
            "tatsu-lab/alpaca_eval), so use these records to evaluate routing only and never "
            "train a model that you ship on them")),
}


def convert(name: str, source: Path | None = None) -> Iterator[dict[str, Any]]:
    """Return the records of data set ``name`` read from ``source`` (default: shared data).

    Raises DatasetError for an unknown name, a missing folder or missing files.
    """
    if name not in CONVERTERS:
        raise DatasetError(f"unknown data set {name!r}; choose one of {', '.join(CONVERTERS)}")
    data_set = CONVERTERS[name]
    folder = source if source is not None else shared_data_dir() / data_set.folder
    if not folder.is_dir():
        raise _source_error(name, folder, None)
    return data_set.read(folder)


def _source_error(name: str, folder: Path, missing: Iterable[str] | None) -> DatasetError:
    """Build the error for a missing folder (``missing`` None) or missing files in it."""
    data_set = CONVERTERS[name]
    missing = None if missing is None else list(missing)
    if missing is None or not any(path.is_file() for path in folder.rglob("*")):
        # Nothing is in the folder, so it may be the wrong one. The error names what to fetch
        # and where the folder is looked for.
        problem = "folder not found" if missing is None else f"missing {', '.join(missing)}"
        return DatasetError(
            f"{folder}: {problem}. The {name} data set needs these files from "
            f"{data_set.repository} inside that folder, at the same paths as in the "
            f"repository: {', '.join(data_set.files)}. Set TIERWISE_SHARED_DATA to the folder "
            f"that contains {data_set.folder}/, or pass --source with the folder itself."
        )
    # The folder was found, so only the missing files are news.
    return DatasetError(
        f"{folder}: missing {', '.join(missing)}. Copy them from {data_set.repository}, at the "
        "same paths as in the repository."
    )


def _missing_files(folder: Path, relative_paths: Iterable[str]) -> list[str]:
    return [path for path in relative_paths if not (folder / path).is_file()]


def _require_fields(records: list[dict[str, Any]], fields: Iterable[str], path: Path) -> None:
    for number, record in enumerate(records, start=1):
        absent = [name for name in fields if name not in record]
        if absent:
            raise DatasetError(f"{path}: record {number} has no {', '.join(absent)} field; "
                               "expected the file as its repository publishes it")


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; check the --source folder") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; expected the file as its repository "
                           "publishes it") from None


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    """Read a JSON file whose top level is a list of objects."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; check the --source folder") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; expected the file as its repository "
                           "publishes it") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}); expected "
                           "the file as its repository publishes it") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DatasetError(f"{path}: expected a JSON list of objects")
    return records


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; check the --source folder") from None
    with handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                raise DatasetError(f"{path}:{line_number}: the line is not UTF-8 text") from None
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{line_number}: the line is not valid JSON "
                                   f"({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{line_number}: the line is not a JSON object")
            records.append(record)
    return records
