"""The serving-time scorer: hashed features dotted with exported linear coefficients.

For each tier the model is a logistic regression over one feature row:

    x = [ word n-gram counts (weighted per turn, L2-normalised),
          struct_weight * (structural features - mean) / scale ]
    P(tier adequate) = sigmoid(x . coef[:, tier] + intercept[tier])

``Scorer`` hashes the n-grams itself and computes the products with a few numpy calls on
small arrays, which keeps a call far below the cost of a scikit-learn ``predict_proba``.

The gateway compares routing scores, not these probabilities, with the policy's
thresholds (see ``routing_scores``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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
        # The standardisation is folded into the structural coefficients, and its constant
        # part (the mean times those coefficients) into the intercepts.  Scores differ from
        # the unfolded formula by rounding only (at most 4e-15 in the logits over the 9,821
        # traffic-mix prompts).
        scaled = weights.struct_weight / weights.struct_scale
        struct_coef = weights.struct_coef * scaled[:, np.newaxis]
        self._weights = weights
        self._word_coef = weights.word_coef
        self._struct_coef = struct_coef
        self._base: list[float] = (weights.intercept - weights.struct_mean @ struct_coef).tolist()
        self._hasher = TermHasher(n_features, ngram_max)
        # Weights of a single segment of weight 1.0, the usual case.  A slice costs less than
        # np.ones per call.  1,024 covers every n-gram of the capped last message (at most
        # 801 characters) for n-grams up to 3, and longer rows fall back to np.ones.
        self._ones = np.ones(1024)
        self._ones.flags.writeable = False

    def score(self, messages: Any) -> dict[str, float]:
        """Return, per tier, the routing score that the policy's thresholds apply to.

        See ``routing_scores``; the last (most capable) tier's score is its probability.
        """
        return dict(zip(self.tiers, routing_scores(self._probability_list(messages))))

    def probabilities(self, messages: Any) -> dict[str, float]:
        """Return, per tier, the probability that the tier's answer is adequate."""
        return dict(zip(self.tiers, self._probability_list(messages)))

    def features(self, messages: Any) -> dict[str, float]:
        """Return the structural features of ``messages`` (unscaled) for explanations."""
        view = view_conversation(messages)
        return dict(view.structure)

    def _probability_list(self, messages: Any) -> list[float]:
        try:
            logits = self._logits(messages)
        except Exception:  # noqa: BLE001 - a scoring bug must not fail the request
            # Fall back to the base rates (the intercepts) and leave a trace without the prompt.
            _log.exception("classifier_score_failed", version=self.version)
            logits = self._weights.intercept.tolist()
        return [_sigmoid(z) for z in logits]

    def _logits(self, messages: Any) -> list[float]:
        view = view_conversation(messages)
        columns, weights, norm = self._word_columns(view.segments)
        # Every n-gram occurrence takes its column's coefficients times its weight, so a
        # column adds them times its summed weight, as in the word row.  Only the norm needs
        # that sum per distinct column, and dividing by it below normalises the word part only.
        word_dots = np.dot(weights, self._word_coef.take(columns, axis=0))
        # _structure builds the dict in STRUCTURAL_FEATURES order.
        struct_values = np.fromiter(view.structure.values(), np.float64, _N_STRUCT)
        struct_dots = np.dot(struct_values, self._struct_coef)
        # Three tiers: Python floats are cheaper here than two more numpy operations.
        return [base + word / norm + struct
                for base, word, struct in zip(self._base, word_dots.tolist(), struct_dots.tolist())]

    def _word_columns(self, segments: list[tuple[str, float]]) -> tuple[np.ndarray, np.ndarray, float]:
        """Return the column and weight of each n-gram occurrence in ``segments``, and the norm.

        The norm is the L2 norm of the word row (the summed weight of each distinct
        column), or 1.0 without words, so that the structural part stays unscaled.
        """
        if len(segments) == 1 and segments[0][1] == 1.0:
            columns = self._hasher.columns(segments[0][0])
            ones = self._ones[:columns.size] if columns.size <= self._ones.size else np.ones(columns.size)
            return columns, ones, _count_norm(columns)
        if not segments:
            return np.empty(0, np.int64), np.empty(0), 1.0
        parts = [self._hasher.columns(text) for text, _ in segments]
        columns = np.concatenate(parts)
        weights = np.repeat([weight for _, weight in segments], [part.size for part in parts])
        return columns, weights, _weighted_norm(columns, weights)


def _weighted_norm(columns: np.ndarray, weights: np.ndarray) -> float:
    """Return the L2 norm of the summed ``weights`` of each distinct column, or 1.0 if empty."""
    if not columns.size:
        return 1.0
    # A stable sort keeps the occurrences of a column in their order, so each sum adds
    # its weights in the order that the segments list them.
    order = columns.argsort(kind="stable")
    sorted_columns = columns[order]
    run_starts = np.flatnonzero(np.concatenate(([True], sorted_columns[1:] != sorted_columns[:-1])))
    sums = np.add.reduceat(weights[order], run_starts)
    return math.sqrt(sums @ sums) or 1.0


def _count_norm(columns: np.ndarray) -> float:
    """Return the L2 norm of the count of each distinct value in ``columns``, or 1.0 if empty.

    Sorts ``columns`` in place.  In the sorted array, searchsorted(side="right") gives the
    number of elements <= each element.  Its sum is the number of ordered pairs (i, j)
    with columns[j] <= columns[i]: all sum(n**2) equal pairs and half of the m**2 -
    sum(n**2) others, where m is the size and n runs over the counts.  So sum(n**2) is
    twice that sum minus m**2, found with three numpy calls.
    """
    columns.sort()
    pairs = int(np.add.reduce(columns.searchsorted(columns, "right")))
    size = columns.size
    return math.sqrt(2 * pairs - size * size) or 1.0


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
