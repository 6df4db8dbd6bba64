"""Publishing classifiers and policies through Redis, and the watcher that applies them."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from classifiers import load_artifact
from router.distribution import (
    Bundle,
    BundleError,
    DistributionKeys,
    DistributionWatcher,
    PublishError,
    VerificationError,
    classifier_bundle,
    policy_bundle,
    publish_bundle,
    store_bundle,
    verify_classifier,
    verify_policy,
)
from router.distribution.publish import published_version
from router.policy.loader import load_policy
from router.policy.store import PolicyStore
from tests.scaleout.support import delete_namespace, make_artifact
from tests.support.fixtures import REPLAY_STACK, TierUpstream, write_policy


@dataclass
class FakeTarget:
    """The two runtime attributes a watcher updates."""

    scorer: Any
    policies: PolicyStore


def write_test_policy(path: Path, edge_threshold: float = 0.7) -> Path:
    """Write a valid three-tier policy whose upstreams are never called."""
    upstreams = [TierUpstream(spec, f"http://127.0.0.1:9/{spec.tier}/v1") for spec in REPLAY_STACK]
    return write_policy(path, upstreams, thresholds={"edge": edge_threshold, "mid": 0.6})


def policy_bundle_of(path: Path) -> Bundle:
    return policy_bundle(path, load_policy(path).version)


async def wait_for(condition: Any, timeout_s: float = 20.0) -> bool:
    """Poll ``condition()`` every 50 ms until it is true; return False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return bool(condition())


@pytest.fixture
def keys(redis_client: redis.Redis) -> Iterator[DistributionKeys]:
    """A namespace of its own, so that no watcher of another test or run sees these keys."""
    namespace = f"tw-test-{uuid.uuid4().hex[:12]}"
    try:
        yield DistributionKeys(namespace)
    finally:
        delete_namespace(redis_client, namespace)


@pytest.fixture
def target(tmp_path: Path) -> FakeTarget:
    scorer = load_artifact(make_artifact(tmp_path / "serving-model", "serving-1"))
    return FakeTarget(scorer, PolicyStore(write_test_policy(tmp_path / "serving.yaml"), 0.0))


# Bundles ----------------------------------------------------------------------------------


def test_bundle_round_trip(tmp_path: Path) -> None:
    bundle = classifier_bundle(make_artifact(tmp_path / "model", "m-1"))

    fields = {key.encode(): value for key, value in bundle.hash_fields("now").items()}
    restored = Bundle.from_hash("classifier", "m-1", fields)

    assert sorted(bundle.files) == ["MODEL_CARD.md", "model.json", "weights.npz"]
    assert restored.files == bundle.files
    assert restored.digest == bundle.digest
    assert restored.origin == "model"


def test_bundle_with_changed_file_is_rejected(tmp_path: Path) -> None:
    bundle = classifier_bundle(make_artifact(tmp_path / "model", "m-1"))
    fields = {key.encode(): value for key, value in bundle.hash_fields("now").items()}
    weights = bytearray(fields[b"file:weights.npz"])
    weights[len(weights) // 2] ^= 0xFF
    fields[b"file:weights.npz"] = bytes(weights)

    with pytest.raises(
        BundleError, match="SHA-256 of weights.npz is [0-9a-f]{64}, but the manifest"
    ):
        Bundle.from_hash("classifier", "m-1", fields)


def test_bundle_file_name_outside_folder_is_rejected() -> None:
    bundle = Bundle("classifier", "m-1", {"../model.json": b"{}"})
    fields = {key.encode(): value for key, value in bundle.hash_fields("now").items()}

    with pytest.raises(BundleError, match=r"invalid file name '../model.json' in the bundle"):
        Bundle.from_hash("classifier", "m-1", fields)


def test_bundle_for_other_version_is_rejected(tmp_path: Path) -> None:
    bundle = classifier_bundle(make_artifact(tmp_path / "model", "m-1"))
    fields = {key.encode(): value for key, value in bundle.hash_fields("now").items()}

    with pytest.raises(
        BundleError, match="the manifest is for classifier m-1, expected classifier m-2"
    ):
        Bundle.from_hash("classifier", "m-2", fields)


def test_classifier_bundle_needs_valid_version(tmp_path: Path) -> None:
    folder = make_artifact(tmp_path / "model", "m-1")
    metadata = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(metadata | {"version": "a b"}))

    with pytest.raises(BundleError, match=r"invalid version 'a b'"):
        classifier_bundle(folder)


# Verification -----------------------------------------------------------------------------


def test_verify_classifier_returns_scorer(tmp_path: Path) -> None:
    bundle = classifier_bundle(make_artifact(tmp_path / "model", "m-1"))

    scorer = verify_classifier(bundle, ["edge", "mid"])

    assert scorer.version == "m-1"
    assert scorer.tiers == ("edge", "mid", "frontier")


