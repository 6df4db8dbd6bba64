"""``tierwise classifier publish`` and ``tierwise policy publish``: roll out through Redis.

``versions`` lists what is stored, and ``rollback VERSION`` makes a stored version current again.

Both commands first run the checks that every gateway runs again before it serves a
version.  A classifier must load without pickle and score smoke conversations in [0, 1].
A policy must validate.  The policy's threshold tiers must be tiers that the classifier
scores.  Then the commands store the version and announce it.
Invalid input ends with a one-line error and exit code 2, a Redis failure with exit code 1.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from router.cli.redis_client import ClusterOption, redis_session

if TYPE_CHECKING:
    from router.distribution.keys import Kind

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

    bundled = str(directory) == BUNDLED_CLASSIFIER
    if bundled:
        from classifiers.artifact import DEFAULT_DIR

        directory = DEFAULT_DIR
    try:
        bundle = classifier_bundle(directory)
    except BundleError as exc:
        raise _fail(str(exc), 2) from None
    if bundled:
        # The origin that `versions` shows: the package's folder name, "default", would not
        # tell a reader that the bundled model was published.
        bundle = dataclasses.replace(bundle, origin=BUNDLED_CLASSIFIER)
    if policy is not None:
        local_tiers = _local_threshold_tiers(policy)
        _verify_classifier_or_exit(str(directory), bundle, local_tiers, f"the policy {policy}")
    keys = DistributionKeys(key_prefix)
    with redis_session(redis_url, redis_cluster) as client:
        _check_classifier_with_published_policy(client, keys, str(directory), bundle, policy)
        _publish(client, bundle, keep, keys)


def _check_classifier_with_published_policy(
    client: Any, keys: Any, label: str, bundle: Any, policy: Path | None
) -> None:
    """Check ``bundle`` against the published policy, or the bundled one without it or ``policy``.

    ``label`` names the classifier in the error message.
    """
    published = _published_threshold_tiers(client, keys)
    if published is not None:
        version, tiers = published
        _verify_classifier_or_exit(label, bundle, tiers, f"the published policy {version}")
    elif policy is None:
        from router.settings import BUNDLED_POLICY

        _verify_classifier_or_exit(
            label, bundle, _local_threshold_tiers(BUNDLED_POLICY),
            f"the bundled default policy {BUNDLED_POLICY}",
            ". No policy is published and --policy is not given, so the bundled default "
            "policy was checked; when the gateways serve another policy file, pass it "
            "with --policy",
        )


def _local_threshold_tiers(path: Path) -> list[str]:
    """Return the threshold tiers of the policy file ``path``; exit with 2 when it is invalid."""
    from router.distribution.verify import threshold_tiers
    from router.policy.loader import PolicyError, load_policy

    try:
        return threshold_tiers(load_policy(path))
    except PolicyError as exc:
        raise _fail(str(exc), 2) from None


def _verify_classifier_or_exit(
    label: str, bundle: Any, tiers: list[str], policy: str, hint: str = ""
) -> None:
    """Run the gateway's check of ``bundle`` against a policy's threshold ``tiers``.

    A failure ends the command with exit code 2.  The message starts with ``label`` (the
    classifier checked), names ``policy``, the policy checked, and ends with ``hint`` when given.
    """
    from router.distribution import VerificationError, verify_classifier

    try:
        verify_classifier(bundle, tiers)
    except VerificationError as exc:
        scored = _classifier_tiers(bundle)
        missing = sorted(set(tiers) - set(scored))
        if not missing:
            raise _fail(f"{label}: {exc}", 2) from None
        raise _fail(
            f"{label}: the classifier scores the tiers {', '.join(scored)}, but the "
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
    from router.distribution import BundleError, DistributionKeys, policy_bundle
    from router.policy.loader import PolicyError, load_policy

    try:
        bundle = policy_bundle(file, load_policy(file).version)
    except PolicyError as exc:
        raise _fail(str(exc), 2) from None
    except BundleError as exc:
        raise _fail(str(exc), 2) from None
    keys = DistributionKeys(key_prefix)
    with redis_session(redis_url, redis_cluster) as client:
        _check_policy_with_published_classifier(client, keys, str(file), bundle)
        _publish(client, bundle, keep, keys)


def _check_policy_with_published_classifier(client: Any, keys: Any, label: str, bundle: Any) -> None:
    """Verify the policy ``bundle``, and that the published classifier scores its threshold tiers.

    A failure ends the command with exit code 2; ``label`` names the policy in the message.
    """
    from router.distribution import VerificationError, verify_policy

    try:
        verify_policy(bundle)
    except VerificationError as exc:
        raise _fail(f"{label}: {exc}", 2) from None
    classifier = _published_classifier(client, keys)
    if classifier is not None:
        version, tiers = classifier
        try:
            verify_policy(bundle, tiers)
        except VerificationError as exc:
            raise _fail(
                f"{label}: {exc}. The published classifier is {version}, so publish one that "
                "scores those tiers first (`tierwise classifier rollback VERSION` makes a "
                "stored version current), or remove their thresholds from the policy", 2
            ) from None


def _publish(client: Any, bundle: Any, keep: int, keys: Any) -> None:
    from router.distribution import PublishError, publish_bundle

    try:
        result = publish_bundle(client, bundle, keys, keep=keep)
    except PublishError as exc:
        raise _fail(str(exc), 2) from None
    if result.stored:
        action = "stored and published"
    elif result.previous == result.version:
        action = "already stored and current; announced again"
    else:
        action = "already stored; made current"
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


VersionArgument = Annotated[
    str, typer.Argument(help="A stored version, as `versions` lists it.", show_default=False)
]


def classifier_versions_command(
    redis_url: RedisUrlOption = None,
    key_prefix: KeyPrefixOption = "tw",
    redis_cluster: ClusterOption = False,
) -> None:
    """List the classifier versions stored in Redis; * marks the one gateways serve.

    Example: tierwise classifier versions --redis-url redis://127.0.0.1:6379/0
    """
    _print_versions("classifier", redis_url, key_prefix, redis_cluster)


def policy_versions_command(
    redis_url: RedisUrlOption = None,
    key_prefix: KeyPrefixOption = "tw",
    redis_cluster: ClusterOption = False,
) -> None:
    """List the policy versions stored in Redis; * marks the one gateways serve.

    Example: tierwise policy versions --redis-url redis://127.0.0.1:6379/0
    """
    _print_versions("policy", redis_url, key_prefix, redis_cluster)


def _print_versions(kind: Kind, redis_url: str | None, key_prefix: str, cluster: bool) -> None:
    from router.distribution import DistributionKeys, stored_versions

    keys = DistributionKeys(key_prefix)
    with redis_session(redis_url, cluster) as client:
        versions = stored_versions(client, keys, kind)
    if not versions:
        typer.echo(f"No {kind} version is stored under the prefix {key_prefix!r}. Check that "
                   "--key-prefix is the gateways' TIERWISE_REDIS_KEY_PREFIX.")
        return
    typer.echo(f"{kind} versions, the one made current last first (* = current):")
    width = max(len(stored.version) for stored in versions)
    for stored in versions:
        marker = "*" if stored.current else " "
        made_current = stored.made_current_at.isoformat(timespec="seconds")
        typer.echo(
            f"{marker} {stored.version:<{width}}  made current {made_current}  "
            f"stored {_seconds(stored.stored_at)}  digest {stored.digest[:12] or '?'}  "
            f"from {stored.origin or '?'}"
        )


def _seconds(iso_time: str) -> str:
    """Return an ISO 8601 time to the second with its UTC offset, as "made current" is shown."""
    try:
        return datetime.fromisoformat(iso_time).isoformat(timespec="seconds")
    except ValueError:
        return iso_time or "?"


def rollback_classifier_command(
    version: VersionArgument,
    policy: Annotated[
        Path | None,
        typer.Option(
            help="Policy YAML file of the gateways, checked as `classifier publish` checks it."
        ),
    ] = None,
    redis_url: RedisUrlOption = None,
    key_prefix: KeyPrefixOption = "tw",
    redis_cluster: ClusterOption = False,
) -> None:
    """Make a stored classifier version current again, without its artifact folder.

    The version must still be stored: `classifier versions` lists them, and each publish
    keeps the newest --keep.  It is checked as `classifier publish` checks a folder, then
    made current and announced, so every gateway serves it within a few seconds.  No
    version is deleted.

    Example: tierwise classifier rollback 2026.12.05-1 --redis-url redis://127.0.0.1:6379/0
    """
    from router.distribution import DistributionKeys

    keys = DistributionKeys(key_prefix)
    with redis_session(redis_url, redis_cluster) as client:
        bundle = _stored_or_exit(client, keys, "classifier", version)
        label = f"classifier version {version}"
        if policy is not None:
            _verify_classifier_or_exit(label, bundle, _local_threshold_tiers(policy),
                                       f"the policy {policy}")
        _check_classifier_with_published_policy(client, keys, label, bundle, policy)
        _publish(client, bundle, _stored_count(client, keys, "classifier"), keys)


def rollback_policy_command(
    version: VersionArgument,
    redis_url: RedisUrlOption = None,
    key_prefix: KeyPrefixOption = "tw",
    redis_cluster: ClusterOption = False,
) -> None:
    """Make a stored policy version current again, without its file.

    The version is the hash that `policy check` printed for the file, and `policy versions`
    lists the stored ones.  It is checked as `policy publish` checks a file, then made
    current and announced.  No version is deleted.

    Example: tierwise policy rollback 3f2a9c0d1e4b --redis-url redis://127.0.0.1:6379/0
    """
    from router.distribution import DistributionKeys

    keys = DistributionKeys(key_prefix)
    with redis_session(redis_url, redis_cluster) as client:
        bundle = _stored_or_exit(client, keys, "policy", version)
        _check_policy_with_published_classifier(client, keys, f"policy version {version}", bundle)
        _publish(client, bundle, _stored_count(client, keys, "policy"), keys)


def _stored_or_exit(client: Any, keys: Any, kind: Kind, version: str) -> Any:
    """Return the stored bundle of ``kind`` at ``version``.

    An invalid or unknown version ends the command with exit code 2.  A stored bundle whose
    files do not match their manifest ends it with exit code 1.
    """
    from router.distribution import BundleError, stored_bundle, stored_versions
    from router.distribution.keys import check_version

    try:
        check_version(version)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    try:
        bundle = stored_bundle(client, keys, kind, version)
    except BundleError as exc:
        raise _fail(f"the stored {kind} version {version} is invalid: {exc}", 1) from None
    if bundle is None:
        names = [stored.version for stored in stored_versions(client, keys, kind)]
        listed = (f"Stored versions: {', '.join(names)}" if names else
                  f"No version is stored; check that --key-prefix ({keys.namespace!r}) is the "
                  "gateways' TIERWISE_REDIS_KEY_PREFIX")
        raise _fail(
            f"{kind} version {version!r} not found under the prefix {keys.namespace!r}. "
            f"{listed}. To serve a deleted version, publish its "
            f"{'artifact folder' if kind == 'classifier' else 'file'} again",
            2,
        )
    return bundle


def _stored_count(client: Any, keys: Any, kind: Kind) -> int:
    """Return the number of stored versions of ``kind``, the ``keep`` at which a rollback deletes none."""
    return max(1, int(client.zcard(keys.versions(kind))))


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
