"""`classifier train --compare-with` and `--require-no-worse` on small generated files.

The generated prompts show their difficulty in their words: a "formal proof" defeats every
tier but the last.  A night of bad feedback is simulated by training rows whose labels are
coin flips, while the rows of the "test" split keep the true labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from classifiers import load_artifact
from classifiers.artifact import DEFAULT_DIR
from classifiers.cli import app

runner = CliRunner()
THREE_TIERS = ("edge", "mid", "frontier")


def _write_rows(path: Path, tiers: tuple[str, ...], *, rows: int = 240, seed: int = 3,
                train_labels: str = "true", with_cost: bool = True) -> Path:
    """Write labelled rows; every fourth row is in the "test" split with true labels.

    ``train_labels`` sets the labels of the other rows: "true", "random" (coin flips) or
    "inverted" (a proof is easy and a greeting hard).
    """
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(rows):
        hard = rng.random() < 0.4
        is_test = i % 4 == 0
        text = f"write a formal proof about lemma {i}" if hard else f"greet user number {i}"
        outcomes = {}
        for rank, tier in enumerate(tiers):
            last = rank == len(tiers) - 1
            if last:
                # Every ninth prompt defeats even the last tier, so that it has two classes.
                adequate = i % 9 != 0
            elif is_test or train_labels == "true":
                adequate = not hard
            elif train_labels == "inverted":
                adequate = hard
            else:
                adequate = bool(rng.random() < 0.5)
            outcomes[tier] = {"quality": float(adequate)}
            if with_cost:
                outcomes[tier]["cost_usd"] = 10.0 ** rank / 1000
        record = {"id": f"p{i}", "prompt": text, "outcomes": outcomes,
                  "split": "test" if is_test else "train"}
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _train(tmp_path: Path, name: str, data: Path, tiers: tuple[str, ...], *extra: str):
    return runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / name),
                               "--tiers", ",".join(tiers), "--n-features", "1024",
                               "--version", name, *extra])


def _one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture
def previous_two(tmp_path: Path) -> Path:
    """A two-tier model trained on true labels."""
    data = _write_rows(tmp_path / "previous.jsonl", ("weak", "strong"), seed=11)
    result = _train(tmp_path, "previous", data, ("weak", "strong"))
    assert result.exit_code == 0, result.output
    return tmp_path / "previous"


def test_better_compared_model_gates_two_tiers(tmp_path: Path, previous_two: Path) -> None:
    data = _write_rows(tmp_path / "night.jsonl", ("weak", "strong"), train_labels="random")

    result = _train(tmp_path, "night", data, ("weak", "strong"),
                    "--compare-with", str(previous_two), "--require-no-worse")

    assert result.exit_code == 4, result.output
    message = _one_line(result.output)
    assert "new night" in message
    assert "compared previous" in message
    assert "held-out APGR weak vs strong: new night" in message
    assert "is lower than the compared model's by" in message
    assert "more than the tolerance 0.01" in message
    assert "not written" in message
    assert not (tmp_path / "night").exists()


def test_side_by_side_names_both_versions(tmp_path: Path) -> None:
    previous_data = _write_rows(tmp_path / "p.jsonl", ("weak", "strong"), seed=11,
                                train_labels="inverted")
    previous = _train(tmp_path, "previous", previous_data, ("weak", "strong"))
    assert previous.exit_code == 0, previous.output
    data = _write_rows(tmp_path / "night.jsonl", ("weak", "strong"))

    result = _train(tmp_path, "night", data, ("weak", "strong"),
                    "--compare-with", str(tmp_path / "previous"), "--require-no-worse")

    assert result.exit_code == 0, result.output
    message = _one_line(result.output)
    for router in ("new night", "compared previous", "prompt-length", "random", "oracle"):
        assert router in message
    assert "CPT(50%)" in message
    assert "CPT(80%)" in message
    assert "no worse than the compared one within the tolerance 0.01" in message
    stored = load_artifact(tmp_path / "night").metadata["comparison"]
    assert stored["compared_version"] == "previous"
    assert stored["new_version"] == "night"
    assert stored["passed"] is True
    assert stored["metric"] == "APGR weak vs strong"
    assert "curve" not in stored["result"]["routellm"]["new night"]
    card = (tmp_path / "night" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Comparison with the previous model" in card
    assert "| compared previous |" in card
    assert "| new night |" in card


def test_large_tolerance_lets_worse_model_through(tmp_path: Path, previous_two: Path) -> None:
    data = _write_rows(tmp_path / "night.jsonl", ("weak", "strong"), train_labels="random")

    result = _train(tmp_path, "night", data, ("weak", "strong"), "--compare-with",
                    str(previous_two), "--require-no-worse", "--tolerance", "1.0")

    assert result.exit_code == 0, result.output
    stored = load_artifact(tmp_path / "night").metadata["comparison"]
    assert stored["new"] < stored["compared"]
    assert stored["tolerance"] == 1.0


def test_compare_without_gate_writes_worse_model(tmp_path: Path, previous_two: Path) -> None:
    data = _write_rows(tmp_path / "night.jsonl", ("weak", "strong"), train_labels="random")

    result = _train(tmp_path, "night", data, ("weak", "strong"),
                    "--compare-with", str(previous_two))

    assert result.exit_code == 0, result.output
    stored = load_artifact(tmp_path / "night").metadata["comparison"]
    assert stored["passed"] is None
    assert stored["new"] < stored["compared"]


def test_three_tiers_gate_on_aiq(tmp_path: Path) -> None:
    previous = _train(tmp_path, "previous", _write_rows(tmp_path / "p.jsonl", THREE_TIERS, seed=11),
                      THREE_TIERS)
    assert previous.exit_code == 0, previous.output
    data = _write_rows(tmp_path / "night.jsonl", THREE_TIERS, train_labels="random")

    result = _train(tmp_path, "night", data, THREE_TIERS,
                    "--compare-with", str(tmp_path / "previous"), "--require-no-worse")

    assert result.exit_code == 4, result.output
    message = _one_line(result.output)
    assert "held-out AIQ: new night" in message
    assert "cost for 95%" in message
    assert "cost for 100%" in message
    assert "always-frontier" in message
    assert not (tmp_path / "night").exists()


def test_three_tiers_without_cost_use_mid_apgr(tmp_path: Path) -> None:
    previous_data = _write_rows(tmp_path / "p.jsonl", THREE_TIERS, seed=11, with_cost=False)
    previous = _train(tmp_path, "previous", previous_data, THREE_TIERS)
    assert previous.exit_code == 0, previous.output
    data = _write_rows(tmp_path / "night.jsonl", THREE_TIERS, train_labels="inverted",
                       with_cost=False)

    result = _train(tmp_path, "night", data, THREE_TIERS,
                    "--compare-with", str(tmp_path / "previous"), "--require-no-worse")

    assert result.exit_code == 4, result.output
    message = _one_line(result.output)
    assert "RouteLLM metrics, weak=mid strong=frontier" in message
    assert "held-out APGR mid vs frontier" in message


def test_better_new_model_passes_three_tiers(tmp_path: Path) -> None:
    previous_data = _write_rows(tmp_path / "p.jsonl", THREE_TIERS, train_labels="inverted")
    previous = _train(tmp_path, "previous", previous_data, THREE_TIERS)
    assert previous.exit_code == 0, previous.output
    data = _write_rows(tmp_path / "night.jsonl", THREE_TIERS)

    result = _train(tmp_path, "night", data, THREE_TIERS,
                    "--compare-with", str(tmp_path / "previous"), "--require-no-worse")

    assert result.exit_code == 0, result.output
    stored = load_artifact(tmp_path / "night").metadata["comparison"]
    assert stored["metric"] == "AIQ"
    assert stored["new"] > stored["compared"] + 0.01
    card = (tmp_path / "night" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Held-out AIQ:" in card
    assert "and it was" in card


def test_compare_needs_held_out_rows(tmp_path: Path, previous_two: Path) -> None:
    data = _write_rows(tmp_path / "night.jsonl", ("weak", "strong"))
    rows = [json.loads(line) | {"split": None} for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    result = _train(tmp_path, "night", data, ("weak", "strong"),
                    "--compare-with", str(previous_two))

    assert result.exit_code == 2
    message = _one_line(result.output)
    assert "--compare-with needs at least 5 held-out rows, got 0" in message
    assert "pass --holdout 0.2" in message
    assert not (tmp_path / "night").exists()


def test_compare_holdout_too_few_rows(tmp_path: Path, previous_two: Path) -> None:
    data = _write_rows(tmp_path / "night.jsonl", ("weak", "strong"), rows=12)
    rows = [json.loads(line) | {"split": None} for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    result = _train(tmp_path, "night", data, ("weak", "strong"),
                    "--compare-with", str(previous_two), "--holdout", "0.2")

    assert result.exit_code == 2
    message = _one_line(result.output)
    assert "--compare-with needs at least 5 held-out rows, but --holdout 0.2 held out" in message
    assert "add labelled rows with --data" in message
    assert "pass --holdout 0.2" not in message
    assert not (tmp_path / "night").exists()


def test_holdout_option_gives_held_out_rows(tmp_path: Path, previous_two: Path) -> None:
    data = _write_rows(tmp_path / "night.jsonl", ("weak", "strong"))
    rows = [json.loads(line) | {"split": None} for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    result = _train(tmp_path, "night", data, ("weak", "strong"),
                    "--compare-with", str(previous_two), "--holdout", "0.2")

    assert result.exit_code == 0, result.output
    stored = load_artifact(tmp_path / "night").metadata["comparison"]
    held_out = load_artifact(tmp_path / "night").metadata["training"]["rows"]["test"]
    assert stored["result"]["rows_scored"] == sum(held_out.values())


def test_require_no_worse_needs_compare_with(tmp_path: Path) -> None:
    data = _write_rows(tmp_path / "night.jsonl", ("weak", "strong"), rows=40)

    result = _train(tmp_path, "night", data, ("weak", "strong"), "--require-no-worse")

    assert result.exit_code == 2
    assert "--require-no-worse needs --compare-with" in _one_line(result.output)


def test_compare_with_missing_artifact(tmp_path: Path) -> None:
    data = _write_rows(tmp_path / "night.jsonl", ("weak", "strong"), rows=40)

    result = _train(tmp_path, "night", data, ("weak", "strong"),
                    "--compare-with", str(tmp_path / "none"))

    assert result.exit_code == 2
    message = _one_line(result.output)
    assert f"--compare-with {tmp_path / 'none'}" in message
    assert "file not found" in message


def test_compare_with_bundled_checks_tiers(tmp_path: Path) -> None:
    data = _write_rows(tmp_path / "night.jsonl", ("weak", "strong"), rows=40)

    result = _train(tmp_path, "night", data, ("weak", "strong"), "--compare-with", "bundled")

    assert result.exit_code == 2
    message = _one_line(result.output)
    assert "has no tier 'weak'" in message
    assert "its tiers are edge, mid, frontier" in message


def test_compare_with_bundled_names_its_version(tmp_path: Path) -> None:
    data = _write_rows(tmp_path / "night.jsonl", THREE_TIERS, rows=80)

    result = _train(tmp_path, "night", data, THREE_TIERS, "--compare-with", "bundled")

    assert result.exit_code == 0, result.output
    bundled_version = load_artifact(DEFAULT_DIR).version
    assert f"compared {bundled_version}" in _one_line(result.output)
    stored = load_artifact(tmp_path / "night").metadata["comparison"]
    assert stored["compared_with"] == "bundled"
    assert "from the bundled model" in (tmp_path / "night" / "MODEL_CARD.md").read_text()


def test_compare_needs_pair_labels(tmp_path: Path) -> None:
    previous = _train(tmp_path, "previous", _write_rows(tmp_path / "p.jsonl", THREE_TIERS, seed=11),
                      THREE_TIERS)
    assert previous.exit_code == 0, previous.output
    data = _write_rows(tmp_path / "night.jsonl", THREE_TIERS)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    # Held-out rows labelled only for the tier that answered, as feedback labels them.
    for row in rows:
        if row["split"] == "test":
            row["outcomes"] = {"edge": {"quality": row["outcomes"]["edge"]["quality"]}}
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    result = _train(tmp_path, "night", data, THREE_TIERS,
                    "--compare-with", str(tmp_path / "previous"), "--require-no-worse")

    assert result.exit_code == 2
    message = _one_line(result.output)
    assert "cannot compare the models on the held-out rows" in message
    assert "none is labelled for both mid and frontier" in message
    assert not (tmp_path / "night").exists()


def _with_source(path: Path, source: str) -> Path:
    lines = [json.loads(line) | {"source": source} for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_warns_when_compared_model_saw_heldout_sets(tmp_path: Path) -> None:
    # The night's held-out rows come from the set the compared model was trained on.
    seen = _with_source(_write_rows(tmp_path / "seen.jsonl", ("weak", "strong"), seed=11), "gsm8k")
    assert _train(tmp_path, "previous", seen, ("weak", "strong")).exit_code == 0
    data = _with_source(_write_rows(tmp_path / "night.jsonl", ("weak", "strong")), "gsm8k")

    result = _train(tmp_path, "night", data, ("weak", "strong"),
                    "--compare-with", str(tmp_path / "previous"))

    assert result.exit_code == 0, result.output
    message = _one_line(result.output)
    assert "warning: the compared model was trained on the sets of some held-out rows" in message
    assert "gsm8k (60 rows)" in message
    assert load_artifact(tmp_path / "night").metadata["comparison"]["overlap"] == {"gsm8k": 60}


def test_warns_for_heldout_subsets_of_seen_set(tmp_path: Path) -> None:
    # import-data writes sources such as routellm-mmlu/anatomy, and model.json counts the
    # input rows by the part before the slash.
    seen = _with_source(_write_rows(tmp_path / "seen.jsonl", ("weak", "strong"), seed=11),
                        "mmlu/anatomy")
    assert _train(tmp_path, "previous", seen, ("weak", "strong")).exit_code == 0
    data = _with_source(_write_rows(tmp_path / "night.jsonl", ("weak", "strong")), "mmlu/virology")

    result = _train(tmp_path, "night", data, ("weak", "strong"),
                    "--compare-with", str(tmp_path / "previous"))

    assert result.exit_code == 0, result.output
    message = _one_line(result.output)
    assert "warning: the compared model was trained on the sets of some held-out rows" in message
    assert "mmlu (60 rows)" in message
    assert load_artifact(tmp_path / "night").metadata["comparison"]["overlap"] == {"mmlu": 60}


def test_no_warning_for_unseen_heldout_sets(tmp_path: Path, previous_two: Path) -> None:
    data = _write_rows(tmp_path / "night.jsonl", ("weak", "strong"))

    result = _train(tmp_path, "night", data, ("weak", "strong"),
                    "--compare-with", str(previous_two))

    assert result.exit_code == 0, result.output
    assert "warning: the compared model was trained" not in _one_line(result.output)