def test_verify_classifier_rejects_corrupt_weights(tmp_path: Path) -> None:
    folder = make_artifact(tmp_path / "model", "m-1")
    weights = folder / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")

    with pytest.raises(VerificationError) as caught:
        verify_classifier(classifier_bundle(folder))

    message = str(caught.value)
    assert message.startswith("the artifact does not load: classifier m-1/weights.npz: SHA-256")
    assert "tierwise-classifier-" not in message


def test_verify_classifier_rejects_missing_tier(tmp_path: Path) -> None:
    bundle = classifier_bundle(make_artifact(tmp_path / "model", "m-1", tiers=("edge", "frontier")))

    with pytest.raises(VerificationError, match=r"the policy's thresholds also name \['mid'\]"):
        verify_classifier(bundle, ["edge", "mid"])


def test_verify_classifier_rejects_renamed_version(tmp_path: Path) -> None:
    bundle = classifier_bundle(make_artifact(tmp_path / "model", "m-1"))
    renamed = Bundle("classifier", "m-2", bundle.files)

    with pytest.raises(
        VerificationError, match="model.json names version 'm-1', but it was published as 'm-2'"
    ):
        verify_classifier(renamed)


def test_verify_policy_loads_policy(tmp_path: Path) -> None:
    path = write_test_policy(tmp_path / "p.yaml")

    loaded = verify_policy(policy_bundle_of(path), ("edge", "mid", "frontier"))

    assert loaded.version == load_policy(path).version
    assert loaded.policy.routing.thresholds == {"edge": 0.7, "mid": 0.6}


def test_verify_policy_rejects_invalid_policy() -> None:
    bundle = Bundle("policy", "p-1", {"policy.yaml": b"version: 1\ntiers: 5\n"})

    with pytest.raises(
        VerificationError, match="the policy is invalid: published-policy-p-1.yaml:2: tiers"
    ):
        verify_policy(bundle)


def test_verify_policy_rejects_wrong_hash(tmp_path: Path) -> None:
    path = write_test_policy(tmp_path / "p.yaml")
    bundle = Bundle("policy", "0123456789ab", {"policy.yaml": path.read_bytes()})

    with pytest.raises(VerificationError, match="but it was published as 0123456789ab"):
        verify_policy(bundle)


def test_verify_policy_rejects_unscored_tier(tmp_path: Path) -> None:
    bundle = policy_bundle_of(write_test_policy(tmp_path / "p.yaml"))

    with pytest.raises(VerificationError, match=r"the thresholds name tiers \['mid'\]"):
        verify_policy(bundle, ("edge", "frontier"))


# Publishing -------------------------------------------------------------------------------


def test_publish_stores_points_and_announces(
    redis_client: redis.Redis, keys: DistributionKeys, tmp_path: Path
) -> None:
    bundle = classifier_bundle(make_artifact(tmp_path / "model", "m-1"))
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.channel)
    pubsub.get_message(timeout=1.0)

    result = publish_bundle(redis_client, bundle, keys)

    assert result.stored is True
    assert result.previous is None
    assert redis_client.get(keys.current("classifier")) == b"m-1"
    stored = published_version(redis_client, keys, "classifier")
    assert stored is not None
    assert stored.digest == bundle.digest
    message = pubsub.get_message(timeout=5.0)
    assert message is not None
    assert json.loads(message["data"]) == {"kind": "classifier", "version": "m-1"}
    pubsub.close()


def test_publish_same_version_again_moves_pointer(
    redis_client: redis.Redis, keys: DistributionKeys, tmp_path: Path
) -> None:
    first = classifier_bundle(make_artifact(tmp_path / "m1", "m-1"))
    second = classifier_bundle(make_artifact(tmp_path / "m2", "m-2", seed=1))
    publish_bundle(redis_client, first, keys)
    publish_bundle(redis_client, second, keys)

    rollback = publish_bundle(redis_client, first, keys)

    assert rollback.stored is False
    assert rollback.previous == "m-2"
    assert redis_client.get(keys.current("classifier")) == b"m-1"


def test_publish_other_content_same_version_fails(
    redis_client: redis.Redis, keys: DistributionKeys, tmp_path: Path
) -> None:
    publish_bundle(redis_client, classifier_bundle(make_artifact(tmp_path / "a", "m-1")), keys)
    other = classifier_bundle(make_artifact(tmp_path / "b", "m-1", seed=7))

    with pytest.raises(
        PublishError, match="classifier version m-1 is already published with different content"
    ):
        publish_bundle(redis_client, other, keys)

    assert redis_client.get(keys.current("classifier")) == b"m-1"


