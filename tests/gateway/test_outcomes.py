"""The outcome log: one record per request (local file or Redis stream) and feedback records."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import redis

from router.app import create_app
from tests.gateway.conftest import (
    Gateway,
    GatewayKit,
    LiveGateway,
    StubScorer,
    chat_body,
    policy_document,
    read_file_records,
    stream_entries,
    tenant_of_key,
    write_yaml,
)
from tests.support.scenario import Scenario

RECORD_KEYS = {
    "type",
    "request_id",
    "ts",
    "tenant",
    "requested_model",
    "policy_version",
    "classifier_version",
    "scores",
    "category",
    "tier",
    "model",
    "tokens_in",
    "tokens_out",
    "tokens_cached",
    "cost_usd",
    "baseline_cost_usd",
    "latency_ms",
    "first_byte_ms",
    "cache_hit",
    "stream",
    "attempts",
    "error",
    "status",
}
PROMPT = "Name three rivers that flow through Paris-unique-prompt-marker."


async def send_mixed_requests(gateway: Gateway) -> list[str]:
    """Send a success, a cache hit, a stream, a 400, a 404 and an upstream failure.

    Returns the request ids, in order.
    """
    bodies: list[Any] = [
        chat_body(PROMPT, temperature=0),
        chat_body(PROMPT, temperature=0),
        chat_body(PROMPT, stream=True),
        b"[1]",
        chat_body(model="no-such-model"),
        chat_body("This one fails everywhere."),
    ]
    request_ids = []
    for number, body in enumerate(bodies):
        request_id = f"req-mixed-{number}-{gateway.api_key[-8:]}"
        request_ids.append(request_id)
        await gateway.chat(body, headers={"x-request-id": request_id})
    return request_ids


def fail_last_request(kit: GatewayKit) -> None:
    """Queue scenarios so that only the sixth request of send_mixed_requests fails on every tier."""
    # Requests 1 and 3 reach the edge tier (2 is a cache hit, 4 and 5 are rejected early).
    kit.fakes["edge"].enqueue(
        Scenario.replay(), Scenario.replay(), Scenario.http_error(500, "boom")
    )
    kit.fakes["mid"].enqueue(Scenario.http_error(500, "boom"))
    kit.fakes["frontier"].enqueue(Scenario.http_error(500, "boom"))


def check_mixed_records(records: list[dict[str, Any]], request_ids: list[str], tenant: str) -> None:
    assert [r["request_id"] for r in records] == request_ids
    assert all(set(r) == RECORD_KEYS for r in records), [set(r) ^ RECORD_KEYS for r in records]
    assert [r["status"] for r in records] == [200, 200, 200, 400, 404, 502]
    assert [r["error"] for r in records] == [
        None,
        None,
        None,
        "invalid_json",
        "model_not_found",
        "upstream_error",
    ]
    assert [r["cache_hit"] for r in records] == [False, True, False, False, False, False]
    assert [r["stream"] for r in records] == [False, False, True, False, False, False]
    assert all(r["tenant"] == tenant for r in records)
    assert all(r["classifier_version"] == "stub-1" for r in records)
    assert records[0]["scores"] == {"edge": 0.9, "mid": 0.9, "frontier": 0.9}
    assert records[0]["tier"] == "edge"
    assert records[0]["model"] == "edge-small"
    assert records[0]["requested_model"] == "auto"
    assert records[4]["requested_model"] == "no-such-model"
    assert [a["tier"] for a in records[5]["attempts"]] == ["edge", "mid", "frontier"]
    assert "messages" not in records[0]
    assert PROMPT not in str(records)


async def test_file_log_one_record_per_request(kit: GatewayKit) -> None:
    fail_last_request(kit)
    async with kit.running() as gateway:
        assert gateway.runtime.outcomes.backend == "file"
        request_ids = await send_mixed_requests(gateway)
        path = gateway.runtime.outcomes.path

    # The app's shutdown flushed everything still queued.
    records = read_file_records(path)
    assert path == kit.tmp_path / "var" / "outcomes.jsonl"
    check_mixed_records(records, request_ids, gateway.tenant)
    assert gateway.api_key not in path.read_text()


async def test_redis_stream_one_record_per_request(
    redis_kit: GatewayKit, redis_client: redis.Redis
) -> None:
    fail_last_request(redis_kit)
    async with redis_kit.running(use_redis=True) as gateway:
        assert gateway.runtime.outcomes.backend == "redis-stream"
        request_ids = await send_mixed_requests(gateway)
        records = await gateway.request_records()

    check_mixed_records(records, request_ids, gateway.tenant)
    assert not (redis_kit.tmp_path / "var" / "outcomes.jsonl").exists()
    raw = stream_entries(redis_client, gateway.stream_start)
    assert all(set(fields) == {b"record"} for _, fields in raw)
    assert all(gateway.api_key.encode() not in fields[b"record"] for _, fields in raw)


async def test_record_costs_follow_prices(kit: GatewayKit) -> None:
    async with kit.running(scorer=StubScorer(edge=0.1)) as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    usage = response.json()["usage"]
    record = records[0]
    assert record["tier"] == "mid"
    assert (record["tokens_in"], record["tokens_out"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    mid_cost = (usage["prompt_tokens"] * 0.6 + usage["completion_tokens"] * 0.6) / 1_000_000
    frontier_cost = (usage["prompt_tokens"] * 10.0 + usage["completion_tokens"] * 30.0) / 1_000_000
    assert record["cost_usd"] == pytest.approx(mid_cost, abs=1e-8)
    assert record["baseline_cost_usd"] == pytest.approx(frontier_cost, abs=1e-8)
    assert response.headers["x-tierwise-cost-usd"] == f"{mid_cost:.8f}"


@pytest.mark.parametrize("stream", [False, True])
async def test_cached_input_tokens_get_cached_price(kit: GatewayKit, stream: bool) -> None:
    document = policy_document(kit.base_urls)
    for tier in ("mid", "frontier"):
        document["tiers"][tier]["deployments"][0]["price"]["cached_input_per_million"] = 0.1
    write_yaml(kit.policy_path, document)
    usage = {"prompt_tokens": 1000, "completion_tokens": 10,
             "prompt_tokens_details": {"cached_tokens": 800}}
    kit.fakes["mid"].enqueue(Scenario(usage=usage))
    async with kit.running(scorer=StubScorer(edge=0.1), settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(stream=stream))
        records = await gateway.request_records()

    record = records[0]
    assert response.status_code == 200
    assert record["tier"] == "mid"
    assert (record["tokens_in"], record["tokens_cached"], record["tokens_out"]) == (1000, 800, 10)
    mid_cost = (200 * 0.6 + 800 * 0.1 + 10 * 0.6) / 1_000_000
    frontier_cost = (200 * 10.0 + 800 * 0.1 + 10 * 30.0) / 1_000_000
    assert record["cost_usd"] == pytest.approx(mid_cost, abs=1e-8)
    assert record["baseline_cost_usd"] == pytest.approx(frontier_cost, abs=1e-8)


@pytest.mark.parametrize(
    ("details", "cached"),
    [
        ({"cached_tokens": 5000}, 1000),
        ({"cached_tokens": -3}, 0),
        ({"cached_tokens": "800"}, 0),
        ("800", 0),
        (None, 0),
    ],
)
async def test_odd_cached_token_counts(kit: GatewayKit, details: Any, cached: int) -> None:
    kit.fakes["mid"].enqueue(Scenario(usage={
        "prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": details,
    }))
    async with kit.running(scorer=StubScorer(edge=0.1)) as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    assert records[0]["tokens_cached"] == cached
    assert records[0]["cost_usd"] >= 0


async def test_store_prompts_keeps_messages(kit: GatewayKit) -> None:
    async with kit.running(store_prompts=True) as gateway:
        await gateway.chat(chat_body(PROMPT))
        records = await gateway.request_records()

    assert records[0]["messages"] == [{"role": "user", "content": PROMPT}]


async def test_summary_log_has_no_prompt(
    kit: GatewayKit, capfd: pytest.CaptureFixture[str]
) -> None:
    async with kit.running() as gateway:
        await gateway.chat(chat_body(PROMPT), headers={"x-request-id": "req-log-1"})

    output = capfd.readouterr()
    logs = output.out + output.err
    summary_lines = [line for line in logs.splitlines() if "req-log-1" in line]
    assert len(summary_lines) == 1
    assert "request" in summary_lines[0]
    # Readable or JSON, with or without a space after the colon, by the logging setup in force.
    assert any(form in summary_lines[0] for form in ("tier=edge", '"tier": "edge"', '"tier":"edge"'))
    assert PROMPT not in logs
    assert gateway.api_key not in logs


async def test_feedback_writes_record(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        answer = await gateway.chat(chat_body())
        request_id = answer.headers["x-request-id"]
        response = await gateway.client.post(
            "/v1/feedback",
            json={"request_id": request_id, "score": 0.25, "label": "too vague"},
            headers={"Authorization": f"Bearer {gateway.api_key}"},
        )
        records = await gateway.records()

    assert response.status_code == 200
    assert response.json() == {"object": "feedback", "request_id": request_id, "accepted": True}
    feedback = [r for r in records if r["type"] == "feedback"]
    assert len(feedback) == 1
    assert feedback[0]["request_id"] == request_id
    assert feedback[0]["score"] == 0.25
    assert feedback[0]["label"] == "too vague"
    assert feedback[0]["tenant"] == gateway.tenant
    assert [r["type"] for r in records] == ["request", "feedback"]


async def test_feedback_reaches_redis_stream(redis_kit: GatewayKit) -> None:
    async with redis_kit.running(use_redis=True) as gateway:
        request_id = gateway.runtime.request_ids.issue(gateway.tenant)  # type: ignore[union-attr]
        response = await gateway.client.post(
            "/v1/feedback",
            json={"request_id": request_id, "score": 1},
            headers={"Authorization": f"Bearer {gateway.api_key}"},
        )
        records = await gateway.records()

    assert response.status_code == 200
    assert [(r["type"], r["request_id"], r["score"], r["label"]) for r in records] == [
        ("feedback", request_id, 1.0, None)
    ]
    assert records[0]["tenant"] == tenant_of_key(gateway.api_key)


INVALID_FEEDBACK: list[tuple[str, Any, str, str | None, str]] = [
    (
        "score_above_one",
        {"request_id": "r1", "score": 1.5},
        "Invalid value for 'score': Input should be less than or equal to 1.",
        "score",
        "invalid_request",
    ),
    (
        "score_below_zero",
        {"request_id": "r1", "score": -0.1},
        "Invalid value for 'score': Input should be greater than or equal to 0.",
        "score",
        "invalid_request",
    ),
    (
        "score_word",
        {"request_id": "r1", "score": "great"},
        "Invalid value for 'score': Input should be a valid number.",
        "score",
        "invalid_request",
    ),
    (
        "missing_request_id",
        {"score": 0.5},
        "Missing required parameter: 'request_id'.",
        "request_id",
        "missing_required_parameter",
    ),
    (
        "empty_request_id",
        {"request_id": "", "score": 0.5},
        "Invalid value for 'request_id': String should have at least 1 character.",
        "request_id",
        "invalid_request",
    ),
    (
        "unknown_field",
        {"request_id": "r1", "score": 0.5, "rating": 3},
        "Invalid value for 'rating': Extra inputs are not permitted.",
        "rating",
        "invalid_request",
    ),
    (
        "json_array",
        [{"request_id": "r1", "score": 0.5}],
        "The request body must be a JSON object.",
        None,
        "invalid_json",
    ),
]


@pytest.mark.parametrize(
    ("body", "message", "param", "code"),
    [case[1:] for case in INVALID_FEEDBACK],
    ids=[case[0] for case in INVALID_FEEDBACK],
)
async def test_invalid_feedback_gets_400(
    kit: GatewayKit, body: Any, message: str, param: str | None, code: str
) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.post("/v1/feedback", json=body)
        records = await gateway.records()

    assert response.status_code == 400
    assert response.json() == {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }
    assert records == []


async def test_feedback_bad_json_gets_400(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.post(
            "/v1/feedback", content=b"{", headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "The request body is not valid JSON (unexpected end of data at position 1).",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_json",
    }


def test_live_server_flushes_records_on_stop(kit: GatewayKit) -> None:
    kit.write_policy()
    app = create_app(kit.settings(), StubScorer())
    with LiveGateway(app) as live:
        path = live.runtime.outcomes.path
        with httpx.Client(base_url=live.base_url, timeout=10) as client:
            statuses = [
                client.post("/chat/completions", json=chat_body(f"Question {i}")).status_code
                for i in range(20)
            ]

    records = read_file_records(path)
    assert statuses == [200] * 20
    assert len(records) == 20
    assert len({r["request_id"] for r in records}) == 20


def test_client_disconnect_mid_stream_is_recorded(kit: GatewayKit) -> None:
    # A stream the client abandoned is not a success: the partial answer must not be
    # mistaken for a whole one by cost reports or retraining.
    kit.fakes["edge"].enqueue(Scenario.pause(after_events=3, seconds=1.0))
    kit.write_policy()
    app = create_app(kit.settings(), StubScorer())
    with LiveGateway(app) as live:
        path = live.runtime.outcomes.path
        body = chat_body(stream=True)
        with httpx.stream(
            "POST", f"{live.base_url}/chat/completions", json=body, timeout=10
        ) as response:
            first_lines = [line for _, line in zip(range(2), response.iter_lines())]

        records: list[dict[str, Any]] = []
        for _ in range(100):
            records = read_file_records(path)
            if records:
                break
            time.sleep(0.1)

    assert first_lines[0].startswith("data: ")
    assert len(records) == 1
    assert records[0]["status"] == 499
    assert records[0]["error"] == "client_disconnected"
    assert records[0]["stream"] is True


def test_client_gone_during_silent_stream_stops_it(kit: GatewayKit) -> None:
    # The upstream pauses for 30 s after three events. The gateway notices the client left
    # at the next keep-alive comment (0.3 s here), not when the upstream speaks again.
    kit.fakes["edge"].enqueue(Scenario.pause(after_events=3, seconds=30.0))
    kit.write_policy()
    app = create_app(kit.settings(keepalive_interval_s=0.3), StubScorer())
    with LiveGateway(app) as live:
        path = live.runtime.outcomes.path
        with httpx.stream(
            "POST", f"{live.base_url}/chat/completions", json=chat_body(stream=True), timeout=10
        ) as response:
            first_lines = [line for _, line in zip(range(2), response.iter_lines())]
        left_at = time.monotonic()

        records: list[dict[str, Any]] = []
        while not records and time.monotonic() - left_at < 10:
            time.sleep(0.05)
            records = read_file_records(path)
        recorded_after_s = time.monotonic() - left_at

    assert first_lines[0].startswith("data: ")
    assert len(records) == 1
    assert records[0]["status"] == 499
    assert records[0]["error"] == "client_disconnected"
    assert recorded_after_s < 10, "the stream was not stopped while the upstream was silent"
