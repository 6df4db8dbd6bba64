"""One training run: read labelled files, hold out test rows, fit, measure, save.

``tierwise classifier train`` calls ``run_training``.  Rows whose ``split`` is
``"test"`` are held out.  When ``holdout`` is above zero, that fraction of the rows
without a split is held out too, drawn with the seed.  Held-out metrics are computed
per tier and per source group before the artifact is written.  With a compared model,
both models score the held-out rows (see ``classifiers.comparison``), and a tolerance
makes a worse new model end the run before anything is written.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.artifact import save_artifact
from classifiers.comparison import check_comparable, compare_models, without_curves
from classifiers.config import TrainingError
from classifiers.outcomes import (
    LabelledPrompt,
    conversation_key,
    imply_tiers,
    read_outcomes,
    source_group,
)
from classifiers.progress import Progress, silent
from classifiers.scorer import Scorer
from classifiers.training import TierModel, TrainConfig, fit_tier_model, label_matrix


@dataclass(slots=True)
class TrainRequest:
    """Inputs of one training run; ``command`` is recorded in the model card."""

    data: list[Path]
    out: Path
    tiers: list[str]
    tier_map: dict[str, str] = field(default_factory=dict)
    implied: dict[str, tuple[str, ...]] = field(default_factory=dict)
    config: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    holdout: float = 0.0
    version: str | None = None
    command: str = ""
    evaluations: list[Path] = field(default_factory=list)
    # A model to score beside the new one on the held-out rows (``--compare-with``), as
    # given on the command line and loaded.
    compare_with: str | None = None
    compared: Scorer | None = None
    # With a comparison: the new model is rejected, and no artifact written, when its
    # headline metric is lower than the compared model's by more than this.
    no_worse_tolerance: float | None = None


@dataclass(slots=True)
class TrainReport:
    """Result of one training run: the artifact path, row counts and held-out metrics.

    ``artifact`` is None when the comparison rejected the new model.
    """

    artifact: Path | None
    version: str
    n_train: int
    n_test: int
    metrics: dict[str, dict[str, dict[str, float | None]]]
    comparison: dict[str, Any] | None = None


def merge_duplicates(records: Sequence[LabelledPrompt]) -> list[LabelledPrompt]:
    """Merge records with the same conversation, uniting their per-tier labels.

    A merged record is a test row when any of its parts is, so a prompt that occurs in
    two files or two splits can never be both trained on and scored.
    """
    merged: dict[bytes, LabelledPrompt] = {}
    for record in records:
        key = conversation_key(record)
        if key not in merged:
            merged[key] = LabelledPrompt(record.id, record.messages, dict(record.quality),
                                         dict(record.cost), record.split, record.source)
            continue
        target = merged[key]
        target.quality.update(record.quality)
        target.cost.update(record.cost)
        if record.split == "test":
            target.split = "test"
    return list(merged.values())


def split_records(records: Sequence[LabelledPrompt], holdout: float,
                  seed: int) -> tuple[list[LabelledPrompt], list[LabelledPrompt]]:
    """Return (train, test): test rows plus ``holdout`` of the rows without a split."""
    rng = np.random.default_rng(seed)
    draws = rng.random(len(records))
    train: list[LabelledPrompt] = []
    test: list[LabelledPrompt] = []
    for record, draw in zip(records, draws):
        is_test = record.split == "test" or (record.split is None and draw < holdout)
        (test if is_test else train).append(record)
    return train, test


def heldout_metrics(model: TierModel, test: Sequence[LabelledPrompt],
                    threshold: float) -> dict[str, dict[str, dict[str, float | None]]]:
    """Return metrics[group][tier] = {n, positive_rate, auc, brier} on held-out rows."""
    if not test:
        return {}
    probabilities = model.predict_proba([r.messages for r in test])
    labels = label_matrix(test, model.tiers, threshold)
    groups = {source_group(r) for r in test}
    result: dict[str, dict[str, dict[str, float | None]]] = {}
    for group in sorted(groups) + ["all"]:
        rows = np.array([group in ("all", source_group(r)) for r in test])
        result[group] = {tier: _binary_metrics(labels[rows, j], probabilities[rows, j])
                         for j, tier in enumerate(model.tiers)
                         if np.any(~np.isnan(labels[rows, j]))}
    return result


def run_training(request: TrainRequest, progress: Progress = silent) -> TrainReport:
    """Train on ``request.data``, save the artifact and model card, and report metrics."""
    progress(f"reading {len(request.data)} file(s)", done=0, total=3)
    # Read before fitting, so that an invalid file fails the command before the slow part.
    evaluations = [summarise_evaluation(path) for path in request.evaluations]
    raw_records = read_outcomes(request.data, request.tier_map or None)
    input_counts = _count_by_group(raw_records)
    records = imply_tiers(merge_duplicates(raw_records), request.implied)
    # merge_duplicates builds new records that share only the messages, so the input
    # records can be released before fitting.
    del raw_records
    train, test = split_records(records, request.holdout, request.seed)
    if request.compared is not None:
        check_comparable(request.compared, request.tiers, len(test), request.holdout)
    progress(f"fitting {len(request.tiers)} tier(s) on {len(train)} rows ({len(test)} held out)",
             done=1, total=3)
    model = fit_tier_model(train, request.tiers, request.config, request.seed)
    progress("scoring held-out rows", done=2, total=3)
    metrics = heldout_metrics(model, test, request.config.threshold)
    version = request.version or default_version()
    comparison = None
    if request.compared is not None:
        progress(f"scoring held-out rows with model {request.compared.version}", done=2, total=3)
        comparison = compare_models(test, request.tiers, model.to_scorer(version),
                                    request.compared, request.compare_with or "",
                                    seed=request.seed, config=request.config,
                                    tolerance=request.no_worse_tolerance)
        if comparison["passed"] is False:
            return TrainReport(None, version, len(train), len(test), metrics, comparison)
    info = _training_info(request, train, test, metrics)
    if comparison is not None:
        info["comparison"] = comparison | {"result": without_curves(comparison["result"])}
    info["training"]["rows"]["input"] = input_counts
    info["evaluations"] = evaluations
    artifact = save_artifact(request.out, version=version, tiers=list(model.tiers),
                             weights=model.export(), ngram_max=request.config.ngram_max,
                             extra=info)
    from classifiers.model_card import write_model_card

    write_model_card(request.out, json.loads(artifact.read_text()))
    return TrainReport(artifact, version, len(train), len(test), metrics, comparison)


def summarise_evaluation(path: Path) -> dict[str, Any]:
    """Return the headline numbers of an ``evaluate --json`` file, without the curves.

    Raises TrainingError when the file is not a JSON object, OSError when it cannot be read.
    """
    expected = "give a file that `tierwise evaluate --json` wrote"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrainingError(f"--evaluation {path}: not valid JSON ({exc.msg} at line "
                            f"{exc.lineno}, column {exc.colno}); {expected}") from None
    except UnicodeDecodeError:
        raise TrainingError(f"--evaluation {path}: not UTF-8 text; {expected}") from None
    if not isinstance(result, dict):
        raise TrainingError(f"--evaluation {path}: not a JSON object; {expected}")
    summary = {key: result.get(key) for key in ("command", "mode", "seed", "rows_scored", "tiers")}
    summary["name"] = path.stem
    for table in ("routellm", "cost_quality"):
        if table in result:
            summary[table] = {router: {k: v for k, v in values.items() if k != "curve"}
                              for router, values in result[table].items() if isinstance(values, dict)}
    return summary


def default_version(now: dt.datetime | None = None) -> str:
    """Return a version from the UTC time, such as ``2026.12.04-013005``.

    The time of day keeps two trainings of one day apart, so a second nightly run can be
    published.  Versions in this format sort in time order.
    """
    stamp = now or dt.datetime.now(dt.UTC)
    return f"{stamp:%Y.%m.%d-%H%M%S}"


def _binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float | None]:
    from sklearn.metrics import roc_auc_score

    mask = ~np.isnan(labels)
    y, p = labels[mask], probabilities[mask]
    # AUC is undefined (None, which JSON can store) when the rows hold one class only.
    auc = float(roc_auc_score(y, p)) if np.unique(y).size == 2 else None
    return {"n": float(y.size), "positive_rate": float(y.mean()), "auc": auc,
            "brier": float(np.mean((p - y) ** 2))}


def _training_info(request: TrainRequest, train: Sequence[LabelledPrompt],
                   test: Sequence[LabelledPrompt], metrics: dict[str, Any]) -> dict[str, Any]:
    import platform

    import scipy
    import sklearn

    return {
        "training": {
            "command": request.command,
            "data_files": [p.name for p in request.data],
            "tier_map": request.tier_map,
            "implied_tiers": {tier: list(sources) for tier, sources in request.implied.items()},
            "config": {"n_features": request.config.n_features, "ngram_max": request.config.ngram_max,
                       "struct_weight": request.config.struct_weight, "c": request.config.c,
                       "threshold": request.config.threshold,
                       "source_power": request.config.source_power,
                       "min_sources": request.config.min_sources,
                       "length_prior": request.config.length_prior,
                       "solver": request.config.solver,
                       "source_intercepts": request.config.source_intercepts},
            "seed": request.seed,
            "holdout": request.holdout,
            "rows": {"train": _count_by_group(train), "test": _count_by_group(test)},
            "libraries": {"python": platform.python_version(), "numpy": np.__version__,
                          "scipy": scipy.__version__, "scikit-learn": sklearn.__version__},
            "trained_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "heldout_metrics": metrics,
    }


def _count_by_group(records: Sequence[LabelledPrompt]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        group = source_group(record)
        counts[group] = counts.get(group, 0) + 1
    return dict(sorted(counts.items()))
