"""Deployments that keep failing go to the back of the queue for a while.

Without this, a provider that stops responding costs every request routed to it a full
``timeout_s`` before the dispatcher moves on.  After ``routing.cooldown.after_failures``
failures in a row, a deployment cools down for ``routing.cooldown.seconds``: requests try
it only after every other candidate.  It is never removed, so a request whose other
candidates fail still reaches it.  A 429 that names a wait (``retry-after``) cools the
deployment at once, for that wait.  When the cooldown ends, one more failure starts the
next one, and a success clears the record.  The dispatcher reports JSON answers and
failures before the first chunk; the SSE relay reports a stream's ``[DONE]`` and a stream
that breaks after its first chunk.

The record is per process: each replica learns about a failing provider from its own
requests.  It also counts the requests under way of deployments with ``max_in_flight``, and
the dispatcher tries a deployment at its limit after the others, as it does a cooling one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, TypeVar

import structlog

from router.upstream.base import UpstreamError

if TYPE_CHECKING:
    from router.policy.schema import Cooldown, Deployment

log = structlog.get_logger("tierwise.health")

MAX_RETRY_AFTER_COOLDOWN_S = 300.0
"""Maximum cooldown that a provider's retry-after starts; a longer wait is cut to it."""
COUNTED_KINDS = frozenset({"timeout", "connection", "server", "stream"})
"""Error kinds that count against the deployment. ``client`` and ``context`` errors depend
on the request, so they do not count."""

_C = TypeVar("_C")


class DeploymentHealth:
    """Consecutive failures and cooldowns per deployment name."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._cool_until: dict[str, float] = {}
        # Start of each cooldown that failures in a row began (not a retry-after), so that a
        # reload that lowers ``routing.cooldown.seconds`` can shorten it. Paired with the end
        # of the longest retry-after wait received during it (0 for none), which a shortened
        # cooldown still lasts.
        self._counted_since: dict[str, tuple[float, float]] = {}
        # Requests under way per deployment with max_in_flight. A reload keeps them, because
        # the requests still end and release their count.
        self._in_flight: dict[str, int] = {}

    def order(self, candidates: Sequence[_C], name_of: Callable[[_C], str]) -> Sequence[_C]:
        """Return ``candidates`` with the cooling ones moved to the end, in their order."""
        if not self._cool_until:
            return candidates
        now = self._clock()
        ready = []
        cooling = []
        for candidate in candidates:
            name = name_of(candidate)
            until = self._cool_until.get(name)
            if until is None:
                ready.append(candidate)
            elif until > now:
                cooling.append(candidate)
            else:
                del self._cool_until[name]
                self._counted_since.pop(name, None)
                ready.append(candidate)
        return ready + cooling if cooling else candidates

    def succeeded(self, name: str) -> None:
        if self._failures or self._cool_until:
            self._failures.pop(name, None)
            self._cool_until.pop(name, None)
            self._counted_since.pop(name, None)

    def failed(self, name: str, error: UpstreamError, settings: Cooldown) -> None:
        """Count a failed attempt, and start a cooldown when the policy's limit is reached."""
        if settings.after_failures == 0 or error.kind not in COUNTED_KINDS:
            return
        # A wait of 0 would end the cooldown at once, so such a 429 counts as a plain failure.
        if error.status == 429 and error.retry_after_s is not None and error.retry_after_s > 0:
            self._cool(name, min(error.retry_after_s, MAX_RETRY_AFTER_COOLDOWN_S), error, 1,
                       counted=False)
            return
        count = self._failures.get(name, 0) + 1
        if count < settings.after_failures:
            self._failures[name] = count
            return
        # Kept one below the limit, so that the first failure after the cooldown starts the
        # next one instead of costing another run of failed requests.
        self._failures[name] = settings.after_failures - 1
        self._cool(name, settings.seconds, error, count, counted=True)

    def _cool(self, name: str, seconds: float, error: UpstreamError, failures: int, *,
              counted: bool) -> None:
        now = self._clock()
        if self._cool_until.get(name, 0.0) > now + seconds:
            counted_cooldown = self._counted_since.get(name)
            if not counted and counted_cooldown is not None:
                since, wait_until = counted_cooldown
                self._counted_since[name] = (since, max(wait_until, now + seconds))
            return
        already = self._cool_until.get(name, 0.0) > now
        self._cool_until[name] = now + seconds
        if counted:
            self._counted_since[name] = (now, 0.0)
        else:
            self._counted_since.pop(name, None)
        if not already:
            log.warning("deployment_cooling_down", deployment=name, seconds=round(seconds, 3),
                        failures=failures, kind=error.kind, status=error.status)

    def busy(self, deployment: Deployment) -> bool:
        """Return whether the deployment has its ``max_in_flight`` requests under way in this process."""
        limit = deployment.max_in_flight
        return limit is not None and self._in_flight.get(deployment.name, 0) >= limit

    def hold(self, deployment: Deployment) -> Callable[[], None] | None:
        """Count one request under way; return the function that ends it (callable once).

        Only deployments with ``max_in_flight`` are counted, so None comes back for others.
        """
        if deployment.max_in_flight is None:
            return None
        name = deployment.name
        self._in_flight[name] = self._in_flight.get(name, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._in_flight.get(name, 0) - 1
                if left > 0:
                    self._in_flight[name] = left
                else:
                    self._in_flight.pop(name, None)

        return release

    def in_flight(self) -> dict[str, int]:
        """Deployment name -> requests under way, for deployments with ``max_in_flight``."""
        return dict(self._in_flight)

    def keep_only(self, names: Collection[str]) -> None:
        """Forget the failures and cooldowns of deployments not in ``names``.

        The runtime calls this after a policy reload with the policy's deployment names, or
        with none when the policy turns cooldowns off, so that a removed or renamed deployment
        leaves ``/readyz`` and ``/metrics`` at once.
        """
        for records in (self._failures, self._cool_until, self._counted_since):
            for name in [name for name in records if name not in names]:
                del records[name]

    def limit_cooldowns(self, seconds: float) -> None:
        """End each cooldown that failures in a row began at most ``seconds`` after its start.

        The runtime calls this after a policy reload with ``routing.cooldown.seconds``. A
        cooldown that a provider's retry-after began keeps that wait, and a shortened
        cooldown lasts at least as long as the retry-after waits received during it.
        """
        for name, (since, wait_until) in self._counted_since.items():
            until = self._cool_until.get(name)
            end = max(since + seconds, wait_until)
            if until is not None and until > end:
                self._cool_until[name] = end

    def cooling(self) -> dict[str, float]:
        """Deployment name -> seconds left of its cooldown, for ``/readyz`` and ``/metrics``."""
        now = self._clock()
        expired = [name for name, until in self._cool_until.items() if until <= now]
        for name in expired:
            del self._cool_until[name]
            self._counted_since.pop(name, None)
        return {name: round(until - now, 3) for name, until in self._cool_until.items()}
