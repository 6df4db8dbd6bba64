"""POST /v1/embeddings against the real SmolLM2 model served by llama.cpp.

One llama.cpp server (the edge extra's model, started with embeddings on) serves the module.
Deployments reach it directly or through ``FakeEmbeddings``, which forwards to it unless a
test queues a fault (HTTP 400, 500 or 429, a hang, malformed JSON, a missing vector).  The
gateways use the test Redis for the cache, budgets, rate limits and the outcome stream.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import structlog
from openai import AsyncOpenAI, BadRequestError, NotFoundError

from router import edge
from router.app import create_app
from router.edge import EMBEDDING_DIMENSIONS, EdgeModelServer
from tests.gateway.conftest import (
    Gateway,
    GatewayKit,
    LiveGateway,
    StubScorer,
    new_api_key,
    policy_document,
    tenant_of_key,
    write_yaml,
)
from tests.support.fake_embeddings import FakeEmbeddings

EDGE_AVAILABLE, EDGE_REASON = edge.check_edge_extra()
pytestmark = [
    pytest.mark.edge,
    pytest.mark.skipif(
        not EDGE_AVAILABLE, reason=f"edge extra missing, so no model to embed with: {EDGE_REASON}"
    ),
]

REAL = "real-embed"
FLAKY = "flaky-embed"
ALIAS = "embed"
# USD per million input tokens, high enough that a few tokens cost a visible amount.
REAL_PRICE = 1000.0
FLAKY_PRICE = 2000.0


@pytest.fixture(scope="module")
def model_server() -> Iterator[EdgeModelServer]:
    structlog.reset_defaults()
    server = EdgeModelServer(startup_timeout_s=120.0, n_ctx=2048)
    try:
        asyncio.run(server.start())
        yield server
    finally:
        asyncio.run(server.stop())


@pytest.fixture(scope="module")
def module_fake(model_server: EdgeModelServer) -> Iterator[FakeEmbeddings]:
    with FakeEmbeddings(forward_to=model_server.base_url) as fake:
        yield fake


@pytest.fixture
def fake(module_fake: FakeEmbeddings) -> FakeEmbeddings:
    module_fake.reset()
    return module_fake


def embeddings_section(model_url: str, fake_url: str, **real_options: Any) -> dict[str, Any]:
    return {
        "deployments": [
            {
                "name": REAL,
                "model": "openai/smollm2-135m-instruct",
                "api_base": model_url,
                "transport": "direct",
                "price": {"input_per_million": REAL_PRICE},
                "dimensions": EMBEDDING_DIMENSIONS,
                "timeout_s": 30,
                **real_options,
            },
            {
                "name": FLAKY,
                "model": "openai/flaky-model",
                "api_base": fake_url,
                "transport": "direct",
                "price": {"input_per_million": FLAKY_PRICE},
                "dimensions": EMBEDDING_DIMENSIONS,
                "accepts_dimensions": True,
                # Below FakeEmbeddings' HANG_S, and long enough for the forwarded call to the
                # model on a busy machine.
                "timeout_s": 4,
            },
        ],
        "aliases": {ALIAS: [FLAKY, REAL]},
    }


def write_policy(
    kit: GatewayKit,
    model_server: EdgeModelServer,
    fake: FakeEmbeddings,
    *,
    tenants: dict[str, Any] | None = None,
    cache_enabled: bool = True,
    section: dict[str, Any] | None = None,
    with_embeddings: bool = True,
) -> None:
    document = policy_document(kit.base_urls, cache_enabled=cache_enabled)
    if with_embeddings:
        document["embeddings"] = section or embeddings_section(model_server.base_url, fake.base_url)
    if tenants is not None:
        document["tenants"] = tenants
    write_yaml(kit.policy_path, document)


@asynccontextmanager
async def gateway_on(kit: GatewayKit) -> AsyncIterator[Gateway]:
    async with kit.running(settings=kit.settings(use_redis=True)) as gateway:
        yield gateway


async def embed(
    gateway: Gateway, body: dict[str, Any], *, api_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    key = api_key or gateway.api_key
    gateway.tenants.add(tenant_of_key(key))
    return await gateway.client.post(
        "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {key}", **(headers or {})}
    )


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def vectors(response: httpx.Response) -> list[list[float]]:
    return [item["embedding"] for item in response.json()["data"]]


def decode_base64(text: str) -> list[float]:
    """Decode OpenAI's base64 embedding: little-endian float32 values."""
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


