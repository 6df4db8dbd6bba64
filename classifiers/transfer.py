"""Training aids that help a model carry over to data sets it was not trained on.

Word n-grams learn each benchmark's wording, which does not transfer to a new set.
Two opt-in aids limit that, and both keep the artifact format unchanged:

- ``shared_word_mask``: keep only hashed word columns that occur in rows of at least
  ``min_sources`` source groups, so wording unique to one set cannot carry the label.
  Dropped columns get a zero coefficient.
- ``blend_length_prior``: mix each head's logit with a logistic regression on the
  prompt-length feature alone.  Both are linear in the same row, so the blend is
  again one logistic regression, written back into the head in place.
- ``fit_with_source_intercepts``: give each source group its own intercept while
  fitting, so the shared columns must explain differences within a set rather than
  which set a row came from.  The group intercepts are then folded into one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression


def shared_word_mask(word: sp.csr_matrix, groups: np.ndarray, min_sources: int) -> np.ndarray:
    """Return a boolean mask of the word columns present in >= ``min_sources`` groups.

    ``word`` has one row per training row and ``groups`` its source-group labels.
    ``min_sources`` 1 or less keeps every column.
    """
    if min_sources <= 1:
        return np.ones(word.shape[1], dtype=bool)
    counts = np.zeros(word.shape[1], dtype=np.int64)
    for group in np.unique(groups):
        rows = word[np.flatnonzero(groups == group)]
        counts += np.asarray((rows != 0).sum(axis=0)).ravel() > 0
    return counts >= min_sources


def mask_columns(rows: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """Return ``rows`` with the first ``len(keep)`` columns zeroed where ``keep`` is False."""
    scale = np.ones(rows.shape[1])
    scale[: keep.size] = keep
    return (rows @ sp.diags(scale)).tocsr()


def blend_length_prior(model: LogisticRegression, rows: sp.csr_matrix, labels: np.ndarray,
                       weights: np.ndarray, column: int, prior: float) -> LogisticRegression:
    """Mix ``model``'s logit with a length-only logit: (1 - prior) * model + prior * length.

    The length model is a logistic regression on column ``column`` of ``rows`` (the
    scaled prompt-length feature), fitted on the same labelled rows and weights.  The
    mix changes ``model.coef_`` and ``model.intercept_`` in place, so scoring and
    export see it.  ``prior`` must be in [0, 1]; 0 returns the model unchanged.
    """
    if not 0.0 <= prior <= 1.0:
        raise ValueError(f"length prior must be in [0, 1], got {prior}")
    if prior == 0.0:
        return model
    length = rows[:, [column]].toarray()
    length_model = LogisticRegression().fit(length, labels, sample_weight=weights)
    coef = (1.0 - prior) * model.coef_
    coef[0, column] += prior * length_model.coef_[0, 0]
    model.coef_ = coef
    model.intercept_ = (1.0 - prior) * model.intercept_ + prior * length_model.intercept_
    return model


# Value of a row's source-group indicator column.  L2 penalises a group's logit offset o
# through its coefficient o / SOURCE_COLUMN_SCALE, so offsets are penalised
# SOURCE_COLUMN_SCALE ** 2 (100) times less than coefficients of the shared columns.
SOURCE_COLUMN_SCALE = 10.0


def fit_with_source_intercepts(model: LogisticRegression, rows: sp.csr_matrix,
                               labels: np.ndarray, weights: np.ndarray, groups: np.ndarray,
                               scale: float = SOURCE_COLUMN_SCALE) -> LogisticRegression:
    """Fit ``model`` with one intercept per source group, then fold them into one.

    The fit uses ``rows`` plus one indicator column per distinct value of ``groups``,
    set to ``scale`` on that group's rows.  Afterwards the indicator columns are
    dropped, and their offsets, averaged with each group's total row weight, are added
    to ``model.intercept_``.  The returned model thus scores rows of the original
    width, and its logit is the weighted mean of the per-group logits.
    ``model.source_offsets_`` maps each group name to its logit offset.
    """
    names, index = np.unique(groups, return_inverse=True)
    count = rows.shape[0]
    indicators = sp.csr_matrix((np.full(count, scale), (np.arange(count), index)),
                               shape=(count, names.size))
    model.fit(sp.hstack([rows, indicators], format="csr"), labels, sample_weight=weights)

    width = rows.shape[1]
    offsets = model.coef_[0, width:] * scale
    group_weights = np.bincount(index, weights=weights, minlength=names.size)
    model.coef_ = model.coef_[:, :width].copy()
    model.intercept_ = model.intercept_ + np.average(offsets, weights=group_weights)
    model.n_features_in_ = width
    model.source_offsets_ = dict(zip(names.tolist(), offsets.tolist()))
    return model
