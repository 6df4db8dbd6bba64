"""``tierwise classifier publish`` and ``tierwise policy publish`` against the test Redis."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from router.distribution import DistributionKeys
from router.policy.loader import load_policy
from router.settings import BUNDLED_POLICY
from tests.scaleout.support import exclusive_default_namespace, make_artifact
from tests.scaleout.test_distribution import write_test_policy
from tests.support.fixtures import REPLAY_STACK, TierUpstream, write_policy
from tests.support.recorded import repo_root

KEYS = DistributionKeys()


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "router", *arguments]
    return subprocess.run(
        command, check=False, cwd=repo_root(), capture_output=True, text=True, timeout=120
    )


def publish_ok(kind: str, path: Path, redis_url: str) -> None:
    """Publish ``path`` as ``kind`` ("classifier" or "policy") and check that it succeeded."""
    result = run_cli(kind, "publish", str(path), "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def default_namespace(redis_client: redis.Redis) -> Iterator[None]:
    """The gateways' own ``{tw}`` keys, held exclusively and empty."""
    with exclusive_default_namespace(redis_client):
        yield


def test_publish_classifier_then_roll_back(
    redis_url: str, redis_client: redis.Redis, default_namespace: None, tmp_path: Path
) -> None:
    first = make_artifact(tmp_path / "first", "cli-1")
    second = make_artifact(tmp_path / "second", "cli-2", seed=1)

    published = run_cli("classifier", "publish", str(first), "--redis-url", redis_url)
    run_cli("classifier", "publish", str(second), "--redis-url", redis_url)
    rollback = run_cli("classifier", "publish", str(first), "--redis-url", redis_url)

    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("classifier cli-1: stored and published (digest ")
    assert "previous none" in published.stdout
    assert rollback.returncode == 0, rollback.stderr
    assert rollback.stdout.startswith("classifier cli-1: already stored; made current")
    assert "previous cli-2" in rollback.stdout
    assert redis_client.get(KEYS.current("classifier")) == b"cli-1"


def test_publish_bundled_outside_checkout(
    redis_url: str, redis_client: redis.Redis, default_namespace: None, tmp_path: Path
) -> None:
    from classifiers.artifact import load_default

    # The folder classifiers/default exists only in a checkout, so the keyword must not
    # depend on the current folder.
    result = subprocess.run(
        [sys.executable, "-m", "router", "classifier", "publish", "bundled", "--redis-url", redis_url],
        check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )

    version = load_default().version
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"classifier {version}: stored and published")
    assert redis_client.get(KEYS.current("classifier")) == version.encode()
    manifest = json.loads(redis_client.hget(KEYS.version("classifier", version), "manifest") or b"")
    assert manifest["origin"] == "bundled"


def test_publish_policy_stores_text(
    redis_url: str, redis_client: redis.Redis, default_namespace: None, tmp_path: Path
) -> None:
    path = write_test_policy(tmp_path / "policy.yaml")
    version = load_policy(path).version

    result = run_cli("policy", "publish", str(path), "--redis-url", redis_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"policy {version}: stored and published")
    assert redis_client.get(KEYS.current("policy")) == version.encode()
    stored = redis_client.hget(KEYS.version("policy", version), "file:policy.yaml")
    assert stored == path.read_bytes()
    manifest = json.loads(redis_client.hget(KEYS.version("policy", version), "manifest") or b"")
    assert manifest["origin"] == "policy.yaml"


def write_edge_threshold_policy(path: Path) -> Path:
    """Write a valid policy whose only threshold is the edge tier's."""
    upstreams = [TierUpstream(spec, f"http://127.0.0.1:9/{spec.tier}/v1") for spec in REPLAY_STACK]
    return write_policy(path, upstreams, thresholds={"edge": 0.7})


def test_publish_policy_rejects_unscored_tier(
    redis_url: str, default_namespace: None, tmp_path: Path
) -> None:
    artifact = make_artifact(tmp_path / "two-tiers", "cli-two", tiers=("edge", "frontier"))
    edge_only = write_edge_threshold_policy(tmp_path / "edge-only.yaml")
    published = run_cli(
        "classifier", "publish", str(artifact), "--policy", str(edge_only), "--redis-url", redis_url
    )
    assert published.returncode == 0, published.stderr
    path = write_test_policy(tmp_path / "policy.yaml")

    result = run_cli("policy", "publish", str(path), "--redis-url", redis_url)

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}: the thresholds name tiers ['mid']")
    assert "The published classifier is cli-two, so publish one that scores those tiers" in (
        " ".join(result.stderr.split()))


