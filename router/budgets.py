"""Per-tenant spend, per UTC day and month, for budget checks and ``GET /v1/usage``.

Spend is recorded without waiting: ``record`` adds to an in-memory pending total, and a
background task moves pending totals into Redis with ``INCRBYFLOAT``, which is atomic, so
replicas sharing one Redis add up correctly.  Without Redis, or while it is unreachable,
the totals stay in this process.  A write that times out may still reach Redis, so it is
retried unchanged under a sequence number that a Lua script applies only once.

NOTE: the check happens before dispatch and the spend is known only after the answer, so
concurrent requests of one tenant can overshoot a budget by what they cost together.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections import defaultdict
from typing import Any

import structlog
from redis.exceptions import ResponseError

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
        # so the per-minute token counts of a long outage do not pile up in memory.
        self._added_at: dict[str, float] = {}
        # A Redis write that times out may still be applied once Redis responds, so a failed
        # batch is retried unchanged, under its sequence number, before any newer amounts.
        # WRITE_ONCE_SCRIPT skips a batch whose sequence number it has already applied for
        # the same hash tag within WRITER_MARK_TTL_S.
        self._writer_id = os.urandom(8).hex()
        self._sequence = 0
        self._unconfirmed: tuple[int, dict[str, float]] | None = None
        self._flush_lock = asyncio.Lock()
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
        unconfirmed = self._unconfirmed[1] if self._unconfirmed is not None else {}
        return [
            value + self._pending.get(key, 0.0) + unconfirmed.get(key, 0.0)
            for key, value in zip(keys, stored)
        ]

    def _unsaved(self) -> dict[str, float]:
        """Return the amounts that Redis has not confirmed, by counter."""
        unsaved = dict(self._pending)
        if self._unconfirmed is not None:
            for key, amount in self._unconfirmed[1].items():
                unsaved[key] = unsaved.get(key, 0.0) + amount
        return unsaved

    async def check(self, tenant: str, budget: Budget) -> None:
        """Raise BudgetExceeded when the tenant has used up its daily or monthly budget."""
        if budget.usd_per_day is None and budget.usd_per_month is None:
            return
        day, month = await self.spent(tenant)
        if budget.usd_per_day is not None and day >= budget.usd_per_day:
            raise BudgetExceeded(
                "This API key's tenant has used its daily budget. It resets at 00:00 UTC; "
                "ask the gateway's operators to raise it."
            )
        if budget.usd_per_month is not None and month >= budget.usd_per_month:
            raise BudgetExceeded(
                "This API key's tenant has used its monthly budget. It resets on the first "
                "day of the month (UTC); ask the gateway's operators to raise it."
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
        unsaved = self._unsaved()
        if unsaved:
            log.warning(
                "budget_spend_not_saved",
                usd=round(sum(v for k, v in unsaved.items() if ":month:" in k), 8),
                reason="Redis did not answer at shutdown",
            )

    async def _run(self) -> None:
        while not self._stopping.is_set():
            # asyncio.timeout, unlike wait_for on Python 3.11, starts no task for the wait.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL_S):
                    await self._stopping.wait()
            await self.flush()

    async def flush(self, last_chance: bool = False) -> None:
        async with self._flush_lock:
            if self.link is None:
                self._flush_locally()
                return
            # A confirmed batch lets the pending amounts follow in the same flush.
            while await self._write_batch(self.link, last_chance):
                pass

    def _flush_locally(self) -> None:
        if not self._pending:
            return
        pending, self._pending = dict(self._pending), defaultdict(float)
        now = time.monotonic()
        for key, amount in pending.items():
            self._local[key] += amount
            self._local_expiry[key] = now + self._ttl_s[key]
            self._added_at.pop(key, None)
        for key in [key for key, expiry in self._local_expiry.items() if expiry < now]:
            del self._local_expiry[key], self._local[key], self._ttl_s[key]

    async def _write_batch(self, link: RedisLink, last_chance: bool) -> bool:
        """Write the unconfirmed batch, or else the pending amounts as a new batch.

        Returns True when Redis confirmed a batch and more amounts are pending.
        """
        if self._unconfirmed is None:
            if not self._pending:
                return False
            self._sequence += 1
            self._unconfirmed = (self._sequence, dict(self._pending))
            self._pending = defaultdict(float)
        sequence, batch = self._unconfirmed
        groups: dict[str, list[str]] = defaultdict(list)
        for key in batch:
            groups[_hash_tag(key)].append(key)

        async def write(client: Any) -> bool:
            pipe = client.pipeline(transaction=False)
            for tag, keys in groups.items():
                arguments: list[Any] = [sequence, WRITER_MARK_TTL_S]
                for key in keys:
                    arguments += [repr(batch[key]), self._ttl_s[key]]
                marker = f"{tag}:ledger-writer:{self._writer_id}"
                pipe.eval(WRITE_ONCE_SCRIPT, 1 + len(keys), marker, *keys, *arguments)
            results = await pipe.execute(raise_on_error=False)
            transient: ResponseError | None = None
            for keys, result in zip(groups.values(), results, strict=True):
                if not isinstance(result, ResponseError):
                    continue
                message = str(result.args[0]) if result.args else ""
                if not message.startswith(REJECTED_COUNTER_ERRORS):
                    transient = transient or result  # such as OOM, BUSY or READONLY, so retried
                    continue
                # The script wrote nothing, and a retry would be rejected again.
                log.error(
                    "spend_write_rejected",
                    keys=keys,
                    amounts_usd=[batch[key] for key in keys],
                    error=message,
                    effect="these amounts are not counted in the tenants' budgets or usage",
                )
            if transient is not None:
                raise transient
            return True

        written = False
        try:
            written = await link.call(write, False, last_chance=last_chance)
        finally:
            if written:
                self._unconfirmed = None
                for key in batch:
                    if key not in self._pending:
                        del self._ttl_s[key], self._added_at[key]
            else:
                # Redis is unreachable or slow, or the flush was cancelled, so the batch is
                # retried as it is, without the counters that Redis would have expired by now.
                self._drop_expired(batch)
        return written and bool(self._pending)

    def _drop_expired(self, batch: dict[str, float]) -> None:
        now = time.monotonic()
        for amounts in (batch, self._pending):
            for key in [key for key in amounts if self._added_at[key] + self._ttl_s[key] <= now]:
                del amounts[key]
        for key in [key for key in self._added_at if key not in batch and key not in self._pending]:
            del self._ttl_s[key], self._added_at[key]
        if not batch:
            self._unconfirmed = None


def _hash_tag(key: str) -> str:
    """Return the ``{...}`` hash tag that starts ``key``, which Redis Cluster hashes alone."""
    end = key.find("}")
    return key[: end + 1] if key.startswith("{") and end > 0 else key


# Errors of WRITE_ONCE_SCRIPT that a retry cannot fix. They come from its own checks, or from a
# counter key that contains another type.
REJECTED_COUNTER_ERRORS = ("counter ", "amount ", "WRONGTYPE")

WRITER_MARK_TTL_S = 3600
"""Lifetime of a writer's last sequence number per hash tag: far longer than the few seconds
between a timed-out write that Redis applies late and its retry."""

WRITE_ONCE_SCRIPT = """
-- KEYS[1]: the writer's last applied sequence number for this hash tag; KEYS[2..]: counters.
-- ARGV: sequence number, marker TTL, then an amount and a TTL per counter.
-- Every counter is checked before the first write, because Redis does not undo the writes
-- of a script that fails part way, and a batch marked as applied is never retried.
local sequence = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if last >= sequence then
  return 0
end
for i = 2, #KEYS do
  local stored = redis.call('GET', KEYS[i])
  local total = tonumber(stored or '0')
  local amount = tonumber(ARGV[2 * i - 1])
  if total == nil then
    return redis.error_reply('counter ' .. KEYS[i] .. ' does not contain a number')
  end
  if amount == nil then
    return redis.error_reply('amount ' .. ARGV[2 * i - 1] .. ' for ' .. KEYS[i] .. ' is not a number')
  end
  total = total + amount
  if total ~= total or total == math.huge or total == -math.huge then
    return redis.error_reply('counter ' .. KEYS[i] .. ' would not be a finite number')
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for i = 2, #KEYS do
  redis.call('INCRBYFLOAT', KEYS[i], ARGV[2 * i - 1])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * i])
end
return 1
"""