def test_publish_keeps_newest_versions(
    redis_client: redis.Redis, keys: DistributionKeys, tmp_path: Path
) -> None:
    bundles = [
        classifier_bundle(make_artifact(tmp_path / f"m{n}", f"m-{n}", seed=n)) for n in range(4)
    ]
    for bundle in bundles:
        publish_bundle(redis_client, bundle, keys, keep=2)
    rollback = publish_bundle(redis_client, bundles[2], keys, keep=2)

    assert rollback.removed == []
    assert redis_client.zrange(keys.versions("classifier"), 0, -1) == [b"m-3", b"m-2"]
    assert redis_client.exists(keys.version("classifier", "m-0")) == 0
    assert redis_client.exists(keys.version("classifier", "m-1")) == 0
    assert redis_client.exists(keys.version("classifier", "m-3")) == 1


def test_publish_keep_below_one_fails(redis_client: redis.Redis, keys: DistributionKeys) -> None:
    with pytest.raises(PublishError, match="keep must be at least 1, got 0"):
        publish_bundle(redis_client, Bundle("policy", "p", {}), keys, keep=0)


# The watcher ------------------------------------------------------------------------------


async def test_watcher_applies_published_at_start(
    redis_url: str, redis_client: redis.Redis, keys: DistributionKeys, target: FakeTarget,
    tmp_path: Path,
) -> None:  # fmt: skip
    publish_bundle(redis_client, classifier_bundle(make_artifact(tmp_path / "m", "m-2")), keys)
    policy_path = write_test_policy(tmp_path / "published.yaml", edge_threshold=0.8)
    publish_bundle(redis_client, policy_bundle_of(policy_path), keys)
    watcher = DistributionWatcher(target, redis_url, keys=keys)

    await watcher.start()
    await watcher.stop()

    assert target.scorer.version == "m-2"
    assert target.policies.current.version == load_policy(policy_path).version
    assert target.policies.current.policy.routing.thresholds["edge"] == 0.8
    assert target.policies.published is True
    assert watcher.states["classifier"].applied == "m-2"


async def test_watcher_applies_announced_version(
    redis_url: str, redis_client: redis.Redis, keys: DistributionKeys, target: FakeTarget,
    tmp_path: Path,
) -> None:  # fmt: skip
    watcher = DistributionWatcher(target, redis_url, keys=keys, poll_interval_s=3600)
    await watcher.start()
    try:
        bundle = classifier_bundle(make_artifact(tmp_path / "m", "m-3"))
        await asyncio.to_thread(publish_bundle, redis_client, bundle, keys)
        applied = await wait_for(lambda: target.scorer.version == "m-3")
    finally:
        await watcher.stop()

    assert applied, "the announced classifier was not applied"
    assert watcher.status()["classifier"]["serving"] == "m-3"


async def test_watcher_poll_catches_missed_message(
    redis_url: str, redis_client: redis.Redis, keys: DistributionKeys, target: FakeTarget,
    tmp_path: Path,
) -> None:  # fmt: skip
    watcher = DistributionWatcher(target, redis_url, keys=keys, poll_interval_s=0.2)
    await watcher.start()
    try:
        policy_path = write_test_policy(tmp_path / "silent.yaml", edge_threshold=0.9)
        # store_bundle moves the pointer without a pub/sub message.
        store_bundle(redis_client, policy_bundle_of(policy_path), keys)
        applied = await wait_for(
            lambda: target.policies.current.policy.routing.thresholds["edge"] == 0.9
        )
    finally:
        await watcher.stop()

    assert applied, "the periodic check did not apply the policy"


async def test_watcher_rejects_corrupt_classifier(
    redis_url: str, redis_client: redis.Redis, keys: DistributionKeys, target: FakeTarget,
    tmp_path: Path,
) -> None:  # fmt: skip
    folder = make_artifact(tmp_path / "bad", "m-bad")
    weights = folder / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    store_bundle(redis_client, classifier_bundle(folder), keys)
    watcher = DistributionWatcher(target, redis_url, keys=keys, poll_interval_s=3600)

    await watcher.start()
    try:
        status = watcher.status()["classifier"]
        good = classifier_bundle(make_artifact(tmp_path / "good", "m-good"))
        await asyncio.to_thread(publish_bundle, redis_client, good, keys)
        applied = await wait_for(lambda: target.scorer.version == "m-good")
    finally:
        await watcher.stop()

    assert status["serving"] == "serving-1"
    assert status["published"] == "m-bad"
    assert status["rejected"] == "m-bad"
    assert status["rejected_reason"].startswith("the artifact does not load: classifier m-bad/")
    assert applied, "the good classifier after the bad one was not applied"
    assert watcher.status()["classifier"]["rejected"] is None


