"""The serving-time scorer: hashed features dotted with exported linear coefficients.

For each tier the model is a logistic regression over one feature row:

    x = [ word n-gram counts (weighted per turn, L2-normalised),
          struct_weight * (structural features - mean) / scale ]
    P(tier adequate) = sigmoid(x . coef[:, tier] + intercept[tier])

``Scorer`` computes that row in pure Python plus one small numpy product, which keeps
a call far below the cost of a scikit-learn ``predict_proba``.

The gateway compares routing scores, not these probabilities, with the policy's
thresholds (see ``routing_scores``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import chain
from typing import Any

import numpy as np
import structlog

from classifiers.conversation import STRUCTURAL_FEATURES, view_conversation
from classifiers.hashing import TermHasher

_log = structlog.get_logger(__name__)
_N_STRUCT = len(STRUCTURAL_FEATURES)


@dataclass(frozen=True, slots=True)
class LinearWeights:
    """Exported coefficients of one linear model per tier.

    ``word_coef`` has shape (n_features, n_tiers) and ``struct_coef`` has shape
    (len(STRUCTURAL_FEATURES), n_tiers); ``intercept`` has one value per tier.
    """

    word_coef: np.ndarray
    struct_coef: np.ndarray
    intercept: np.ndarray
    struct_mean: np.ndarray
    struct_scale: np.ndarray
    struct_weight: float


class Scorer:
    """Scores conversations per tier with the fast linear path.

    ``score`` never raises on message content: malformed messages are coerced (see
    ``classifiers.conversation``).  ``version`` and ``tiers`` come from the artifact.
    """

    def __init__(
        self,
        *,
        version: str,
        tiers: Sequence[str],
        weights: LinearWeights,
        ngram_max: int,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        n_features, n_tiers = weights.word_coef.shape
        if n_tiers != len(tiers) or weights.struct_coef.shape != (len(STRUCTURAL_FEATURES), n_tiers):
            raise ValueError("coefficient shapes do not match the tiers and structural features")
        self.version = version
        self.tiers: tuple[str, ...] = tuple(tiers)
        self.metadata: dict[str, Any] = dict(metadata or {})
        # One matrix contains the word coefficients and, in the rows after them, the
        # structural coefficients with the standardisation folded in.  A call then takes
        # and multiplies all rows it needs at once.  Scores differ from the unfolded
        # formula by rounding only (below 1e-15 over 500 traffic-mix prompts).
        scaled = weights.struct_weight / weights.struct_scale
        struct_coef = weights.struct_coef * scaled[:, np.newaxis]
        coef = np.vstack([weights.word_coef, struct_coef])
        # The weights keep a view of that matrix, so the word coefficients are stored once.
        self._weights = replace(weights, word_coef=coef[:n_features])
        self._coef = coef
        self._base: list[float] = (weights.intercept - weights.struct_mean @ struct_coef).tolist()
        self._struct_columns = range(n_features, n_features + len(STRUCTURAL_FEATURES))
        self._hasher = TermHasher(n_features, ngram_max)

    def score(self, messages: Any) -> dict[str, float]:
        """Return, per tier, the routing score that the policy's thresholds apply to.

        See ``routing_scores``; the last (most capable) tier's score is its probability.
        """
        probabilities = self.probabilities(messages)
        return dict(zip(self.tiers, routing_scores(list(probabilities.values()))))

    def probabilities(self, messages: Any) -> dict[str, float]:
        """Return, per tier, the probability that the tier's answer is adequate."""
        try:
            logits = self._logits(messages)
        except Exception:  # noqa: BLE001 - a scoring bug must not fail the request
            # Fall back to the base rates (the intercepts) and leave a trace without the prompt.
            _log.exception("classifier_score_failed", version=self.version)
            logits = self._weights.intercept.tolist()
        return {tier: _sigmoid(z) for tier, z in zip(self.tiers, logits)}

    def features(self, messages: Any) -> dict[str, float]:
        """Return the structural features of ``messages`` (unscaled) for explanations."""
        view = view_conversation(messages)
        return dict(view.structure)

    def _logits(self, messages: Any) -> list[float]:
        view = view_conversation(messages)
        row = self._word_row(view.segments)
        # hypot(*values) is the L2 norm, computed in C.  Without words, norm 1 leaves the
        # structural part unscaled.
        norm = math.hypot(*row.values()) or 1.0
        # Each structural value is multiplied by the norm here and the whole dot product
        # is divided by it below, so that only the word counts end up normalised.
        struct_values = map(view.structure.__getitem__, STRUCTURAL_FEATURES)
        size = len(row) + _N_STRUCT
        columns = np.fromiter(chain(row.keys(), self._struct_columns), np.intp, size)
        values = np.fromiter(chain(row.values(), map(norm.__mul__, struct_values)), np.float64, size)
        dots = (values @ self._coef.take(columns, axis=0)).tolist()
        # Three tiers: Python floats are cheaper here than two more numpy operations.
        return [base + dot / norm for base, dot in zip(self._base, dots)]

    def _word_row(self, segments: list[tuple[str, float]]) -> dict[int, float]:
        """Return the weighted count of each distinct word column of ``segments``."""
        if not segments:
            return {}
        # Counter counts in C; the first segment is the long one (the last user message).
        first_text, first_weight = segments[0]
        counts = Counter(self._hasher.columns(first_text))
        row: dict[int, float] = (
            counts if first_weight == 1.0  # type: ignore[assignment]  # int counts are fine here
            else {column: n * first_weight for column, n in counts.items()}
        )
        for text, weight in segments[1:]:
            for column in self._hasher.columns(text):
                row[column] = row.get(column, 0.0) + weight
        return row


FRONTIER_FAILURE_CREDIT = 0.5
"""Share of P(top tier inadequate) added to a cheaper tier's routing score.

Chosen by held-out APGR (mid against frontier) over the values 0, 0.3, 0.5 and 1; the
table is in the classifiers README.  0 compares P(tier adequate) alone with the
threshold, and 1 ranks prompts by P(top adequate) - P(tier adequate)."""


def routing_scores(probabilities: Sequence[float]) -> list[float]:
    """Turn per-tier P(adequate), cheapest tier first, into routing scores.

    A cheaper tier scores P(tier adequate) + FRONTIER_FAILURE_CREDIT * (1 - P(top
    adequate)), capped at 1.  A prompt that even the most capable tier is likely to fail
    loses less by staying on a cheap tier, so it is more likely to stay there.  The top
    tier keeps its probability.
    """
    if not probabilities:
        return []
    credit = FRONTIER_FAILURE_CREDIT * (1.0 - probabilities[-1])
    return [min(1.0, p + credit) for p in probabilities[:-1]] + [probabilities[-1]]


def routing_score_matrix(probabilities: np.ndarray) -> np.ndarray:
    """``routing_scores`` for each row of an (n, n_tiers) probability matrix."""
    credit = FRONTIER_FAILURE_CREDIT * (1.0 - probabilities[:, -1:])
    scores = np.minimum(1.0, probabilities + credit)
    scores[:, -1] = probabilities[:, -1]
    return scores


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)
