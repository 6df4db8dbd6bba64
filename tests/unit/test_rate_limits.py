"""The fixed-window request counter of ``router.ratelimits``, on a fake clock without Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest

from router.budgets import BudgetLedger
from router.errors import RequestRateExceeded, TokenRateExceeded
from router.ratelimits import WINDOW_S, RateLimiter, TokenRateLimiter, window_key

# 20,000,000 minutes after the epoch (in 2008), a window boundary.
MINUTE_START = 20_000_000 * WINDOW_S


class FakeClock:
    """A wall clock that stays where the test sets it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class BreakerOpenLink:
    """A Redis link whose circuit breaker is open: every call returns the default at once."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, operation: Any, default: Any, *, last_chance: bool = False) -> Any:
        self.calls += 1
        return default


async def admitted(limiter: RateLimiter, tenant: str, limit: int, requests: int) -> int:
    """Send ``requests`` requests of ``tenant``; return how many the limiter let through."""
    passed = 0
    for _ in range(requests):
        try:
            await limiter.check(tenant, limit)
        except RequestRateExceeded:
            continue
        passed += 1
    return passed


async def test_limit_admits_then_rejects() -> None:
    limiter = RateLimiter(None, clock=FakeClock(MINUTE_START + 37.5))

    assert await admitted(limiter, "team-a", 3, 3) == 3
    with pytest.raises(RequestRateExceeded) as caught:
        await limiter.check("team-a", 3)

    error = caught.value
    assert error.status == 429
    assert error.code == "rate_limit_exceeded"
    assert error.error_type == "requests"
    assert error.limit == 3
    assert error.retry_after_s == 22.5
    assert error.message == (
        "This API key's tenant has reached its limit of 3 requests per minute. "
        "Retry after 23 s, when the next minute starts."
    )
    assert error.headers == {"retry-after": "23", "retry-after-ms": "22500"}


async def test_rejected_requests_keep_rejecting() -> None:
    limiter = RateLimiter(None, clock=FakeClock(MINUTE_START + 1))

    assert await admitted(limiter, "team-a", 2, 10) == 2


async def test_next_minute_starts_new_count() -> None:
    clock = FakeClock(MINUTE_START + 59.9)
    limiter = RateLimiter(None, clock=clock)
    assert await admitted(limiter, "team-a", 2, 3) == 2

    clock.now = MINUTE_START + WINDOW_S

    assert await admitted(limiter, "team-a", 2, 3) == 2


async def test_retry_after_near_window_end() -> None:
    limiter = RateLimiter(None, clock=FakeClock(MINUTE_START + WINDOW_S - 0.0004))
    await limiter.check("team-a", 1)

    with pytest.raises(RequestRateExceeded) as caught:
        await limiter.check("team-a", 1)

    # Both headers round up, so a client that waits for either lands in the next minute.
    assert caught.value.headers == {"retry-after": "1", "retry-after-ms": "1"}
    assert "Retry after 1 s" in caught.value.message


async def test_tenants_count_separately() -> None:
    limiter = RateLimiter(None, clock=FakeClock(MINUTE_START + 5))

    assert await admitted(limiter, "team-a", 2, 2) == 2
    assert await admitted(limiter, "team-b", 2, 3) == 2
    assert await admitted(limiter, "team-a", 2, 1) == 0


async def test_changed_limit_applies_to_next_request() -> None:
    limiter = RateLimiter(None, clock=FakeClock(MINUTE_START + 5))
    assert await admitted(limiter, "team-a", 5, 3) == 3

    lowered = await admitted(limiter, "team-a", 3, 1)
    raised = await admitted(limiter, "team-a", 10, 1)

    assert lowered == 0
    assert raised == 1


async def test_local_counts_keep_current_minute_only() -> None:
    clock = FakeClock(MINUTE_START + 5)
    limiter = RateLimiter(None, clock=clock)
    for tenant in ("team-a", "team-b", "team-c"):
        await limiter.check(tenant, 10)

    clock.now += WINDOW_S
    await limiter.check("team-a", 10)

    assert limiter._local_counts == {"team-a": 1}


async def test_unavailable_redis_counts_in_process() -> None:
    link = BreakerOpenLink()
    limiter = RateLimiter(link, "tw-test", clock=FakeClock(MINUTE_START + 5))  # type: ignore[arg-type]

    assert await admitted(limiter, "team-a", 2, 4) == 2
    assert link.calls == 4


def test_window_key_has_tenant_hash_tag() -> None:
    key = window_key("team-a", 20_000_000, prefix="tw-test")

    assert key == "{tw-test:team-a}:rpm:20000000"


# Token counts ---------------------------------------------------------------------------------


async def test_token_limit_admits_until_count_reaches_limit() -> None:
    clock = FakeClock(MINUTE_START + 10)
    limiter = TokenRateLimiter(BudgetLedger(None), clock=clock)
    await limiter.check("team", 100)
    limiter.record("team", 99)
    await limiter.check("team", 100)
    limiter.record("team", 5)

    with pytest.raises(TokenRateExceeded) as caught:
        await limiter.check("team", 100)
    assert caught.value.headers == {"retry-after": "50", "retry-after-ms": "50000"}
    assert await limiter.used("team") == 104
    # Another tenant and the next minute start from zero.
    await limiter.check("other", 100)
    clock.now += WINDOW_S
    await limiter.check("team", 100)
    assert await limiter.used("team") == 0


async def test_zero_tokens_write_nothing() -> None:
    ledger = BudgetLedger(None)
    TokenRateLimiter(ledger, clock=FakeClock(MINUTE_START)).record("team", 0)
    assert not ledger._pending


async def test_ledger_without_redis_drops_expired_token_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = BudgetLedger(None)
    limiter = TokenRateLimiter(ledger, clock=FakeClock(MINUTE_START))
    limiter.record("team", 10)
    ledger.record("team", 0.5)
    await ledger.flush()
    assert await limiter.used("team") == 10
    assert len(ledger._local) == 3

    # Past the token key's two minutes, the next flush drops it but keeps day and month spend.
    later = time.monotonic() + 2 * WINDOW_S + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    ledger.record("team", 0.25)
    await ledger.flush()
    assert await limiter.used("team") == 0
    assert sorted(ledger._local.values()) == [0.75, 0.75]
    assert await ledger.spent("team") == (0.75, 0.75)


async def test_ledger_expires_counts_during_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = BudgetLedger(BreakerOpenLink())  # type: ignore[arg-type]
    clock = FakeClock(MINUTE_START)
    limiter = TokenRateLimiter(ledger, clock=clock)
    started = time.monotonic()
    ledger.record("team", 0.5)
    for minute in range(30):
        monkeypatch.setattr(time, "monotonic", lambda minute=minute: started + minute * WINDOW_S)
        clock.now = MINUTE_START + minute * WINDOW_S
        limiter.record("team", 10)
        await ledger.flush()

    # Redis would have dropped each token count two minutes after its last write, so only
    # the last two minutes' counts still wait for Redis, besides the day and month spend.
    assert len(ledger._unsaved()) == 4
    assert await limiter.used("team") == 10
    assert await ledger.spent("team") == (0.5, 0.5)
