"""Prompt difficulty classifiers for Tierwise.

The gateway uses this package through one small interface:

    scorer = load_artifact(path)            # or load_default()
    scores = scorer.score(messages)         # {"edge": 0.83, "mid": 0.91, "frontier": 0.95}

``score`` returns, per tier name, the routing score that the policy's thresholds apply
to (see ``classifiers.scorer.routing_scores``): the estimated probability that the tier's
answer is adequate, raised for a cheaper tier when even the most capable tier is likely to
fail.  ``probabilities`` returns the probabilities themselves.  Both take OpenAI-style message dicts (``role``,
``content`` as a string, a list of content parts or None) and never raises on odd
content.  ``load_artifact`` raises ``ArtifactError`` on a missing, corrupt or
incompatible artifact.  The package knows nothing of HTTP.

Training, data conversion and evaluation live in ``classifiers.training``,
``classifiers.datasets`` and ``classifiers.evaluation``.  Serving uses only
scikit-learn's murmurhash function.
"""

from classifiers.artifact import ArtifactError, load_artifact, load_default
from classifiers.scorer import Scorer

__all__ = ["ArtifactError", "Scorer", "load_artifact", "load_default"]
