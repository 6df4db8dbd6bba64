"""Browser access: CORS headers only for the origins that TIERWISE_CORS_ORIGINS lists."""

from __future__ import annotations

from tests.gateway.conftest import GatewayKit, chat_body
from tests.support.scenario import Scenario

ORIGIN = "http://localhost:3000"
PREFLIGHT = {
    "origin": ORIGIN,
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}


async def test_cors_is_off_by_default(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        preflight = await gateway.client.options("/v1/chat/completions", headers=PREFLIGHT)
        response = await gateway.client.post(
            "/v1/chat/completions", json=chat_body(),
            headers={"authorization": "Bearer sk-test", "origin": ORIGIN})

    assert preflight.status_code == 405
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_listed_origin_gets_cors_headers(kit: GatewayKit) -> None:
    kit.write_policy()
    settings = kit.settings(cors_origins=f"{ORIGIN}, https://app.example.com")
    async with kit.running(settings=settings) as gateway:
        preflight = await gateway.client.options("/v1/chat/completions", headers=PREFLIGHT)
        response = await gateway.client.post(
            "/v1/chat/completions", json=chat_body(),
            headers={"authorization": "Bearer sk-test", "origin": ORIGIN})
        models = await gateway.client.get(
            "/v1/models", headers={"authorization": "Bearer sk-test", "origin": ORIGIN})
        error = await gateway.client.post(
            "/v1/chat/completions", json={"model": "auto"},
            headers={"authorization": "Bearer sk-test", "origin": ORIGIN})
        other = await gateway.client.post(
            "/v1/chat/completions", json=chat_body(),
            headers={"authorization": "Bearer sk-test", "origin": "https://evil.example"})

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in preflight.headers
    for answer in (response, models, error):
        assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert response.status_code == 200
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-tierwise-tier" in exposed
    assert "x-request-id" in exposed
    assert error.status_code == 400
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


async def test_any_origin(kit: GatewayKit) -> None:
    kit.write_policy()
    async with kit.running(settings=kit.settings(cors_origins="*")) as gateway:
        preflight = await gateway.client.options("/v1/embeddings", headers=PREFLIGHT)

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"


async def test_passed_headers_are_exposed(kit: GatewayKit) -> None:
    kit.write_policy()
    upstream_headers = {"x-ratelimit-remaining-requests": "9", "x-request-id": "req_upstream_1"}
    kit.fakes["edge"].enqueue(Scenario(headers=upstream_headers))
    async with kit.running(settings=kit.settings(cors_origins=ORIGIN)) as gateway:
        response = await gateway.client.post(
            "/v1/chat/completions", json=chat_body(),
            headers={"authorization": "Bearer sk-test", "origin": ORIGIN})

    assert response.status_code == 200, response.text
    exposed = {name.strip() for name in response.headers["access-control-expose-headers"].split(",")}
    assert response.headers["x-ratelimit-remaining-requests"] == "9"
    assert "x-ratelimit-remaining-requests" in exposed
    assert response.headers["x-tierwise-upstream-request-id"] == "req_upstream_1"
    assert "x-tierwise-upstream-request-id" in exposed
    # Sent with 429s that a retry cannot fix, such as an exceeded budget.
    assert "x-should-retry" in exposed
    # Sent by /v1/messages, where Anthropic's clients look for the request id.
    assert "request-id" in exposed


async def test_origin_with_trailing_slash(kit: GatewayKit) -> None:
    kit.write_policy()
    settings = kit.settings(cors_origins=f" {ORIGIN}/ ,")
    async with kit.running(settings=settings) as gateway:
        preflight = await gateway.client.options("/v1/chat/completions", headers=PREFLIGHT)

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
