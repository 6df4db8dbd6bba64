"""Store a verified bundle under its version, move ``current`` to it, and announce it.

The publisher uses a synchronous Redis client (it runs in the CLI).  Storing is one
MULTI/EXEC guarded by WATCH on the version key, so a version is written once and the
pointer never names a version that is not stored.  Publishing a version that already
exists with the same content only moves the pointer, which is how a rollback works.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from router.distribution.bundle import MANIFEST_FIELD, Bundle
from router.distribution.keys import DistributionKeys, Kind

DEFAULT_KEEP = 5


class PublishError(Exception):
    """Raised when a version exists with other content, or ``keep`` is below 1."""


@dataclass(frozen=True)
class PublishResult:
    """Result of one publish: ``stored`` is False when the version was already stored."""

    kind: Kind
    version: str
    digest: str
    stored: bool
    previous: str | None
    """The version that ``current`` named before, or None."""
    removed: list[str] = field(default_factory=list)
    """Old versions deleted to keep the newest ``keep``."""


@dataclass(frozen=True)
class StoredVersion:
    """One stored version of a kind, as ``stored_versions`` lists it."""

    version: str
    stored_at: str
    """When the version was first stored (ISO 8601, from its manifest), or empty when unreadable."""
    made_current_at: datetime
    """When a publish last made it current."""
    origin: str
    digest: str
    current: bool


def store_bundle(
    client: redis.Redis, bundle: Bundle, keys: DistributionKeys
) -> tuple[bool, str | None]:
    """Store ``bundle`` (unless stored) and point ``current`` at it, without verifying it.

    Returns whether it was newly stored, and the previous current version.  Raises
    PublishError when the version exists with different content.
    """
    version_key = keys.version(bundle.kind, bundle.version)
    versions_key = keys.versions(bundle.kind)
    now = datetime.now(UTC)
    outcome: dict[str, Any] = {}

    def write(pipe: Any) -> None:
        existing = pipe.hget(version_key, MANIFEST_FIELD)
        previous = pipe.get(keys.current(bundle.kind))
        if existing is not None:
            _check_same_content(existing, bundle)
        # Scores must grow with each publish, also within one millisecond, because the
        # newest versions are the ones kept.
        newest = pipe.zrange(versions_key, -1, -1, withscores=True)
        score = max(int(now.timestamp() * 1000), int(newest[0][1]) + 1 if newest else 0)
        pipe.multi()
        if existing is None:
            pipe.hset(version_key, mapping=bundle.hash_fields(now.isoformat()))
        pipe.set(keys.current(bundle.kind), bundle.version)
        pipe.zadd(versions_key, {bundle.version: score})
        outcome.update(stored=existing is None, previous=previous.decode() if previous else None)

    client.transaction(write, version_key, versions_key, keys.current(bundle.kind))
    return outcome["stored"], outcome["previous"]


def _check_same_content(existing: bytes, bundle: Bundle) -> None:
    try:
        digest = json.loads(existing).get("digest")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        digest = None
    if digest != bundle.digest:
        raise PublishError(
            f"{bundle.kind} version {bundle.version} is already published with different "
            "content; give the new one another version"
        )


def publish_bundle(
    client: redis.Redis,
    bundle: Bundle,
    keys: DistributionKeys | None = None,
    keep: int = DEFAULT_KEEP,
) -> PublishResult:
    """Store ``bundle``, make it current, announce it, and delete versions beyond ``keep``.

    The caller verifies the bundle first.  Raises PublishError, or a Redis error.
    """
    if keep < 1:
        raise PublishError(f"keep must be at least 1, got {keep}")
    keys = keys or DistributionKeys()
    stored, previous = store_bundle(client, bundle, keys)
    message = {"kind": bundle.kind, "version": bundle.version}
    client.publish(keys.channel, json.dumps(message))
    removed = remove_old_versions(client, keys, bundle.kind, keep)
    return PublishResult(bundle.kind, bundle.version, bundle.digest, stored, previous, removed)


def remove_old_versions(
    client: redis.Redis, keys: DistributionKeys, kind: Kind, keep: int
) -> list[str]:
    """Delete all but the newest ``keep`` versions of ``kind``, never the current one."""
    current = _text(client.get(keys.current(kind)))
    stored: Any = client.zrange(keys.versions(kind), 0, -1)
    versions = [_text(version) for version in stored]
    old = [version for version in versions[: max(len(versions) - keep, 0)] if version != current]
    if old:
        pipe = client.pipeline(transaction=True)
        for version in old:
            pipe.delete(keys.version(kind, version))
        pipe.zrem(keys.versions(kind), *old)
        pipe.execute()
    return old


def published_version(client: redis.Redis, keys: DistributionKeys, kind: Kind) -> Bundle | None:
    """Return the current bundle of ``kind``, or None when nothing is published.

    Raises BundleError when the stored bundle does not match its manifest.
    """
    version = _text(client.get(keys.current(kind)))
    if version is None:
        return None
    return stored_bundle(client, keys, kind, version)


def stored_versions(client: redis.Redis, keys: DistributionKeys, kind: Kind) -> list[StoredVersion]:
    """Return the stored versions of ``kind``, the one made current last first."""
    current = _text(client.get(keys.current(kind)))
    listed: Any = client.zrange(keys.versions(kind), 0, -1, desc=True, withscores=True)
    pipe = client.pipeline(transaction=False)
    for version, _ in listed:
        pipe.hget(keys.version(kind, _text(version)), MANIFEST_FIELD)
    manifests = pipe.execute() if listed else []
    result = []
    for (version, score), raw in zip(listed, manifests, strict=True):
        try:
            manifest = json.loads(raw) if raw is not None else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            manifest = {}
        if not isinstance(manifest, dict):
            manifest = {}
        name = _text(version)
        result.append(StoredVersion(
            version=name,
            stored_at=str(manifest.get("published_at", "")),
            made_current_at=datetime.fromtimestamp(score / 1000, UTC),
            origin=str(manifest.get("origin", "")),
            digest=str(manifest.get("digest", "")),
            current=name == current,
        ))
    return result


def stored_bundle(
    client: redis.Redis, keys: DistributionKeys, kind: Kind, version: str
) -> Bundle | None:
    """Return the stored bundle of ``kind`` at ``version``, or None when it is not stored.

    Raises BundleError when the stored files do not match their manifest.
    """
    fields: Any = client.hgetall(keys.version(kind, version))
    return Bundle.from_hash(kind, version, fields) if fields else None


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
