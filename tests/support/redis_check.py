"""The check every Redis-backed test fixture makes before it hands out a Redis URL."""

from __future__ import annotations

import os

import pytest
import redis


def require_redis(url: str, hint: str) -> str:
    """Return ``url`` when Redis answers there; otherwise skip the test, or fail it under CI.

    ``hint`` is appended to the reason and says how to provide a Redis.
    """
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        reason = f"Redis at {url} did not answer ({type(exc).__name__}); {hint}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        client.close()
    return url