# The official client against a live gateway.


async def test_openai_client_string_list_and_base64(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    app = create_app(redis_kit.settings(use_redis=True), StubScorer())
    with LiveGateway(app) as live:
        client = AsyncOpenAI(base_url=live.base_url, api_key=new_api_key(), max_retries=0)
        raw = await client.embeddings.with_raw_response.create(model=REAL, input="The cat sat.")
        one = raw.parse()
        assert raw.headers["x-tierwise-model"] == REAL
        assert raw.headers["x-tierwise-cache"] == "miss"
        assert raw.headers["x-request-id"]
        assert "x-tierwise-tier" not in raw.headers
        assert len(one.data) == 1
        assert len(one.data[0].embedding) == EMBEDDING_DIMENSIONS
        assert one.usage.prompt_tokens > 0

        many = await client.embeddings.create(
            model=REAL, input=["The cat sat.", "Stock prices fell sharply."], encoding_format="float"
        )
        assert [item.index for item in many.data] == [0, 1]
        first, second = (item.embedding for item in many.data)
        assert cosine(first, one.data[0].embedding) > 0.999
        assert cosine(first, second) < 0.999

        # Without encoding_format (the first call), the client requests base64 and decodes it.
        # With base64 set, the client returns the text, which the gateway converted from
        # llama.cpp's floats.
        encoded = await client.embeddings.create(
            model=REAL, input="The cat sat.", encoding_format="base64"
        )
        text = encoded.data[0].embedding
        assert isinstance(text, str)
        assert cosine(decode_base64(text), one.data[0].embedding) > 0.999

        with pytest.raises(NotFoundError) as missing:
            await client.embeddings.create(model="no-such-model", input="x")
        assert missing.value.code == "model_not_found"
        with pytest.raises(BadRequestError) as empty:
            await client.embeddings.create(model=REAL, input="")
        assert empty.value.param == "input"
        await client.close()


async def test_base64_body_is_float32_little_endian(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    async with gateway_on(redis_kit) as gateway:
        floats = await embed(gateway, {"model": REAL, "input": "blue sky", "encoding_format": "float"})
        encoded = await embed(gateway, {"model": REAL, "input": "blue sky",
                                        "encoding_format": "base64"})
    assert floats.status_code == encoded.status_code == 200
    text = encoded.json()["data"][0]["embedding"]
    assert isinstance(text, str)
    decoded = decode_base64(text)
    expected = vectors(floats)[0]
    assert len(decoded) == EMBEDDING_DIMENSIONS
    assert max(abs(a - b) for a, b in zip(decoded, expected, strict=True)) < 1e-5


async def test_dimensions_passed_through(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    async with gateway_on(redis_kit) as gateway:
        passed = await embed(gateway, {"model": FLAKY, "input": "hi", "dimensions": 64,
                                       "user": "u-1"})
        own_size = await embed(gateway, {"model": REAL, "input": "hi",
                                         "dimensions": EMBEDDING_DIMENSIONS})
        other_size = await embed(gateway, {"model": REAL, "input": "hi", "dimensions": 64})
    assert passed.status_code == 200
    assert fake.requests[-1]["dimensions"] == 64
    assert fake.requests[-1]["model"] == "flaky-model"
    assert fake.requests[-1]["user"] == "u-1"
    assert own_size.status_code == 200
    assert len(vectors(own_size)[0]) == EMBEDDING_DIMENSIONS
    assert other_size.status_code == 400
    error = error_of(other_size)
    assert error["param"] == "dimensions"
    assert error["code"] == "unsupported_parameter"
    assert str(EMBEDDING_DIMENSIONS) in error["message"]


# Cache.


async def test_cache_hit_per_tenant_and_parameters(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    body = {"model": FLAKY, "input": ["alpha", "beta"], "encoding_format": "float"}
    async with gateway_on(redis_kit) as gateway:
        first = await embed(gateway, body)
        second = await embed(gateway, body)
        other_tenant = await embed(gateway, body, api_key=new_api_key())
        other_format = await embed(gateway, {**body, "encoding_format": "base64"})
        other_input = await embed(gateway, {**body, "input": ["alpha", "gamma"]})
        other_dimensions = await embed(gateway, {**body, "dimensions": 32})
        records = await gateway.request_records()
    assert first.headers["x-tierwise-cache"] == "miss"
    assert second.headers["x-tierwise-cache"] == "hit"
    assert second.headers["x-tierwise-cost-usd"] == "0.00000000"
    assert vectors(second) == vectors(first)
    for response in (other_tenant, other_format, other_input, other_dimensions):
        assert response.status_code == 200
        assert response.headers["x-tierwise-cache"] == "miss"
    # The fake saw every request except the hit.
    assert len(fake.requests) == 5
    assert [r["cache_hit"] for r in records] == [False, True, False, False, False, False]
    assert records[1]["cost_usd"] == 0.0
    assert records[1]["tokens_in"] == records[0]["tokens_in"]


async def test_cache_off_in_policy(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake, cache_enabled=False)
    async with gateway_on(redis_kit) as gateway:
        responses = [await embed(gateway, {"model": FLAKY, "input": "same"}) for _ in range(2)]
    assert [r.headers["x-tierwise-cache"] for r in responses] == ["miss", "miss"]
    assert len(fake.requests) == 2


# Failover and upstream errors.


@pytest.mark.parametrize("fault", ["http_500", "http_429", "hang", "malformed_json", "wrong_count",
                                   "duplicate_index", "invalid_base64"])
async def test_failover_to_second_deployment(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings, fault: Any
) -> None:
    write_policy(redis_kit, model_server, fake)
    fake.enqueue(fault)
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, {"model": ALIAS, "input": ["one", "two"]})
        records = await gateway.request_records()
    assert response.status_code == 200
    assert response.headers["x-tierwise-model"] == REAL
    assert len(vectors(response)) == 2
    attempts = records[-1]["attempts"]
    assert [a["deployment"] for a in attempts] == [FLAKY, REAL]
    assert attempts[0]["error"] is not None
    assert attempts[1]["error"] is None


async def test_litellm_timeout_sends_one_request(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    # litellm 1.110 hands its OpenAI embedding call litellm's default max_retries in place of 0,
    # and the OpenAI SDK then retries a timed-out embedding.
    section = embeddings_section(model_server.base_url, fake.base_url)
    section["deployments"][1]["transport"] = "litellm"
    write_policy(redis_kit, model_server, fake, section=section)
    fake.enqueue("hang")
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, {"model": ALIAS, "input": "one"})
        records = await gateway.request_records()

    assert response.status_code == 200, response.text
    assert response.headers["x-tierwise-model"] == REAL
    assert len(fake.requests) == 1
    assert [a["deployment"] for a in records[-1]["attempts"]] == [FLAKY, REAL]


async def test_vectors_sorted_by_index(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    inputs = ["The cat sat.", "Stock prices fell sharply.", "Rain is expected tomorrow."]
    async with gateway_on(redis_kit) as gateway:
        in_order = await embed(gateway, {"model": REAL, "input": inputs})
        fake.enqueue("reversed")
        reversed_upstream = await embed(gateway, {"model": FLAKY, "input": inputs})

    assert reversed_upstream.status_code == 200, reversed_upstream.text
    data = reversed_upstream.json()["data"]
    assert [item["index"] for item in data] == [0, 1, 2]
    for got, expected in zip(vectors(reversed_upstream), vectors(in_order), strict=True):
        assert cosine(got, expected) > 0.999


@pytest.mark.parametrize("requested", ["base64", "float"])
async def test_base64_upstream_converted_once(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings, requested: str
) -> None:
    write_policy(redis_kit, model_server, fake)
    async with gateway_on(redis_kit) as gateway:
        floats = await embed(gateway, {"model": REAL, "input": "blue sky"})
        fake.enqueue("base64")
        response = await embed(gateway, {"model": FLAKY, "input": "blue sky",
                                         "encoding_format": requested})

    assert response.status_code == 200, response.text
    vector = vectors(response)[0]
    if requested == "base64":
        assert isinstance(vector, str)
        vector = decode_base64(vector)
    assert len(vector) == EMBEDDING_DIMENSIONS
    assert cosine(vector, vectors(floats)[0]) > 0.999


async def test_failed_attempt_log_omits_input(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    secret = "the input named zebra-quartz-7"
    fake.enqueue("http_500_quoting_input")
    with structlog.testing.capture_logs() as logs:
        async with gateway_on(redis_kit) as gateway:
            response = await embed(gateway, {"model": ALIAS, "input": [secret, "second input"]})

    assert response.status_code == 200, response.text
    failures = [line for line in logs if line["event"] == "upstream_failed"]
    assert len(failures) == 1
    assert failures[0]["detail"] == "cannot embed ['[prompt]', '[prompt]']"
    assert "zebra-quartz" not in repr(logs)


async def test_nan_vector_fails_over(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    # Only the litellm transport parses the bare NaN that the fake sends; the direct
    # transport's JSON parser rejects it as invalid JSON.
    section = embeddings_section(model_server.base_url, fake.base_url)
    section["deployments"][1]["transport"] = "litellm"
    write_policy(redis_kit, model_server, fake, section=section)
    fake.enqueue("nan")
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, {"model": ALIAS, "input": "not a number"})
        records = await gateway.request_records()

    assert response.status_code == 200, response.text
    assert response.headers["x-tierwise-model"] == REAL
    assert all(isinstance(value, float) for value in vectors(response)[0])
    assert [a["deployment"] for a in records[-1]["attempts"]] == [FLAKY, REAL]


async def test_every_deployment_failing_is_502(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    section = embeddings_section(model_server.base_url, fake.base_url)
    section["aliases"] = {ALIAS: [FLAKY]}
    write_policy(redis_kit, model_server, fake, section=section)
    fake.default = "http_500"
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, {"model": ALIAS, "input": "x"})
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_error"


async def test_every_deployment_rate_limited_is_429(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    fake.default = "http_429"
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, {"model": FLAKY, "input": "x"})
    assert response.status_code == 429
    assert error_of(response)["code"] == "rate_limit_exceeded"
    assert response.headers["retry-after"] == "7"


async def test_failing_deployment_cools_down(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    fake.default = "http_500"
    async with gateway_on(redis_kit) as gateway:
        # The default cooldown starts after 3 failures in a row.
        for index in range(4):
            response = await embed(gateway, {"model": ALIAS, "input": f"text {index}"})
            assert response.status_code == 200
        records = await gateway.request_records()
    assert [len(r["attempts"]) for r in records] == [2, 2, 2, 1]
    assert records[-1]["attempts"][0]["deployment"] == REAL
    assert FLAKY in gateway.runtime.health.cooling()


async def test_upstream_rejection_is_400(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    fake.enqueue("http_400")
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, {"model": ALIAS, "input": "x"})
        records = await gateway.request_records()
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "upstream_rejected"
    assert error["param"] == "input"
    # A rejected request is the request's fault, so no other deployment gets it.
    assert [a["deployment"] for a in records[-1]["attempts"]] == [FLAKY]


async def test_token_arrays_skip_string_only_deployments(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    section = embeddings_section(model_server.base_url, fake.base_url, accepts_token_ids=False)
    write_policy(redis_kit, model_server, fake, section=section)
    fake.default = "http_500"
    async with gateway_on(redis_kit) as gateway:
        rejected = await embed(gateway, {"model": REAL, "input": [[1, 2, 3]]})
        failed = await embed(gateway, {"model": ALIAS, "input": [[1, 2, 3]]})
        records = await gateway.request_records()
    assert rejected.status_code == 400
    assert error_of(rejected) == {
        "message": f"The model '{REAL}' takes only strings as input, not token arrays, because "
        "none of its deployments accepts token ids. Send the text as a string or a list of "
        "strings.",
        "type": "invalid_request_error",
        "param": "input",
        "code": "unsupported_parameter",
    }
    assert records[0]["attempts"] == []
    # The alias tries only the deployment that takes token ids.
    assert failed.status_code == 502
    assert [a["deployment"] for a in records[1]["attempts"]] == [FLAKY]


async def test_litellm_path_embeds(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    section = embeddings_section(model_server.base_url, fake.base_url, transport="litellm")
    write_policy(redis_kit, model_server, fake, section=section)
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, {"model": REAL, "input": ["first", "second"]})
        records = await gateway.request_records()
    assert response.status_code == 200, response.text
    assert [len(v) for v in vectors(response)] == [EMBEDDING_DIMENSIONS] * 2
    assert records[-1]["tokens_in"] > 0
    assert set(response.json()["usage"]) == {"prompt_tokens", "total_tokens"}


async def test_unset_key_makes_model_unavailable(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TIERWISE_TEST_UNSET_EMBEDDING_KEY", raising=False)
    section = embeddings_section(model_server.base_url, fake.base_url,
                                 api_key_env="TIERWISE_TEST_UNSET_EMBEDDING_KEY")
    write_policy(redis_kit, model_server, fake, section=section)
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, {"model": REAL, "input": "x"})
        listed = (await gateway.client.get("/v1/models")).json()["data"]
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "no_deployment_available"
    assert "TIERWISE_TEST_UNSET_EMBEDDING_KEY" in error["message"]
    entry = next(m for m in listed if m["id"] == REAL)
    assert entry["tierwise"]["available"] is False


# Models, unknown names and a policy without embeddings.


async def test_models_lists_embeddings(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    async with gateway_on(redis_kit) as gateway:
        listed = {m["id"]: m for m in (await gateway.client.get("/v1/models")).json()["data"]}
        alias = (await gateway.client.get(f"/v1/models/{ALIAS}")).json()
    assert listed[REAL]["tierwise"]["kind"] == "embedding"
    assert listed[REAL]["tierwise"]["dimensions"] == EMBEDDING_DIMENSIONS
    assert listed[REAL]["tierwise"]["price_per_million"] == {"input_per_million": REAL_PRICE}
    assert listed[ALIAS]["tierwise"] == {"kind": "embedding_alias", "deployments": [FLAKY, REAL]}
    assert alias["id"] == ALIAS
    assert "auto" in listed


async def test_readyz_lists_embedding_deployments(
    kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    section = embeddings_section(model_server.base_url, fake.base_url)
    section["deployments"][1]["api_key_env"] = "TIERWISE_TEST_UNSET_EMBED_KEY"
    monkeypatch.delenv("TIERWISE_TEST_UNSET_EMBED_KEY", raising=False)
    write_policy(kit, model_server, fake, section=section)
    async with kit.running(settings=kit.settings()) as gateway:
        ready = await gateway.client.get("/readyz")

    assert ready.status_code == 200
    assert ready.json()["embeddings"] == {
        REAL: "available",
        FLAKY: "environment variable TIERWISE_TEST_UNSET_EMBED_KEY is not set",
    }


async def test_chat_model_is_not_an_embedding_model(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, {"model": "auto", "input": "x"})
        chat = await gateway.chat({"model": REAL, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert REAL in error["message"]
    assert chat.status_code == 404
    chat_error = error_of(chat)
    assert chat_error["code"] == "model_not_found"
    assert chat_error["param"] == "model"
    assert f"'{REAL}' is an embedding model" in chat_error["message"]
    assert "POST /v1/embeddings" in chat_error["message"]


async def test_policy_without_embeddings_explains(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake, with_embeddings=False)
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, {"model": "text-embedding-3-small", "input": "x"})
        records = await gateway.request_records()
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "model_not_found"
    assert "no embeddings section" in error["message"]
    assert records[-1]["endpoint"] == "embeddings"
    assert records[-1]["status"] == 404


# Tenancy: keys, rate limits, budgets and records.


async def test_unknown_key_is_401(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    key = new_api_key()
    tenants = {"require_key": True, "entries": {"team-a": {"key_sha256": [digest(key)]}}}
    write_policy(redis_kit, model_server, fake, tenants=tenants)
    async with gateway_on(redis_kit) as gateway:
        rejected = await embed(gateway, {"model": REAL, "input": "x"})
        accepted = await embed(gateway, {"model": REAL, "input": "x"}, api_key=key)
    assert rejected.status_code == 401
    assert error_of(rejected)["type"] == "authentication_error"
    assert accepted.status_code == 200


async def test_request_rate_limit(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    key = new_api_key()
    tenant = f"rpm-{key[-8:]}"
    tenants = {"entries": {tenant: {"key_sha256": [digest(key)], "requests_per_minute": 2}}}
    write_policy(redis_kit, model_server, fake, tenants=tenants)
    async with gateway_on(redis_kit) as gateway:
        gateway.tenants.add(tenant)
        # The second request is a cache hit, which counts as a request too.
        statuses = [
            (await embed(gateway, {"model": REAL, "input": "x"}, api_key=key)).status_code
            for _ in range(3)
        ]
        third = await embed(gateway, {"model": REAL, "input": "y"}, api_key=key)
    assert statuses == [200, 200, 429]
    assert third.status_code == 429
    assert error_of(third)["code"] == "rate_limit_exceeded"
    assert "retry-after" in third.headers


async def test_token_rate_limit(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    key = new_api_key()
    tenant = f"tpm-{key[-8:]}"
    tenants = {"entries": {tenant: {"key_sha256": [digest(key)], "tokens_per_minute": 5}}}
    write_policy(redis_kit, model_server, fake, tenants=tenants)
    text = "a sentence with more than five tokens in it, for the token count"
    async with gateway_on(redis_kit) as gateway:
        gateway.tenants.add(tenant)
        first = await embed(gateway, {"model": REAL, "input": text}, api_key=key)
        # Token counts reach the limiter after the response is sent.
        await asyncio.sleep(0)
        second = await embed(gateway, {"model": REAL, "input": "short"}, api_key=key)
    assert first.status_code == 200
    assert first.json()["usage"]["prompt_tokens"] > 5
    assert second.status_code == 429
    assert error_of(second)["type"] == "tokens"


async def test_budget_charged_and_enforced(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    key = new_api_key()
    tenant = f"budget-{key[-8:]}"
    tenants = {"entries": {tenant: {"key_sha256": [digest(key)],
                                    "budget": {"usd_per_day": 0.001}}}}
    write_policy(redis_kit, model_server, fake, tenants=tenants)
    async with gateway_on(redis_kit) as gateway:
        gateway.tenants.add(tenant)
        first = await embed(gateway, {"model": REAL, "input": "budget check"}, api_key=key)
        await gateway.runtime.outcomes.flush()
        day, month = await gateway.runtime.budgets.spent(tenant)
        second = await embed(gateway, {"model": REAL, "input": "another"}, api_key=key)
    tokens = first.json()["usage"]["prompt_tokens"]
    expected = tokens * REAL_PRICE / 1_000_000
    assert float(first.headers["x-tierwise-cost-usd"]) == pytest.approx(expected)
    assert day == pytest.approx(expected)
    assert month == pytest.approx(expected)
    # 1,000 USD per million tokens spends the 0.001 USD budget in one token.
    assert second.status_code == 429
    assert error_of(second)["code"] == "budget_exceeded"


async def test_outcome_record_fields(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    write_policy(redis_kit, model_server, fake)
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, {"model": ALIAS, "input": ["a b c", "d e"]})
        records = await gateway.request_records()
    record = records[-1]
    tokens = response.json()["usage"]["prompt_tokens"]
    assert record["endpoint"] == "embeddings"
    assert record["request_id"] == response.headers["x-request-id"]
    assert record["tenant"] == gateway.tenant
    assert record["requested_model"] == ALIAS
    assert record["model"] == FLAKY
    assert record["tier"] is None
    assert record["scores"] is None
    assert record["tokens_in"] == tokens
    assert record["tokens_out"] == 0
    assert record["cost_usd"] == pytest.approx(tokens * FLAKY_PRICE / 1_000_000)
    assert record["baseline_cost_usd"] == record["cost_usd"]
    assert record["cache_hit"] is False
    assert record["status"] == 200
    assert record["error"] is None
    assert record["attempts"] == [{"tier": "embeddings", "deployment": FLAKY, "error": None}]
    assert record["upstream_request_id"] == "fake-embeddings-req"
    assert "input" not in record


# Invalid requests.


BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("empty string", {"input": ""}, "input"),
    ("empty list", {"input": []}, "input"),
    ("empty string in list", {"input": ["ok", ""]}, "input[1]"),
    ("empty token array", {"input": [[]]}, "input[0]"),
    ("negative token", {"input": [[1, -2]]}, "input[0]"),
    ("strings and token arrays", {"input": ["ok", [1, 2]]}, "input"),
    ("number in list", {"input": ["ok", 3.5]}, "input[1]"),
    ("object input", {"input": {"text": "x"}}, "input"),
    ("too many inputs", {"input": ["x"] * 2049}, "input"),
    ("missing input", {"input": None}, "input"),
    ("unknown encoding", {"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ("zero dimensions", {"input": "x", "dimensions": 0}, "dimensions"),
    ("string dimensions", {"input": "x", "dimensions": "64"}, "dimensions"),
    ("boolean dimensions", {"input": "x", "dimensions": True}, "dimensions"),
    ("number user", {"input": "x", "user": 5}, "user"),
    ("missing model", {"model": None, "input": "x"}, "model"),
    ("connection parameter", {"input": "x", "api_base": "http://127.0.0.1:1"}, "api_base"),
    ("upstream headers", {"input": "x", "headers": {"authorization": "Bearer other"}}, "headers"),
    ("TLS check off", {"input": "x", "ssl_verify": False}, "ssl_verify"),
    ("litellm retries", {"input": "x", "max_retries": 5}, "max_retries"),
]


@pytest.mark.parametrize(("case", "changes", "param"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_invalid_request_is_400(
    redis_kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings,
    case: str, changes: dict[str, Any], param: str,
) -> None:
    write_policy(redis_kit, model_server, fake)
    body = {"model": FLAKY, **changes}
    body = {key: value for key, value in body.items() if value is not None}
    async with gateway_on(redis_kit) as gateway:
        response = await embed(gateway, body)
    assert response.status_code == 400, case
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fake.requests == []


async def test_tracing_covers_embeddings(
    kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings
) -> None:
    pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from tests.gateway.conftest import open_gateway

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    write_policy(kit, model_server, fake)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    secret_input = "the embedding input named zebra-quartz-7"
    try:
        async with open_gateway(kit.settings(tracing=True), StubScorer(), None, provider) as gateway:
            response = await embed(gateway, {"model": REAL, "input": secret_input}, headers={
                "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    finally:
        provider.shutdown()

    assert response.status_code == 200, response.text
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server, attempt = spans["POST /v1/embeddings"], spans["embeddings smollm2-135m-instruct"]
    assert server.kind == SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == trace_id
    assert (server.attributes or {})["gen_ai.operation.name"] == "embeddings"
    assert attempt.parent is not None
    assert attempt.parent.span_id == server.context.span_id
    assert (attempt.attributes or {})["gen_ai.usage.input_tokens"] > 0
    text = repr([(span.name, dict(span.attributes or {})) for span in spans.values()])
    assert "zebra-quartz" not in text


@pytest.mark.parametrize("transport", ["direct", "litellm"])
async def test_tracing_propagates_traceparent_upstream(
    kit: GatewayKit, model_server: EdgeModelServer, fake: FakeEmbeddings, transport: str
) -> None:
    pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.gateway.conftest import open_gateway

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    section = embeddings_section(model_server.base_url, fake.base_url)
    section["deployments"][1]["transport"] = transport
    write_policy(kit, model_server, fake, section=section)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        async with open_gateway(kit.settings(tracing=True), StubScorer(), None, provider) as gateway:
            response = await embed(gateway, {"model": FLAKY, "input": "a traced input"}, headers={
                "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
                "baggage": "user=zebra-quartz-7"})
    finally:
        provider.shutdown()

    assert response.status_code == 200, response.text
    attempt = next(span for span in exporter.get_finished_spans()
                   if span.name.startswith("embeddings "))
    sent = fake.headers[-1]
    assert sent.get("traceparent") == f"00-{trace_id}-{attempt.context.span_id:016x}-01"
    assert "baggage" not in sent
