"""Train per-tier logistic regressions with scikit-learn and export them for the scorer.

``ConversationFeaturizer`` is the scikit-learn reference for the features that
``classifiers.scorer.Scorer`` computes by hand: word n-grams through
``HashingVectorizer`` (one call per turn segment, weighted, summed, L2-normalised)
followed by standardised structural features.  ``TierModel`` contains the featurizer
and one ``LogisticRegression`` per tier.  ``TierModel.export`` rounds the coefficients
to float32 in place, so the scikit-learn model and the saved artifact score alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from classifiers.artifact import round_weights
from classifiers.config import SGD_MIN_ROWS, TrainConfig, TrainingError
from classifiers.conversation import STRUCTURAL_FEATURES, structural_vector, view_conversation
from classifiers.hashing import TOKEN_PATTERN
from classifiers.outcomes import DEFAULT_THRESHOLD, LabelledPrompt, source_group
from classifiers.scorer import LinearWeights, Scorer
from classifiers.transfer import (
    blend_length_prior,
    fit_with_source_intercepts,
    mask_columns,
    shared_word_mask,
)

DEFAULT_CONFIG = TrainConfig()
# A tier head: both expose coef_, intercept_ and predict_proba.
LinearHead: TypeAlias = LogisticRegression | SGDClassifier
FEATURE_CHUNK_ROWS = 20_000


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
        self.struct_mean_, self.struct_scale_ = _mean_and_scale(raw.struct)
        return self

    def transform(self, conversations: Sequence[Any]) -> sp.csr_matrix:
        """Return the feature rows of ``conversations``."""
        return self.assemble(self.raw(conversations))

    def raw(self, conversations: Sequence[Any]) -> RawFeatures:
        """Compute the word block and unscaled structural values."""
        word = RowBuilder(self.n_features)
        structs = [np.zeros((0, len(STRUCTURAL_FEATURES)))]
        for block, struct in self._chunks(conversations):
            word.append(block)
            structs.append(struct)
        return RawFeatures(word.build(), np.vstack(structs))

    def fit_assemble(self, conversations: Sequence[Any]) -> sp.csr_matrix:
        """Fit the structural scaling on ``conversations`` and return their feature rows.

        Gives the rows of ``fit_raw(raw(c))`` followed by ``assemble``, but writes each
        chunk straight into the result, so the word block is never held twice.  The
        structural values go in unscaled and are scaled in place at the end.
        """
        n_struct = len(STRUCTURAL_FEATURES)
        rows = RowBuilder(self.n_features + n_struct)
        structs = [np.zeros((0, n_struct))]
        for block, struct in self._chunks(conversations):
            rows.append(append_dense_columns(block, struct))
            structs.append(struct)
        struct = np.vstack(structs)
        del structs
        self.struct_mean_, self.struct_scale_ = _mean_and_scale(struct)
        result = rows.build()
        # The structural values are the last n_struct stored entries of every row.  They
        # are scaled a chunk of rows at a time, to keep the temporary arrays small.
        for start in range(0, struct.shape[0], FEATURE_CHUNK_ROWS):
            ends = result.indptr[start + 1:start + 1 + FEATURE_CHUNK_ROWS, np.newaxis]
            result.data[ends - n_struct + np.arange(n_struct)] = self._scale(
                struct[start:start + FEATURE_CHUNK_ROWS])
        return result

    def assemble(self, raw: RawFeatures) -> sp.csr_matrix:
        """Scale the structural values and append them to the word block."""
        return append_dense_columns(raw.word, self._scale(raw.struct))

    def _scale(self, struct: np.ndarray) -> np.ndarray:
        return (struct - self.struct_mean_) / self.struct_scale_ * self.struct_weight

    def _chunks(self, conversations: Sequence[Any]) -> Iterator[tuple[sp.csr_matrix, np.ndarray]]:
        # FEATURE_CHUNK_ROWS at a time, so the views, texts and intermediate matrices of
        # only one chunk are alive at once.
        for start in range(0, len(conversations), FEATURE_CHUNK_ROWS):
            views = [view_conversation(m) for m in conversations[start:start + FEATURE_CHUNK_ROWS]]
            struct = np.array([structural_vector(v) for v in views], dtype=np.float64)
            yield self._word_block(views), struct.reshape(len(views), -1)

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


def _mean_and_scale(struct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = struct.std(axis=0)
    # A constant feature keeps scale 1 so that serving never divides by zero.
    return struct.mean(axis=0), np.where(scale > 1e-12, scale, 1.0)


class RowBuilder:
    """Accumulator of CSR row blocks that builds one CSR matrix without a second copy.

    ``sp.vstack`` needs every block and the result in memory at once.  Here each block
    is copied into arrays that grow by ``ndarray.resize``.  Large numpy arrays live in
    their own mmap, so glibc's ``realloc`` grows them with ``mremap`` and copies no data.
    """

    def __init__(self, n_cols: int) -> None:
        self.n_cols = n_cols
        self.data = np.empty(0, dtype=np.float64)
        # Column numbers fit in int32, as in scikit-learn's own sparse output.
        self.indices = np.empty(0, dtype=np.int32)
        self.row_ends: list[np.ndarray] = []
        self.nnz = 0

    def append(self, block: sp.csr_matrix) -> None:
        """Append the rows of ``block``, which must have ``n_cols`` columns."""
        if block.shape[1] != self.n_cols:
            raise ValueError(f"block has {block.shape[1]} columns, expected {self.n_cols}")
        end = self.nnz + block.nnz
        if end > self.data.size:
            size = max(end, self.data.size * 3 // 2)
            self.data.resize(size, refcheck=False)
            self.indices.resize(size, refcheck=False)
        self.data[self.nnz:end] = block.data
        self.indices[self.nnz:end] = block.indices
        self.row_ends.append(block.indptr[1:].astype(np.int64) + self.nnz)
        self.nnz = end

    def build(self) -> sp.csr_matrix:
        """Return the stacked rows; the builder must not be used afterwards."""
        self.data.resize(self.nnz, refcheck=False)
        self.indices.resize(self.nnz, refcheck=False)
        # SciPy narrows indptr to int32 when nnz allows, so the int32 indices are not copied.
        indptr = np.concatenate([np.zeros(1, dtype=np.int64), *self.row_ends])
        return sp.csr_matrix((self.data, self.indices, indptr), shape=(indptr.size - 1, self.n_cols))


def append_dense_columns(sparse: sp.csr_matrix, dense: np.ndarray) -> sp.csr_matrix:
    """Return ``[sparse | dense]`` as CSR, built in place of ``sp.hstack``.

    ``sp.hstack`` of CSR blocks goes through COO, which needed about three times the
    memory of the result on 1,000,000 training rows.  Every dense value is stored, zeros
    included, as ``sp.hstack`` stores them.
    """
    n_rows, n_dense = dense.shape
    nnz = sparse.nnz + n_rows * n_dense
    index_dtype = np.int32 if nnz < 2**31 else np.int64
    indptr = sparse.indptr.astype(index_dtype) + np.arange(n_rows + 1, dtype=index_dtype) * n_dense
    # The dense values of row i fill the last n_dense slots before indptr[i + 1].
    dense_slots = (indptr[1:, np.newaxis] - n_dense + np.arange(n_dense, dtype=index_dtype)).ravel()
    is_sparse = np.ones(nnz, dtype=bool)
    is_sparse[dense_slots] = False
    data = np.empty(nnz, dtype=np.float64)
    indices = np.empty(nnz, dtype=index_dtype)
    data[is_sparse] = sparse.data
    indices[is_sparse] = sparse.indices
    data[dense_slots] = dense.ravel()
    indices[dense_slots] = np.tile(np.arange(sparse.shape[1], sparse.shape[1] + n_dense,
                                             dtype=index_dtype), n_rows)
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, sparse.shape[1] + n_dense))


class TierModel:
    """A fitted featurizer plus one logistic regression per tier."""

    def __init__(self, featurizer: ConversationFeaturizer, models: dict[str, LinearHead]):
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


def check_tiers_labelled(records: Sequence[LabelledPrompt], tiers: Sequence[str], *,
                         can_leave_out: bool = True) -> None:
    """Raise TrainingError when no record has an outcome for one of ``tiers``.

    The message lists the outcome keys that the records do have, because the usual cause
    is a missing or misspelled ``--tier-map``, and without one the keys are model names.
    ``can_leave_out`` adds the advice to leave the tier out with ``--tiers``.
    """
    found = sorted({key for record in records for key in record.quality})
    for tier in tiers:
        if tier in found:
            continue
        key_list = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
        advice = f"map a model that the data contains to {tier}"
        if can_leave_out:
            advice += f", or train the other tiers with --tiers (leave {tier} out)"
        others = f"only for {key_list}" if found else "nor for any other key"
        raise TrainingError(
            f"no record has an outcome for tier {tier!r}, {others}. "
            "Outcome keys count as tier names unless --tier-map TIER=MODEL maps a model of "
            f"the data to a tier, so {advice}"
        )


def fit_tier_model(records: Sequence[LabelledPrompt], tiers: Sequence[str],
                   config: TrainConfig = DEFAULT_CONFIG, seed: int = 0) -> TierModel:
    """Fit the featurizer and one logistic regression per tier on ``records``.

    Raises TrainingError when a tier has no labelled rows or only one class.
    """
    check_tiers_labelled(records, tiers)
    featurizer = ConversationFeaturizer(config.n_features, config.ngram_max, config.struct_weight)
    rows = featurizer.fit_assemble([r.messages for r in records])
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
              groups: np.ndarray | None = None) -> dict[str, LinearHead]:
    """Fit one logistic regression per tier on the rows labelled for that tier.

    ``groups`` gives each row's source group; ``config.min_sources`` above 1 and
    ``config.source_intercepts`` need it.
    """
    row_weights = np.ones(rows.shape[0]) if weights is None else weights
    if groups is None and config.source_intercepts:
        raise TrainingError("source_intercepts needs the source group of every row")
    if config.min_sources > 1:
        if groups is None:
            raise TrainingError("min_sources above 1 needs the source group of every row")
        word = rows[:, : config.n_features]
        rows = mask_columns(rows, shared_word_mask(word, groups, config.min_sources))
    models: dict[str, LinearHead] = {}
    # One BLAS thread: these problems are small, and on a busy machine extra BLAS
    # threads made the solver about ten times slower, not faster.
    with threadpool_limits(limits=1):
        for j, tier in enumerate(tiers):
            models[tier] = _fit_head(rows, labels[:, j], row_weights, tier, config, seed, groups)
    return models


def _fit_head(rows: sp.csr_matrix, labels: np.ndarray, weights: np.ndarray, tier: str,
              config: TrainConfig, seed: int, groups: np.ndarray | None) -> LinearHead:
    mask = ~np.isnan(labels)
    y = labels[mask]
    if y.size == 0 or np.unique(y).size < 2:
        found = ("no labelled rows" if y.size == 0 else
                 f"{int(y.size)} labelled rows, all {'adequate' if y[0] >= 0.5 else 'inadequate'}")
        raise TrainingError(
            f"tier {tier!r} has {found}; it needs both adequate and inadequate examples. "
            f"Train the other tiers with --tiers (leave {tier} out), or add rows where {tier} "
            "succeeded and rows where it failed"
        )
    if config.solver == "sgd" or (config.solver == "auto" and y.size > SGD_MIN_ROWS):
        if config.source_intercepts:
            # The indicator columns would need a copy of every row, which the SGD path avoids.
            raise TrainingError(f"source intercepts need the liblinear solver, but tier {tier!r} "
                                "uses sgd; pass --solver liblinear")
        model = _fit_sgd(rows, np.where(mask, labels, 0.0), np.where(mask, weights, 0.0),
                         config, seed)
    else:
        # liblinear solves these sparse problems about ten times faster than lbfgs.
        model = LogisticRegression(C=config.c, solver="liblinear", max_iter=config.max_iter,
                                   random_state=seed)
        if config.source_intercepts and groups is not None:
            fit_with_source_intercepts(model, rows[mask], y, weights[mask], groups[mask])
        else:
            model.fit(rows[mask], y, sample_weight=weights[mask])
    if config.length_prior == 0.0:
        return model
    length_column = config.n_features + STRUCTURAL_FEATURES.index("log_last_chars")
    return blend_length_prior(model, rows[mask], y, weights[mask], length_column,
                              config.length_prior)


def _fit_sgd(rows: sp.csr_matrix, labels: np.ndarray, weights: np.ndarray, config: TrainConfig,
             seed: int) -> SGDClassifier:
    """Fit the penalised log loss by SGD, which streams over ``rows`` without copying it.

    Unlabelled rows stay in ``rows`` with weight 0, so no per-tier copy is made.
    liblinear minimises C * sum(w_i * loss_i) + |coef|^2 / 2; SGD minimises
    mean(w_i * loss_i) + alpha * |coef|^2 / 2 over all n rows, the same objective
    when alpha = 1 / (C * n).
    """
    # Averaged SGD: on RouteLLM MMLU (5 folds, about 11,000 training rows) it reached APGR
    # 0.669 against liblinear's 0.677; plain SGD with 15 passes reached 0.618.
    model = SGDClassifier(loss="log_loss", penalty="l2", alpha=1.0 / (config.c * rows.shape[0]),
                          average=True, max_iter=config.sgd_epochs, tol=1e-4, n_iter_no_change=2,
                          random_state=seed)
    with warnings.catch_warnings():
        # Stopping after sgd_epochs passes is the intended bound, not a failure.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(rows, labels, sample_weight=weights)
    return model
