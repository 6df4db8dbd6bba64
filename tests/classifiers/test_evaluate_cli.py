"""The evaluate and train commands on small generated files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from classifiers import load_artifact
from classifiers.cli import app, evaluate_app
from classifiers.report import print_evaluation

runner = CliRunner()


def _write_generated(path: Path, tiers: tuple[str, ...], rows: int = 200) -> None:
    """Write prompts whose difficulty shows in their words: 'proof' beats cheap tiers."""
    rng = np.random.default_rng(7)
    with path.open("w") as handle:
        for i in range(rows):
            hard = rng.random() < 0.4
            text = f"write a formal proof about lemma {i}" if hard else f"greet user number {i}"
            outcomes = {}
            for rank, tier in enumerate(tiers):
                strong_enough = rank == len(tiers) - 1 or not hard
                quality = float(strong_enough if rng.random() < 0.9 else not strong_enough)
                outcomes[tier] = {"quality": quality, "cost_usd": 10.0 ** rank / 1000}
            record = {"id": str(i), "prompt": text, "outcomes": outcomes}
            handle.write(json.dumps(record) + "\n")


def test_evaluate_two_tiers_reports_routellm(tmp_path: Path) -> None:
    data = tmp_path / "two.jsonl"
    _write_generated(data, ("weak", "strong"))
    out = tmp_path / "result.json"
    result = runner.invoke(evaluate_app, ["--data", str(data), "--tiers", "weak,strong",
                                          "--folds", "3", "--seed", "5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "seed: 5" in result.output
    metrics = json.loads(out.read_text())
    assert metrics["mode"] == "3-fold"
    assert metrics["rows_scored"] == 200
    table = metrics["routellm"]
    assert table["random"]["apgr"] == pytest.approx(0.5)
    assert table["classifier"]["apgr"] > 0.7
    assert table["oracle"]["apgr"] >= table["classifier"]["apgr"]
    assert "cost_quality" not in metrics


def test_evaluate_three_tiers_reports_cost_curve(tmp_path: Path) -> None:
    data = tmp_path / "three.jsonl"
    _write_generated(data, ("edge", "mid", "frontier"))
    out = tmp_path / "result.json"
    result = runner.invoke(evaluate_app, ["--data", str(data), "--folds", "4", "--json", str(out)])
    assert result.exit_code == 0, result.output
    table = json.loads(out.read_text())["cost_quality"]
    assert set(table) >= {"classifier", "prompt-length", "random", "oracle", "always-edge",
                          "always-mid", "always-frontier"}
    assert table["always-frontier"]["cost_share"] == pytest.approx(1.0)
    assert table["classifier"]["aiq"] > table["random"]["aiq"]
    assert table["classifier"]["cost_share_90"] < 0.5


def test_evaluate_rejects_bad_split_option(tmp_path: Path) -> None:
    result = runner.invoke(evaluate_app, ["--data", str(tmp_path / "x.jsonl"), "--split", "odd"])
    assert result.exit_code == 2
    assert "--split must be auto, own or kfold" in result.output


def test_evaluate_reports_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(evaluate_app, ["--data", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2
    assert "missing.jsonl: cannot open" in result.output


def test_train_writes_loadable_artifact(tmp_path: Path) -> None:
    data = tmp_path / "three.jsonl"
    _write_generated(data, ("edge", "mid", "frontier"))
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(out), "--holdout",
                                 "0.25", "--version", "2026.01.01-9", "--n-features", "1024"])
    assert result.exit_code == 0, result.output
    scorer = load_artifact(out)
    assert scorer.version == "2026.01.01-9"
    assert scorer.metadata["heldout_metrics"]["all"]["edge"]["auc"] > 0.7
    assert "## Held-out metrics" in (out / "MODEL_CARD.md").read_text()
    hard = scorer.score([{"role": "user", "content": "write a formal proof about lemma 3"}])
    easy = scorer.score([{"role": "user", "content": "greet user number 3"}])
    assert hard["edge"] < easy["edge"]


def test_train_rejects_bad_tier_map(tmp_path: Path) -> None:
    data = tmp_path / "three.jsonl"
    _write_generated(data, ("edge", "mid", "frontier"), rows=20)
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "m"),
                                 "--tier-map", "edge"])
    assert result.exit_code == 2
    assert "invalid tier map entry 'edge'" in result.output


def test_evaluate_extra_rows_train_but_are_not_scored(tmp_path: Path) -> None:
    data = tmp_path / "two.jsonl"
    extra = tmp_path / "extra.jsonl"
    _write_generated(data, ("weak", "strong"), rows=90)
    _write_generated(extra, ("weak", "strong"), rows=150)
    out = tmp_path / "result.json"
    result = runner.invoke(evaluate_app, ["--data", str(data), "--train-extra", str(extra),
                                          "--tiers", "weak,strong", "--folds", "3",
                                          "--json", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["rows_scored"] == 90
    # Both files number their prompts from 0, so the first 90 extra prompts repeat
    # evaluated ones and are dropped to keep them out of training.
    assert metrics["extra_train_rows"] == 60


def test_evaluate_writes_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plotting needs the optional matplotlib extra")
    data = tmp_path / "three.jsonl"
    _write_generated(data, ("edge", "mid", "frontier"), rows=80)
    plot = tmp_path / "curve.png"
    result = runner.invoke(evaluate_app, ["--data", str(data), "--folds", "2", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_evaluate_fixed_model_scores_all_rows(tmp_path: Path) -> None:
    train_data = tmp_path / "train.jsonl"
    data = tmp_path / "other.jsonl"
    _write_generated(train_data, ("edge", "mid", "frontier"))
    _write_generated(data, ("edge", "mid", "frontier"), rows=120)
    model = tmp_path / "model"
    trained = runner.invoke(app, ["train", "--data", str(train_data), "--out", str(model),
                                  "--version", "2026.01.01-7", "--n-features", "1024"])
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "result.json"

    result = runner.invoke(evaluate_app, ["--data", str(data), "--model", str(model),
                                          "--folds", "3", "--json", str(out)])

    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["mode"] == "all rows, fixed model 2026.01.01-7"
    assert metrics["rows_scored"] == 120
    assert metrics["routellm"]["classifier"]["apgr"] > 0.7
    assert "prompt-length" in metrics["cost_quality"]


def test_evaluate_bundled_model_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from classifiers import load_default

    data = tmp_path / "rows.jsonl"
    _write_generated(data, ("edge", "mid", "frontier"), rows=60)
    out = tmp_path / "result.json"
    # No folder named bundled exists here, so only the keyword can find the model.
    monkeypatch.chdir(tmp_path)

    result = runner.invoke(evaluate_app, ["--data", str(data), "--model", "bundled",
                                          "--split", "kfold", "--json", str(out)])

    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["mode"] == f"all rows, fixed model {load_default().version}"
    assert metrics["rows_scored"] == 60


def test_evaluate_fixed_model_rejects_unknown_tier(tmp_path: Path) -> None:
    data = tmp_path / "two.jsonl"
    _write_generated(data, ("weak", "strong"), rows=30)
    model = tmp_path / "model"
    trained = runner.invoke(app, ["train", "--data", str(data), "--out", str(model),
                                  "--tiers", "weak,strong", "--n-features", "1024"])
    assert trained.exit_code == 0, trained.output

    result = runner.invoke(evaluate_app, ["--data", str(data), "--model", str(model),
                                          "--tiers", "weak,frontier"])

    assert result.exit_code == 2
    assert "the model has no tier 'frontier'; its tiers are weak, strong" in result.output


def test_evaluate_fixed_model_reports_missing_artifact(tmp_path: Path) -> None:
    data = tmp_path / "two.jsonl"
    _write_generated(data, ("weak", "strong"), rows=30)

    result = runner.invoke(evaluate_app, ["--data", str(data), "--model", str(tmp_path / "none"),
                                          "--tiers", "weak,strong"])

    assert result.exit_code == 2
    assert "file not found" in result.output


def test_length_baseline_with_one_label_has_curve(tmp_path: Path) -> None:
    # The frontier tier answers every prompt well, so its length model trains on one label.
    data = tmp_path / "frontier-always.jsonl"
    rng = np.random.default_rng(3)
    with data.open("w") as handle:
        for i in range(90):
            hard = rng.random() < 0.4
            text = f"write a formal proof about lemma {i}" if hard else f"greet user {i}"
            outcomes = {tier: {"quality": float(tier == "frontier" or not hard),
                               "cost_usd": 10.0 ** rank / 1000}
                        for rank, tier in enumerate(("edge", "mid", "frontier"))}
            handle.write(json.dumps({"id": str(i), "prompt": text, "outcomes": outcomes}) + "\n")
    model = tmp_path / "model"
    _write_generated(tmp_path / "train.jsonl", ("edge", "mid", "frontier"))
    trained = runner.invoke(app, ["train", "--data", str(tmp_path / "train.jsonl"), "--out",
                                  str(model), "--n-features", "1024"])
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "result.json"

    result = runner.invoke(evaluate_app, ["--data", str(data), "--model", str(model),
                                          "--folds", "3", "--json", str(out)])

    assert result.exit_code == 0, result.output
    table = json.loads(out.read_text())["cost_quality"]
    assert len(table["prompt-length"]["curve"]) > 1
    assert table["prompt-length"]["aiq"] is not None
    assert table["prompt-length"]["aiq"] <= table["oracle"]["aiq"]


def test_evaluate_explains_missing_cost_table(tmp_path: Path) -> None:
    data, costless = tmp_path / "three.jsonl", tmp_path / "costless.jsonl"
    _write_generated(data, ("edge", "mid", "frontier"), rows=90)
    with costless.open("w") as handle:
        for line in data.read_text().splitlines():
            record = json.loads(line)
            del record["outcomes"]["mid"]["cost_usd"]
            handle.write(json.dumps(record) + "\n")
    out = tmp_path / "result.json"

    result = runner.invoke(evaluate_app, ["--data", str(costless), "--folds", "3",
                                          "--json", str(out)])

    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert "cost_quality" not in metrics
    expected = ("no cost-quality table: it needs rows with quality and cost_usd for every tier "
                "(edge, mid, frontier), and none of the 90 scored rows has them all "
                "(missing: cost_usd for mid in 90 rows).")
    assert metrics["cost_quality_skipped"].startswith(expected)
    assert expected in " ".join(result.output.split())


def test_cost_table_prints_dash_for_undefined_aiq() -> None:
    result = {"mode": "3-fold", "seed": 0, "rows_scored": 4, "tiers": ["edge", "mid", "frontier"],
              "cost_quality": {"rows": 4, "frontier_cost": 0.1, "frontier_quality": 1.0,
                               "prompt-length": {"aiq": None, "curve": [[0.1, 1.0]],
                                                 "cost_share_90": 1.0, "cost_share_95": 1.0,
                                                 "cost_share_100": 1.0}}}
    console = Console(record=True, width=160)

    print_evaluation(result, console)

    row = next(line for line in console.export_text().splitlines() if "prompt-length" in line)
    assert row.split("│")[2].strip() == "-"