def test_publish_classifier_checks_policy_option(
    redis_url: str, redis_client: redis.Redis, default_namespace: None, tmp_path: Path
) -> None:
    artifact = make_artifact(tmp_path / "two-tiers", "cli-two", tiers=("edge", "frontier"))
    path = write_test_policy(tmp_path / "policy.yaml")

    result = run_cli(
        "classifier", "publish", str(artifact), "--policy", str(path), "--redis-url", redis_url
    )

    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert message.startswith(
        f"error: {artifact}: the classifier scores the tiers edge, frontier, but the thresholds "
        f"of the policy {path} also name mid, so gateways that serve that policy would reject it."
    )
    assert redis_client.get(KEYS.current("classifier")) is None


def test_publish_classifier_checks_published_policy(
    redis_url: str, redis_client: redis.Redis, default_namespace: None, tmp_path: Path
) -> None:
    published_policy = write_test_policy(tmp_path / "policy.yaml")
    publish_ok("policy", published_policy, redis_url)
    version = load_policy(published_policy).version
    artifact = make_artifact(tmp_path / "two-tiers", "cli-two", tiers=("edge", "frontier"))
    # The local policy passes, but gateways serve the published one.
    edge_only = write_edge_threshold_policy(tmp_path / "edge-only.yaml")

    result = run_cli(
        "classifier", "publish", str(artifact), "--policy", str(edge_only), "--redis-url", redis_url
    )

    assert result.returncode == 2
    assert f"the thresholds of the published policy {version} also name mid" in (
        " ".join(result.stderr.split()))
    assert redis_client.get(KEYS.current("classifier")) is None


def test_publish_classifier_without_policy_checks_default(
    redis_url: str, redis_client: redis.Redis, default_namespace: None, tmp_path: Path
) -> None:
    artifact = make_artifact(tmp_path / "two-tiers", "cli-two", tiers=("edge", "frontier"))

    result = run_cli("classifier", "publish", str(artifact), "--redis-url", redis_url)

    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert f"the thresholds of the bundled default policy {BUNDLED_POLICY} also name mid" in message
    assert message.endswith(
        "when the gateways serve another policy file, pass it with --policy"
    )
    assert redis_client.get(KEYS.current("classifier")) is None


def test_publish_classifier_invalid_policy_option(redis_url: str, tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "model", "cli-1")
    path = tmp_path / "broken.yaml"
    path.write_text("tiers: 5\n", encoding="utf-8")

    result = run_cli(
        "classifier", "publish", str(artifact), "--policy", str(path), "--redis-url", redis_url
    )

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: invalid policy {path}:")


def test_publish_corrupt_classifier_fails(redis_url: str, tmp_path: Path) -> None:
    folder = make_artifact(tmp_path / "model", "cli-bad")
    weights = folder / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")

    result = run_cli("classifier", "publish", str(folder), "--redis-url", redis_url)

    assert result.returncode == 2
    assert result.stderr.startswith(
        f"error: {folder}: the artifact does not load: classifier cli-bad/weights.npz: SHA-256"
    )