async def test_watcher_falls_back_past_corrupt_current(
    redis_url: str, redis_client: redis.Redis, keys: DistributionKeys, target: FakeTarget,
    tmp_path: Path,
) -> None:  # fmt: skip
    good = classifier_bundle(make_artifact(tmp_path / "good", "m-good"))
    publish_bundle(redis_client, good, keys)
    folder = make_artifact(tmp_path / "bad", "m-bad")
    weights = folder / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    store_bundle(redis_client, classifier_bundle(folder), keys)
    watcher = DistributionWatcher(target, redis_url, keys=keys, poll_interval_s=3600)

    await watcher.start()
    await watcher.stop()

    status = watcher.status()["classifier"]
    assert target.scorer.version == "m-good"
    assert status["serving"] == "m-good"
    assert status["published"] == "m-bad"
    assert status["rejected"] == "m-bad"
    assert status["applied"] == "m-good"


async def test_watcher_rejects_invalid_policy(
    redis_url: str, redis_client: redis.Redis, keys: DistributionKeys, target: FakeTarget,
) -> None:  # fmt: skip
    serving = target.policies.current.version
    store_bundle(redis_client, Bundle("policy", "p-bad", {"policy.yaml": b"tiers: []\n"}), keys)
    watcher = DistributionWatcher(target, redis_url, keys=keys, poll_interval_s=3600)

    await watcher.start()
    await watcher.stop()

    status = watcher.status()["policy"]
    assert target.policies.current.version == serving
    assert status["rejected"] == "p-bad"
    assert status["rejected_reason"].startswith("the policy is invalid: ")
    assert target.policies.published is False


async def test_watcher_status_hides_invalid_policy_text(
    redis_url: str, redis_client: redis.Redis, keys: DistributionKeys, target: FakeTarget,
) -> None:  # fmt: skip
    text = b"version: 1\ntiers: sk-live-0123456789abcdef\n"
    store_bundle(redis_client, Bundle("policy", "p-secret", {"policy.yaml": text}), keys)
    watcher = DistributionWatcher(target, redis_url, keys=keys, poll_interval_s=3600)

    await watcher.start()
    await watcher.stop()

    # /readyz shows this status; the problems' text can quote the file's values.
    status = watcher.status()["policy"]
    assert status["rejected"] == "p-secret"
    assert status["rejected_reason"] == "the policy is invalid: 1 problem, at line 2"
    assert "sk-live" not in str(status)


async def test_watcher_survives_unreachable_redis(target: FakeTarget) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        watcher = DistributionWatcher(target, f"redis://127.0.0.1:{port}/0", poll_interval_s=3600)
        await watcher.start()
        await watcher.stop()

    status = watcher.status()
    assert status["classifier"]["error"] == "Redis failed (ConnectionError)"
    assert status["policy"]["serving"] == target.policies.current.version


def test_published_policy_stops_file_reload(tmp_path: Path) -> None:
    path = write_test_policy(tmp_path / "local.yaml")
    store = PolicyStore(path, 0.0)
    published = load_policy(write_test_policy(tmp_path / "published.yaml", edge_threshold=0.9))

    store.use_published(published)
    shutil.copy(write_test_policy(tmp_path / "edited.yaml", edge_threshold=0.5), path)
    with capture_logs() as logs:
        store.check_for_change()
        store.check_for_change()

    assert store.current.version == published.version
    ignored = [entry for entry in logs if entry["event"] == "policy_file_change_ignored"]
    assert len(ignored) == 1
    assert ignored[0]["path"] == str(path)
    assert ignored[0]["serving"] == published.version


async def test_file_matching_published_policy_stops_reload(
    redis_url: str, redis_client: redis.Redis, keys: DistributionKeys, target: FakeTarget,
    tmp_path: Path,
) -> None:  # fmt: skip
    serving = target.policies.current.version
    publish_bundle(redis_client, policy_bundle_of(target.policies.path), keys)
    watcher = DistributionWatcher(target, redis_url, keys=keys, poll_interval_s=3600)
    await watcher.start()
    await watcher.stop()
    shutil.copy(write_test_policy(tmp_path / "edited.yaml", edge_threshold=0.5), target.policies.path)
    target.policies.check_for_change()

    assert target.policies.published is True
    assert target.policies.current.version == serving
    assert watcher.states["policy"].applied == serving


def test_following_published_policy_clears_rejected_edit(tmp_path: Path) -> None:
    path = write_test_policy(tmp_path / "local.yaml")
    store = PolicyStore(path, 0.0)
    serving = store.current.version
    path.write_text(path.read_text(encoding="utf-8") + "unknown_setting: 1\n", encoding="utf-8")
    store.check_for_change()
    rejected = store.rejected

    # The file's last good policy is the published version, so the store follows Redis now
    # and the rejected edit can never be applied.
    store.follow_published()

    assert rejected is not None
    assert store.current.version == serving
    assert store.rejected is None
    assert store.last_error is None
