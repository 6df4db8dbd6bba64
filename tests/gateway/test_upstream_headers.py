"""Rate-limit headers and the provider's request id pass from the responding upstream to the client."""

from __future__ import annotations

import pytest

from router.upstream.base import MAX_PASSED_HEADERS, UpstreamHeaders
from tests.gateway.conftest import GatewayKit, chat_body, policy_document, write_yaml
from tests.gateway.test_litellm_path import write_litellm_policy
from tests.support.scenario import Scenario

RATE_LIMITS = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-reset-tokens": "6ms",
}


def answered_with(headers: dict[str, str]) -> Scenario:
    return Scenario(headers=headers)


@pytest.mark.parametrize("transport", ["direct", "litellm"])
@pytest.mark.parametrize("stream", [False, True])
async def test_answer_carries_upstream_headers(kit: GatewayKit, transport: str, stream: bool) -> None:
    if transport == "litellm":
        write_litellm_policy(kit)
    else:
        kit.write_policy()
    kit.fakes["edge"].enqueue(answered_with({**RATE_LIMITS, "x-request-id": "req_upstream_1"}))
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(stream=stream))
        records = await gateway.request_records()

    assert response.status_code == 200, response.text
    for name, value in RATE_LIMITS.items():
        assert response.headers[name] == value
    assert response.headers["x-tierwise-upstream-request-id"] == "req_upstream_1"
    assert response.headers["x-request-id"] == records[0]["request_id"]
    assert records[0]["upstream_request_id"] == "req_upstream_1"


async def test_failed_attempt_headers_stay_behind(kit: GatewayKit) -> None:
    kit.write_policy()
    kit.fakes["edge"].enqueue(
        Scenario.http_error(
            503, "overloaded", headers={"x-ratelimit-remaining-requests": "0", "x-request-id": "edge_1"}
        )
    )
    kit.fakes["mid"].enqueue(answered_with({"x-ratelimit-remaining-requests": "42", "request-id": "mid_1"}))
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body())

    assert response.headers["x-tierwise-tier"] == "mid"
    assert response.headers["x-ratelimit-remaining-requests"] == "42"
    assert response.headers["x-tierwise-upstream-request-id"] == "mid_1"


async def test_cache_hit_has_no_upstream_headers(kit: GatewayKit) -> None:
    kit.write_policy()
    kit.fakes["edge"].enqueue(answered_with({**RATE_LIMITS, "x-request-id": "req_upstream_2"}))
    async with kit.running(settings=kit.settings()) as gateway:
        first = await gateway.chat(chat_body(temperature=0))
        second = await gateway.chat(chat_body(temperature=0))
        records = await gateway.request_records()

    assert first.headers["x-tierwise-cache"] == "miss"
    assert second.headers["x-tierwise-cache"] == "hit"
    assert not any(name.startswith("x-ratelimit-") for name in second.headers)
    assert "x-tierwise-upstream-request-id" not in second.headers
    assert "upstream_request_id" not in records[1]


def test_invalid_header_values_dropped() -> None:
    seen = UpstreamHeaders()
    seen.take("x-ratelimit-remaining-tokens", "149984")
    seen.take("x-ratelimit-bad value", "1")
    seen.take("x-ratelimit-limit-tokens", "1\x00")
    seen.take("x-ratelimit-reset-requests", "ü")
    seen.take("x-ratelimit-reset-tokens", "9" * 500)
    seen.take("x-request-id", "")
    seen.take("request-id", "req_2")
    seen.take("x-request-id", "req_3")
    seen.take("x-other", "1")

    assert seen.rate_limits == {"x-ratelimit-remaining-tokens": "149984"}
    assert seen.request_id == "req_2"


def test_rate_limit_headers_are_capped() -> None:
    seen = UpstreamHeaders()
    for index in range(MAX_PASSED_HEADERS + 5):
        seen.take(f"x-ratelimit-n{index}", "1")

    seen.take("x-ratelimit-n0", "2")

    assert len(seen.rate_limits) == MAX_PASSED_HEADERS
    assert seen.rate_limits["x-ratelimit-n0"] == "2"


@pytest.mark.parametrize("transport", ["direct", "litellm"])
async def test_repeated_headers_keep_one_value(kit: GatewayKit, transport: str) -> None:
    if transport == "litellm":
        write_litellm_policy(kit)
    else:
        kit.write_policy()
    kit.fakes["edge"].enqueue(answered_with({
        "X-Ratelimit-Remaining-Requests": "5",
        "x-ratelimit-remaining-requests": "0",
        "X-Request-Id": "req_first",
        "x-request-id": "req_second",
    }))
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 200, response.text
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-tierwise-upstream-request-id"] == "req_first"


async def test_policy_can_hide_rate_limits(kit: GatewayKit) -> None:
    document = policy_document(kit.base_urls)
    document["tenants"] = {"show_upstream_rate_limits": False}
    write_yaml(kit.policy_path, document)
    kit.fakes["edge"].enqueue(answered_with({**RATE_LIMITS, "x-request-id": "req_upstream_3"}))
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 200, response.text
    assert not any(name.startswith("x-ratelimit-") for name in response.headers)
    assert response.headers["x-tierwise-upstream-request-id"] == "req_upstream_3"