def test_publish_invalid_policy_fails(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("tiers: 5\n", encoding="utf-8")

    result = run_cli("policy", "publish", str(path), "--redis-url", redis_url)

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: invalid policy {path}:")


def test_publish_missing_folder_fails(redis_url: str, tmp_path: Path) -> None:
    result = run_cli("classifier", "publish", str(tmp_path / "none"), "--redis-url", redis_url)

    assert result.returncode == 2
    assert result.stderr == (
        f"error: {tmp_path / 'none' / 'model.json'}: cannot read the file (No such file or directory)\n"
    )


def test_versions_then_rollback_by_name(
    redis_url: str, redis_client: redis.Redis, default_namespace: None, tmp_path: Path
) -> None:
    first = make_artifact(tmp_path / "first", "cli-1")
    second = make_artifact(tmp_path / "second", "cli-2", seed=1)
    publish_ok("classifier", first, redis_url)
    publish_ok("classifier", second, redis_url)
    # The folders are gone, as on a machine that only has Redis.
    shutil.rmtree(first)
    shutil.rmtree(second)

    before = run_cli("classifier", "versions", "--redis-url", redis_url)
    rollback = run_cli("classifier", "rollback", "cli-1", "--redis-url", redis_url)
    after = run_cli("classifier", "versions", "--redis-url", redis_url)

    assert before.returncode == 0, before.stderr
    lines = before.stdout.splitlines()
    assert lines[0] == "classifier versions, the one made current last first (* = current):"
    assert lines[1].startswith("* cli-2  made current ")
    assert lines[2].startswith("  cli-1  made current ")
    assert lines[2].endswith("  from first")
    # Both times carry the UTC offset.
    assert re.search(r"made current \S+\+00:00  stored \S+\+00:00  digest ", lines[1])
    assert rollback.returncode == 0, rollback.stderr
    assert rollback.stdout.startswith("classifier cli-1: already stored; made current")
    assert "previous cli-2" in rollback.stdout
    assert redis_client.get(KEYS.current("classifier")) == b"cli-1"
    assert [line[:7] for line in after.stdout.splitlines()[1:]] == ["* cli-1", "  cli-2"]


def test_versions_when_none_is_stored(redis_url: str, default_namespace: None) -> None:
    result = run_cli("policy", "versions", "--redis-url", redis_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "No policy version is stored under the prefix 'tw'. Check that --key-prefix is the "
        "gateways' TIERWISE_REDIS_KEY_PREFIX.\n"
    )


def test_rollback_unknown_version_names_the_stored_ones(
    redis_url: str, default_namespace: None, tmp_path: Path
) -> None:
    artifact = make_artifact(tmp_path / "model", "cli-1")
    publish_ok("classifier", artifact, redis_url)

    unknown = run_cli("classifier", "rollback", "cli-0", "--redis-url", redis_url)
    invalid = run_cli("classifier", "rollback", "../cli-1", "--redis-url", redis_url)

    assert unknown.returncode == 2
    assert unknown.stderr == (
        "error: classifier version 'cli-0' not found under the prefix 'tw'. Stored versions: "
        "cli-1. To serve a deleted version, publish its artifact folder again\n"
    )
    assert invalid.returncode == 2
    assert invalid.stderr.startswith("error: invalid version '../cli-1': use 1 to 128 letters")


def test_rollback_classifier_checks_published_policy(
    redis_url: str, redis_client: redis.Redis, default_namespace: None, tmp_path: Path
) -> None:
    two_tiers = make_artifact(tmp_path / "two-tiers", "cli-two", tiers=("edge", "frontier"))
    three_tiers = make_artifact(tmp_path / "three-tiers", "cli-three")
    edge_only = write_edge_threshold_policy(tmp_path / "edge-only.yaml")
    publish_ok("policy", edge_only, redis_url)
    publish_ok("classifier", two_tiers, redis_url)
    publish_ok("classifier", three_tiers, redis_url)
    # Gateways now serve a policy with a mid threshold, which cli-two does not score.
    policy = write_test_policy(tmp_path / "policy.yaml")
    publish_ok("policy", policy, redis_url)

    result = run_cli("classifier", "rollback", "cli-two", "--redis-url", redis_url)

    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert message.startswith(
        "error: classifier version cli-two: the classifier scores the tiers edge, frontier, but "
        f"the thresholds of the published policy {load_policy(policy).version} also name mid"
    )
    assert redis_client.get(KEYS.current("classifier")) == b"cli-three"


def test_rollback_policy_by_version(
    redis_url: str, redis_client: redis.Redis, default_namespace: None, tmp_path: Path
) -> None:
    first = write_test_policy(tmp_path / "first.yaml", edge_threshold=0.7)
    second = write_test_policy(tmp_path / "second.yaml", edge_threshold=0.8)
    first_version = load_policy(first).version
    for path in (first, second):
        publish_ok("policy", path, redis_url)
    first.unlink()

    result = run_cli("policy", "rollback", first_version, "--redis-url", redis_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"policy {first_version}: already stored; made current")
    assert redis_client.get(KEYS.current("policy")) == first_version.encode()


def test_rollback_damaged_version_fails(
    redis_url: str, redis_client: redis.Redis, default_namespace: None, tmp_path: Path
) -> None:
    artifact = make_artifact(tmp_path / "model", "cli-1")
    publish_ok("classifier", artifact, redis_url)
    redis_client.hset(KEYS.version("classifier", "cli-1"), "file:MODEL_CARD.md", b"edited")

    result = run_cli("classifier", "rollback", "cli-1", "--redis-url", redis_url)

    assert result.returncode == 1
    assert result.stderr.startswith("error: the stored classifier version cli-1 is invalid: ")


def test_rollback_with_wrong_prefix_names_it(
    redis_url: str, default_namespace: None, tmp_path: Path
) -> None:
    artifact = make_artifact(tmp_path / "model", "cli-1")
    publish_ok("classifier", artifact, redis_url)

    result = run_cli(
        "classifier", "rollback", "cli-1", "--key-prefix", "tw-missing", "--redis-url", redis_url
    )

    assert result.returncode == 2
    assert result.stderr == (
        "error: classifier version 'cli-1' not found under the prefix 'tw-missing'. No version is "
        "stored; check that --key-prefix ('tw-missing') is the gateways' "
        "TIERWISE_REDIS_KEY_PREFIX. To serve a deleted version, publish its artifact folder again\n"
    )


def test_publish_current_version_says_so(
    redis_url: str, default_namespace: None, tmp_path: Path
) -> None:
    artifact = make_artifact(tmp_path / "model", "cli-1")
    publish_ok("classifier", artifact, redis_url)

    again = run_cli("classifier", "rollback", "cli-1", "--redis-url", redis_url)

    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("classifier cli-1: already stored and current; announced again")
