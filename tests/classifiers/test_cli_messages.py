"""What `classifier train` and `evaluate` print when something is missing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from classifiers import report
from classifiers.cli import app, calibrate_app, evaluate_app
from classifiers.metrics import routellm_metrics

runner = CliRunner()
DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"


def _labelled_file(path: Path, rows: int = 40) -> Path:
    """Rows where edge fails every third prompt, mid every fifth, and frontier never."""
    lines = []
    for i in range(rows):
        outcomes = {
            "edge": {"quality": 0.0 if i % 3 == 0 else 1.0},
            "mid": {"quality": 0.0 if i % 5 == 0 else 1.0},
            "frontier": {"quality": 1.0},
        }
        prompt = f"Question {i}: " + "explain this in detail " * (i % 7)
        lines.append(json.dumps({"id": f"q{i}", "prompt": prompt, "outcomes": outcomes}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_one_class_tier_suggests_tiers(tmp_path: Path) -> None:
    data = _labelled_file(tmp_path / "mine.jsonl")
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "model")])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "tier 'frontier' has 40 labelled rows, all adequate" in message
    assert "Train the other tiers with --tiers (leave frontier out)" in message


def _model_keyed_file(path: Path) -> Path:
    """Write the rows of ``_labelled_file`` with outcomes keyed by model names, as in public data."""
    models = {"edge": "small-7b", "mid": "medium-70b", "frontier": "large-v2"}
    rows = [json.loads(line) for line in _labelled_file(path).read_text().splitlines()]
    for row in rows:
        row["outcomes"] = {models[tier]: outcome for tier, outcome in row["outcomes"].items()}
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_train_without_tier_map_names_models(tmp_path: Path) -> None:
    data = _model_keyed_file(tmp_path / "models.jsonl")
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "model")])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "no record has an outcome for tier 'edge'" in message
    assert "only for large-v2, medium-70b, small-7b." in message
    assert "--tier-map TIER=MODEL" in message
    assert "train the other tiers with --tiers (leave edge out)" in message
    assert not (tmp_path / "model").exists()


def test_evaluate_misspelled_tier_map(tmp_path: Path) -> None:
    data = _model_keyed_file(tmp_path / "models.jsonl")
    result = runner.invoke(evaluate_app, ["--data", str(data), "--tier-map",
                                          "edge=small-7,mid=medium-70b,frontier=large-v2"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "no record has an outcome for tier 'edge'" in message
    assert "only for frontier, mid." in message
    assert "map a model that the data contains to edge" in message


def test_calibrate_without_tier_map_keeps_tiers(tmp_path: Path) -> None:
    data = _model_keyed_file(tmp_path / "models.jsonl")
    result = runner.invoke(calibrate_app, ["--data", str(data), "--target-quality", "0.9",
                                           "--policy", str(DEFAULT_POLICY)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "no record has an outcome for tier 'edge'" in message
    assert "map a model that the data contains to edge" in message
    # calibrate has no --tiers option, because it always sets the edge and mid thresholds.
    assert "--tiers" not in message


@pytest.mark.parametrize("holdout", ["1", "2", "-0.5"])
def test_train_rejects_holdout_out_of_range(tmp_path: Path, holdout: str) -> None:
    # 1 and above held out every row, which ended in a misleading "no record has an outcome"
    # error, and a negative value held out no row and printed nothing about it.
    data = _labelled_file(tmp_path / "mine.jsonl")
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "model"),
                                 "--holdout", holdout])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert f"invalid --holdout {holdout}: give the fraction of rows to hold out" in message
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--target-quality", "0", "invalid --target-quality 0: give a share of always-frontier"),
        ("--target-quality", "-1", "invalid --target-quality -1: give a share of always-frontier"),
        ("--budget-per-1k", "-1", "invalid --budget-per-1k -1: give 0 or more USD per 1,000 requests"),
    ],
)
def test_calibrate_rejects_invalid_goal(tmp_path: Path, option: str, value: str, expected: str) -> None:
    data = _labelled_file(tmp_path / "mine.jsonl")
    out = tmp_path / "policy.yaml"
    result = runner.invoke(calibrate_app, ["--data", str(data), option, value,
                                           "--policy", str(DEFAULT_POLICY), "--out", str(out)])
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())
    assert not out.exists()


def test_no_holdout_says_so(tmp_path: Path) -> None:
    data = _labelled_file(tmp_path / "mine.jsonl")
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "model"),
                                 "--tiers", "edge,mid"])
    assert result.exit_code == 0, result.output
    message = " ".join(result.output.split())
    assert "held none out, so there are no held-out metrics; pass --holdout 0.2" in message
    assert "held-out metrics, model" not in message


def test_plot_checks_matplotlib_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    monkeypatch.setattr(report, "print_evaluation", lambda *a: pytest.fail("evaluation ran"))
    result = runner.invoke(evaluate_app, ["--data", str(tmp_path / "absent.jsonl"),
                                          "--plot", str(tmp_path / "curves.png")])
    assert result.exit_code == 2
    assert "plotting needs matplotlib: pip install -e '.[plot]'" in " ".join(result.output.split())


def test_pgr_at_half_strong_calls() -> None:
    weak = np.array([0.0, 0.0, 1.0, 1.0])
    strong = np.array([1.0, 1.0, 1.0, 1.0])
    # A perfect router sends the two prompts the weak model fails to the strong one first.
    perfect = routellm_metrics(np.array([0.0, 0.0, 1.0, 1.0]), weak, strong)
    worst = routellm_metrics(np.array([1.0, 1.0, 0.0, 0.0]), weak, strong)
    assert perfect["pgr50"] == pytest.approx(1.0)
    assert worst["pgr50"] == pytest.approx(0.0)


def _with_bad_line(path: Path, line: bytes) -> Path:
    """Write the first row of ``_labelled_file`` and then ``line``, as line 2."""
    first = _labelled_file(path).read_bytes().splitlines()[0]
    path.write_bytes(first + b"\n" + line + b"\n")
    return path


def _data_commands(data: Path, tmp_path: Path) -> dict[str, tuple[object, list[str]]]:
    return {
        "train": (app, ["train", "--data", str(data), "--out", str(tmp_path / "model")]),
        "evaluate": (evaluate_app, ["--data", str(data)]),
        "calibrate": (calibrate_app, ["--data", str(data), "--target-quality", "0.9",
                                      "--policy", str(DEFAULT_POLICY),
                                      "--out", str(tmp_path / "policy.yaml")]),
    }


@pytest.mark.parametrize("command", ["train", "evaluate", "calibrate"])
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"not json", "the line is not valid JSON (Expecting value at column 1)"),
        (b'{"prompt": "x"}', "the record lacks the field 'outcomes'"),
        (b'{"prompt": "x", "outcomes": {"edge": {}}}', "the outcome 'edge' lacks the field 'quality'"),
        (b'{"prompt": "x\xff"}', "the line is not UTF-8 text"),
    ],
)
def test_data_commands_name_file_and_line(
    tmp_path: Path, command: str, line: bytes, expected: str
) -> None:
    data = _with_bad_line(tmp_path / "broken.jsonl", line)
    typer_app, arguments = _data_commands(data, tmp_path)[command]

    result = runner.invoke(typer_app, arguments)  # type: ignore[arg-type]

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"error: {data}:2: {expected}" in " ".join(result.output.split())
    assert not (tmp_path / "model").exists()


def test_train_names_invalid_evaluation_file(tmp_path: Path) -> None:
    data = _labelled_file(tmp_path / "mine.jsonl")
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text("not json\n", encoding="utf-8")

    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "model"),
                                 "--tiers", "edge,mid", "--evaluation", str(evaluation)])

    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert (f"error: --evaluation {evaluation}: not valid JSON (Expecting value at line 1, "
            "column 1)") in message
    assert not (tmp_path / "model").exists()
