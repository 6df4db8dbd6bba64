"""Fixtures for the scale-out tests: a Redis database of their own, unique stream keys, and a
Redis Cluster started for the session.

These tests use database 14 of the Redis at ``$TIERWISE_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6399``), so they never meet the gateway tests' database 15.  Streams
get a unique key per test, so that concurrent runs of the suite do not read each other's
entries.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.scaleout.cluster import missing_tools, running_cluster
from tests.scaleout.support import SCALEOUT_DB, scaleout_redis_url
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import REPLAY_STACK, TierUpstream, write_policy
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


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of one node of a three-master Redis Cluster that this session starts and stops."""
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not found on PATH: install redis-server and redis-cli "
            "(Debian: apt-get install redis-server) to run the Redis Cluster tests"
        )
    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as ports:
        yield f"redis://127.0.0.1:{ports[0]}/0"


@pytest.fixture
def cluster_client(cluster_url: str) -> Iterator[redis.RedisCluster]:
    client = redis.RedisCluster.from_url(cluster_url, socket_timeout=10)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fake_policy(tmp_path: Path) -> Iterator[Path]:
    """A policy whose three tiers are in-process fake upstreams, with the cache on."""
    fakes = [FakeUpstream(spec.model) for spec in REPLAY_STACK]
    for fake in fakes:
        fake.start()
    try:
        upstreams = [TierUpstream(spec, fake.base_url) for spec, fake in zip(REPLAY_STACK, fakes)]
        yield write_policy(tmp_path / "policy.yaml", upstreams)
    finally:
        for fake in fakes:
            fake.stop()
