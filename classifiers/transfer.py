"""Training aids that help a model carry over to data sets it was not trained on.

Word n-grams learn each benchmark's wording, which does not transfer to a new set.
Two opt-in aids limit that, and both keep the artifact format unchanged:

- ``shared_word_mask``: keep only hashed word columns that occur in rows of at least
  ``min_sources`` source groups, so wording unique to one set cannot carry the label.
  Dropped columns get a zero coefficient.
- ``blend_length_prior``: mix each head's logit with a logistic regression on the
  prompt-length feature alone.  Both are linear in the same row, so the blend is
  again one logistic regression, written back into the head in place.
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
