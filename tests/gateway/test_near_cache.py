"""In-process copies of Redis cache entries: served until the entry expires, never longer,
and never for an entry that Redis did not store."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from router.cache.redis_store import COPY_TTL_S, RedisCache
from router.redis_link import RedisLink
from tests.gateway.conftest import GatewayKit, chat_body


def unique_body() -> dict[str, object]:
    # Runs share the test Redis, so each test sends a prompt that no earlier run stored.
    return chat_body(f"What is the capital of France? ({uuid.uuid4().hex})", temperature=0)


def advance_clocks(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the wall clock (Redis expiry stamps) and the monotonic clock (copies) forward."""
    wall, monotonic = time.time(), time.monotonic()
    monkeypatch.setattr(time, "time", lambda: wall + seconds)
    monkeypatch.setattr(time, "monotonic", lambda: monotonic + seconds)


@pytest.fixture
async def near_cache(redis_url: str) -> AsyncIterator[RedisCache]:
    link = RedisLink(redis_url, timeout_s=1.0)
    cache = RedisCache(link, prefix=f"near-{uuid.uuid4().hex[:8]}", near_entries=2)
    yield cache
    await link.close()


async def test_hit_served_from_copy(near_cache: RedisCache) -> None:
    await near_cache.set("a", b"answer", ttl_s=60)
    await near_cache.link.client.delete(near_cache.prefix + "a")

    assert await near_cache.get("a") == b"answer"


async def test_copy_made_on_redis_hit(near_cache: RedisCache, redis_url: str) -> None:
    writer = RedisCache(near_cache.link, prefix=near_cache.prefix[:-1], near_entries=0)
    await writer.set("b", b"stored elsewhere", ttl_s=60)

    assert await near_cache.get("b") == b"stored elsewhere"
    await near_cache.link.client.delete(near_cache.prefix + "b")
    assert await near_cache.get("b") == b"stored elsewhere"


async def test_copy_expires_with_entry(near_cache: RedisCache, monkeypatch: pytest.MonkeyPatch) -> None:
    await near_cache.set("c", b"short-lived", ttl_s=5)
    advance_clocks(monkeypatch, 6)
    await near_cache.link.client.delete(near_cache.prefix + "c")

    assert await near_cache.get("c") is None


async def test_copies_are_bounded(near_cache: RedisCache) -> None:
    for key in ("d1", "d2", "d3"):
        await near_cache.set(key, key.encode(), ttl_s=60)
    await near_cache.link.client.delete(*(near_cache.prefix + key for key in ("d1", "d2", "d3")))

    assert await near_cache.get("d1") is None
    assert await near_cache.get("d2") == b"d2"
    assert await near_cache.get("d3") == b"d3"


async def test_entry_from_older_version_is_served(near_cache: RedisCache) -> None:
    await near_cache.link.client.set(near_cache.prefix + "e", b'{"completion": {}}', ex=60)

    assert await near_cache.get("e") == b'{"completion": {}}'
    await near_cache.link.client.delete(near_cache.prefix + "e")
    assert await near_cache.get("e") is None


async def test_failed_store_keeps_no_copy() -> None:
    # Port 1 on 127.0.0.1 refuses connections, so the store fails.
    link = RedisLink("redis://127.0.0.1:1/0", timeout_s=0.2)
    cache = RedisCache(link, near_entries=10)
    try:
        await cache.set("f", b"lost", ttl_s=60)
        assert await cache.get("f") is None
    finally:
        await link.close()


async def test_second_replica_hits_through_redis(redis_kit: GatewayKit) -> None:
    body = unique_body()
    redis_kit.write_policy()
    settings = redis_kit.settings(use_redis=True)
    async with redis_kit.running(settings=settings) as first:
        stored = await first.chat(body)
        again = await first.chat(body)
    async with redis_kit.running(settings=settings) as second:
        shared = await second.chat(body, api_key=first.api_key)

    assert stored.headers["x-tierwise-cache"] == "miss"
    assert again.headers["x-tierwise-cache"] == "hit"
    assert shared.headers["x-tierwise-cache"] == "hit"
    assert shared.content == stored.content


async def test_deleted_entry_stops_within_copy_ttl(
    near_cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    await near_cache.set("g", b"purged", ttl_s=3600)
    await near_cache.link.client.delete(near_cache.prefix + "g")
    served_at_once = await near_cache.get("g")
    advance_clocks(monkeypatch, COPY_TTL_S + 1)

    assert served_at_once == b"purged"
    assert await near_cache.get("g") is None
