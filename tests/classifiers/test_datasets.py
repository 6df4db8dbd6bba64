"""Converters from public data files.

Tests marked ``shared_data`` read the public data folder and skip when it is absent.
The others write small files in the published layout to a temporary folder.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from classifiers.datasets import (
    CONVERTERS,
    ROUTERBENCH_FILES,
    DatasetError,
    convert,
    routerbench_records,
    shared_data_dir,
)


def _folder(name: str) -> Path:
    folder = shared_data_dir() / name
    if not folder.is_dir():
        pytest.skip(f"public data folder {folder} not found; set TIERWISE_SHARED_DATA")
    return folder


@pytest.mark.shared_data
def test_routerbench_dedupes_on_sample_id(routerbench_dir: Path) -> None:
    records = list(routerbench_records(routerbench_dir))
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 3164
    assert {r["split"] for r in records} == {"train", "test"}
    first = records[0]
    assert first["outcomes"]["gpt-4-1106-preview"]["cost_usd"] > 0
    assert first["source"].startswith("routerbench/")


@pytest.mark.shared_data
def test_routerbench_id_in_both_splits_is_test(routerbench_dir: Path) -> None:
    records = list(routerbench_records(routerbench_dir))
    test_count = sum(r["split"] == "test" for r in records)
    # 953 test rows in the CSV, 6 ids of which also appear in train and repeats within a file.
    assert 940 <= test_count <= 953


@pytest.mark.shared_data
def test_routellm_converters_read_two_models() -> None:
    _folder("routellm-evals")
    mmlu = list(convert("routellm-mmlu"))
    gsm8k = list(convert("routellm-gsm8k"))
    assert len(gsm8k) == 1319
    assert 13_900 <= len(mmlu) <= 14_042
    assert set(gsm8k[0]["outcomes"]) == {"mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"}
    assert all(v["quality"] in (0.0, 1.0) for v in mmlu[0]["outcomes"].values())
    assert len({r["prompt"] for r in mmlu}) == len(mmlu)


@pytest.mark.shared_data
def test_gsm8k_openai_has_six_systems() -> None:
    _folder("gsm8k-openai")
    records = list(convert("gsm8k-openai"))
    assert len(records) == 1319
    assert {"gpt3-6b-verifier", "gpt-4-1106-preview"} <= set(records[0]["outcomes"])


def test_convert_rejects_unknown_name() -> None:
    with pytest.raises(DatasetError, match="unknown data set 'nope'"):
        convert("nope")


def test_convert_rejects_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="folder not found"):
        convert("routerbench", tmp_path / "absent")


@pytest.mark.shared_data
def test_routerarena_has_two_models_with_costs() -> None:
    _folder("routerarena-cached")
    records = list(convert("routerarena"))
    assert len(records) == 809
    first = records[0]
    assert set(first["outcomes"]) == {"claude-3-haiku-20240307", "gemini-2.0-flash-001"}
    assert first["source"].startswith("routerarena/")
    outcome = first["outcomes"]["gemini-2.0-flash-001"]
    assert 0.0 <= outcome["quality"] <= 1.0
    assert outcome["cost_usd"] > 0
    assert outcome["tokens_in"] > 0


@pytest.mark.shared_data
def test_alpacaeval2_pairs_seven_models() -> None:
    _folder("alpacaeval2-annotations")
    records = list(convert("alpacaeval2"))
    assert len(records) == 805
    assert len({r["prompt"] for r in records}) == 805
    assert {r["source"] for r in records} == {
        "alpacaeval2/helpful_base", "alpacaeval2/koala", "alpacaeval2/oasst",
        "alpacaeval2/selfinstruct", "alpacaeval2/vicuna"}
    first = records[0]["outcomes"]
    assert len(first) == 14
    for model in ("gpt-3.5-turbo-1106", "claude-instant-1.2", "gemma-7b-it"):
        win = first[model]["quality"]
        assert 0.0 <= win <= 1.0
        assert first[f"gpt4_1106_preview-vs-{model}"]["quality"] == pytest.approx(1.0 - win)
    wins = [r["outcomes"]["gpt-3.5-turbo-1106"]["quality"] for r in records]
    # GPT-3.5 Turbo 1106 wins against GPT-4 Turbo with a mean probability of 0.092.
    assert sum(wins) / len(wins) == pytest.approx(0.092, abs=0.002)


# --- Published files against the derived tidy/ files ---------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["routerbench", "gsm8k-openai", "routerarena", "alpacaeval2"])
def test_published_files_match_tidy_records(name: str, tmp_path: Path) -> None:
    folder = _folder(CONVERTERS[name].folder)
    if not (folder / "tidy").is_dir():
        pytest.skip(f"{folder / 'tidy'} not found; there is nothing to compare with")
    originals_only = tmp_path / "originals" / folder.name
    tidy_only = tmp_path / "tidy" / folder.name
    originals_only.mkdir(parents=True)
    tidy_only.mkdir(parents=True)
    for entry in folder.iterdir():
        if entry.name != "tidy":
            (originals_only / entry.name).symlink_to(entry)
    (tidy_only / "tidy").symlink_to(folder / "tidy")
    # gsm8k-openai looks for RouteLLM's results in a routellm-evals folder beside its own.
    routellm = shared_data_dir() / "routellm-evals"
    if routellm.is_dir():
        (tmp_path / "originals" / "routellm-evals").symlink_to(routellm)

    from_originals = list(convert(name, originals_only))
    from_tidy = list(convert(name, tidy_only))

    assert len(from_originals) == len(from_tidy)
    for index, (original, tidy) in enumerate(zip(from_originals, from_tidy)):
        assert original == tidy, f"record {index} ({tidy['id']}) differs"


# --- Small files in the published layout ---------------------------------------------


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_jsonl(path: Path, items: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")


def _routerbench_row(sample_id: str, prompt: list[str], score_a: str, cost_a: str) -> dict[str, str]:
    # Column order of RouterDC's files: scores, then responses, then costs.
    return {
        "": "0", "sample_id": sample_id, "prompt": repr(prompt), "eval_name": "arc-challenge",
        "model-a": score_a, "model-b": "0.0",
        "model-a|model_response": "A", "model-b|model_response": "B",
        "model-b|total_cost": "0.5", "model-a|total_cost": cost_a,
        "oracle_model_to_route_to": "model-a",
    }


def _write_routerbench(folder: Path, prompt: list[str] | None = None) -> None:
    few_shot = ["Q: one?\nA) yes\nAnswer:\nA\n\nQ: two?\nA) no\nAnswer:"]
    rows = {
        "arc_challenge_test": [_routerbench_row("arc.1", prompt or few_shot, "1.0", "0.001")],
        "arc_challenge_train": [_routerbench_row("arc.1", ["train copy"], "0.0", "0.002"),
                                _routerbench_row("arc.2", ["Q: three?"], "", ""),
                                _routerbench_row("arc.2", ["repeat"], "1.0", "0.003")],
    }
    for relative in ROUTERBENCH_FILES:
        stem = Path(relative).stem
        default = [_routerbench_row(f"{stem}.1", ["Q: other?"], "1.0", "0.004")]
        _write_csv(folder / relative, rows.get(stem, default))


def test_routerbench_reads_published_csv(tmp_path: Path) -> None:
    _write_routerbench(tmp_path)

    records = {r["id"]: r for r in routerbench_records(tmp_path)}

    assert len(records) == 2 + 4  # arc.1 and arc.2, then one row in each other file
    assert records["arc.1"]["prompt"] == "Q: two?\nA) no\nAnswer:"
    assert records["arc.1"]["split"] == "test"
    assert records["arc.1"]["source"] == "routerbench/arc-challenge"
    assert list(records["arc.1"]["outcomes"]) == ["model-b", "model-a"]
    assert records["arc.1"]["outcomes"]["model-a"] == {"quality": 1.0, "cost_usd": 0.001}
    assert records["arc.2"]["prompt"] == "Q: three?"
    assert records["arc.2"]["split"] == "train"
    assert list(records["arc.2"]["outcomes"]) == ["model-b"]


def test_routerbench_prefers_published_files(tmp_path: Path) -> None:
    _write_routerbench(tmp_path)
    _write_csv(tmp_path / "tidy/routerbench.csv", [
        {"sample_id": "tidy.1", "split": "train", "eval_name": "mbpp", "question": "tidy",
         "model-a": "1", "model-a|total_cost": "0.1"},
    ])

    records = list(routerbench_records(tmp_path))

    assert records[0]["id"] == "arc.1"
    assert "tidy.1" not in {r["id"] for r in records}


def test_routerbench_falls_back_to_tidy(tmp_path: Path) -> None:
    _write_csv(tmp_path / "tidy/routerbench.csv", [
        {"sample_id": "tidy.1", "split": "train", "eval_name": "mbpp", "question": "tidy",
         "model-a": "1", "model-a|total_cost": "0.1"},
    ])

    records = list(routerbench_records(tmp_path))

    assert records == [{
        "id": "tidy.1", "prompt": "tidy", "split": "train", "source": "routerbench/mbpp",
        "outcomes": {"model-a": {"quality": 1.0, "cost_usd": 0.1}},
    }]


def test_routerbench_rejects_prompt_not_a_list(tmp_path: Path) -> None:
    _write_routerbench(tmp_path)
    row = _routerbench_row("arc.1", ["x"], "1.0", "0.001")
    row["prompt"] = "plain text"
    _write_csv(tmp_path / ROUTERBENCH_FILES[0], [row])

    with pytest.raises(DatasetError, match="sample arc.1: prompt is not a Python list"):
        list(routerbench_records(tmp_path))


def _write_gsm8k(data: Path, second_solution_question: str = "How many?") -> Path:
    folder = data / "gsm8k-openai"
    questions = ["What is 1+1?", "How many?"]
    _write_jsonl(folder / "grade_school_math/data/test.jsonl",
                 [{"question": q, "answer": "#### 2"} for q in questions])
    solved = [
        {"question": questions[0], "ground_truth": "2",
         "6b_finetuning": {"is_correct": True, "solution": "2"},
         "6b_verification": {"is_correct": False, "solution": "3"},
         "175b_finetuning": {"is_correct": True, "solution": "2"},
         "175b_verification": {"is_correct": True, "solution": "2"}},
        {"question": second_solution_question, "ground_truth": "4",
         "6b_finetuning": {"is_correct": False, "solution": "1"},
         "6b_verification": {"is_correct": False, "solution": "1"},
         "175b_finetuning": {"is_correct": False, "solution": "1"},
         "175b_verification": {"is_correct": True, "solution": "4"}},
    ]
    _write_jsonl(folder / "grade_school_math/data/example_model_solutions.jsonl", solved)
    return folder


def _write_routellm_gsm8k(data: Path) -> None:
    _write_csv(data / "routellm-evals/routellm/evals/gsm8k/gsm8k_responses.csv", [
        {"prompt": "How many?", "mistralai/Mixtral-8x7B-Instruct-v0.1": "False",
         "gpt-4-1106-preview": "True", "mistralai/Mixtral-8x7B-Instruct-v0.1_response": "1",
         "gpt-4-1106-preview_response": "4"},
    ])


def test_gsm8k_openai_joins_routellm_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERWISE_SHARED_DATA", str(tmp_path))
    folder = _write_gsm8k(tmp_path)
    _write_routellm_gsm8k(tmp_path)

    records = list(convert("gsm8k-openai", folder))

    assert [r["id"] for r in records] == ["gsm8k-openai/0", "gsm8k-openai/1"]
    assert records[1]["prompt"] == "How many?"
    assert list(records[1]["outcomes"]) == [
        "gpt3-6b-finetune", "gpt3-6b-verifier", "gpt3-175b-finetune", "gpt3-175b-verifier",
        "mixtral-8x7b-instruct", "gpt-4-1106-preview",
    ]
    assert records[1]["outcomes"]["gpt3-175b-verifier"] == {"quality": 1.0}
    assert records[1]["outcomes"]["mixtral-8x7b-instruct"] == {"quality": 0.0}
    assert records[1]["outcomes"]["gpt-4-1106-preview"] == {"quality": 1.0}
    assert "mixtral-8x7b-instruct" not in records[0]["outcomes"]


def test_gsm8k_openai_without_routellm_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIERWISE_SHARED_DATA", str(tmp_path))
    folder = _write_gsm8k(tmp_path)

    with caplog.at_level(logging.WARNING, logger="classifiers.datasets"):
        records = list(convert("gsm8k-openai", folder))

    assert len(records[1]["outcomes"]) == 4
    assert "four GPT-3 systems only" in caplog.text


def test_gsm8k_openai_rejects_misaligned_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERWISE_SHARED_DATA", str(tmp_path))
    folder = _write_gsm8k(tmp_path, second_solution_question="Another question?")

    with pytest.raises(DatasetError, match="line 2 has another question"):
        list(convert("gsm8k-openai", folder))


def _arena_result(index: str, score: float | None, cost: float | None) -> dict[str, Any]:
    return {
        "global_index": index, "question": f"Question {index}", "llm_selected": "m",
        "generated_answer": "x", "success": True,
        "token_usage": {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
        "evaluation_result": {"score": score, "metric": "mcq_accuracy", "inference_cost": cost},
    }


def _write_routerarena(folder: Path) -> None:
    _write_jsonl(folder / "cached_results/a-model.jsonl", [
        _arena_result("MMLUPro_law_12", 1.0, 0.002),
        _arena_result("GSM8K_3", None, None),
    ])
    _write_jsonl(folder / "cached_results/b-model.jsonl", [
        _arena_result("GSM8K_3", 0.25, None),
        _arena_result("MMLUPro_law_12", 0.0, 0.001),
        _arena_result("AIME_7", 1.0, 0.004),
    ])
    prices = {"b-model": {"input_token_price_per_million": 1.0,
                          "output_token_price_per_million": 5.0}}
    (folder / "model_cost").mkdir()
    (folder / "model_cost/cost.json").write_text(json.dumps(prices), encoding="utf-8")


def test_routerarena_reads_cached_results(tmp_path: Path) -> None:
    _write_routerarena(tmp_path)

    records = list(convert("routerarena", tmp_path))

    assert [r["id"] for r in records] == [
        "routerarena/MMLUPro_law_12", "routerarena/GSM8K_3", "routerarena/AIME_7"]
    assert records[0]["source"] == "routerarena/MMLUPro_law"
    assert list(records[0]["outcomes"]) == ["a-model", "b-model"]
    assert records[0]["outcomes"]["a-model"] == {
        "quality": 1.0, "cost_usd": 0.002, "tokens_in": 100.0, "tokens_out": 20.0}
    # a-model has no score for GSM8K_3; b-model has no recorded cost, so it is priced.
    assert list(records[1]["outcomes"]) == ["b-model"]
    assert records[1]["outcomes"]["b-model"]["cost_usd"] == pytest.approx(0.0002)
    assert list(records[2]["outcomes"]) == ["b-model"]


def test_routerarena_prefers_published_files(tmp_path: Path) -> None:
    _write_routerarena(tmp_path)
    _write_csv(tmp_path / "tidy/routerarena.csv", [
        {"global_index": "X_1", "source": "X", "metric": "exact_match", "question": "tidy",
         "m|score": "1.0", "m|input_tokens": "1", "m|output_tokens": "1", "m|cost_usd": "0.1"},
    ])

    records = list(convert("routerarena", tmp_path))

    assert records[0]["id"] == "routerarena/MMLUPro_law_12"


def test_routerarena_falls_back_to_tidy(tmp_path: Path) -> None:
    _write_csv(tmp_path / "tidy/routerarena.csv", [
        {"global_index": "X_1", "source": "X", "metric": "exact_match", "question": "tidy",
         "m|score": "1.0", "m|input_tokens": "1", "m|output_tokens": "2", "m|cost_usd": "0.1"},
    ])

    records = list(convert("routerarena", tmp_path))

    assert records == [{
        "id": "routerarena/X_1", "prompt": "tidy", "source": "routerarena/X",
        "outcomes": {"m": {"quality": 1.0, "cost_usd": 0.1, "tokens_in": 1.0, "tokens_out": 2.0}},
    }]


def test_routerarena_rejects_result_without_question(tmp_path: Path) -> None:
    _write_routerarena(tmp_path)
    result = _arena_result("AIME_8", 1.0, 0.001)
    del result["question"]
    _write_jsonl(tmp_path / "cached_results/a-model.jsonl", [result])

    with pytest.raises(DatasetError, match="record 1 has no question field"):
        list(convert("routerarena", tmp_path))


def _alpaca_annotation(instruction: str, dataset: str, model: str,
                       preference: float | None) -> dict[str, Any]:
    return {
        "instruction": instruction, "output_1": "baseline answer",
        "generator_1": "gpt4_1106_preview", "dataset": dataset, "output_2": "model answer",
        "generator_2": model, "annotator": "weighted_alpaca_eval_gpt4_turbo",
        "preference": preference, "raw_completion": "{}", "price_per_example": 0.01,
        "time_per_example": 0.2,
    }


def _write_alpacaeval2(folder: Path, preference: float | None = 1.25) -> None:
    annotations = {
        "model-a": [_alpaca_annotation("Write a haiku.", "vicuna", "model-a", 1.9999999),
                    _alpaca_annotation("Name a river.", "oasst", "model-a", preference)],
        "model-b": [_alpaca_annotation("Name a river.", "oasst", "model-b", 1.0),
                    _alpaca_annotation("Sum 2 and 3.", "selfinstruct", "model-b", None)],
    }
    for model, items in annotations.items():
        path = folder / f"results/{model}/weighted_alpaca_eval_gpt4_turbo/annotations.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(items, indent=2), encoding="utf-8")


def test_alpacaeval2_reads_annotations(tmp_path: Path) -> None:
    _write_alpacaeval2(tmp_path)

    records = list(convert("alpacaeval2", tmp_path))

    assert [r["prompt"] for r in records] == ["Write a haiku.", "Name a river.", "Sum 2 and 3."]
    assert [r["id"] for r in records] == ["alpacaeval2/0", "alpacaeval2/1", "alpacaeval2/2"]
    assert [r["source"] for r in records] == [
        "alpacaeval2/vicuna", "alpacaeval2/oasst", "alpacaeval2/selfinstruct"]
    # The win probability is rounded to 6 decimals, and the baseline key of the pair gets
    # 1 minus it.
    assert records[0]["outcomes"] == {
        "model-a": {"quality": 1.0}, "gpt4_1106_preview-vs-model-a": {"quality": 0.0}}
    assert records[1]["outcomes"] == {
        "model-a": {"quality": 0.25}, "gpt4_1106_preview-vs-model-a": {"quality": 0.75},
        "model-b": {"quality": 0.0}, "gpt4_1106_preview-vs-model-b": {"quality": 1.0}}
    # A comparison without a preference adds no outcome.
    assert records[2]["outcomes"] == {}


def test_alpacaeval2_prefers_published_files(tmp_path: Path) -> None:
    _write_alpacaeval2(tmp_path)
    _write_jsonl(tmp_path / "tidy/instructions.jsonl",
                 [{"idx": 0, "instruction": "tidy", "dataset": "koala"}])
    _write_csv(tmp_path / "tidy/winprob.csv", [{"idx": "0", "dataset": "koala", "m": "0.5"}])

    records = list(convert("alpacaeval2", tmp_path))

    assert records[0]["prompt"] == "Write a haiku."


def test_alpacaeval2_falls_back_to_tidy(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "tidy/instructions.jsonl", [
        {"idx": 0, "instruction": "Name a river.", "dataset": "oasst"},
        {"idx": 1, "instruction": "Sum 2 and 3.", "dataset": "selfinstruct"},
    ])
    _write_csv(tmp_path / "tidy/winprob.csv", [
        {"idx": "0", "dataset": "oasst", "model-a": "0.25", "model-b": "0.0"},
        {"idx": "1", "dataset": "selfinstruct", "model-a": "0.5", "model-b": ""},
    ])

    records = list(convert("alpacaeval2", tmp_path))

    assert records == [
        {"id": "alpacaeval2/0", "prompt": "Name a river.", "source": "alpacaeval2/oasst",
         "outcomes": {"model-a": {"quality": 0.25},
                      "gpt4_1106_preview-vs-model-a": {"quality": 0.75},
                      "model-b": {"quality": 0.0},
                      "gpt4_1106_preview-vs-model-b": {"quality": 1.0}}},
        {"id": "alpacaeval2/1", "prompt": "Sum 2 and 3.", "source": "alpacaeval2/selfinstruct",
         "outcomes": {"model-a": {"quality": 0.5},
                      "gpt4_1106_preview-vs-model-a": {"quality": 0.5}}},
    ]


def test_alpacaeval2_rejects_preference_out_of_range(tmp_path: Path) -> None:
    _write_alpacaeval2(tmp_path, preference=2.5)

    with pytest.raises(DatasetError, match="record 2: preference 2.5 is not a number in"):
        list(convert("alpacaeval2", tmp_path))


def test_alpacaeval2_rejects_annotation_without_instruction(tmp_path: Path) -> None:
    _write_alpacaeval2(tmp_path)
    path = tmp_path / "results/model-b/weighted_alpaca_eval_gpt4_turbo/annotations.json"
    items = json.loads(path.read_text(encoding="utf-8"))
    del items[0]["instruction"]
    path.write_text(json.dumps(items), encoding="utf-8")

    with pytest.raises(DatasetError, match="record 1 has no instruction field"):
        list(convert("alpacaeval2", tmp_path))


def test_import_alpacaeval2_prints_license_warning(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from classifiers.cli import app

    _write_alpacaeval2(tmp_path / "source")
    out = tmp_path / "alpacaeval2.jsonl"

    result = CliRunner().invoke(app, ["import-data", "alpacaeval2", "--source",
                                      str(tmp_path / "source"), "--out", str(out)])

    assert result.exit_code == 0, result.output
    message = " ".join(result.output.split())
    assert "wrote 3 records" in message
    assert "warning: alpacaeval2:" in message
    assert "CC BY-NC 4.0" in message
    assert "evaluate routing only" in message
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3


@pytest.mark.parametrize("name", list(CONVERTERS))
def test_missing_files_error_names_source(name: str, tmp_path: Path) -> None:
    data_set = CONVERTERS[name]

    with pytest.raises(DatasetError) as caught:
        list(convert(name, tmp_path))

    message = str(caught.value)
    assert f"{tmp_path}: missing " in message
    assert data_set.repository in message
    for relative in data_set.files:
        assert relative in message
    assert "TIERWISE_SHARED_DATA" in message
    assert "--source" in message


def test_partial_folder_error_lists_only_missing(tmp_path: Path) -> None:
    data_set = CONVERTERS["routerbench"]
    present, *absent = data_set.files
    (tmp_path / present).parent.mkdir(parents=True)
    (tmp_path / present).write_text("sample_id,prompt\n", encoding="utf-8")

    with pytest.raises(DatasetError) as caught:
        list(convert("routerbench", tmp_path))

    message = str(caught.value)
    assert message.startswith(f"{tmp_path}: missing {', '.join(absent)}. Copy them from ")
    assert present not in message
    assert "TIERWISE_SHARED_DATA" not in message


def test_missing_folder_error_names_repository(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        convert("gsm8k-openai", tmp_path / "absent")

    message = str(caught.value)
    assert "folder not found" in message
    assert "https://github.com/openai/grade-school-math" in message
    assert "grade_school_math/data/test.jsonl" in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"not json", ":2: the line is not valid JSON (Expecting value at column 1)"),
        (b"[1]", ":2: the line is not a JSON object"),
        (b'{"question": "\xff"}', ":2: the line is not UTF-8 text"),
    ],
)
def test_import_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: bytes, expected: str
) -> None:
    from typer.testing import CliRunner

    from classifiers.cli import app

    monkeypatch.setenv("TIERWISE_SHARED_DATA", str(tmp_path))
    folder = _write_gsm8k(tmp_path)
    test_file = folder / "grade_school_math/data/test.jsonl"
    test_file.write_bytes(test_file.read_bytes().splitlines()[0] + b"\n" + line + b"\n")

    result = CliRunner().invoke(app, ["import-data", "gsm8k-openai", "--source", str(folder),
                                      "--out", str(tmp_path / "out.jsonl")])

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"error: {test_file}{expected}" in " ".join(result.output.split())


def test_import_data_default_out_is_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from classifiers.cli import app

    monkeypatch.setenv("TIERWISE_SHARED_DATA", str(tmp_path))
    folder = _write_gsm8k(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    result = CliRunner().invoke(app, ["import-data", "gsm8k-openai", "--source", str(folder)])

    assert result.exit_code == 0, result.output
    assert (work / "var" / "data" / "gsm8k-openai.jsonl").is_file()
