"""The gateway's one Redis connection pool, guarded by a circuit breaker.

Redis is an accelerator here, never a dependency of a request: when it is slow or down,
callers get ``None`` or ``False`` quickly and carry on without it.  After
``failures_to_open`` consecutive failures the breaker stops calling Redis for
``reset_after_s`` seconds, then lets one call through to probe it.

With ``cluster=True`` the URL names one node of a Redis Cluster, and the client discovers
the others and routes each key to the node that owns its slot.  Every multi-key command
and script of the gateway uses keys that share a hash tag, so none of them spans slots.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as redis_asyncio
import structlog
from redis.asyncio.connection import parse_url
from redis.exceptions import RedisClusterException, RedisError

log = structlog.get_logger("tierwise.redis")

T = TypeVar("T")

DEFAULT_KEY_PREFIX = "tw"
"""Namespace of every Redis key, stream and channel unless TIERWISE_REDIS_KEY_PREFIX is set."""


class CircuitBreaker:
    def __init__(self, failures_to_open: int = 3, reset_after_s: float = 5.0) -> None:
        self.failures_to_open = failures_to_open
        self.reset_after_s = reset_after_s
        self.consecutive_failures = 0
        self.open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self.consecutive_failures >= self.failures_to_open

    def allow(self) -> bool:
        if not self.is_open:
            return True
        now = time.monotonic()
        if now >= self.open_until:
            self.open_until = now + self.reset_after_s  # one probe per interval
            return True
        return False

    def record_success(self) -> None:
        if self.is_open:
            log.info("redis_recovered")
        self.consecutive_failures = 0

    def record_failure(self, error: BaseException) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures == self.failures_to_open:
            self.open_until = time.monotonic() + self.reset_after_s
            log.warning("redis_circuit_open", error=type(error).__name__)


def check_redis_url(url: str) -> None:
    """Raise ValueError when redis-py cannot parse ``url``.

    The message leaves the URL out, because the URL can contain a password.
    """
    try:
        parse_url(url)
    except ValueError as exc:
        reason = str(exc)
        if reason.startswith("Port"):
            # urllib quotes the text it read as the port, which is the password when the
            # host is missing from redis://USER:PASSWORD@HOST.
            reason = "the port is not a number from 0 to 65535"
        raise ValueError(
            f"{reason}; give a URL such as redis://HOST:6379/0, rediss:// for TLS or unix://PATH"
        ) from None


def connect(url: str, timeout_s: float, cluster: bool) -> Any:
    """Return an asyncio client for ``url``: a RedisCluster client when ``cluster`` is set.

    Neither client connects before its first command.
    """
    if cluster:
        return redis_asyncio.RedisCluster.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
    return redis_asyncio.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=0,
        retry_on_timeout=False,
    )


class RedisLink:
    def __init__(self, url: str, timeout_s: float, cluster: bool = False) -> None:
        self.url = url
        self.cluster = cluster
        self.client = connect(url, timeout_s, cluster)
        self.breaker = CircuitBreaker()

    @property
    def state(self) -> str:
        return "degraded" if self.breaker.is_open else "ok"

    async def call(
        self, operation: Callable[[Any], Awaitable[T]], default: T, *, last_chance: bool = False
    ) -> T:
        """Run ``operation(client)``; return ``default`` when Redis fails or the breaker is open.

        ``last_chance`` tries even while the breaker is open: for work that is lost unless it
        is written now, such as the final flush at shutdown.
        """
        if not (last_chance or self.breaker.allow()):
            return default
        try:
            result = await operation(self.client)
        # RedisClusterException (no node reachable at start) does not derive from RedisError.
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            self.breaker.record_failure(exc)
            return default
        self.breaker.record_success()
        return result

    async def ping(self) -> bool:
        return await self.call(lambda client: client.ping(), False)

    async def is_persistent(self) -> bool | None:
        """Tell whether Redis keeps its data across a restart (AOF or RDB snapshots).

        Returns None when that cannot be read: Redis is unreachable, or it refuses CONFIG, as
        many managed services do (they keep data by their own means).
        """
        async def read(client: Any) -> bool | None:
            info = await client.info("persistence")
            if isinstance(info, dict) and int(info.get("aof_enabled", 0) or 0):
                return True
            try:
                save = await client.config_get("save")
            except RedisError:
                return None
            return bool(isinstance(save, dict) and str(save.get("save", "")).strip())

        if self.cluster:
            return None  # INFO and CONFIG would describe one node only
        return await self.call(read, None)

    async def close(self) -> None:
        await self.client.aclose()
