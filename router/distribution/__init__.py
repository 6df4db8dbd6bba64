"""Versioned publishing of classifier artifacts and policies through Redis.

``tierwise classifier publish DIR`` and ``tierwise policy publish FILE`` store a bundle
(the files as bytes, a manifest with their SHA-256 digests, and a version) and move the
kind's ``current`` pointer to it.  Every gateway with Redis runs a :class:`DistributionWatcher`
that notices the new pointer (pub/sub, plus a periodic check for missed messages),
fetches the bundle, verifies it, and only then swaps it into the runtime.

Keys, all under one hash tag so that a Redis Cluster keeps them in one slot and a
MULTI/EXEC can update them together (``tw`` is the default namespace):

- ``{tw}:<kind>:current``: the version that gateways should serve.
- ``{tw}:<kind>:v:<version>``: a hash with ``manifest`` (JSON) and ``file:<name>`` (bytes).
- ``{tw}:<kind>:versions``: a sorted set of the stored versions, scored by publish time (ms).
- ``{tw}:published``: the pub/sub channel; each message is ``{"kind": ..., "version": ...}``.

``<kind>`` is ``classifier`` or ``policy``.  A version, once stored, is never overwritten
with other content, so gateways compare versions by name.  A policy's version is the
content hash the policy loader computes; a classifier's is the ``version`` in its
``model.json``.
"""

from router.distribution.bundle import Bundle, BundleError, classifier_bundle, policy_bundle
from router.distribution.keys import DistributionKeys
from router.distribution.publish import (
    PublishError,
    PublishResult,
    StoredVersion,
    publish_bundle,
    store_bundle,
    stored_bundle,
    stored_versions,
)
from router.distribution.verify import VerificationError, verify_classifier, verify_policy
from router.distribution.watcher import DistributionWatcher

__all__ = [
    "Bundle",
    "BundleError",
    "DistributionKeys",
    "DistributionWatcher",
    "PublishError",
    "PublishResult",
    "StoredVersion",
    "VerificationError",
    "classifier_bundle",
    "policy_bundle",
    "publish_bundle",
    "store_bundle",
    "stored_bundle",
    "stored_versions",
    "verify_classifier",
    "verify_policy",
]
