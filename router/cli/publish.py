"""``tierwise classifier publish`` and ``tierwise policy publish``: roll out through Redis.

Both commands first run the checks that every gateway runs again before it serves a
version.  A classifier must load without pickle and score smoke conversations in [0, 1].
A policy must validate.  The policy's threshold tiers must be tiers that the classifier
scores.  Then the commands store the version and announce it.
Invalid input ends with a one-line error and exit code 2, a Redis failure with exit code 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from router.cli.redis_client import ClusterOption, redis_session

RedisUrlOption = Annotated[
    str | None,
    typer.Option(envvar=["TIERWISE_REDIS_URL", "REDIS_URL"], help="Redis URL of the gateways."),
]
KeyPrefixOption = Annotated[
    str,
    typer.Option(
        envvar="TIERWISE_REDIS_KEY_PREFIX",
        help="Key prefix of the gateways; versions are stored under the hash tag {PREFIX}.",
    ),
]
BUNDLED_CLASSIFIER = "bundled"
"""The name that ``classifier publish`` reads as the bundled model, as ``train --compare-with`` does."""
KeepOption = Annotated[
    int, typer.Option(help="Stored versions to keep; older ones are deleted, never the current.")
]


def publish_classifier_command(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Artifact folder with model.json, its weights and MODEL_CARD.md, or "
            f"'{BUNDLED_CLASSIFIER}' for the model shipped in the package."
        ),
    ],
    policy: Annotated[
        Path | None,
        typer.Option(
            help="Policy YAML file of the gateways; the classifier must score every tier that "
            "its thresholds name. Without it, and with no policy published in Redis, the "
            "bundled default policy is checked."
        ),
    ] = None,
    redis_url: RedisUrlOption = None,
    keep: KeepOption = 5,
    key_prefix: KeyPrefixOption = "tw",
    redis_cluster: ClusterOption = False,
) -> None:
    """Verify a classifier artifact, store it in Redis, and make every gateway serve it.

    The version is the one in model.json.  Publishing a version that is already stored
    with the same files makes it current again (a rollback).  'bundled' publishes the model
    shipped in the package, wherever the package is installed, to roll back to it.

    A gateway rejects a classifier that does not score every tier named by the thresholds
    of the policy it serves.  So the classifier is checked against the published policy,
    and against --policy FILE when given.  When neither exists, it is checked against the
    bundled default policy, which gateways serve without TIERWISE_POLICY.  Pass --policy
    with the gateways' own policy file when they run another one.

    Example: tierwise classifier publish var/model --policy policies/default.yaml --redis-url redis://127.0.0.1:6379/0
    """
    from router.distribution import BundleError, DistributionKeys, classifier_bundle

    if str(directory) == BUNDLED_CLASSIFIER:
        from classifiers.artifact import DEFAULT_DIR

        directory = DEFAULT_DIR
    try:
        bundle = classifier_bundle(directory)
    except BundleError as exc:
        raise _fail(str(exc), 2) from None
    if policy is not None:
        local_tiers = _local_threshold_tiers(policy)
        _verify_classifier_or_exit(directory, bundle, local_tiers, f"the policy {policy}")
    keys = DistributionKeys(key_prefix)
    with redis_session(redis_url, redis_cluster) as client:
        published = _published_threshold_tiers(client, keys)
        if published is not None:
            version, tiers = published
            _verify_classifier_or_exit(directory, bundle, tiers, f"the published policy {version}")
        elif policy is None:
            from router.settings import BUNDLED_POLICY

            _verify_classifier_or_exit(
                directory, bundle, _local_threshold_tiers(BUNDLED_POLICY),
                f"the bundled default policy {BUNDLED_POLICY}",
                ". No policy is published and --policy is not given, so the bundled default "
                "policy was checked; when the gateways serve another policy file, pass it "
                "with --policy",
            )
        _publish(client, bundle, keep, keys)


def _local_threshold_tiers(path: Path) -> list[str]:
    """Return the threshold tiers of the policy file ``path``; exit with 2 when it is invalid."""
    from router.distribution.verify import threshold_tiers
    from router.policy.loader import PolicyError, load_policy

    try:
        return threshold_tiers(load_policy(path))
    except PolicyError as exc:
        raise _fail(str(exc), 2) from None


def _verify_classifier_or_exit(
    directory: Path, bundle: Any, tiers: list[str], policy: str, hint: str = ""
) -> None:
    """Run the gateway's check of ``bundle`` against a policy's threshold ``tiers``.

    A failure ends the command with exit code 2.  The message names ``policy``, the policy
    checked, and ends with ``hint`` when given.
    """
    from router.distribution import VerificationError, verify_classifier

    try:
        verify_classifier(bundle, tiers)
    except VerificationError as exc:
        scored = _classifier_tiers(bundle)
        missing = sorted(set(tiers) - set(scored))
        if not missing:
            raise _fail(f"{directory}: {exc}", 2) from None
        raise _fail(
            f"{directory}: the classifier scores the tiers {', '.join(scored)}, but the "
            f"thresholds of {policy} also name {', '.join(missing)}, so gateways that serve "
            "that policy would reject it. Publish a classifier that scores those tiers, or "
            f"remove their thresholds from the policy first{hint}",
            2,
        ) from None


def publish_policy_command(
    file: Annotated[Path, typer.Argument(help="Policy YAML file.")],
    redis_url: RedisUrlOption = None,
    keep: KeepOption = 5,
    key_prefix: KeyPrefixOption = "tw",
    redis_cluster: ClusterOption = False,
) -> None:
    """Validate a policy, store it in Redis, and make every gateway serve it.

    Gateways that apply a published policy stop reloading their local policy file.

    Example: tierwise policy publish policies/default.yaml --redis-url redis://127.0.0.1:6379/0
    """
    from router.distribution import (
        BundleError,
        DistributionKeys,
        VerificationError,
        policy_bundle,
        verify_policy,
    )
    from router.policy.loader import PolicyError, load_policy

    try:
        bundle = policy_bundle(file, load_policy(file).version)
    except PolicyError as exc:
        raise _fail(str(exc), 2) from None
    except BundleError as exc:
        raise _fail(str(exc), 2) from None
    keys = DistributionKeys(key_prefix)
    with redis_session(redis_url, redis_cluster) as client:
        try:
            verify_policy(bundle)
        except VerificationError as exc:
            raise _fail(f"{file}: {exc}", 2) from None
        classifier = _published_classifier(client, keys)
        if classifier is not None:
            version, tiers = classifier
            try:
                verify_policy(bundle, tiers)
            except VerificationError as exc:
                raise _fail(
                    f"{file}: {exc}. The published classifier is {version}, so publish one that "
                    "scores those tiers first (publishing a stored version again makes it "
                    "current), or remove their thresholds from the policy", 2
                ) from None
        _publish(client, bundle, keep, keys)


def _publish(client: Any, bundle: Any, keep: int, keys: Any) -> None:
    from router.distribution import PublishError, publish_bundle

    try:
        result = publish_bundle(client, bundle, keys, keep=keep)
    except PublishError as exc:
        raise _fail(str(exc), 2) from None
    action = "stored and published" if result.stored else "already stored; made current"
    typer.echo(
        f"{result.kind} {result.version}: {action} (digest {result.digest[:12]}, "
        f"previous {result.previous or 'none'}). Gateways apply it within a few seconds."
    )
    if result.removed:
        typer.echo(f"deleted old versions: {', '.join(result.removed)}")


def _published_threshold_tiers(client: Any, keys: Any) -> tuple[str, list[str]] | None:
    """Return the version and threshold tiers of the published policy, or None when none is.

    A published policy that fails verification counts as none, because gateways keep their
    last good policy then.
    """
    from router.distribution import BundleError, VerificationError, verify_policy
    from router.distribution.publish import published_version
    from router.distribution.verify import threshold_tiers

    try:
        bundle = published_version(client, keys, "policy")
        if bundle is None:
            return None
        return bundle.version, threshold_tiers(verify_policy(bundle))
    except (BundleError, VerificationError):
        return None


def _published_classifier(client: Any, keys: Any) -> tuple[str, list[str]] | None:
    """Return the version and tiers of the published classifier, or None when none is published."""
    from router.distribution import BundleError
    from router.distribution.publish import published_version

    try:
        bundle = published_version(client, keys, "classifier")
        if bundle is None:
            return None
        return bundle.version, _classifier_tiers(bundle)
    except (BundleError, KeyError, ValueError, TypeError):
        return None


def _classifier_tiers(bundle: Any) -> list[str]:
    """Return the tiers that a classifier bundle's model.json lists, cheapest first."""
    from router.distribution.bundle import MODEL_FILE

    return [str(tier) for tier in json.loads(bundle.files[MODEL_FILE])["tiers"]]


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
