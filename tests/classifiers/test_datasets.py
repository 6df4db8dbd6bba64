"""Converters from the public data folders (skipped when the folders are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifiers.datasets import DatasetError, convert, routerbench_records, shared_data_dir

pytestmark = pytest.mark.shared_data


def _folder(name: str) -> Path:
    folder = shared_data_dir() / name
    if not folder.is_dir():
        pytest.skip(f"public data folder {folder} not found; set TIERWISE_SHARED_DATA")
    return folder


def test_routerbench_dedupes_on_sample_id(routerbench_dir: Path) -> None:
    records = list(routerbench_records(routerbench_dir))
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 3164
    assert {r["split"] for r in records} == {"train", "test"}
    first = records[0]
    assert first["outcomes"]["gpt-4-1106-preview"]["cost_usd"] > 0
    assert first["source"].startswith("routerbench/")


def test_routerbench_id_in_both_splits_is_test(routerbench_dir: Path) -> None:
    records = list(routerbench_records(routerbench_dir))
    test_count = sum(r["split"] == "test" for r in records)
    # 953 test rows in the CSV, 6 ids of which also appear in train and repeats within a file.
    assert 940 <= test_count <= 953


def test_routellm_converters_read_two_models() -> None:
    _folder("routellm-evals")
    mmlu = list(convert("routellm-mmlu"))
    gsm8k = list(convert("routellm-gsm8k"))
    assert len(gsm8k) == 1319
    assert 13_900 <= len(mmlu) <= 14_042
    assert set(gsm8k[0]["outcomes"]) == {"mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"}
    assert all(v["quality"] in (0.0, 1.0) for v in mmlu[0]["outcomes"].values())
    assert len({r["prompt"] for r in mmlu}) == len(mmlu)


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
