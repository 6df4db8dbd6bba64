"""Train per-tier logistic regressions with scikit-learn and export them for the scorer.

``ConversationFeaturizer`` is the scikit-learn reference for the features that
``classifiers.scorer.Scorer`` computes by hand: word n-grams through
``HashingVectorizer`` (one call per turn segment, weighted, summed, L2-normalised)
followed by standardised structural features.  ``TierModel`` contains the featurizer
and one ``LogisticRegression`` per tier.  ``TierModel.export`` rounds the coefficients
to float32 in place, so the scikit-learn model and the saved artifact score alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from classifiers.artifact import round_weights
from classifiers.config import TrainConfig, TrainingError
from classifiers.conversation import STRUCTURAL_FEATURES, structural_vector, view_conversation
from classifiers.hashing import TOKEN_PATTERN
from classifiers.outcomes import DEFAULT_THRESHOLD, LabelledPrompt, source_group
from classifiers.scorer import LinearWeights, Scorer
from classifiers.transfer import blend_length_prior, mask_columns, shared_word_mask

DEFAULT_CONFIG = TrainConfig()


@dataclass(slots=True)
class RawFeatures:
    """Features before structural scaling: a CSR word block and raw structural values."""

    word: sp.csr_matrix
    struct: np.ndarray


class ConversationFeaturizer(TransformerMixin, BaseEstimator):
    """scikit-learn transformer from conversations (message lists) to the scorer's row."""

    def __init__(self, n_features: int = 2**17, ngram_max: int = 2, struct_weight: float = 1.0):
        self.n_features = n_features
        self.ngram_max = ngram_max
        self.struct_weight = struct_weight

    def fit(self, conversations: Sequence[Any], y: Any = None) -> ConversationFeaturizer:
        """Learn the structural mean and scale from ``conversations``."""
        return self.fit_raw(self.raw(conversations))

    def fit_raw(self, raw: RawFeatures) -> ConversationFeaturizer:
        """Learn the structural mean and scale from precomputed raw features."""
        self.struct_mean_ = raw.struct.mean(axis=0)
        scale = raw.struct.std(axis=0)
        # A constant feature keeps scale 1 so that serving never divides by zero.
        self.struct_scale_ = np.where(scale > 1e-12, scale, 1.0)
        return self

    def transform(self, conversations: Sequence[Any]) -> sp.csr_matrix:
        """Return the feature rows of ``conversations``."""
        return self.assemble(self.raw(conversations))

    def raw(self, conversations: Sequence[Any]) -> RawFeatures:
        """Compute the word block and unscaled structural values."""
        views = [view_conversation(messages) for messages in conversations]
        struct = np.array([structural_vector(v) for v in views], dtype=np.float64)
        return RawFeatures(self._word_block(views), struct.reshape(len(views), -1))

    def assemble(self, raw: RawFeatures) -> sp.csr_matrix:
        """Scale the structural values and append them to the word block."""
        struct = (raw.struct - self.struct_mean_) / self.struct_scale_ * self.struct_weight
        return sp.hstack([raw.word, sp.csr_matrix(struct)], format="csr")

    def _word_block(self, views: list[Any]) -> sp.csr_matrix:
        texts: list[str] = []
        rows: list[int] = []
        weights: list[float] = []
        for row, view in enumerate(views):
            for text, weight in view.segments:
                texts.append(text)
                rows.append(row)
                weights.append(weight)
        if not texts:
            # HashingVectorizer cannot transform an empty batch.
            return sp.csr_matrix((len(views), self.n_features), dtype=np.float64)
        counts = self._vectorizer().transform(texts)
        combine = sp.csr_matrix((weights, (rows, range(len(texts)))), shape=(len(views), len(texts)))
        return normalize(combine @ counts, norm="l2").tocsr()

    def _vectorizer(self) -> HashingVectorizer:
        return HashingVectorizer(
            n_features=self.n_features,
            ngram_range=(1, self.ngram_max),
            token_pattern=TOKEN_PATTERN,
            lowercase=True,
            alternate_sign=False,
            norm=None,
        )


