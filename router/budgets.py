"""Per-tenant spend, per UTC day and month, for budget checks and ``GET /v1/usage``.

Spend is recorded without waiting: ``record`` adds to an in-memory pending total, and a
background task moves pending totals into Redis with ``INCRBYFLOAT``, which is atomic, so
replicas sharing one Redis add up correctly.  Without Redis, or while it is unreachable,
the totals stay in this process.

NOTE: the check happens before dispatch and the spend is known only after the answer, so
concurrent requests of one tenant can overshoot a budget by what they cost together.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import defaultdict
from typing import Any

import structlog

from router.errors import BudgetExceeded
from router.policy.schema import Budget
from router.redis_link import DEFAULT_KEY_PREFIX, RedisLink

FLUSH_INTERVAL_S = 0.2
DAY_TTL_S = 2 * 86400
MONTH_TTL_S = 32 * 86400

log = structlog.get_logger("tierwise.budgets")


def period_keys(
    tenant: str, now: float | None = None, prefix: str = DEFAULT_KEY_PREFIX
) -> tuple[str, str]:
    """Redis keys of the tenant's spend today and this month (UTC).

    The ``{<prefix>:<tenant>}`` hash tag keeps a tenant's keys in one Redis Cluster slot, so
    the MGET of both works there, while different tenants spread over the slots.
    """
    day, month = _utc_day_and_month(int((now if now is not None else time.time()) // 86400))
    tag = f"{{{prefix}:{tenant}}}"
    return f"{tag}:spend:day:{day}", f"{tag}:spend:month:{month}"


@functools.lru_cache(maxsize=4)
def _utc_day_and_month(days_since_epoch: int) -> tuple[str, str]:
    """Return ``YYYYMMDD`` and ``YYYYMM`` of a UTC day, formatted once per day, not per request.

    POSIX time has exactly 86,400 seconds per day, so ``time // 86400`` numbers UTC days.
    """
    stamp = time.gmtime(days_since_epoch * 86400)
    return time.strftime("%Y%m%d", stamp), time.strftime("%Y%m", stamp)


class BudgetLedger:
    def __init__(self, link: RedisLink | None, prefix: str = DEFAULT_KEY_PREFIX) -> None:
        self.link = link
        self.prefix = prefix
        self._pending: dict[str, float] = defaultdict(float)
        self._local: dict[str, float] = defaultdict(float)
        # Lifetime of each counter written so far. Without Redis, each flush drops expired
        # counters from ``_local``, so per-minute token counts do not pile up.
        self._ttl_s: dict[str, int] = {}
        self._local_expiry: dict[str, float] = {}
        # time.monotonic() of the last add to each pending counter. While Redis is down, a
        # counter unwritten for its whole lifetime is dropped, as Redis would have expired it,
        # so the per-minute token counts of a long outage do not pile up in ``_pending``.
        self._added_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def record(self, tenant: str, usd: float) -> None:
        """Add ``usd`` to the tenant's spend; never blocks."""
        if usd <= 0:
            return
        day_key, month_key = period_keys(tenant, prefix=self.prefix)
        self.add(day_key, usd, DAY_TTL_S)
        self.add(month_key, usd, MONTH_TTL_S)

    async def spent(self, tenant: str) -> tuple[float, float]:
        """USD spent today and this month, including spend not yet flushed."""
        day, month = await self.read(list(period_keys(tenant, prefix=self.prefix)))
        return day, month

    def add(self, key: str, amount: float, ttl_s: int) -> None:
        """Add ``amount`` to the counter ``key``, which expires ``ttl_s`` after its last write.

        The ledger also keeps the token counts of ``router.ratelimits.TokenRateLimiter``.
        """
        self._pending[key] += amount
        self._ttl_s[key] = ttl_s
        self._added_at[key] = time.monotonic()

    async def read(self, keys: list[str]) -> list[float]:
        """Return the counters ``keys``, including amounts not yet flushed."""
        stored = await self._stored(keys)
        return [value + self._pending.get(key, 0.0) for key, value in zip(keys, stored)]

    async def check(self, tenant: str, budget: Budget) -> None:
        """Raise BudgetExceeded when the tenant has used up its daily or monthly budget."""
        if budget.usd_per_day is None and budget.usd_per_month is None:
            return
        day, month = await self.spent(tenant)
        if budget.usd_per_day is not None and day >= budget.usd_per_day:
            raise BudgetExceeded(
                "This API key has used its daily budget. It resets at 00:00 UTC; "
                "ask the gateway's operators to raise it."
            )
        if budget.usd_per_month is not None and month >= budget.usd_per_month:
            raise BudgetExceeded(
                "This API key has used its monthly budget. It resets on the first day of the "
                "month (UTC); ask the gateway's operators to raise it."
            )

    async def _stored(self, keys: list[str]) -> list[float]:
        if self.link is None:
            return [self._local.get(key, 0.0) for key in keys]
        values = await self.link.call(lambda client: client.mget(keys), None)
        if values is None:
            return [self._local.get(key, 0.0) for key in keys]
        return [float(v) if v is not None else 0.0 for v in values]

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="budget-writer")

    async def stop(self) -> None:
        if self._task is not None:
            # The writer ends after its current flush rather than being cancelled in the
            # middle of one, which would drop the batch it had taken from ``_pending``.
            self._stopping.set()
            await self._task
            self._task = None
        await self.flush(last_chance=True)
        if self._pending:
            log.warning(
                "budget_spend_not_saved",
                usd=round(sum(v for k, v in self._pending.items() if ":month:" in k), 8),
                reason="Redis did not answer at shutdown",
            )

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FLUSH_INTERVAL_S)
            await self.flush()

    async def flush(self, last_chance: bool = False) -> None:
        if not self._pending:
            return
        pending, self._pending = dict(self._pending), defaultdict(float)
        if self.link is None:
            now = time.monotonic()
            for key, amount in pending.items():
                self._local[key] += amount
                self._local_expiry[key] = now + self._ttl_s[key]
                self._added_at.pop(key, None)
            for key in [key for key, expiry in self._local_expiry.items() if expiry < now]:
                del self._local_expiry[key], self._local[key], self._ttl_s[key]
            return

        async def increment(client: Any) -> bool:
            pipe = client.pipeline(transaction=False)
            for key, amount in pending.items():
                pipe.incrbyfloat(key, amount)
                pipe.expire(key, self._ttl_s[key])
            await pipe.execute()
            return True

        written = False
        try:
            written = await self.link.call(increment, False, last_chance=last_chance)
        finally:
            if not written:
                # Redis is unreachable (or the flush was cancelled), so the amounts stay
                # pending and are added once Redis responds, unless they have expired.
                now = time.monotonic()
                for key, amount in pending.items():
                    if self._added_at[key] + self._ttl_s[key] > now:
                        self._pending[key] += amount
                    else:
                        del self._ttl_s[key], self._added_at[key]
            else:
                for key in pending:
                    if key not in self._pending:
                        del self._ttl_s[key], self._added_at[key]
