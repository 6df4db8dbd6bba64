"""The Redis response cache, shared by every replica that uses the same Redis."""

from __future__ import annotations

from router.redis_link import RedisLink


class RedisCache:
    backend = "redis"

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    async def get(self, key: str) -> bytes | None:
        return await self.link.call(lambda client: client.get(key), None)

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        await self.link.call(lambda client: client.set(key, value, ex=ttl_s), None)

    async def close(self) -> None:
        return None
