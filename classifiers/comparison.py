"""Compare a newly trained classifier with another artifact on the same held-out rows.

``tierwise classifier train --compare-with`` scores the held-out rows with both models
through ``classifiers.evaluation.compare_fixed_models`` and reduces the result to one
headline metric:

- two tiers: APGR of the cheaper tier against the stronger one;
- three or more tiers, on rows with quality and cost for every tier: AIQ of the
  cost-quality curve;
- three or more tiers without such rows: APGR of the two most expensive tiers (mid
  against frontier).

With a tolerance (``--require-no-worse``), a new model whose headline metric is lower
than the compared model's by more than the tolerance fails the check.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from classifiers.artifact import DEFAULT_DIR, load_artifact
from classifiers.config import TrainConfig, TrainingError
from classifiers.outcomes import LabelledPrompt, source_group
from classifiers.scorer import Scorer

BUNDLED = "bundled"
DEFAULT_TOLERANCE = 0.01
# The prompt-length baseline is cross-fitted on the held-out rows with this many folds,
# so at least this many held-out rows are needed.
BASELINE_FOLDS = 5


def load_compared_model(location: str) -> Scorer:
    """Load the artifact folder ``location``, or the bundled model for ``"bundled"``.

    Raises ArtifactError when the folder contains no valid artifact.
    """
    return load_artifact(DEFAULT_DIR if location == BUNDLED else Path(location))


def check_comparable(compared: Scorer, tiers: Sequence[str], held_out_rows: int,
                     holdout: float = 0.0) -> None:
    """Raise TrainingError unless ``compared`` can be scored beside a model of ``tiers``.

    ``holdout`` is the share of rows without a split that train held out (``--holdout``).
    """
    if len(tiers) < 2:
        raise TrainingError("--compare-with needs at least two tiers, because a comparison "
                            "measures routing between them")
    missing = [tier for tier in tiers if tier not in compared.tiers]
    if missing:
        raise TrainingError(f"--compare-with: model {compared.version} has no tier "
                            f"{missing[0]!r} (its tiers are {', '.join(compared.tiers)}); "
                            "compare with an artifact trained for the same tiers")
    if held_out_rows < BASELINE_FOLDS and holdout <= 0:
        raise TrainingError(
            f"--compare-with needs at least {BASELINE_FOLDS} held-out rows, got "
            f"{held_out_rows}: pass --holdout 0.2 to hold out a fifth of the rows without a "
            "split, or give data with rows whose split is \"test\"")
    if held_out_rows < BASELINE_FOLDS:
        raise TrainingError(
            f"--compare-with needs at least {BASELINE_FOLDS} held-out rows, but --holdout "
            f"{holdout:g} held out {held_out_rows}: add labelled rows with --data, raise "
            "--holdout, or give data with rows whose split is \"test\"")


def compare_models(test: Sequence[LabelledPrompt], tiers: Sequence[str], new: Scorer,
                   compared: Scorer, compared_with: str, *, seed: int, config: TrainConfig,
                   tolerance: float | None) -> dict[str, Any]:
    """Score ``test`` with both models and return the comparison, curves included.

    ``passed`` is None without a tolerance.  Raises TrainingError when the held-out rows
    give no headline metric, because then the models cannot be compared.
    """
    from classifiers.evaluation import compare_fixed_models

    new_name, compared_name = router_names(new.version, compared.version)
    try:
        result = compare_fixed_models(test, tiers, {new_name: new, compared_name: compared},
                                      folds=BASELINE_FOLDS, seed=seed, config=config)
    except ValueError as exc:
        raise TrainingError(f"cannot compare the models on the held-out rows: {exc}") from None
    metric = headline_metric(result)
    if metric is None:
        raise TrainingError(
            "cannot compare the models on the held-out rows: no row has quality and cost "
            f"for every tier, and none is labelled for both {tiers[-2]} and {tiers[-1]}")
    label, table = metric
    key = "aiq" if label == "AIQ" else "apgr"
    overlap = trained_sources_in(compared, test)
    new_value, compared_value = table[new_name][key], table[compared_name][key]
    passed = None if tolerance is None else new_value >= compared_value - tolerance
    return {"compared_with": compared_with, "new_version": new.version,
            "compared_version": compared.version, "new_router": new_name,
            "compared_router": compared_name, "metric": label, "new": new_value,
            "compared": compared_value, "tolerance": tolerance, "passed": passed,
            "overlap": overlap, "result": result}


def trained_sources_in(compared: Scorer, test: Sequence[LabelledPrompt]) -> dict[str, int]:
    """Count the held-out rows per source that the compared model was trained on.

    The compared model's model.json lists the source groups of its input rows (the part of
    ``source`` before ``/``, such as ``routellm-mmlu``). Held-out rows from those sets were
    probably in its training data, so its figures there are optimistic.
    """
    training = (getattr(compared, "metadata", None) or {}).get("training") or {}
    seen = set((training.get("rows") or {}).get("input") or {})
    counts: dict[str, int] = {}
    for row in test:
        group = source_group(row)
        if row.source is not None and group in seen:
            counts[group] = counts.get(group, 0) + 1
    return counts


def router_names(new_version: str, compared_version: str) -> tuple[str, str]:
    """Return the table names of the two models; they differ even for equal versions."""
    return f"new {new_version}", f"compared {compared_version}"


def headline_metric(result: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """Return (metric label, table) of the metric that decides a comparison, if any."""
    if "cost_quality" in result:
        return "AIQ", result["cost_quality"]
    if "routellm" in result:
        weak, strong = result["routellm_tiers"]
        return f"APGR {weak} vs {strong}", result["routellm"]
    return None


def verdict_lines(comparison: dict[str, Any]) -> list[str]:
    """Return the sentences that state the headline numbers and the check's outcome."""
    difference = comparison["new"] - comparison["compared"]
    lines = [(f"held-out {comparison['metric']}: {comparison['new_router']} "
              f"{comparison['new']:.3f}, {comparison['compared_router']} "
              f"{comparison['compared']:.3f} (difference {difference:+.3f})")]
    tolerance = comparison["tolerance"]
    overlap = comparison.get("overlap") or {}
    if overlap:
        sets = ", ".join(f"{source} ({count} rows)" for source, count in sorted(overlap.items()))
        lines.append(f"warning: the compared model was trained on the sets of some held-out "
                     f"rows: {sets}. Its figures on them are optimistic, so this comparison "
                     "favours it; hold out rows of other sets, or compare with a model trained "
                     "without them")
    if comparison["passed"] is True:
        lines.append(f"the new model is no worse than the compared one within the tolerance "
                     f"{tolerance:g}")
    elif comparison["passed"] is False:
        lines.append(f"the new model's held-out {comparison['metric']} is lower than the "
                     f"compared model's by {-difference:.3f}, more than the tolerance "
                     f"{tolerance:g}")
    return lines


def without_curves(result: dict[str, Any]) -> dict[str, Any]:
    """Return ``result`` with each router's curve points dropped, to keep model.json small."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        if key in ("routellm", "cost_quality"):
            value = {name: ({k: v for k, v in values.items() if k != "curve"}
                            if isinstance(values, dict) else values)
                     for name, values in value.items()}
        out[key] = value
    return out
