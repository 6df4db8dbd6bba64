"""The gateway side of publishing: notice a new version, verify it, and swap it in.

A watcher listens on the pub/sub channel and also checks the ``current`` pointers every
few seconds, so that a message lost while the connection was down delays a new version by
one interval at most.  A version is fetched, checked against its manifest's digests and
verified (see :mod:`router.distribution.verify`) in a worker thread, and only a version
that passes replaces ``target.scorer`` or the policy store's current policy.  A version
that fails is logged, reported by :meth:`DistributionWatcher.status` (and so by /readyz),
and not tried again until the pointer moves or the other kind changes.  A process that has
not applied a published version yet then applies the most recently published stored
version that passes, if there is one.

In a Redis Cluster, the watcher reads keys through a cluster client and subscribes on the
node that the URL names, because a PUBLISH on any node reaches the subscribers of every node.

Redis errors never stop the gateway: the watcher logs the first one, keeps serving what it
has, and checks again at the next interval.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import redis.asyncio as redis_asyncio
import structlog
from redis.exceptions import RedisClusterException, RedisError

from router.distribution.bundle import Bundle, BundleError
from router.distribution.keys import KINDS, DistributionKeys, Kind
from router.distribution.verify import (
    VerificationError,
    threshold_tiers,
    verify_classifier,
    verify_policy,
)
from router.policy.loader import LoadedPolicy

if TYPE_CHECKING:
    from router.policy.store import PolicyStore
    from router.runtime import Scorer

log = structlog.get_logger("tierwise.distribution")

POLL_INTERVAL_S = 3.0
STARTUP_CHECK_TIMEOUT_S = 10.0
# The bundled classifier is about 1.3 MB, so fetching one needs a longer timeout than requests use.
FETCH_TIMEOUT_S = 10.0
LISTEN_WAIT_S = 1.0
RECONNECT_FIRST_S = 1.0
RECONNECT_MAX_S = 30.0
STOP_WAIT_S = 3 * LISTEN_WAIT_S


class DistributionTarget(Protocol):
    """The runtime's classifier and policy store, which the watcher replaces."""

    scorer: Scorer
    policies: PolicyStore


@dataclass
class KindState:
    """The watcher's last observations and actions for one kind."""

    published: str | None = None
    """The version that ``current`` named at the last successful check."""
    applied: str | None = None
    """The published version this watcher swapped in, or None while the local file serves."""
    applied_at: float | None = None
    rejected: str | None = None
    rejected_reason: str | None = None
    error: str | None = None
    """Reason the last check failed, or None."""


