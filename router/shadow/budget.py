"""The daily cap on shadow spend: reserve an estimate before the calls, settle after.

A job reserves its estimated cost and runs only when the reservation fits under the cap.
Afterwards it settles, adding the difference between the actual and the reserved cost.
With Redis the day's total is one key under the ``{<prefix>}`` hash tag (``{tw}`` by
default), and the check-and-add is a Lua script, so replicas sharing the Redis never
reserve past the cap together.
Without Redis each process keeps its own total, so the cap applies per process.

NOTE: a job whose actual cost exceeds its reservation overshoots the cap by the difference.
The job caps the reference answer's ``max_tokens`` so that this difference stays small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

from router.redis_link import DEFAULT_KEY_PREFIX, RedisLink

log = structlog.get_logger("tierwise.shadow")

DAY_TTL_S = 2 * 86400

# KEYS[1]: the day's spend key; ARGV: amount, cap (both USD), TTL in seconds.
# Returns 1 when the amount was added, 0 when it would have passed the cap.
_RESERVE_SCRIPT = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return 0
end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def day_key(prefix: str = DEFAULT_KEY_PREFIX, now: float | None = None) -> str:
    """Return the Redis key of today's shadow spend (UTC day) in the namespace ``prefix``."""
    day = time.strftime("%Y%m%d", time.gmtime(now if now is not None else time.time()))
    return f"{{{prefix}}}:shadow:spend:day:{day}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """An amount added to one day's spend ahead of the calls it pays for."""

    key: str
    usd: float


class ShadowBudget:
    """Shadow spend per UTC day, in USD, in Redis when ``link`` is set, else in this process."""

    def __init__(self, link: RedisLink | None, prefix: str = DEFAULT_KEY_PREFIX) -> None:
        self.link = link
        self.prefix = prefix
        self._local: dict[str, float] = {}

    async def reserve(self, usd: float, cap_usd: float) -> Reservation | None:
        """Add ``usd`` to today's spend when the total stays within ``cap_usd``.

        Returns None when it would not, and also when Redis is configured but unreachable,
        because spending without the shared total could pass the cap.
        """
        key = day_key(self.prefix)
        if self.link is None:
            spent = self._local.get(key, 0.0)
            if spent + usd > cap_usd:
                return None
            self._local[key] = spent + usd
            return Reservation(key, usd)

        async def run(client: Any) -> int:
            return int(
                await client.eval(_RESERVE_SCRIPT, 1, key, repr(usd), repr(cap_usd), DAY_TTL_S)
            )

        result = await self.link.call(run, None)
        if result is None:
            log.warning(
                "shadow_budget_unavailable", hint="Redis is unreachable; the job is skipped"
            )
            return None
        return Reservation(key, usd) if result == 1 else None

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace a reservation by the actual cost, on the day the reservation was made.

        While Redis is unreachable the reservation stays as it was.
        """
        difference = actual_usd - reservation.usd
        if difference == 0:
            return
        if self.link is None:
            self._local[reservation.key] = self._local.get(reservation.key, 0.0) + difference
            return

        async def run(client: Any) -> bool:
            await client.incrbyfloat(reservation.key, difference)
            return True

        await self.link.call(run, False)

    async def spent(self) -> float:
        """Today's shadow spend in USD, reservations of running jobs included."""
        key = day_key(self.prefix)
        if self.link is None:
            return self._local.get(key, 0.0)
        value = await self.link.call(lambda client: client.get(key), None)
        return float(value) if value is not None else 0.0
