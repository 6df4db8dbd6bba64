"""Fixtures for the scale-out tests: a Redis database of their own and unique stream keys.

These tests use database 14 of the Redis at ``$TIERWISE_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379``), so they never meet the gateway tests' database 15.  Streams
get a unique key per test, so that concurrent runs of the suite do not read each other's
entries.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.scaleout.support import SCALEOUT_DB, scaleout_redis_url
from tests.support.redis_check import require_redis


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Database 14 of the test Redis; the test is skipped (failed under CI) when it does not answer."""
    return require_redis(
        scaleout_redis_url(),
        "start redis-server (make test starts one) or set TIERWISE_TEST_REDIS_URL "
        f"(database {SCALEOUT_DB} is used)",
    )


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def stream_key(redis_client: redis.Redis) -> Iterator[str]:
    """A stream key no other test uses; deleted after the test."""
    key = f"tw-test:{uuid.uuid4().hex}:outcomes"
    try:
        yield key
    finally:
        redis_client.delete(key)
