"""Held-out routing evaluation of the classifier beside simple baselines.

``evaluate_records`` trains the classifier on training rows only and scores held-out
rows: either the file's own split (rows with ``split == "test"``) or k folds, where
every row is scored by the model of the fold that left it out.  Duplicated
conversations are merged first, so no prompt is both trained on and scored.

Routers compared:
- ``classifier``: the per-tier logistic regressions of ``classifiers.training``, turned
  into the gateway's routing scores (``classifiers.scorer.routing_scores``).  For two
  models it sends to the strong model the prompts with the lowest weak-tier score, as a
  threshold on that score does in the gateway;
- ``prompt-length``: one logistic regression per tier on the log length of the last
  user message, fitted on the same training rows, turned into routing scores alike;
- ``random``: constant scores (ties are averaged, so exactly the random router);
- ``always-<tier>`` for each tier, and ``oracle`` (the best tier for each prompt).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from classifiers.conversation import STRUCTURAL_FEATURES
from classifiers.metrics import aiq, cost_share_for, routellm_metrics, tier_metrics, upper_hull
from classifiers.outcomes import LabelledPrompt, conversation_key, source_group
from classifiers.progress import Progress, silent
from classifiers.scorer import Scorer, routing_score_matrix
from classifiers.trainer import merge_duplicates
from classifiers.training import (
    ConversationFeaturizer,
    TrainConfig,
    check_tiers_labelled,
    fit_heads,
    label_matrix,
    source_weights,
)

_LENGTH_COLUMN = STRUCTURAL_FEATURES.index("log_last_chars")


@dataclass(slots=True)
class Predictions:
    """Held-out routing scores of each router, shape (n_scored, n_tiers), and their rows.

    The scores are those the gateway compares with thresholds (``routing_scores``).
    """

    records: list[LabelledPrompt]
    routers: dict[str, np.ndarray]
    mode: str


def evaluate_records(records: Sequence[LabelledPrompt], tiers: Sequence[str], *,
                     folds: int = 5, seed: int = 0, use_split: bool | None = None,
                     config: TrainConfig | None = None,
                     extra_train: Sequence[LabelledPrompt] = (),
                     scorer: Scorer | None = None,
                     progress: Progress = silent) -> dict[str, Any]:
    """Return routing metrics of the classifier and the baselines on held-out rows.

    ``use_split`` None means: the file's own split when it has test rows, else k folds.
    ``extra_train`` rows join every training fold and are never scored.  An extra row
    whose conversation also occurs in ``records`` is dropped, so it cannot leak.  With
    ``scorer``, that fixed model scores the rows instead (see ``fixed_model_predictions``).
    """
    config = config or TrainConfig()
    evaluated = merge_duplicates(records)
    extras = _without_overlap(merge_duplicates(extra_train), evaluated)
    if scorer is not None:
        predictions = fixed_model_predictions(evaluated, tiers, scorer, folds=folds, seed=seed,
                                              use_split=use_split, config=config)
    else:
        predictions = held_out_predictions(evaluated, tiers, folds=folds, seed=seed,
                                           use_split=use_split, config=config, extra_train=extras,
                                           progress=progress)
    result: dict[str, Any] = {"seed": seed, "mode": predictions.mode, "tiers": list(tiers),
                              "rows_scored": len(predictions.records),
                              "extra_train_rows": len(extras)}
    quality = _quality_matrix(predictions.records, tiers)
    pair = _pair_rows(quality)
    if pair.any():
        result["routellm"] = _routellm_table(predictions, quality, pair)
    cost = _cost_matrix(predictions.records, tiers)
    complete = ~np.isnan(quality).any(axis=1) & ~np.isnan(cost).any(axis=1)
    if len(tiers) >= 3 and complete.any():
        result["cost_quality"] = _cost_table(predictions, quality, cost, complete, tiers)
    elif len(tiers) >= 3:
        result["cost_quality_skipped"] = (
            f"no cost-quality table: it needs rows with quality and cost_usd for every tier "
            f"({', '.join(tiers)}), and none of the {len(predictions.records)} scored rows has "
            f"them all (missing: {missing_outcome_fields(predictions.records, tiers)}). Add "
            "cost_usd, the USD cost of the answer, to each tier's outcome in the data.")
    return result


def missing_outcome_fields(records: Sequence[LabelledPrompt], tiers: Sequence[str]) -> str:
    """Describe how many rows lack each tier's quality and cost_usd, or return "nothing".

    Example: "quality for frontier in 3 rows, cost_usd for edge in 120 rows".
    """
    parts = []
    for name, attribute in (("quality", "quality"), ("cost_usd", "cost")):
        for tier in tiers:
            count = sum(1 for record in records if tier not in getattr(record, attribute))
            if count:
                parts.append(f"{name} for {tier} in {count} {'row' if count == 1 else 'rows'}")
    return ", ".join(parts) or "nothing"


def held_out_predictions(records: Sequence[LabelledPrompt], tiers: Sequence[str], *, folds: int,
                         seed: int, use_split: bool | None, config: TrainConfig,
                         extra_train: Sequence[LabelledPrompt] = (),
                         progress: Progress = silent) -> Predictions:
    """Fit on training rows and predict held-out rows for the classifier and length baseline."""
    has_split = any(r.split == "test" for r in records)
    own_split = has_split if use_split is None else use_split
    featurizer = ConversationFeaturizer(config.n_features, config.ngram_max, config.struct_weight)
    everything = [*records, *extra_train]
    check_tiers_labelled(everything, tiers)
    progress(f"featurising {len(everything)} rows")
    raw = featurizer.raw([r.messages for r in everything])
    labels = label_matrix(everything, tiers, config.threshold)
    weights = source_weights(everything, config.source_power)
    groups = np.array([source_group(r) for r in everything])
    extra_rows = np.arange(len(records), len(everything))
    scored = np.zeros(len(everything), dtype=bool)
    classifier = np.full(labels.shape, np.nan)
    length = np.full(labels.shape, np.nan)
    total = 1 if own_split else folds
    for number, (train, test) in enumerate(_splits(records, folds, seed, own_split), start=1):
        train = np.concatenate([train, extra_rows])
        progress(f"fold {number}: training on {len(train)} rows, scoring {len(test)}",
                 done=number - 1, total=total)
        featurizer.fit_raw(_subset(raw, train))
        rows = featurizer.assemble(raw)
        heads = fit_heads(rows[train], labels[train], tiers, config, seed, weights[train],
                          groups[train])
        for j, tier in enumerate(tiers):
            classifier[test, j] = heads[tier].predict_proba(rows[test])[:, 1]
        length[test] = _length_baseline(raw.struct, labels, train, test, tiers)
        scored[test] = True
    progress("computing metrics", done=total, total=total)
    scored_records = [r for r, keep in zip(everything, scored) if keep]
    mode = "own split" if own_split else f"{folds}-fold"
    return Predictions(scored_records, {"classifier": routing_score_matrix(classifier[scored]),
                                        "prompt-length": routing_score_matrix(length[scored])}, mode)


def fixed_model_predictions(records: Sequence[LabelledPrompt], tiers: Sequence[str],
                            scorer: Scorer, *, folds: int, seed: int, use_split: bool | None,
                            config: TrainConfig) -> Predictions:
    """Score ``records`` with a fixed model, beside a prompt-length baseline fitted on them.

    The scored rows are the file's test split (unless ``use_split`` is False) or all rows.
    The length baseline is cross-fitted on those rows with k folds.  It has thus seen the
    file's own distribution, which the fixed model may not have, so the comparison favours
    the baseline.
    The rows must not be in the fixed model's training data, which is not checked here.
    """
    has_split = any(r.split == "test" for r in records)
    own_split = has_split if use_split is None else use_split
    rows = [r for r in records if r.split == "test"] if own_split else list(records)
    missing = [t for t in tiers if t not in scorer.tiers]
    if missing:
        raise ValueError(f"the model has no tier {missing[0]!r}; its tiers are {', '.join(scorer.tiers)}")
    classifier = np.array([[scorer.score(r.messages)[t] for t in tiers] for r in rows])
    featurizer = ConversationFeaturizer(config.n_features, config.ngram_max, config.struct_weight)
    struct = featurizer.raw([r.messages for r in rows]).struct
    labels = label_matrix(rows, tiers, config.threshold)
    length = np.full(labels.shape, np.nan)
    for train, test in _splits(rows, folds, seed, own_split=False):
        length[test] = _length_baseline(struct, labels, train, test, tiers)
    mode = f"{'test split' if own_split else 'all rows'}, fixed model {scorer.version}"
    # scorer.score already returns the routing scores that the gateway compares with thresholds.
    return Predictions(rows, {"classifier": classifier.reshape(-1, len(tiers)),
                              "prompt-length": routing_score_matrix(length)}, mode)


def compare_fixed_models(records: Sequence[LabelledPrompt], tiers: Sequence[str],
                         scorers: dict[str, Scorer], *, folds: int = 5, seed: int = 0,
                         config: TrainConfig | None = None) -> dict[str, Any]:
    """Return routing metrics of several fixed models on all of ``records``, beside baselines.

    ``scorers`` maps router names to models.  Each model scores the rows as in
    ``fixed_model_predictions``, and the prompt-length baseline is cross-fitted on the rows
    with ``folds`` folds.  With three or more tiers and rows that have quality and cost for
    every tier, the result has the ``cost_quality`` table.  Otherwise it has a ``routellm``
    table for the two most expensive tiers, named in ``routellm_tiers``, on the rows
    labelled for both.  Raises ValueError when a model lacks a tier or there are fewer rows
    than folds, and when the stronger tier of the pair is not better on average.
    """
    if len(tiers) < 2:
        raise ValueError(f"comparing routers needs at least two tiers, got {len(tiers)}")
    config = config or TrainConfig()
    routers: dict[str, np.ndarray] = {}
    scored: Predictions | None = None
    for name, scorer in scorers.items():
        scored = fixed_model_predictions(records, tiers, scorer, folds=folds, seed=seed,
                                         use_split=False, config=config)
        routers[name] = scored.routers["classifier"]
    if scored is None:
        raise ValueError("compare_fixed_models needs at least one model")
    routers["prompt-length"] = scored.routers["prompt-length"]
    predictions = Predictions(scored.records, routers, f"{len(scorers)} fixed models")
    result: dict[str, Any] = {"seed": seed, "mode": predictions.mode, "tiers": list(tiers),
                              "rows_scored": len(predictions.records)}
    quality = _quality_matrix(predictions.records, tiers)
    cost = _cost_matrix(predictions.records, tiers)
    complete = ~np.isnan(quality).any(axis=1) & ~np.isnan(cost).any(axis=1)
    if len(tiers) >= 3 and complete.any():
        result["cost_quality"] = _cost_table(predictions, quality, cost, complete, tiers)
        return result
    pair = [len(tiers) - 2, len(tiers) - 1]
    pair_quality = quality[:, pair]
    labelled = _pair_rows(pair_quality)
    if labelled.any():
        pair_predictions = Predictions(predictions.records,
                                       {name: scores[:, pair] for name, scores in routers.items()},
                                       predictions.mode)
        result["routellm"] = _routellm_table(pair_predictions, pair_quality, labelled)
        result["routellm_tiers"] = [tiers[index] for index in pair]
    return result


def _without_overlap(extras: Sequence[LabelledPrompt],
                     evaluated: Sequence[LabelledPrompt]) -> list[LabelledPrompt]:
    seen = {conversation_key(r) for r in evaluated}
    return [r for r in extras if conversation_key(r) not in seen]


def _splits(records: Sequence[LabelledPrompt], folds: int, seed: int,
            own_split: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if own_split:
        is_test = np.array([r.split == "test" for r in records])
        yield np.flatnonzero(~is_test), np.flatnonzero(is_test)
        return
    if folds < 2:
        raise ValueError(f"--folds must be at least 2 without a test split, got {folds}")
    yield from KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(records)))


def _subset(raw: Any, index: np.ndarray) -> Any:
    return type(raw)(raw.word[index], raw.struct[index])


def _length_baseline(struct: np.ndarray, labels: np.ndarray, train: np.ndarray,
                     test: np.ndarray, tiers: Sequence[str]) -> np.ndarray:
    lengths = struct[:, [_LENGTH_COLUMN]]
    out = np.full((len(test), len(tiers)), np.nan)
    for j in range(len(tiers)):
        mask = ~np.isnan(labels[train, j])
        y = labels[train, j][mask]
        if y.size == 0:
            continue
        if np.unique(y).size == 1:
            # Every training row has the same label, so the best length model predicts
            # that label for all prompts.  A NaN would make this tier's routing scores NaN,
            # and for the last tier every tier's, which sends every prompt to that tier.
            out[:, j] = y[0]
            continue
        model = LogisticRegression().fit(lengths[train][mask], y)
        out[:, j] = model.predict_proba(lengths[test])[:, 1]
    return out


def _quality_matrix(records: Sequence[LabelledPrompt], tiers: Sequence[str]) -> np.ndarray:
    """Return recorded quality (not the thresholded label), NaN where unlabelled."""
    return np.array([[r.quality.get(t, np.nan) for t in tiers] for r in records]).reshape(-1, len(tiers))


def _cost_matrix(records: Sequence[LabelledPrompt], tiers: Sequence[str]) -> np.ndarray:
    return np.array([[r.cost.get(t, np.nan) for t in tiers] for r in records]).reshape(-1, len(tiers))


def _pair_rows(quality: np.ndarray) -> np.ndarray:
    return ~np.isnan(quality[:, 0]) & ~np.isnan(quality[:, -1])


def _routellm_table(predictions: Predictions, quality: np.ndarray,
                    rows: np.ndarray) -> dict[str, Any]:
    """Metrics for the cheapest (weak) and last (strong) tier on rows labelled for both."""
    weak, strong = quality[rows, 0], quality[rows, -1]
    table: dict[str, Any] = {"rows": int(rows.sum())}
    for name, scores in predictions.routers.items():
        # The gateway keeps a prompt on the weak tier when the weak tier's routing score
        # meets its threshold, so prompts are ranked by that score.
        table[name] = routellm_metrics(scores[rows, 0], weak, strong)
    table["random"] = routellm_metrics(np.zeros(weak.size), weak, strong)
    table["oracle"] = routellm_metrics(weak - strong, weak, strong)
    return table


def _cost_table(predictions: Predictions, quality: np.ndarray, cost: np.ndarray,
                rows: np.ndarray, tiers: Sequence[str]) -> dict[str, Any]:
    """Cost-quality metrics on rows with quality and cost for every tier."""
    q, c = quality[rows], cost[rows]
    always = np.column_stack([c.mean(axis=0), q.mean(axis=0)])
    table: dict[str, Any] = {"rows": int(rows.sum()), "frontier_cost": float(always[-1, 0]),
                             "frontier_quality": float(always[-1, 1])}
    for name, probabilities in predictions.routers.items():
        table[name] = tier_metrics(probabilities[rows], q, c)
    table["random"] = _fixed_points_metrics(always, always)
    table["oracle"] = _fixed_points_metrics(np.vstack([always, _oracle_point(q, c)]), always)
    for index, name in enumerate(tiers):
        table[f"always-{name}"] = {"cost_share": float(always[index, 0] / always[-1, 0]),
                                   "quality": float(always[index, 1])}
    return table


def _fixed_points_metrics(points: np.ndarray, always: np.ndarray) -> dict[str, Any]:
    hull = upper_hull(points)
    low, high = float(always[:, 0].min()), float(always[-1, 0])
    result: dict[str, Any] = {"aiq": aiq(hull, low, high), "curve": hull.tolist()}
    for target in (0.9, 0.95, 1.0):
        result[f"cost_share_{round(target * 100)}"] = cost_share_for(hull, target * always[-1, 1], high)
    return result


def _oracle_point(quality: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Return (mean cost, mean quality) of picking, per prompt, the cheapest best tier."""
    best = quality.max(axis=1, keepdims=True)
    candidates = np.where(quality >= best, cost, np.inf)
    chosen = np.argmin(candidates, axis=1)
    rows = np.arange(len(quality))
    return np.array([cost[rows, chosen].mean(), quality[rows, chosen].mean()])
