"""Training options, importable without scikit-learn.

The gateway's command line builds its option defaults from these, so keeping them apart from
``classifiers.training`` keeps scikit-learn and SciPy out of a serving process.
"""

from __future__ import annotations

from dataclasses import dataclass

from classifiers.outcomes import DEFAULT_THRESHOLD

# Picked by held-out APGR and cost share on the public sets (see the classifiers README).
DEFAULT_C = 0.3

SOLVERS = ("auto", "liblinear", "sgd")
# With "auto", a tier head with more labelled rows than this is fitted by stochastic
# gradient descent.  liblinear's time and memory grow faster than the row count: on
# 1,000,000 rows its three heads took 13 minutes and 6.3 GB (see bench/README.md).
SGD_MIN_ROWS = 200_000


class TrainingError(ValueError):
    """Raised when the labelled data cannot train a tier (no rows, or one class only)."""


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyperparameters of the featurizer and the per-tier logistic regressions.

    ``c`` is scikit-learn's inverse L2 regularisation strength.  ``threshold`` turns a
    quality in [0, 1] into the binary "adequate" label.  ``source_power`` re-weights
    rows by source group: each row weighs (rows in its group) ** -source_power, scaled to
    a mean of 1, so 0 leaves rows equal and 1 gives every group the same total weight.
    ``min_sources`` keeps only word columns seen in that many source groups (1 keeps all).
    ``length_prior`` in [0, 1] mixes each head's logit with a prompt-length-only logit
    (see ``classifiers.transfer``).  ``solver`` fits each head with liblinear, with
    stochastic gradient descent on the same penalised log loss ("sgd"), or picks SGD
    above ``SGD_MIN_ROWS`` labelled rows ("auto").
    ``source_intercepts`` fits one intercept per source group and exports their
    weighted mean (``fit_with_source_intercepts``).
    """

    n_features: int = 2**17
    ngram_max: int = 2
    struct_weight: float = 1.0
    c: float = DEFAULT_C
    threshold: float = DEFAULT_THRESHOLD
    max_iter: int = 2000
    source_power: float = 0.0
    min_sources: int = 1
    length_prior: float = 0.0
    solver: str = "auto"
    sgd_epochs: int = 30
    source_intercepts: bool = False

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise TrainingError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if not 0.0 <= self.length_prior <= 1.0:
            raise TrainingError(f"length prior must be in [0, 1], got {self.length_prior}")
        if self.min_sources < 1:
            raise TrainingError(f"min sources must be at least 1, got {self.min_sources}")
