"""The Redis response cache, shared by every replica that uses the same Redis and prefix."""

from __future__ import annotations

from router.redis_link import DEFAULT_KEY_PREFIX, RedisLink


class RedisCache:
    """Stores entries under ``<prefix>:<key>``.

    The key has no hash tag, so a Redis Cluster spreads the entries over all its slots.
    """

    backend = "redis"

    def __init__(self, link: RedisLink, prefix: str = DEFAULT_KEY_PREFIX) -> None:
        self.link = link
        self.prefix = f"{prefix}:"

    async def get(self, key: str) -> bytes | None:
        name = self.prefix + key
        return await self.link.call(lambda client: client.get(name), None)

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        name = self.prefix + key
        await self.link.call(lambda client: client.set(name, value, ex=ttl_s), None)

    async def close(self) -> None:
        return None
