"""Failures in a row and cooldowns of deployments (``router/upstream/health.py``), on a fake clock."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from typing import Any

from router.policy.schema import Cooldown, Deployment, Price
from router.upstream.base import UpstreamError
from router.upstream.dispatch import _holding
from router.upstream.health import MAX_RETRY_AFTER_COOLDOWN_S, DeploymentHealth

SETTINGS = Cooldown(after_failures=3, seconds=30)
NAMES = ["edge-a", "edge-b", "mid"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ordered(health: DeploymentHealth) -> list[str]:
    return list(health.order(NAMES, lambda name: name))


def server_error() -> UpstreamError:
    return UpstreamError("server", "overloaded", 503)


def test_failures_in_a_row_start_cooldown() -> None:
    clock = Clock()
    health = DeploymentHealth(clock)
    for _ in range(2):
        health.failed("edge-a", server_error(), SETTINGS)
    assert ordered(health) == NAMES

    health.failed("edge-a", UpstreamError("timeout", "no response"), SETTINGS)

    assert ordered(health) == ["edge-b", "mid", "edge-a"]
    assert health.cooling() == {"edge-a": 30.0}
    clock.now += 29.5
    assert ordered(health) == ["edge-b", "mid", "edge-a"]
    clock.now += 1
    assert ordered(health) == NAMES
    assert health.cooling() == {}


def test_failure_after_cooldown_restarts_it() -> None:
    clock = Clock()
    health = DeploymentHealth(clock)
    for _ in range(3):
        health.failed("mid", server_error(), SETTINGS)
    clock.now += 31

    health.failed("mid", UpstreamError("connection", "refused"), SETTINGS)

    assert health.cooling() == {"mid": 30.0}


def test_answer_clears_failures() -> None:
    clock = Clock()
    health = DeploymentHealth(clock)
    for _ in range(2):
        health.failed("edge-a", server_error(), SETTINGS)
    health.succeeded("edge-a")
    health.failed("edge-a", server_error(), SETTINGS)
    health.failed("edge-a", server_error(), SETTINGS)
    assert health.cooling() == {}

    health.failed("edge-a", server_error(), SETTINGS)
    health.succeeded("edge-a")
    assert ordered(health) == NAMES


def test_rate_limit_wait_cools_at_once() -> None:
    health = DeploymentHealth(Clock())

    health.failed("edge-b", UpstreamError("server", "slow down", 429, retry_after_s=7.5), SETTINGS)
    health.failed("mid", UpstreamError("server", "slow down", 429, retry_after_s=86400), SETTINGS)
    health.failed("edge-a", UpstreamError("server", "slow down", 429), SETTINGS)

    assert health.cooling() == {"edge-b": 7.5, "mid": MAX_RETRY_AFTER_COOLDOWN_S}


def test_lower_seconds_shorten_counted_cooldown() -> None:
    clock = Clock()
    health = DeploymentHealth(clock)
    for _ in range(3):
        health.failed("edge-a", server_error(), SETTINGS)
    health.failed("mid", UpstreamError("server", "slow down", 429, retry_after_s=120), SETTINGS)
    clock.now += 4

    health.limit_cooldowns(10)

    # edge-a cooled for 30 s after its failures; a reload to 10 s leaves it 6 s from now.
    assert health.cooling() == {"edge-a": 6.0, "mid": 116.0}
    health.limit_cooldowns(60)
    assert health.cooling() == {"edge-a": 6.0, "mid": 116.0}
    clock.now += 6
    assert health.cooling() == {"mid": 110.0}


def test_limit_cooldowns_keeps_provider_wait() -> None:
    clock = Clock()
    health = DeploymentHealth(clock)
    for _ in range(3):
        health.failed("edge-a", server_error(), SETTINGS)
    clock.now += 2
    # The provider's wait ends before the 30 s cooldown, so the cooldown stays as it is.
    health.failed("edge-a", UpstreamError("server", "slow down", 429, retry_after_s=20), SETTINGS)
    assert health.cooling() == {"edge-a": 28.0}

    health.limit_cooldowns(10)

    # 10 s from the cooldown's start would end it before the 20 s that the provider asked for.
    assert health.cooling() == {"edge-a": 20.0}


def test_request_errors_not_counted() -> None:
    health = DeploymentHealth(Clock())
    for _ in range(5):
        health.failed("edge-a", UpstreamError("client", "bad parameter", 400), SETTINGS)
        health.failed("edge-a", UpstreamError("context", "too long", 400), SETTINGS)

    assert health.cooling() == {}


def test_zero_failures_disables_cooldown() -> None:
    health = DeploymentHealth(Clock())
    off = Cooldown(after_failures=0)
    for _ in range(5):
        health.failed("edge-a", server_error(), off)
    health.failed("edge-a", UpstreamError("server", "slow down", 429, retry_after_s=5), off)

    assert health.cooling() == {}


def test_order_unchanged_without_cooldown() -> None:
    health = DeploymentHealth(Clock())
    candidates = ("a", "b")

    assert health.order(candidates, lambda name: name) is candidates


def limited(name: str, limit: int | None) -> Deployment:
    return Deployment(
        name=name, model=f"openai/{name}", api_base="http://127.0.0.1:9/v1",
        price=Price(input_per_million=1, output_per_million=1), context_window=4096,
        max_in_flight=limit,
    )


def test_hold_counts_until_released() -> None:
    health = DeploymentHealth(Clock())
    edge = limited("edge-a", 2)
    first, second = health.hold(edge), health.hold(edge)
    assert first is not None
    assert second is not None

    assert health.busy(edge) is True
    first()
    first()
    assert health.busy(edge) is False
    assert health.in_flight() == {"edge-a": 1}
    second()
    assert health.in_flight() == {}


def test_unlimited_deployment_is_not_counted() -> None:
    health = DeploymentHealth(Clock())
    mid = limited("mid", None)

    assert health.hold(mid) is None
    assert health.busy(mid) is False
    assert health.in_flight() == {}


async def test_held_stream_releases_when_dropped_or_done() -> None:
    releases: list[str] = []

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        yield {"n": 1}
        yield {"n": 2}

    done = _holding(chunks(), lambda: releases.append("done"))
    assert [chunk["n"] async for chunk in done] == [1, 2]
    assert releases == ["done"]

    dropped = _holding(chunks(), lambda: releases.append("dropped"))
    del dropped
    gc.collect()
    assert releases == ["done", "dropped"]
