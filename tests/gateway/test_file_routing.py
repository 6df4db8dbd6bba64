"""Routing, limits and outcome records of requests with file parts, on all three chat APIs.

A file part counts toward the prompt's size with its estimate (``estimate_file_tokens``):
3,000 tokens per PDF page. The edge deployment of these tests has a window of 2,048 tokens,
so a PDF skips it and goes to the cheapest tier that reads files and whose window fits it.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest

from router.ratelimits import estimate_prompt_tokens
from router.routing.tokens import TOKENS_PER_PDF_PAGE
from tests.gateway.conftest import Gateway, GatewayKit, parse_sse
from tests.gateway.test_rate_limits import LimitedTenant, limited_gateway
from tests.gateway.test_token_limits import token_usage, write_token_policy
from tests.support.pdf import build_pdf, pdf_data_url
from tests.support.scenario import Scenario

PROMPT = "Summarize the file."
FILES_EVERYWHERE = {"edge": {"files": True}, "mid": {"files": True}, "frontier": {"files": True}}
SMALL_EDGE = {"edge": 2048, "mid": 32768, "frontier": 32768}


def chat_request(pages: int, **extra: Any) -> dict[str, Any]:
    content = [
        {"type": "text", "text": PROMPT},
        {"type": "file", "file": {"filename": "plan.pdf", "file_data": pdf_data_url(pages)}},
    ]
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}


def responses_request(pages: int) -> dict[str, Any]:
    content = [
        {"type": "input_text", "text": PROMPT},
        {"type": "input_file", "filename": "plan.pdf", "file_data": pdf_data_url(pages)},
    ]
    return {"model": "auto", "input": [{"role": "user", "content": content}]}


def messages_request(pages: int) -> dict[str, Any]:
    source = {
        "type": "base64",
        "media_type": "application/pdf",
        "data": base64.b64encode(build_pdf(pages)).decode(),
    }
    content = [{"type": "document", "source": source}, {"type": "text", "text": PROMPT}]
    return {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": content}]}


API_REQUESTS = {
    "/v1/chat/completions": chat_request,
    "/v1/responses": responses_request,
    "/v1/messages": messages_request,
}


async def post(gateway: Gateway, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gateway.api_key}"}
    return await gateway.client.post(path, json=body, headers=headers)


def upstream_counts(kit: GatewayKit) -> dict[str, int]:
    return {tier: len(fake.requests) for tier, fake in kit.fakes.items()}


def error_of(path: str, response: httpx.Response) -> dict[str, Any]:
    """Return the error object of an OpenAI-shaped or Anthropic-shaped error body."""
    body = response.json()
    if path == "/v1/messages":
        assert body["type"] == "error"
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize("path", list(API_REQUESTS))
async def test_pdf_skips_small_edge(kit: GatewayKit, path: str) -> None:
    # One page is estimated at 3,000 tokens, and the classifier's scores would choose edge.
    async with kit.running(capabilities=FILES_EVERYWHERE, context_windows=SMALL_EDGE,
                           cache_enabled=False) as gateway:
        response = await post(gateway, path, API_REQUESTS[path](1))

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert upstream_counts(kit) == {"edge": 0, "mid": 1, "frontier": 0}


async def test_text_request_still_goes_to_edge(kit: GatewayKit) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}]}
    async with kit.running(capabilities=FILES_EVERYWHERE, context_windows=SMALL_EDGE,
                           cache_enabled=False) as gateway:
        response = await gateway.chat(body)

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "edge"


async def test_text_file_counts_its_bytes(kit: GatewayKit) -> None:
    text = ("The launch moved from March to May. " * 80).encode()
    file = {"filename": "notes.txt", "file_data": "data:text/plain;base64," + base64.b64encode(text).decode()}
    content = [{"type": "text", "text": PROMPT}, {"type": "file", "file": file}]
    body = {"model": "auto", "messages": [{"role": "user", "content": content}]}
    async with kit.running(capabilities=FILES_EVERYWHERE, context_windows=SMALL_EDGE,
                           cache_enabled=False) as gateway:
        response = await gateway.chat(body)

    # 2,880 bytes do not fit the edge's 2,048 tokens, though their text would.
    assert len(text) == 2880
    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"


@pytest.mark.parametrize("path", list(API_REQUESTS))
async def test_pdf_larger_than_every_window_is_400(kit: GatewayKit, path: str) -> None:
    # Twenty pages are estimated at 60,000 tokens, above every window of 32,768.
    async with kit.running(capabilities=FILES_EVERYWHERE, context_windows=SMALL_EDGE,
                           cache_enabled=False) as gateway:
        response = await post(gateway, path, API_REQUESTS[path](20))

    error = error_of(path, response)
    assert response.status_code == 400
    assert error["type"] == "invalid_request_error"
    assert "60000 of them estimated for its files (3000 per PDF page" in error["message"]
    assert "Send fewer or smaller files" in error["message"]
    if path != "/v1/messages":
        assert error["code"] == "context_length_exceeded"
        assert error["param"] == ("input" if path == "/v1/responses" else "messages")
    assert upstream_counts(kit) == {"edge": 0, "mid": 0, "frontier": 0}


@pytest.mark.parametrize("path", list(API_REQUESTS))
async def test_no_file_capable_deployment_is_400(kit: GatewayKit, path: str) -> None:
    async with kit.running(cache_enabled=False) as gateway:
        response = await post(gateway, path, API_REQUESTS[path](1))

    error = error_of(path, response)
    assert response.status_code == 400
    assert error["type"] == "invalid_request_error"
    assert error["message"] == (
        "No available deployment supports file input of this request. Remove it, or add a "
        "deployment that supports it to the policy."
    )
    if path != "/v1/messages":
        assert error["code"] == "unsupported_parameter"
    assert upstream_counts(kit) == {"edge": 0, "mid": 0, "frontier": 0}


async def test_file_goes_to_only_capable_tier(kit: GatewayKit) -> None:
    async with kit.running(capabilities={"frontier": {"files": True}}, cache_enabled=False) as gateway:
        response = await gateway.chat(chat_request(1))

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "frontier"


async def test_cache_key_includes_file(kit: GatewayKit) -> None:
    async with kit.running(capabilities=FILES_EVERYWHERE) as gateway:
        first = await gateway.chat(chat_request(1, temperature=0))
        same = await gateway.chat(chat_request(1, temperature=0))
        other = await gateway.chat(chat_request(2, temperature=0))

    assert [r.status_code for r in (first, same, other)] == [200, 200, 200]
    assert same.headers["x-tierwise-cache"] == "hit"
    assert other.headers["x-tierwise-cache"] == "miss"


async def test_outcome_estimate_counts_file(redis_kit: GatewayKit) -> None:
    # The upstream sends no usage, so the gateway counts the prompt itself.
    for fake in redis_kit.fakes.values():
        fake.set_default(Scenario(text="A short summary.", ignore_include_usage=True))
    body = chat_request(2, stream=True, stream_options={"include_usage": True})
    async with redis_kit.running(capabilities=FILES_EVERYWHERE, context_windows=SMALL_EDGE,
                                 cache_enabled=False, use_redis=True) as gateway:
        response = await gateway.chat(body)
        [record] = await gateway.request_records()

    assert parse_sse(response.content).done
    assert record["tier"] == "mid"
    assert record["tokens_in"] > 2 * TOKENS_PER_PDF_PAGE
    # The mid tier's input price is 0.6 USD per million tokens.
    assert record["cost_usd"] > 2 * TOKENS_PER_PDF_PAGE * 0.6 / 1_000_000


async def test_token_rate_reserves_file_estimate(redis_kit: GatewayKit) -> None:
    tenant = LimitedTenant.new()
    write_token_policy(redis_kit, tenant, 100, cache_enabled=False, capabilities=FILES_EVERYWHERE)
    for fake in redis_kit.fakes.values():
        fake.enqueue(Scenario.pause(after_events=1, seconds=1.0))
    async with limited_gateway(redis_kit, tenant, use_redis=True) as gateway:
        slow = asyncio.create_task(
            gateway.chat(chat_request(2, stream=True), api_key=tenant.api_key))
        while not any(fake.requests for fake in redis_kit.fakes.values()):
            await asyncio.sleep(0.01)
        during = await token_usage(gateway, tenant)
        finished = await slow

    assert finished.status_code == 200
    assert during == {
        "limit": 100,
        "used": estimate_prompt_tokens([PROMPT], 1) + 2 * TOKENS_PER_PDF_PAGE,
    }
