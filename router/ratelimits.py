"""Per-tenant rate limits in fixed one-minute windows: ``requests_per_minute`` and
``tokens_per_minute``.

Each window is one UTC minute, numbered ``int(time // 60)``, so replicas agree on it without
talking to each other as long as their clocks agree.  A tenant's requests in the current
window are counted, rejected ones included, and a request that makes the count exceed the
limit gets 429 until the window ends.  Counting requests that were rejected changes nothing
else, because the count starts again at zero in the next window.

With Redis, replicas share one counter per tenant and window: ``INCR`` and ``EXPIRE`` go in
one pipeline, so a request costs one round trip.  Without Redis, or while a Redis call fails
or its circuit breaker is open, each replica counts only the requests it serves meanwhile, so
the tenant can send up to the limit times the number of replicas.

A fixed window lets a tenant send up to twice its limit within a short span around a minute
boundary: the whole limit at the end of one minute and again at the start of the next.

Tokens are known only once a completion has ended. A token limit admits a request while the
tenant's count in the current minute is below the limit, and adds an estimate of the request's
prompt tokens (a quarter of its text's UTF-8 bytes, plus 4 per message) to the count at once.
When the request ends, the estimate is taken back and the tokens it used are counted. So each
request of a concurrent burst counts the prompts of those admitted before it, and the request
that crosses the limit is served in full. The completions of concurrent requests can still
overshoot the limit, because their length is known only at the end. Token counts go through
the budget ledger (``router.budgets``): added in memory at once and moved to Redis with
``INCRBYFLOAT`` every 0.2 s, so another replica sees them within that interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.errors import RequestRateExceeded, TokenRateExceeded
from router.redis_link import DEFAULT_KEY_PREFIX, RedisLink

if TYPE_CHECKING:
    from router.budgets import BudgetLedger

WINDOW_S = 60
# Long enough that a replica whose clock is a little behind still finds the window's count.
KEY_TTL_S = 2 * WINDOW_S


def window_key(tenant: str, window: int, prefix: str = DEFAULT_KEY_PREFIX) -> str:
    """Return the Redis key of the tenant's request count in minute ``window``.

    The key has the budget keys' ``{<prefix>:<tenant>}`` hash tag, so a tenant's keys share
    one Redis Cluster slot and different tenants spread over the slots.
    """
    return f"{{{prefix}:{tenant}}}:rpm:{window}"


def token_window_key(tenant: str, window: int, prefix: str = DEFAULT_KEY_PREFIX) -> str:
    """Return the Redis key of the tenant's token count in minute ``window``."""
    return f"{{{prefix}:{tenant}}}:tpm:{window}"