class DistributionWatcher:
    """Keeps ``target`` on the published classifier and policy (see the module docstring)."""

    def __init__(
        self,
        target: DistributionTarget,
        redis_url: str,
        *,
        keys: DistributionKeys | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        connect_timeout_s: float = 1.0,
        cluster: bool = False,
    ) -> None:
        self.target = target
        self.keys = keys or DistributionKeys()
        self.poll_interval_s = poll_interval_s
        self.client: Any = (
            redis_asyncio.RedisCluster.from_url(
                redis_url, socket_timeout=FETCH_TIMEOUT_S, socket_connect_timeout=connect_timeout_s
            )
            if cluster
            else None
        )
        self.subscriber = redis_asyncio.Redis.from_url(
            redis_url, socket_timeout=FETCH_TIMEOUT_S, socket_connect_timeout=connect_timeout_s
        )
        if self.client is None:
            self.client = self.subscriber
        self.states: dict[Kind, KindState] = {kind: KindState() for kind in KINDS}
        self._locks: dict[Kind, asyncio.Lock] = {kind: asyncio.Lock() for kind in KINDS}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Apply what is published now (waiting at most 10 s), then watch in the background."""
        try:
            await asyncio.wait_for(self.check_all(), STARTUP_CHECK_TIMEOUT_S)
        except TimeoutError:
            log.warning("distribution_startup_check_timed_out", timeout_s=STARTUP_CHECK_TIMEOUT_S)
        self._tasks = [
            asyncio.create_task(self._listen(), name="distribution-listen"),
            asyncio.create_task(self._poll(), name="distribution-poll"),
        ]

    async def stop(self) -> None:
        """Stop the background tasks (within about one second) and close the connections."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # A cancellation can be lost inside redis-py's pub/sub read (seen with redis-py
            # 8.2), so the listener also checks the stop flag after each read.
            await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
        for task in self._tasks:
            if not task.done():
                log.warning("distribution_task_not_stopped", task=task.get_name())
        self._tasks = []
        await self.client.aclose()
        if self.subscriber is not self.client:
            await self.subscriber.aclose()

    def status(self) -> dict[str, Any]:
        """Return the state of each kind, with the version serving now, for /readyz."""
        serving = {"classifier": self.target.scorer.version,
                   "policy": self.target.policies.current.version}  # fmt: skip
        return {
            kind: {"serving": serving[kind], **asdict(state)} for kind, state in self.states.items()
        }

    async def check_all(self) -> None:
        for kind in KINDS:
            await self.check(kind)

    async def check(self, kind: Kind) -> None:
        """Swap in the current published version of ``kind`` if it is new and passes verification."""
        async with self._locks[kind]:
            try:
                await self._check(kind)
            except (RedisError, RedisClusterException, OSError) as exc:
                self._record_error(kind, f"Redis failed ({type(exc).__name__})")

    async def _check(self, kind: Kind) -> None:
        state = self.states[kind]
        version = _text(await self.client.get(self.keys.current(kind)))
        self._clear_error(kind)
        state.published = version
        if state.rejected is not None and version != state.rejected:
            state.rejected = state.rejected_reason = None
        if version is not None and version == self._serving(kind):
            if kind == "policy" and not self.target.policies.published:
                # The file serves the published version already. Following the file from
                # here on would let a local edit undo the rollout until the next check.
                self.target.policies.follow_published()
                state.applied, state.applied_at = version, time.time()
            return
        if version is None or version == state.rejected:
            return
        fields: Any = await self.client.hgetall(self.keys.version(kind, version))
        if not fields:
            self._record_error(kind, f"version {version} is current but not stored")
            return
        try:
            verified = await asyncio.to_thread(self._verify, kind, version, fields)
        except (BundleError, VerificationError) as exc:
            public = exc.public_reason if isinstance(exc, VerificationError) else str(exc)
            self._reject(kind, version, str(exc), public)
            if state.applied is None:
                await self._fall_back(kind, version)
            return
        self._apply(kind, version, verified)

    async def _fall_back(self, kind: Kind, rejected: str) -> None:
        """Apply the most recently published stored version, other than ``rejected``, that passes.

        Only a process that has applied no published version falls back, so that a replica
        started while a corrupt version is current serves what the running replicas kept
        serving, not its own older local file.  Nothing changes when no such version passes.
        """
        stored: Any = await self.client.zrevrange(self.keys.versions(kind), 0, -1)
        for candidate in (_text(version) for version in stored):
            if candidate == rejected:
                continue
            fields: Any = await self.client.hgetall(self.keys.version(kind, candidate))
            if not fields:
                continue
            try:
                verified = await asyncio.to_thread(self._verify, kind, candidate, fields)
            except (BundleError, VerificationError):
                continue
            self._apply(kind, candidate, verified)
            log.warning("published_version_fallback", kind=kind, version=candidate,
                        rejected=rejected)  # fmt: skip
            return

    def _serving(self, kind: Kind) -> str:
        if kind == "classifier":
            return self.target.scorer.version
        return self.target.policies.current.version

    def _verify(self, kind: Kind, version: str, fields: dict[bytes, bytes]) -> Any:
        bundle = Bundle.from_hash(kind, version, fields)
        if kind == "classifier":
            return verify_classifier(bundle, threshold_tiers(self.target.policies.current))
        return verify_policy(bundle, self.target.scorer.tiers)

    def _apply(self, kind: Kind, version: str, verified: Any) -> None:
        previous = self._serving(kind)
        if kind == "classifier":
            self.target.scorer = verified
        else:
            assert isinstance(verified, LoadedPolicy)
            self.target.policies.use_published(verified)
        state = self.states[kind]
        state.applied, state.applied_at = version, time.time()
        # A version of the other kind may have been rejected only for not matching this one.
        other = self.states["policy" if kind == "classifier" else "classifier"]
        other.rejected = other.rejected_reason = None
        log.info("published_version_applied", kind=kind, version=version, previous=previous)

    def _reject(self, kind: Kind, version: str, reason: str, public_reason: str) -> None:
        """Record ``version`` as rejected: ``/readyz`` shows ``public_reason``, the log ``reason``."""
        state = self.states[kind]
        state.rejected, state.rejected_reason = version, public_reason
        log.error("published_version_rejected", kind=kind, version=version, reason=reason,
                  serving=self._serving(kind))  # fmt: skip

    def _record_error(self, kind: Kind, error: str) -> None:
        state = self.states[kind]
        if state.error != error:
            log.warning("distribution_check_failed", kind=kind, error=error)
        state.error = error

    def _clear_error(self, kind: Kind) -> None:
        state = self.states[kind]
        if state.error is not None:
            log.info("distribution_check_recovered", kind=kind, previous_error=state.error)
            state.error = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            await self.check_all()

    async def _listen(self) -> None:
        delay = RECONNECT_FIRST_S
        while not self._stopping.is_set():
            pubsub = self.subscriber.pubsub()
            try:
                await pubsub.subscribe(self.keys.channel)
                delay = RECONNECT_FIRST_S
                # Versions published while this connection was down sent no message.
                await self.check_all()
                await self._read_messages(pubsub)
            except (RedisError, OSError) as exc:
                if self._stopping.is_set():
                    return
                log.warning("distribution_subscribe_failed", error=type(exc).__name__,
                            retry_in_s=delay)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
            finally:
                await pubsub.aclose()

    async def _read_messages(self, pubsub: Any) -> None:
        while not self._stopping.is_set():
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=LISTEN_WAIT_S
            )
            if message is None:
                continue
            kind = _announced_kind(message.get("data"))
            if kind is None:
                await self.check_all()
            else:
                await self.check(kind)


def _announced_kind(data: Any) -> Kind | None:
    try:
        kind = json.loads(data).get("kind")
    except (TypeError, ValueError, AttributeError):
        return None
    return kind if kind in KINDS else None


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
