"""The response cache on a real Redis: what hits, what must miss, and how hits are replayed."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from tests.gateway.conftest import (
    GatewayKit,
    StubScorer,
    chat_body,
    new_api_key,
    parse_sse,
    policy_document,
    write_yaml,
)
from tests.support.recorded import SCRIPTED_ANSWER
from tests.support.scenario import Scenario, ToolCall

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def image_body(base64_png: str) -> dict[str, Any]:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{base64_png}"}},
    ]
    return {"model": "auto", "messages": [{"role": "user", "content": content}], "temperature": 0}


BASE = chat_body("What is the capital of France?", temperature=0)

# (case id, first body, second body): the second must not be served from the first's entry.
DIFFERENT_REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("temperature", BASE, {**BASE, "temperature": 0.7}),
    ("max_tokens", BASE, {**BASE, "max_tokens": 50}),
    ("max_completion_tokens", BASE, {**BASE, "max_completion_tokens": 50}),
    ("tools", BASE, {**BASE, "tools": TOOLS}),
    ("tool_choice", {**BASE, "tools": TOOLS}, {**BASE, "tools": TOOLS, "tool_choice": "none"}),
    ("seed", BASE, {**BASE, "seed": 7}),
    ("top_p", BASE, {**BASE, "top_p": 0.5}),
    ("stop", BASE, {**BASE, "stop": ["\n"]}),
    ("logprobs", BASE, {**BASE, "logprobs": True}),
    ("n", BASE, {**BASE, "n": 2}),
    ("reasoning_effort", BASE, {**BASE, "reasoning_effort": "low"}),
    ("response_format", BASE, {**BASE, "response_format": {"type": "json_object"}}),
    (
        "system_message",
        BASE,
        {**BASE, "messages": [{"role": "system", "content": "Be brief."}, *BASE["messages"]]},
    ),
    ("prompt_text", BASE, chat_body("What is the capital of Spain?", temperature=0)),
    (
        "image_bytes",
        image_body("iVBORw0KGgoAAAANSUhEUgAAAAE="),
        image_body("iVBORw0KGgoAAAANSUhEUgAAAAI="),
    ),
    ("unknown_parameter", BASE, {**BASE, "frequency_penalty": 0.5}),
]


async def test_identical_temperature_zero_hits(
    redis_kit: GatewayKit, redis_client: redis.Redis
) -> None:
    async with redis_kit.running(use_redis=True) as gateway:
        first = await gateway.chat(BASE)
        second = await gateway.chat(BASE)
        records = await gateway.request_records()

    assert first.headers["x-tierwise-cache"] == "miss"
    assert float(first.headers["x-tierwise-cost-usd"]) > 0
    assert second.status_code == 200
    assert second.headers["x-tierwise-cache"] == "hit"
    assert second.headers["x-tierwise-cost-usd"] == "0.00000000"
    assert second.headers["x-tierwise-tier"] == "edge"
    assert second.json() == first.json()
    assert len(redis_kit.fakes["edge"].requests) == 1
    assert [r["cache_hit"] for r in records] == [False, True]
    assert records[0]["cost_usd"] > 0
    assert records[1]["cost_usd"] == 0
    assert records[1]["tokens_in"] == records[0]["tokens_in"]
    assert records[1]["tokens_out"] == records[0]["tokens_out"]
    assert records[1]["model"] == "edge-small"
    assert records[1]["attempts"] == []


async def test_cache_entry_lives_in_redis(redis_kit: GatewayKit, redis_client: redis.Redis) -> None:
    async with redis_kit.running(use_redis=True) as gateway:
        assert gateway.runtime.cache.backend == "redis"
        before = set(redis_client.scan_iter(match="tw:cache:*", count=1000))
        await gateway.chat(BASE)
        after = set(redis_client.scan_iter(match="tw:cache:*", count=1000))

    new_keys = after - before
    assert len(new_keys) == 1
    key = new_keys.pop()
    assert 0 < redis_client.ttl(key) <= 600
    stored = redis_client.get(key)
    assert isinstance(stored, bytes)
    assert SCRIPTED_ANSWER.encode() in stored
    # The key is a hash: neither the prompt nor the API key appears in it.
    assert b"France" not in key
    assert gateway.api_key.encode() not in key


@pytest.mark.parametrize(
    ("first", "second"),
    [case[1:] for case in DIFFERENT_REQUESTS],
    ids=[case[0] for case in DIFFERENT_REQUESTS],
)
async def test_different_request_misses(
    redis_kit: GatewayKit, first: dict[str, Any], second: dict[str, Any]
) -> None:
    # Sampled answers are cacheable under this policy, so a miss can only come from the key.
    async with redis_kit.running(use_redis=True, cache_nonzero_temperature=True) as gateway:
        first_miss = await gateway.chat(first)
        first_hit = await gateway.chat(first)
        second_miss = await gateway.chat(second)
        second_hit = await gateway.chat(second)

    assert first_miss.status_code == 200, first_miss.text
    assert second_miss.status_code == 200, second_miss.text
    assert first_miss.headers["x-tierwise-cache"] == "miss"
    assert first_hit.headers["x-tierwise-cache"] == "hit"
    assert second_miss.headers["x-tierwise-cache"] == "miss"
    assert second_hit.headers["x-tierwise-cache"] == "hit"
    assert len(redis_kit.fakes["edge"].requests) == 2


async def test_other_tenant_misses(redis_kit: GatewayKit) -> None:
    other_key = new_api_key()
    # The anonymous tenant is shared by every run against this Redis, so the body is unique.
    body = chat_body(f"Say hello to run {new_api_key()}.", temperature=0)
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(body)
        own_hit = await gateway.chat(body)
        other = await gateway.chat(body, api_key=other_key)
        anonymous = await gateway.client.post("/v1/chat/completions", json=body)

    assert own_hit.headers["x-tierwise-cache"] == "hit"
    assert other.headers["x-tierwise-cache"] == "miss"
    assert anonymous.headers["x-tierwise-cache"] == "miss"
    assert len(redis_kit.fakes["edge"].requests) == 3


async def test_delivery_fields_share_entry(redis_kit: GatewayKit) -> None:
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat(BASE)
        reordered = {"temperature": 0, "messages": BASE["messages"], "model": "auto"}
        with_user = {**BASE, "user": "end-user-1", "metadata": {"trace": "x"}}
        hits = [await gateway.chat(reordered), await gateway.chat(with_user)]

    assert [r.headers["x-tierwise-cache"] for r in hits] == ["hit", "hit"]


async def test_missing_temperature_is_not_cached(redis_kit: GatewayKit) -> None:
    body = chat_body("What is the capital of France?")
    async with redis_kit.running(use_redis=True) as gateway:
        results = [await gateway.chat(body), await gateway.chat(body)]
        sampled = [await gateway.chat({**body, "temperature": 0.7}) for _ in range(2)]

    assert [r.headers["x-tierwise-cache"] for r in results] == ["miss", "miss"]
    assert [r.headers["x-tierwise-cache"] for r in sampled] == ["miss", "miss"]
    assert len(redis_kit.fakes["edge"].requests) == 4


async def test_nonzero_temperature_cached_when_allowed(redis_kit: GatewayKit) -> None:
    body = chat_body("What is the capital of France?")
    async with redis_kit.running(use_redis=True, cache_nonzero_temperature=True) as gateway:
        results = [await gateway.chat(body), await gateway.chat(body)]

    assert [r.headers["x-tierwise-cache"] for r in results] == ["miss", "hit"]


async def test_cache_disabled_never_hits(redis_kit: GatewayKit) -> None:
    async with redis_kit.running(use_redis=True, cache_enabled=False) as gateway:
        results = [await gateway.chat(BASE), await gateway.chat(BASE)]

    assert [r.headers["x-tierwise-cache"] for r in results] == ["miss", "miss"]


async def test_stream_after_cached_replays_chunks(redis_kit: GatewayKit) -> None:
    async with redis_kit.running(use_redis=True) as gateway:
        first = await gateway.chat(BASE)
        streamed = await gateway.chat(
            {**BASE, "stream": True, "stream_options": {"include_usage": True}}
        )
        plain_stream = await gateway.chat({**BASE, "stream": True})
        records = await gateway.request_records()

    sse = parse_sse(streamed.content)
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["x-tierwise-cache"] == "hit"
    assert streamed.headers["cache-control"] == "no-cache"
    assert sse.done
    assert sse.errors == []
    assert sse.text() == first.json()["choices"][0]["message"]["content"]
    assert sse.finish_reasons() == {0: "stop"}
    assert sse.chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in sse.chunks)
    assert sse.chunks[-1]["choices"] == []
    assert sse.chunks[-1]["usage"] == first.json()["usage"]
    assert sum(1 for chunk in sse.chunks if "usage" in chunk) == 1

    plain_sse = parse_sse(plain_stream.content)
    assert plain_sse.done
    assert all("usage" not in chunk for chunk in plain_sse.chunks)
    assert plain_sse.finish_reasons() == {0: "stop"}

    assert len(redis_kit.fakes["edge"].requests) == 1
    assert [(r["stream"], r["cache_hit"], r["cost_usd"]) for r in records][1:] == [
        (True, True, 0),
        (True, True, 0),
    ]


async def test_streamed_answer_is_cached_for_json(redis_kit: GatewayKit) -> None:
    async with redis_kit.running(use_redis=True) as gateway:
        streamed = await gateway.chat({**BASE, "stream": True})
        plain = await gateway.chat(BASE)

    assert parse_sse(streamed.content).done
    assert plain.headers["x-tierwise-cache"] == "hit"
    completion = plain.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": SCRIPTED_ANSWER}
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] > 0
    assert len(redis_kit.fakes["edge"].requests) == 1


async def test_stream_without_usage_caches_usage(redis_kit: GatewayKit) -> None:
    # Some servers (llama.cpp) send no usage chunk, so the gateway counts the tokens itself.
    redis_kit.fakes["edge"].enqueue(Scenario(ignore_include_usage=True))
    async with redis_kit.running(use_redis=True) as gateway:
        streamed = await gateway.chat({**BASE, "stream": True})
        plain = await gateway.chat(BASE)
        records = await gateway.request_records()

    assert parse_sse(streamed.content).done
    assert plain.headers["x-tierwise-cache"] == "hit"
    usage = plain.json()["usage"]
    assert usage["completion_tokens"] == records[0]["tokens_out"]
    assert usage["prompt_tokens"] == records[0]["tokens_in"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_counted_completion_tokens_exclude_framing(redis_kit: GatewayKit) -> None:
    from tests.support import tokens

    redis_kit.fakes["edge"].enqueue(Scenario(ignore_include_usage=True))
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat({**BASE, "stream": True})
        records = await gateway.request_records()

    assert records[0]["tokens_out"] == tokens.count_text_tokens(SCRIPTED_ANSWER)


async def test_reasoning_content_survives_cache(redis_kit: GatewayKit) -> None:
    reasoning = "The capital of France is a well-known fact."
    redis_kit.fakes["edge"].enqueue(
        Scenario.with_reasoning(reasoning), Scenario.with_reasoning(reasoning)
    )
    streamed_body = {
        **BASE,
        "messages": [{"role": "user", "content": "And of Italy?"}],
        "stream": True,
    }
    async with redis_kit.running(use_redis=True) as gateway:
        first = await gateway.chat(BASE)
        hit = await gateway.chat(BASE)
        replayed = await gateway.chat({**BASE, "stream": True})
        await gateway.chat(streamed_body)
        assembled_hit = await gateway.chat({**streamed_body, "stream": False})

    assert first.json()["choices"][0]["message"]["reasoning_content"] == reasoning
    assert hit.headers["x-tierwise-cache"] == "hit"
    assert hit.json()["choices"][0]["message"]["reasoning_content"] == reasoning
    assert parse_sse(replayed.content).text(field_name="reasoning_content") == reasoning
    assert assembled_hit.headers["x-tierwise-cache"] == "hit"
    assert assembled_hit.json()["choices"][0]["message"]["reasoning_content"] == reasoning


async def test_tool_calls_survive_cache(redis_kit: GatewayKit) -> None:
    call = ToolCall("get_weather", '{"city": "Paris"}', id="call_1")
    redis_kit.fakes["edge"].enqueue(Scenario.tools(call))
    body = {**BASE, "tools": TOOLS}
    async with redis_kit.running(use_redis=True) as gateway:
        await gateway.chat({**body, "stream": True})
        hit = await gateway.chat(body)
        replayed = await gateway.chat({**body, "stream": True})

    choice = hit.json()["choices"][0]
    assert hit.headers["x-tierwise-cache"] == "hit"
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert parse_sse(replayed.content).finish_reasons() == {0: "tool_calls"}


async def test_failed_answer_is_not_cached(redis_kit: GatewayKit) -> None:
    redis_kit.fakes["edge"].enqueue(Scenario.http_error(500, "boom"))
    async with redis_kit.running(use_redis=True) as gateway:
        escalated = await gateway.chat(BASE)
        again = await gateway.chat(BASE)

    assert escalated.headers["x-tierwise-tier"] == "mid"
    # Only the mid tier's answer was stored, with the deployment that gave it, so the
    # repeat is a hit attributed to mid, never to the edge tier that failed.
    assert again.headers["x-tierwise-cache"] == "hit"
    assert again.headers["x-tierwise-tier"] == "mid"
    assert again.headers["x-tierwise-model"] == "mid-medium"
    assert len(redis_kit.fakes["edge"].requests) == 1


async def test_escalated_stream_cached_under_server(redis_kit: GatewayKit) -> None:
    # An entry names the deployment that produced it, streamed or not, so a hit is never
    # attributed to a deployment that did not answer.
    redis_kit.fakes["edge"].enqueue(Scenario.stream_error(after_events=0))
    async with redis_kit.running(use_redis=True) as gateway:
        streamed = await gateway.chat({**BASE, "stream": True})
        again = await gateway.chat(BASE)

    assert streamed.headers["x-tierwise-tier"] == "mid"
    assert parse_sse(streamed.content).done
    assert again.headers["x-tierwise-cache"] == "hit"
    assert again.headers["x-tierwise-tier"] == "mid"
    assert again.headers["x-tierwise-model"] == "mid-medium"


async def test_hit_skips_classifier(redis_kit: GatewayKit) -> None:
    scorer = StubScorer()
    async with redis_kit.running(scorer=scorer, use_redis=True) as gateway:
        first = await gateway.chat(BASE)
        second = await gateway.chat(BASE)
        records = await gateway.request_records()

    assert [first.headers["x-tierwise-cache"], second.headers["x-tierwise-cache"]] == ["miss", "hit"]
    assert scorer.calls == 1
    assert second.headers["x-tierwise-tier"] == first.headers["x-tierwise-tier"]
    assert second.headers["x-tierwise-model"] == first.headers["x-tierwise-model"]
    assert "x-tierwise-score" not in second.headers
    assert records[1]["scores"] is None
    assert records[1]["tier"] == records[0]["tier"]


async def test_new_classifier_misses(redis_kit: GatewayKit) -> None:
    async with redis_kit.running(scorer=StubScorer(version="stub-a"), use_redis=True) as gateway:
        stored = await gateway.chat(BASE)
        same = await gateway.chat(BASE)
        # A classifier swapped in, as a hot reload does, may route the prompt elsewhere.
        gateway.runtime.scorer = StubScorer(version="stub-b")
        new_classifier = await gateway.chat(BASE)
        again = await gateway.chat(BASE)

    assert stored.headers["x-tierwise-cache"] == "miss"
    assert same.headers["x-tierwise-cache"] == "hit"
    assert new_classifier.headers["x-tierwise-cache"] == "miss"
    assert again.headers["x-tierwise-cache"] == "hit"


async def test_aliases_keep_separate_entries(redis_kit: GatewayKit) -> None:
    async with redis_kit.running(use_redis=True) as gateway:
        auto = await gateway.chat(BASE)
        quality = await gateway.chat({**BASE, "model": "auto-quality"})
        quality_again = await gateway.chat({**BASE, "model": "auto-quality"})

    assert auto.headers["x-tierwise-tier"] == "edge"
    assert quality.headers["x-tierwise-cache"] == "miss"
    assert quality.headers["x-tierwise-tier"] == "mid"
    assert quality_again.headers["x-tierwise-cache"] == "hit"
    assert quality_again.headers["x-tierwise-tier"] == "mid"


async def test_unknown_model_is_rejected_before_cache(redis_kit: GatewayKit) -> None:
    async with redis_kit.running(use_redis=True) as gateway:
        missing = await gateway.chat({**BASE, "model": "no-such-model"})

    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_memory_cache_without_redis(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        assert gateway.runtime.cache.backend == "memory"
        results = [await gateway.chat(BASE), await gateway.chat(BASE)]
        records = await gateway.request_records()

    assert [r.headers["x-tierwise-cache"] for r in results] == ["miss", "hit"]
    assert [r["cache_hit"] for r in records] == [False, True]
    assert records[1]["cost_usd"] == 0


async def test_unreachable_redis_still_serves(kit: GatewayKit) -> None:
    kit.write_policy()
    # Port 1 on 127.0.0.1 refuses connections, so every Redis call fails fast.
    settings = kit.settings(redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.2)
    async with kit.running(settings=settings) as gateway:
        results = [await gateway.chat(BASE), await gateway.chat(BASE)]
        ready = await gateway.client.get("/readyz")
        await gateway.runtime.outcomes.flush()

    assert [r.status_code for r in results] == [200, 200]
    assert [r.headers["x-tierwise-cache"] for r in results] == ["miss", "miss"]
    assert ready.status_code == 200
    assert ready.json()["redis"] == "degraded"
    assert ready.json()["status"] == "degraded"
    # Records wait in the local spool until Redis answers again.
    spool = list(gateway.runtime.outcomes.spool_dir.glob("outcomes-*.jsonl"))
    assert len(spool) == 1
    assert len(spool[0].read_bytes().splitlines()) == 2


async def test_policy_edit_keeps_cache_entries(redis_kit: GatewayKit) -> None:
    async with redis_kit.running(use_redis=True) as gateway:
        stored = await gateway.chat(BASE)
        document = policy_document(redis_kit.base_urls)
        # Prices, cache lifetime and prompt storage change no answer.
        document["tiers"]["edge"]["deployments"][0]["price"]["output_per_million"] = 9.5
        document["cache"]["ttl_s"] = 120
        document["outcomes"]["store_prompts"] = True
        write_yaml(redis_kit.policy_path, document)
        assert gateway.runtime.policies.reload()
        after_neutral_edit = await gateway.chat(BASE)
        # A threshold decides the tier, so entries stored under the old one are not served.
        document["routing"]["thresholds"]["edge"] = 0.75
        write_yaml(redis_kit.policy_path, document)
        assert gateway.runtime.policies.reload()
        after_routing_edit = await gateway.chat(BASE)

    assert stored.headers["x-tierwise-cache"] == "miss"
    assert after_neutral_edit.headers["x-tierwise-cache"] == "hit"
    assert after_routing_edit.headers["x-tierwise-cache"] == "miss"
