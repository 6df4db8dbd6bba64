"""The gateway against a real three-master Redis Cluster (TIERWISE_REDIS_CLUSTER=true).

Each test uses a key prefix of its own, so the session's cluster needs no cleaning between
tests.  The cluster fixture skips these tests when redis-server or redis-cli is missing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from classifiers import load_artifact
from router.budgets import BudgetLedger, period_keys
from router.distribution import (
    DistributionKeys,
    DistributionWatcher,
    classifier_bundle,
    publish_bundle,
)
from router.errors import RequestRateExceeded
from router.outcomes.export import ExportOptions, OutcomeExporter
from router.outcomes.log import OutcomeLog, stream_key
from router.policy.store import PolicyStore
from router.ratelimits import WINDOW_S, RateLimiter, window_key
from router.redis_link import RedisLink
from router.settings import Settings
from tests.scaleout.support import (
    cached_chat_body,
    exported_rows,
    in_process_gateway,
    make_artifact,
    outcome_record,
)
from tests.scaleout.test_distribution import FakeTarget, write_test_policy
from tests.scaleout.test_publish_cli import run_cli


@pytest.fixture
def prefix() -> str:
    return f"tw-cluster-{uuid.uuid4().hex[:12]}"


def cluster_settings(tmp_path: Path, policy: Path, url: str, prefix: str) -> Settings:
    return Settings(
        policy=policy,
        classifier=make_artifact(tmp_path / "model", "cluster-1"),
        redis_url=url,
        redis_cluster=True,
        redis_key_prefix=prefix,
        data_dir=tmp_path / "data",
        local_model=False,
    )


def stream_request_ids(client: redis.RedisCluster, prefix: str) -> list[str]:
    entries: Any = client.xrange(stream_key(prefix))
    return [orjson.loads(fields[b"record"])["request_id"] for _, fields in entries]


async def test_cluster_gateway_caches_and_logs(
    tmp_path: Path, fake_policy: Path, cluster_url: str,
    cluster_client: redis.RedisCluster, prefix: str,
) -> None:  # fmt: skip
    settings = cluster_settings(tmp_path, fake_policy, cluster_url, prefix)
    async with in_process_gateway(settings) as gateway:
        ready = await gateway.get("/readyz")
        first = await gateway.post("/v1/chat/completions", json=cached_chat_body("Hi there."))
        second = await gateway.post("/v1/chat/completions", json=cached_chat_body("Hi there."))

    assert ready.status_code == 200
    assert ready.json()["redis"] == "ok"
    assert [first.status_code, second.status_code] == [200, 200]
    assert first.headers["x-tierwise-cache"] == "miss"
    assert second.headers["x-tierwise-cache"] == "hit"
    assert len(list(cluster_client.scan_iter(match=f"{prefix}:cache:*"))) == 1
    expected = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert stream_request_ids(cluster_client, prefix) == expected
    assert list((tmp_path / "data" / "spool").glob("outcomes-*.jsonl")) == []


async def test_cluster_budgets_add_up(
    cluster_url: str, cluster_client: redis.RedisCluster, prefix: str
) -> None:
    link = RedisLink(cluster_url, 5.0, cluster=True)
    ledger = BudgetLedger(link, prefix)
    for tenant, usd in (("alpha", 0.25), ("beta", 1.5), ("alpha", 0.5), ("gamma", 2.0)):
        ledger.record(tenant, usd)
    await ledger.flush()

    spent = {tenant: await ledger.spent(tenant) for tenant in ("alpha", "beta", "gamma")}
    unsaved = ledger._unsaved()
    await link.close()

    assert spent == {"alpha": (0.75, 0.75), "beta": (1.5, 1.5), "gamma": (2.0, 2.0)}
    # The amounts are in Redis, not in the process.
    assert unsaved == {}
    assert float(cluster_client.get(period_keys("alpha", prefix=prefix)[1]) or 0) == 0.75
    for tenant in ("alpha", "beta", "gamma"):
        day_key, month_key = period_keys(tenant, prefix=prefix)
        assert cluster_client.keyslot(day_key) == cluster_client.keyslot(month_key)
    slots = {
        cluster_client.keyslot(period_keys(t, prefix=prefix)[0]) for t in ("alpha", "beta", "gamma")
    }
    assert len(slots) == 3


async def test_cluster_rate_limits_count_per_tenant(
    cluster_url: str, cluster_client: redis.RedisCluster, prefix: str
) -> None:
    now = 20_000_000 * WINDOW_S + 30.0
    link = RedisLink(cluster_url, 5.0, cluster=True)
    limiter = RateLimiter(link, prefix, clock=lambda: now)
    rejected = {}
    for tenant in ("alpha", "beta", "gamma"):
        for _ in range(3):
            await limiter.check(tenant, 3)
        try:
            await limiter.check(tenant, 3)
        except RequestRateExceeded as exc:
            rejected[tenant] = exc.limit
    await link.close()

    window = int(now // WINDOW_S)
    keys = {tenant: window_key(tenant, window, prefix) for tenant in ("alpha", "beta", "gamma")}
    assert rejected == {"alpha": 3, "beta": 3, "gamma": 3}
    assert {tenant: int(cluster_client.get(key) or 0) for tenant, key in keys.items()} == {
        "alpha": 4, "beta": 4, "gamma": 4,
    }
    # The counter shares the tenant's slot with its spend keys, and tenants spread out.
    for tenant, key in keys.items():
        assert cluster_client.keyslot(key) == cluster_client.keyslot(period_keys(tenant, prefix=prefix)[0])
    assert len({cluster_client.keyslot(key) for key in keys.values()}) == 3


async def test_cluster_outcomes_export_once(
    tmp_path: Path, cluster_url: str, cluster_client: redis.RedisCluster, prefix: str
) -> None:
    link = RedisLink(cluster_url, 5.0, cluster=True)
    outcomes = OutcomeLog(tmp_path / "outcomes.jsonl", link, tmp_path / "spool", prefix)
    outcomes.start()
    for number in range(30):
        outcomes.emit(outcome_record(f"req-{number}"))
    await outcomes.stop()
    await link.close()

    options = ExportOptions(out_dir=tmp_path / "export", stream=stream_key(prefix), batch=7)
    summary = OutcomeExporter(cluster_client, options).run()  # type: ignore[arg-type]

    rows = exported_rows(tmp_path / "export")
    assert summary.records == 30
    assert sorted(row["request_id"] for row in rows) == sorted(f"req-{n}" for n in range(30))
    assert cluster_client.xpending(stream_key(prefix), options.group)["pending"] == 0


async def test_cluster_publish_reaches_watcher(
    tmp_path: Path, cluster_url: str, cluster_client: redis.RedisCluster, prefix: str
) -> None:
    keys = DistributionKeys(prefix)
    scorer = load_artifact(make_artifact(tmp_path / "serving", "serving-1"))
    target = FakeTarget(scorer, PolicyStore(write_test_policy(tmp_path / "policy.yaml"), 0.0))
    # A poll interval longer than the test, so that only the pub/sub message can apply it.
    watcher = DistributionWatcher(target, cluster_url, keys=keys, poll_interval_s=600,
                                  cluster=True)  # fmt: skip
    await watcher.start()
    try:
        assert await wait_for_subscriber(watcher, keys.channel)
        bundle = classifier_bundle(make_artifact(tmp_path / "new", "published-2"))
        # The publisher is typed for redis.Redis; RedisCluster has the same commands used here.
        result = await asyncio.to_thread(publish_bundle, cluster_client, bundle, keys)  # type: ignore[arg-type]
        deadline = time.monotonic() + 15
        while target.scorer.version != "published-2" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await watcher.stop()

    assert result.stored
    assert target.scorer.version == "published-2"
    assert watcher.states["classifier"].applied == "published-2"


async def wait_for_subscriber(watcher: DistributionWatcher, channel: str) -> bool:
    """Wait until the watcher's subscription is registered on the node it connected to."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        counts: Any = await watcher.subscriber.pubsub_numsub(channel)
        if counts and counts[0][1] >= 1:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_cluster_cli_uses_prefix(
    tmp_path: Path, cluster_url: str, cluster_client: redis.RedisCluster, prefix: str
) -> None:
    link = RedisLink(cluster_url, 5.0, cluster=True)
    outcomes = OutcomeLog(tmp_path / "outcomes.jsonl", link, tmp_path / "spool", prefix)
    outcomes.start()
    for number in range(4):
        outcomes.emit(outcome_record(f"req-{number}"))
    await outcomes.stop()
    await link.close()
    target = ["--redis-url", cluster_url, "--redis-cluster", "--key-prefix", prefix]
    artifact = make_artifact(tmp_path / "model", "cli-cluster-1")

    published = await asyncio.to_thread(run_cli, "classifier", "publish", str(artifact), *target)
    exported = await asyncio.to_thread(
        run_cli, "outcomes", "export", "--out", str(tmp_path / "export"), *target
    )

    assert published.returncode == 0, published.stderr
    assert cluster_client.get(DistributionKeys(prefix).current("classifier")) == b"cli-cluster-1"
    assert exported.returncode == 0, exported.stderr
    rows = exported_rows(tmp_path / "export")
    assert sorted(row["request_id"] for row in rows) == [f"req-{n}" for n in range(4)]


async def test_cluster_usage_reads_every_tenant(
    cluster_url: str, cluster_client: redis.RedisCluster, prefix: str
) -> None:
    link = RedisLink(cluster_url, 5.0, cluster=True)
    ledger = BudgetLedger(link, prefix)
    spends = {"alpha": 0.25, "beta": 1.5, "gamma": 2.0, "delta": 0.125}
    for tenant, usd in spends.items():
        ledger.record(tenant, usd)
    await ledger.flush()
    await link.close()
    target = ["--redis-url", cluster_url, "--redis-cluster", "--key-prefix", prefix]

    shown = await asyncio.to_thread(run_cli, "usage", "--json", *target)

    assert shown.returncode == 0, shown.stderr
    tenants = orjson.loads(shown.stdout)["tenants"]
    assert {row["tenant"]: row["spend_usd"]["month"] for row in tenants} == spends
    slots = {cluster_client.keyslot(period_keys(t, prefix=prefix)[1]) for t in spends}
    assert len(slots) > 1, "the tenants' keys should spread over several slots"
