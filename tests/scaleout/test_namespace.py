"""Two gateways with different TIERWISE_REDIS_KEY_PREFIX values share one Redis database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from router.distribution import DistributionKeys, classifier_bundle, publish_bundle
from router.outcomes.log import stream_key
from router.settings import Settings
from tests.scaleout.support import cached_chat_body, in_process_gateway, make_artifact


@pytest.fixture
def prefixes(redis_client: redis.Redis) -> Iterator[tuple[str, str]]:
    run = uuid.uuid4().hex[:10]
    names = (f"staging-{run}", f"production-{run}")
    try:
        yield names
    finally:
        for name in names:
            for pattern in (f"{{{name}}}:*", f"{{{name}:*", f"{name}:*"):
                keys = list(redis_client.scan_iter(match=pattern, count=500))
                if keys:
                    redis_client.delete(*keys)


def namespace_settings(tmp_path: Path, policy: Path, url: str, prefix: str) -> Settings:
    return Settings(
        policy=policy,
        classifier=make_artifact(tmp_path / f"model-{prefix}", "namespace-1"),
        redis_url=url,
        redis_key_prefix=prefix,
        data_dir=tmp_path / prefix,
        local_model=False,
    )


def stream_request_ids(client: redis.Redis, prefix: str) -> list[str]:
    entries: Any = client.xrange(stream_key(prefix))
    return [orjson.loads(fields[b"record"])["request_id"] for _, fields in entries]


async def chat(gateway: httpx.AsyncClient, text: str) -> httpx.Response:
    response = await gateway.post("/v1/chat/completions", json=cached_chat_body(text))
    assert response.status_code == 200
    return response


async def serving_classifier(gateway: httpx.AsyncClient) -> str:
    body = (await gateway.get("/readyz")).json()
    return str(body["classifier"]["version"])


async def test_two_namespaces_share_redis(
    tmp_path: Path, fake_policy: Path, redis_url: str, redis_client: redis.Redis,
    prefixes: tuple[str, str],
) -> None:  # fmt: skip
    staging, production = prefixes
    staging_settings = namespace_settings(tmp_path, fake_policy, redis_url, staging)
    production_settings = namespace_settings(tmp_path, fake_policy, redis_url, production)
    async with (
        in_process_gateway(staging_settings) as staging_gateway,
        in_process_gateway(production_settings) as production_gateway,
    ):
        staged = [await chat(staging_gateway, "Hello."), await chat(staging_gateway, "Hello.")]
        produced = await chat(production_gateway, "Hello.")

        bundle = classifier_bundle(make_artifact(tmp_path / "staging-2", "staging-2"))
        await asyncio.to_thread(publish_bundle, redis_client, bundle, DistributionKeys(staging))
        deadline = time.monotonic() + 15
        while await serving_classifier(staging_gateway) != "staging-2":
            assert time.monotonic() < deadline, "the staging gateway did not apply its version"
            await asyncio.sleep(0.1)
        production_version = await serving_classifier(production_gateway)

    assert [r.headers["x-tierwise-cache"] for r in staged] == ["miss", "hit"]
    assert produced.headers["x-tierwise-cache"] == "miss"
    assert production_version == "namespace-1"
    assert stream_request_ids(redis_client, staging) == [r.headers["x-request-id"] for r in staged]
    assert stream_request_ids(redis_client, production) == [produced.headers["x-request-id"]]
    for prefix in prefixes:
        assert len(list(redis_client.scan_iter(match=f"{prefix}:cache:*"))) == 1
        assert len(list(redis_client.scan_iter(match=f"{{{prefix}:*}}:spend:*"))) == 2
