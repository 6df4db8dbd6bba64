"""Checks that a bundle must pass before a gateway serves it, or a publisher stores it."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from classifiers import ArtifactError, Scorer, load_artifact
from router.distribution.bundle import POLICY_FILE, Bundle
from router.policy.loader import LoadedPolicy, PolicyError, parse_policy
from router.policy.store import problem_lines

# Conversations of different shapes; any classifier must score each with finite values in [0, 1].
SMOKE_CONVERSATIONS: tuple[list[dict[str, Any]], ...] = (
    [{"role": "user", "content": "Hi! How are you today?"}],
    [{"role": "user", "content": "Write a Python function that merges two sorted lists."}],
    [{"role": "user", "content": "Prove that there are infinitely many prime numbers."}],
    [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What does a load balancer do?"},
        {"role": "assistant", "content": "It spreads requests across several servers."},
        {"role": "user", "content": "And a reverse proxy?"},
    ],
    [{"role": "user", "content": ""}],
)


class VerificationError(Exception):
    """Raised when a bundle must not be served; the message names the failed check.

    ``public_reason`` is the message without text quoted from the bundle, for ``/readyz``.
    """

    def __init__(self, message: str, public_reason: str | None = None) -> None:
        super().__init__(message)
        self.public_reason = message if public_reason is None else public_reason


def verify_classifier(bundle: Bundle, required_tiers: Collection[str] = ()) -> Scorer:
    """Load a classifier bundle without pickle, score the smoke conversations, and return it.

    ``required_tiers`` are the tiers that the serving policy's thresholds name; the
    classifier must score each of them.  Raises VerificationError.
    """
    if bundle.kind != "classifier":
        raise VerificationError(f"expected a classifier bundle, got a {bundle.kind} bundle")
    scorer = _load_classifier(bundle)
    if scorer.version != bundle.version:
        raise VerificationError(
            f"model.json names version {scorer.version!r}, but it was published as {bundle.version!r}"
        )
    _check_smoke_scores(scorer)
    missing = sorted(set(required_tiers) - set(scorer.tiers))
    if missing:
        raise VerificationError(
            f"the classifier scores tiers {list(scorer.tiers)}, but the policy's thresholds also "
            f"name {missing}"
        )
    return scorer


def _load_classifier(bundle: Bundle) -> Scorer:
    with tempfile.TemporaryDirectory(prefix="tierwise-classifier-") as folder:
        for name, data in bundle.files.items():
            (Path(folder) / name).write_bytes(data)
        try:
            return load_artifact(folder)
        except ArtifactError as exc:
            # The temporary folder means nothing to the reader; name the version instead.
            message = str(exc).replace(folder, f"classifier {bundle.version}")
            raise VerificationError(f"the artifact does not load: {message}") from None


def _check_smoke_scores(scorer: Scorer) -> None:
    for number, conversation in enumerate(SMOKE_CONVERSATIONS, start=1):
        scores = scorer.score(conversation)
        if set(scores) != set(scorer.tiers):
            raise VerificationError(
                f"smoke conversation {number}: scores for {sorted(scores)}, "
                f"expected the tiers {sorted(scorer.tiers)}"
            )
        for tier, value in scores.items():
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise VerificationError(
                    f"smoke conversation {number}: the {tier} score is {value}, "
                    "expected a finite value in [0, 1]"
                )


def verify_policy(bundle: Bundle, scorer_tiers: Collection[str] | None = None) -> LoadedPolicy:
    """Validate a policy bundle and return it loaded.

    ``scorer_tiers`` are the tiers of the serving classifier; every tier that the policy's
    thresholds name must be among them.  None skips that check.  Raises VerificationError.
    """
    if bundle.kind != "policy" or set(bundle.files) != {POLICY_FILE}:
        raise VerificationError(f"expected a policy bundle with one file {POLICY_FILE}")
    try:
        text = bundle.files[POLICY_FILE].decode("utf-8")
        loaded = parse_policy(text, Path(f"published-policy-{bundle.version}.yaml"))
    except UnicodeDecodeError:
        raise VerificationError("the policy is not UTF-8 text") from None
    except PolicyError as exc:
        raise VerificationError(
            "the policy is invalid: " + "; ".join(exc.problems), _invalid_policy_summary(exc)
        ) from None
    if loaded.version != bundle.version:
        raise VerificationError(
            f"the policy's content hash is {loaded.version}, but it was published as {bundle.version}"
        )
    _check_threshold_tiers(loaded, scorer_tiers)
    return loaded


def _invalid_policy_summary(error: PolicyError) -> str:
    """Count the problems of ``error`` and name their lines, without their text."""
    count = len(error.problems)
    summary = f"the policy is invalid: {count} problem{'' if count == 1 else 's'}"
    lines = problem_lines(error)
    if lines:
        summary += f", at line{'' if len(lines) == 1 else 's'} " + ", ".join(map(str, lines))
    return summary


def _check_threshold_tiers(loaded: LoadedPolicy, scorer_tiers: Collection[str] | None) -> None:
    if scorer_tiers is None:
        return
    missing = sorted(set(loaded.policy.routing.thresholds) - set(scorer_tiers))
    if missing:
        raise VerificationError(
            f"the thresholds name tiers {missing} that the classifier does not score "
            f"(it scores {sorted(scorer_tiers)})"
        )


def threshold_tiers(loaded: LoadedPolicy) -> list[str]:
    """Return the tiers that the policy's routing thresholds name."""
    return sorted(loaded.policy.routing.thresholds)