class TierModel:
    """A fitted featurizer plus one logistic regression per tier."""

    def __init__(self, featurizer: ConversationFeaturizer, models: dict[str, LogisticRegression]):
        self.featurizer = featurizer
        self.models = models
        self.tiers: tuple[str, ...] = tuple(models)

    def predict_proba(self, conversations: Sequence[Any]) -> np.ndarray:
        """Return P(adequate) with shape (len(conversations), len(tiers))."""
        return self.predict_proba_rows(self.featurizer.transform(conversations))

    def predict_proba_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """Return P(adequate) for already featurised rows."""
        return np.column_stack([self.models[t].predict_proba(rows)[:, 1] for t in self.tiers])

    def export(self) -> LinearWeights:
        """Return the scorer's weights, rounding this model's coefficients to match them."""
        n = self.featurizer.n_features
        coef = np.column_stack([self.models[t].coef_[0] for t in self.tiers])
        weights = round_weights(LinearWeights(
            word_coef=coef[:n],
            struct_coef=coef[n:],
            intercept=np.array([self.models[t].intercept_[0] for t in self.tiers]),
            struct_mean=self.featurizer.struct_mean_,
            struct_scale=self.featurizer.struct_scale_,
            struct_weight=float(self.featurizer.struct_weight),
        ))
        stacked = np.vstack([weights.word_coef, weights.struct_coef])
        for index, tier in enumerate(self.tiers):
            self.models[tier].coef_ = stacked[:, index][np.newaxis, :].copy()
        return weights

    def to_scorer(self, version: str = "unsaved") -> Scorer:
        """Return a fast scorer with this model's (float32-rounded) weights."""
        return Scorer(version=version, tiers=self.tiers, weights=self.export(),
                      ngram_max=self.featurizer.ngram_max)


def label_matrix(records: Sequence[LabelledPrompt], tiers: Sequence[str],
                 threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Return adequacy labels with shape (n, n_tiers): 1.0, 0.0, or NaN when unlabelled."""
    labels = np.full((len(records), len(tiers)), np.nan)
    for i, record in enumerate(records):
        for j, tier in enumerate(tiers):
            if tier in record.quality:
                labels[i, j] = float(record.quality[tier] >= threshold)
    return labels


def fit_tier_model(records: Sequence[LabelledPrompt], tiers: Sequence[str],
                   config: TrainConfig = DEFAULT_CONFIG, seed: int = 0) -> TierModel:
    """Fit the featurizer and one logistic regression per tier on ``records``.

    Raises TrainingError when a tier has no labelled rows or only one class.
    """
    featurizer = ConversationFeaturizer(config.n_features, config.ngram_max, config.struct_weight)
    raw = featurizer.raw([r.messages for r in records])
    featurizer.fit_raw(raw)
    rows = featurizer.assemble(raw)
    labels = label_matrix(records, tiers, config.threshold)
    weights = source_weights(records, config.source_power)
    groups = np.array([source_group(r) for r in records])
    return TierModel(featurizer, fit_heads(rows, labels, tiers, config, seed, weights, groups))


def source_weights(records: Sequence[LabelledPrompt], power: float) -> np.ndarray:
    """Return per-row weights (rows in the row's source group) ** -power, with mean 1."""
    groups = [source_group(r) for r in records]
    sizes = {group: groups.count(group) for group in set(groups)}
    weights = np.array([sizes[group] ** -power for group in groups], dtype=np.float64)
    return weights / weights.mean() if weights.size else weights


def fit_heads(rows: sp.csr_matrix, labels: np.ndarray, tiers: Sequence[str], config: TrainConfig,
              seed: int, weights: np.ndarray | None = None,
              groups: np.ndarray | None = None) -> dict[str, LogisticRegression]:
    """Fit one logistic regression per tier on the rows labelled for that tier.

    ``groups`` gives each row's source group; ``config.min_sources`` above 1 needs it.
    """
    row_weights = np.ones(rows.shape[0]) if weights is None else weights
    if config.min_sources > 1:
        if groups is None:
            raise TrainingError("min_sources above 1 needs the source group of every row")
        word = rows[:, : config.n_features]
        rows = mask_columns(rows, shared_word_mask(word, groups, config.min_sources))
    models: dict[str, LogisticRegression] = {}
    # One BLAS thread: these problems are small, and on a busy machine extra BLAS
    # threads made the solver about ten times slower, not faster.
    with threadpool_limits(limits=1):
        for j, tier in enumerate(tiers):
            models[tier] = _fit_head(rows, labels[:, j], row_weights, tier, config, seed)
    return models


def _fit_head(rows: sp.csr_matrix, labels: np.ndarray, weights: np.ndarray, tier: str,
              config: TrainConfig, seed: int) -> LogisticRegression:
    mask = ~np.isnan(labels)
    y = labels[mask]
    if y.size == 0 or np.unique(y).size < 2:
        raise TrainingError(
            f"tier {tier!r} has {int(y.size)} labelled rows with {np.unique(y).size} "
            "class(es); it needs both adequate and inadequate examples"
        )
    # liblinear solves these sparse problems about ten times faster than lbfgs.
    model = LogisticRegression(C=config.c, solver="liblinear", max_iter=config.max_iter,
                               random_state=seed)
    model.fit(rows[mask], y, sample_weight=weights[mask])
    length_column = config.n_features + STRUCTURAL_FEATURES.index("log_last_chars")
    return blend_length_prior(model, rows[mask], y, weights[mask], length_column,
                              config.length_prior)