class RateLimiter:
    """Per-tenant request counter that rejects the requests over each tenant's limit."""

    def __init__(
        self,
        link: RedisLink | None,
        prefix: str = DEFAULT_KEY_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.clock = clock
        """Source of wall-clock time in seconds since the epoch, which tests replace."""
        self._local_window = -1
        # Request counts of the in-process fallback in ``_local_window``. Older windows are
        # dropped, so the dict contains at most one entry per limited tenant.
        self._local_counts: dict[str, int] = {}

    async def check(self, tenant: str, limit: int) -> None:
        """Count one request of ``tenant`` and raise RequestRateExceeded when it exceeds ``limit``.

        The caller passes the limit of the policy that serves the request, so a reloaded
        policy's limit applies to the next request, against the count so far in this minute.
        """
        now = self.clock()
        window = int(now // WINDOW_S)
        count = await self._count(tenant, window)
        if count > limit:
            raise RequestRateExceeded(limit, (window + 1) * WINDOW_S - now)

    async def used(self, tenant: str) -> int:
        """Return how many requests of ``tenant`` this minute's window has counted so far.

        With Redis it reads the shared count; without Redis, or when the read fails, the
        count of this process.
        """
        window = int(self.clock() // WINDOW_S)
        if self.link is not None:
            key = window_key(tenant, window, self.prefix)

            async def read(client: Any) -> int:
                value = await client.get(key)
                return int(value) if value is not None else 0

            shared = await self.link.call(read, None)
            if shared is not None:
                return shared
        return self._local_counts.get(tenant, 0) if window == self._local_window else 0

    async def _count(self, tenant: str, window: int) -> int:
        """Add one to the tenant's count in ``window`` and return the new count."""
        if self.link is not None:
            key = window_key(tenant, window, self.prefix)

            async def increment(client: Any) -> int:
                pipe = client.pipeline(transaction=False)
                pipe.incr(key)
                pipe.expire(key, KEY_TTL_S)
                count, _ = await pipe.execute()
                return int(count)

            shared = await self.link.call(increment, None)
            if shared is not None:
                return shared
        return self._count_locally(tenant, window)

    def _count_locally(self, tenant: str, window: int) -> int:
        if window != self._local_window:
            self._local_window = window
            self._local_counts.clear()
        count = self._local_counts.get(tenant, 0) + 1
        self._local_counts[tenant] = count
        return count


# Prompt-token estimate used until the upstream reports usage: about 4 UTF-8 bytes per token
# for English text, plus the framing of each message. CJK text and code have fewer bytes per
# token, so the estimate is low for them.
BYTES_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class TokenReservation:
    """Estimated tokens added to a tenant's count at admission, taken back when the request ends."""

    key: str
    tokens: int


def estimate_prompt_tokens(texts: Any, messages: int) -> int:
    """Estimate the prompt tokens of ``texts``, the text fragments of ``messages`` messages."""
    return sum(len(text.encode()) for text in texts) // BYTES_PER_TOKEN + TOKENS_PER_MESSAGE * messages


class TokenRateLimiter:
    """Per-tenant token counter that rejects requests once a tenant's minute is used up."""

    def __init__(
        self,
        ledger: BudgetLedger,
        prefix: str = DEFAULT_KEY_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.prefix = prefix
        self.clock = clock
        """Source of wall-clock time in seconds since the epoch, which tests replace."""

    def record(
        self, tenant: str, tokens: int, reservation: TokenReservation | None = None
    ) -> None:
        """Add ``tokens`` to the tenant's count in the current minute, in memory only.

        ``reservation``, when given, is taken back from the minute it was added to.
        """
        if reservation is not None:
            self.ledger.add(reservation.key, -reservation.tokens, KEY_TTL_S)
        if tokens > 0:
            key = token_window_key(tenant, int(self.clock() // WINDOW_S), self.prefix)
            self.ledger.add(key, tokens, KEY_TTL_S)

    def reserve(self, tenant: str, tokens: int) -> TokenReservation | None:
        """Add an admitted request's estimated ``tokens`` to the tenant's current minute."""
        if tokens <= 0:
            return None
        key = token_window_key(tenant, int(self.clock() // WINDOW_S), self.prefix)
        self.ledger.add(key, tokens, KEY_TTL_S)
        return TokenReservation(key, tokens)

    async def check(self, tenant: str, limit: int) -> None:
        """Raise TokenRateExceeded when the tenant's tokens this minute have reached ``limit``."""
        now = self.clock()
        window = int(now // WINDOW_S)
        used = await self._used(tenant, window)
        if used >= limit:
            raise TokenRateExceeded(limit, used, (window + 1) * WINDOW_S - now)

    async def used(self, tenant: str) -> int:
        """Return the tenant's tokens counted in the current minute."""
        return await self._used(tenant, int(self.clock() // WINDOW_S))

    async def _used(self, tenant: str, window: int) -> int:
        (count,) = await self.ledger.read([token_window_key(tenant, window, self.prefix)])
        # While Redis is unreachable, the read returns only this process's unsaved amounts. A
        # request admitted before the outage takes its estimate back from them, so the sum can
        # be negative, and a negative count would admit tokens beyond the limit.
        return max(0, int(count))
