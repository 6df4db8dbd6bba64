"""Routing and escalation through a running gateway, with a stub classifier and fake tiers."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
import yaml

from tests.gateway.conftest import (
    DEPLOYMENT_NAMES,
    GatewayKit,
    StubScorer,
    chat_body,
    policy_document,
    write_yaml,
)
from tests.support.scenario import CONTEXT_LENGTH_ERRORS, Scenario, context_length_error


def attempts_of(record: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(a["tier"], a["deployment"], a["error"]) for a in record["attempts"]]


async def test_high_edge_score_routes_to_edge(kit: GatewayKit) -> None:
    async with kit.running(scorer=StubScorer(edge=0.95)) as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "edge"
    assert response.headers["x-tierwise-model"] == "edge-small"
    assert response.headers["x-tierwise-score"] == "0.9500"
    assert len(kit.fakes["edge"].requests) == 1
    assert kit.fakes["edge"].requests[0].body["model"] == "fake-edge"
    assert kit.fakes["mid"].requests == []


async def test_low_edge_score_routes_to_mid(kit: GatewayKit) -> None:
    async with kit.running(scorer=StubScorer(edge=0.2, mid=0.8)) as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert kit.fakes["edge"].requests == []
    assert len(kit.fakes["mid"].requests) == 1


async def test_no_threshold_met_routes_to_frontier(kit: GatewayKit) -> None:
    async with kit.running(scorer=StubScorer(edge=0.1, mid=0.1, frontier=0.1)) as gateway:
        response = await gateway.chat(chat_body())

    assert response.headers["x-tierwise-tier"] == "frontier"
    assert response.headers["x-tierwise-model"] == "frontier-large"


async def test_min_tier_alias_skips_edge(kit: GatewayKit) -> None:
    async with kit.running(scorer=StubScorer(edge=0.99)) as gateway:
        response = await gateway.chat(chat_body(model="auto-quality"))

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert kit.fakes["edge"].requests == []


async def test_category_floor_sends_math_past_edge(kit: GatewayKit) -> None:
    document = policy_document(kit.base_urls)
    document["routing"]["category_floors"] = {"math": "mid"}
    write_yaml(kit.policy_path, document)
    async with kit.running(scorer=StubScorer(edge=0.95), settings=kit.settings()) as gateway:
        math = await gateway.chat(chat_body("Solve the equation 3x + 5 = 20."))
        chat = await gateway.chat(chat_body("Hi, how are you today?"))
        records = await gateway.request_records()

    assert math.headers["x-tierwise-tier"] == "mid"
    assert chat.headers["x-tierwise-tier"] == "edge"
    assert [(r["category"], r["tier"]) for r in records] == [("math", "mid"), ("chat", "edge")]


async def test_deployment_by_name_skips_classifier(kit: GatewayKit) -> None:
    scorer = StubScorer()
    async with kit.running(scorer=scorer) as gateway:
        response = await gateway.chat(chat_body(model="frontier-large"))
        records = await gateway.request_records()

    assert response.status_code == 200
    assert response.headers["x-tierwise-model"] == "frontier-large"
    assert "x-tierwise-score" not in response.headers
    assert scorer.calls == 0
    assert records[0]["scores"] is None
    assert records[0]["requested_model"] == "frontier-large"


async def test_prompt_too_long_for_edge_goes_to_mid(kit: GatewayKit) -> None:
    prompt = "word " * 3000
    async with kit.running(context_windows={"edge": 1024}) as gateway:
        response = await gateway.chat(chat_body(prompt))
        records = await gateway.request_records()

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert kit.fakes["edge"].requests == []
    # The edge tier was never eligible, so it was not attempted.
    assert attempts_of(records[0]) == [("mid", "mid-medium", None)]


@pytest.mark.parametrize("server", sorted(CONTEXT_LENGTH_ERRORS))
async def test_context_length_error_escalates_to_mid(kit: GatewayKit, server: str) -> None:
    kit.fakes["edge"].enqueue(context_length_error(server))
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200, response.text
    assert response.headers["x-tierwise-tier"] == "mid"
    assert response.headers["x-tierwise-model"] == "mid-medium"
    assert len(kit.fakes["edge"].requests) == 1
    assert len(kit.fakes["mid"].requests) == 1
    assert len(records) == 1
    assert records[0]["tier"] == "mid"
    assert records[0]["model"] == "mid-medium"
    assert attempts_of(records[0]) == [
        ("edge", "edge-small", "context"),
        ("mid", "mid-medium", None),
    ]


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_error_escalates_to_mid(kit: GatewayKit, status: int) -> None:
    kit.fakes["edge"].enqueue(Scenario.http_error(status, "The server is overloaded."))
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert attempts_of(records[0]) == [
        ("edge", "edge-small", "server"),
        ("mid", "mid-medium", None),
    ]
    assert records[0]["status"] == 200
    assert records[0]["error"] is None


async def test_refused_connection_escalates_to_mid(kit: GatewayKit) -> None:
    kit.fakes["edge"].stop()
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    assert attempts_of(records[0]) == [
        ("edge", "edge-small", "connection"),
        ("mid", "mid-medium", None),
    ]


async def test_refused_connection_log_names_request(
    kit: GatewayKit, capfd: pytest.CaptureFixture[str]
) -> None:
    kit.fakes["edge"].stop()
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body())

    output = capfd.readouterr()
    logs = output.out + output.err
    lines = [line for line in logs.splitlines() if "upstream_failed" in line]
    assert len(lines) == 1
    assert response.headers["x-request-id"] in lines[0]
    assert "cannot connect to" in lines[0]


async def test_two_failures_escalate_to_frontier(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.http_error(500, "boom"))
    kit.fakes["mid"].enqueue(context_length_error("openai"))
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "frontier"
    assert attempts_of(records[0]) == [
        ("edge", "edge-small", "server"),
        ("mid", "mid-medium", "context"),
        ("frontier", "frontier-large", None),
    ]


async def test_every_tier_failing_returns_502(kit: GatewayKit) -> None:
    for fake in kit.fakes.values():
        fake.set_default(Scenario.http_error(500, "internal upstream detail: do-not-leak"))
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 502
    assert response.json() == {
        "error": {
            "message": (
            "Every eligible deployment failed: edge-small (HTTP 500), mid-medium "
            "(HTTP 500), frontier-large (HTTP 500). Retry later, or report this "
            "response's x-request-id to the gateway's operators."
        ),
            "type": "api_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    assert "do-not-leak" not in response.text
    assert records[0]["status"] == 502
    assert records[0]["error"] == "upstream_error"
    assert [a[0] for a in attempts_of(records[0])] == ["edge", "mid", "frontier"]


async def test_every_tier_context_error_returns_400(kit: GatewayKit) -> None:
    for fake in kit.fakes.values():
        fake.set_default(context_length_error("openai"))
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "The conversation is too long for every eligible deployment's context window. "
        "Shorten it or lower max_tokens.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }


async def test_escalation_disabled_returns_502(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(Scenario.http_error(500, "boom"))
    async with kit.running(escalate_on_error=False) as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert kit.fakes["mid"].requests == []


async def test_upstream_client_error_is_not_escalated(kit: GatewayKit) -> None:
    kit.fakes["edge"].enqueue(
        Scenario.http_error(
            400, "Invalid value for 'logit_bias'.", "invalid_request_error", param="logit_bias"
        )
    )
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "The model rejected the request: Invalid value for 'logit_bias'.",
        "type": "invalid_request_error",
        "param": "logit_bias",
        "code": "upstream_rejected",
    }
    assert kit.fakes["mid"].requests == []


async def test_upstream_body_names_upstream_model(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        await gateway.chat(chat_body(temperature=0.3, user="end-user-7"))

    received = kit.fakes["edge"].requests[0]
    assert received.body["model"] == "fake-edge"
    assert received.body["temperature"] == 0.3
    assert received.body["user"] == "end-user-7"
    assert "stream" not in received.body
    # The client's bearer token belongs to the gateway, never to the upstream.
    assert "authorization" not in received.headers


@pytest.mark.parametrize("tier", ["edge", "mid", "frontier"])
async def test_tier_names_its_deployment(kit: GatewayKit, tier: str) -> None:
    # Only the tier under test meets its threshold; the frontier tier has none.
    scorer = StubScorer(edge=0.99 if tier == "edge" else 0.1, mid=0.99 if tier == "mid" else 0.1)
    async with kit.running(scorer=scorer) as gateway:
        response = await gateway.chat(chat_body())

    assert response.headers["x-tierwise-tier"] == tier
    assert response.headers["x-tierwise-model"] == DEPLOYMENT_NAMES[tier]


@pytest.mark.parametrize("parameter", ["tools", "functions"])
async def test_tool_request_skips_tier_without_tools(kit: GatewayKit, parameter: str) -> None:
    function = {"name": "get_time", "parameters": {"type": "object", "properties": {}}}
    value = [{"type": "function", "function": function}] if parameter == "tools" else [function]
    async with kit.running(capabilities={"edge": {"tools": False}}) as gateway:
        response = await gateway.chat(chat_body(**{parameter: value}))

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert kit.fakes["edge"].requests == []
    assert kit.fakes["mid"].requests[0].body[parameter] == value


async def test_tool_round_trip_skips_tier_without_tools(kit: GatewayKit) -> None:
    # The second request of a tool round trip may leave out `tools`.
    call = {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    ]
    async with kit.running(capabilities={"edge": {"tools": False}}) as gateway:
        response = await gateway.chat({"model": "auto", "messages": messages})

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert kit.fakes["edge"].requests == []
    assert kit.fakes["mid"].requests[0].body["messages"] == messages


async def test_function_call_history_skips_toolless_tier(kit: GatewayKit) -> None:
    call = {"name": "get_time", "arguments": "{}"}
    messages = [
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": None, "function_call": call},
        {"role": "function", "name": "get_time", "content": "12:00"},
    ]
    async with kit.running(capabilities={"edge": {"tools": False}}) as gateway:
        response = await gateway.chat({"model": "auto", "messages": messages})

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert kit.fakes["edge"].requests == []


async def test_anthropic_tool_history_skips_toolless_tier(kit: GatewayKit) -> None:
    body = {
        "model": "auto",
        "max_tokens": 32,
        "messages": [
            {"role": "user", "content": "What time is it?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00"}]},
        ],
    }
    headers = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
    async with kit.running(capabilities={"edge": {"tools": False}}) as gateway:
        response = await gateway.client.post("/v1/messages", json=body, headers=headers)

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "mid"
    assert kit.fakes["edge"].requests == []


async def test_alias_max_tier_never_reaches_frontier(kit: GatewayKit) -> None:
    document = policy_document(kit.base_urls)
    document["aliases"]["auto-budget"] = {"max_tier": "mid"}
    write_yaml(kit.policy_path, document)
    kit.fakes["mid"].enqueue(Scenario.http_error(503, "Overloaded"))
    async with kit.running(settings=kit.settings(), scorer=StubScorer(edge=0.1, mid=0.1)) as gateway:
        failed = await gateway.chat(chat_body(model="auto-budget"))
        served = await gateway.chat(chat_body(model="auto-budget"))
        models = (await gateway.client.get("/v1/models")).json()

    assert failed.status_code == 502
    assert served.status_code == 200
    assert served.headers["x-tierwise-tier"] == "mid"
    assert kit.fakes["frontier"].requests == []
    assert "auto-budget" in [model["id"] for model in models["data"]]


def write_economy_policy(kit: GatewayKit, tenants: dict[str, Any]) -> None:
    """Write the test policy with an alias bounded to mid and the given tenants section."""
    document = policy_document(kit.base_urls)
    document["aliases"]["auto-economy"] = {"max_tier": "mid"}
    document["tenants"] = tenants
    write_yaml(kit.policy_path, document)


async def test_tenant_min_above_alias_max_gets_403(kit: GatewayKit) -> None:
    key = f"sk-{uuid.uuid4().hex}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    write_economy_policy(kit, {"entries": {"premium": {"key_sha256": [digest],
                                                       "min_tier": "frontier"}}})
    async with kit.running(settings=kit.settings()) as gateway:
        bounded = await gateway.chat(chat_body(model="auto-economy"), api_key=key)
        unbounded = await gateway.chat(chat_body(model="auto"), api_key=key)
        records = await gateway.request_records()

    assert bounded.status_code == 403
    error = bounded.json()["error"]
    assert error["code"] == "tier_blocked"
    assert error["message"].startswith(
        "The model 'auto-economy' uses only the edge and mid tiers, which this API key may not use."
    )
    assert "x-should-retry" not in bounded.headers
    assert [record["status"] for record in records] == [403, 200]
    assert unbounded.headers["x-tierwise-tier"] == "frontier"
    assert all(fake.requests == [] for tier, fake in kit.fakes.items() if tier != "frontier")


async def test_header_above_alias_max_gets_400(kit: GatewayKit) -> None:
    write_economy_policy(kit, {"allow_min_tier_header": True})
    header = {"x-tierwise-min-tier": "frontier"}
    async with kit.running(settings=kit.settings()) as gateway:
        bounded = await gateway.chat(chat_body(model="auto-economy"), headers=header)
        within = await gateway.chat(chat_body(model="auto-economy"),
                                    headers={"x-tierwise-min-tier": "mid"})

    assert bounded.status_code == 400
    assert bounded.json()["error"] == {
        "message": "The x-tierwise-min-tier header requests the frontier tier or above, but the "
        "model 'auto-economy' never goes above the mid tier. Remove the header, or request a "
        "router alias that reaches that tier (GET /v1/models shows each alias's max_tier).",
        "type": "invalid_request_error",
        "param": "x-tierwise-min-tier",
        "code": "invalid_request",
    }
    assert within.status_code == 200
    assert within.headers["x-tierwise-tier"] == "mid"
    assert kit.fakes["frontier"].requests == []


async def test_models_list_alias_max_tier(kit: GatewayKit) -> None:
    write_economy_policy(kit, {})
    async with kit.running(settings=kit.settings()) as gateway:
        models = (await gateway.client.get("/v1/models")).json()

    routers = {model["id"]: model["tierwise"] for model in models["data"]}
    assert routers["auto-economy"]["max_tier"] == "mid"
    assert routers["auto-economy"]["min_tier"] is None
    assert routers["auto"]["max_tier"] is None


async def test_alias_thresholds_route_more_to_cheaper_tiers(kit: GatewayKit) -> None:
    document = policy_document(kit.base_urls)
    document["aliases"]["auto-economy"] = {"thresholds": {"edge": 0.4}}
    write_yaml(kit.policy_path, document)
    body = {"temperature": 0}
    async with kit.running(settings=kit.settings(), scorer=StubScorer(edge=0.5, mid=0.5)) as gateway:
        economy = await gateway.chat(chat_body(model="auto-economy", **body))
        default = await gateway.chat(chat_body(model="auto", **body))

    assert economy.headers["x-tierwise-tier"] == "edge"
    assert default.headers["x-tierwise-tier"] == "frontier"
    # Each alias routes on its own, so the second request is no cache hit of the first.
    assert default.headers["x-tierwise-cache"] == "miss"


async def test_reloaded_alias_thresholds_skip_old_cache(kit: GatewayKit) -> None:
    document = policy_document(kit.base_urls)
    document["aliases"]["auto-economy"] = {"max_tier": "mid", "thresholds": {"edge": 0.4}}
    write_yaml(kit.policy_path, document)
    body = chat_body(model="auto-economy", temperature=0)
    async with kit.running(settings=kit.settings(), scorer=StubScorer(edge=0.5, mid=0.5)) as gateway:
        stored = await gateway.chat(body)
        cached = await gateway.chat(body)
        document["aliases"]["auto-economy"]["thresholds"] = {"edge": 0.6}
        write_yaml(kit.policy_path, document)
        assert gateway.runtime.policies.reload()
        rerouted = await gateway.chat(body)

    assert (stored.headers["x-tierwise-tier"], stored.headers["x-tierwise-cache"]) == ("edge", "miss")
    assert (cached.headers["x-tierwise-tier"], cached.headers["x-tierwise-cache"]) == ("edge", "hit")
    # The edge score 0.5 is now below the alias's threshold, so the mid tier serves the
    # request instead of the cache.
    assert rerouted.headers["x-tierwise-cache"] == "miss"
    assert rerouted.headers["x-tierwise-tier"] == "mid"


def write_local_edge_policy(kit: GatewayKit) -> None:
    """Write a policy whose edge deployment is a local model (served here by the edge fake)."""
    document = policy_document(kit.base_urls)
    document["tiers"]["edge"]["deployments"][0].update(local_model=True, default_max_tokens=256)
    write_yaml(kit.policy_path, document)


@pytest.mark.parametrize(
    ("limits", "expected_max_tokens"),
    [
        ({}, 256),
        ({"max_tokens": 7}, 7),
        ({"max_completion_tokens": 5}, 5),
        ({"max_completion_tokens": 5, "max_tokens": 7}, 5),
        ({"max_completion_tokens": None, "max_tokens": 7}, 7),
        ({"max_completion_tokens": None}, 256),
    ],
)
async def test_local_model_gets_limit_as_max_tokens(
    kit: GatewayKit, limits: dict[str, int | None], expected_max_tokens: int
) -> None:
    write_local_edge_policy(kit)
    async with kit.running(settings=kit.settings()) as gateway:
        # Tests start no llama.cpp server, so the edge fake serves as the local model.
        gateway.runtime.local_model_state = "ready"
        response = await gateway.chat(chat_body(model="edge-small", **limits))

    assert response.status_code == 200
    received = kit.fakes["edge"].requests[0].body
    assert received["max_tokens"] == expected_max_tokens
    assert "max_completion_tokens" not in received


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, 64),
        ({"max_tokens": 7}, 7),
        ({"max_completion_tokens": 5}, 5),
        ({"max_completion_tokens": 5, "max_tokens": 7}, 5),
        ({"max_completion_tokens": None, "max_tokens": 7}, 7),
    ],
)
async def test_output_limit_param_renames_max_tokens(
    kit: GatewayKit, limits: dict[str, int | None], expected: int
) -> None:
    document = policy_document(kit.base_urls)
    document["tiers"]["mid"]["deployments"][0].update(
        output_limit_param="max_completion_tokens", default_max_tokens=64)
    write_yaml(kit.policy_path, document)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(model="mid-medium", **limits))

    assert response.status_code == 200
    received = kit.fakes["mid"].requests[0].body
    assert received["max_completion_tokens"] == expected
    assert "max_tokens" not in received


async def test_responses_limit_follows_output_limit_param(kit: GatewayKit) -> None:
    # The Responses API's max_output_tokens becomes max_tokens, renamed for the deployment.
    document = policy_document(kit.base_urls)
    document["tiers"]["mid"]["deployments"][0]["output_limit_param"] = "max_completion_tokens"
    write_yaml(kit.policy_path, document)
    body = {"model": "mid-medium", "input": "Hello", "max_output_tokens": 16}
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.client.post(
            "/v1/responses", json=body, headers={"authorization": "Bearer sk-test"})

    assert response.status_code == 200
    received = kit.fakes["mid"].requests[0].body
    assert received["max_completion_tokens"] == 16
    assert "max_tokens" not in received


async def test_explicit_max_tokens_param_renames_max_completion_tokens(kit: GatewayKit) -> None:
    document = policy_document(kit.base_urls)
    document["tiers"]["mid"]["deployments"][0]["output_limit_param"] = "max_tokens"
    write_yaml(kit.policy_path, document)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(model="mid-medium", max_completion_tokens=5))

    assert response.status_code == 200
    received = kit.fakes["mid"].requests[0].body
    assert received["max_tokens"] == 5
    assert "max_completion_tokens" not in received


async def test_hosted_model_keeps_max_completion_tokens(kit: GatewayKit) -> None:
    write_local_edge_policy(kit)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body(model="mid-medium", max_completion_tokens=5))

    assert response.status_code == 200
    received = kit.fakes["mid"].requests[0].body
    assert received["max_completion_tokens"] == 5
    assert "max_tokens" not in received


DEVELOPER_MESSAGES = [
    {"role": "developer", "content": "Answer in one word."},
    {"role": "user", "content": "Name a colour."},
]


@pytest.mark.parametrize(
    ("deployment", "developer_role", "expected_role"),
    [
        ("edge-small", None, "system"),  # the local model, whose server rejects developer
        ("mid-medium", None, "developer"),
        ("mid-medium", "system", "system"),
        ("edge-small", "developer", "developer"),
    ],
)
async def test_developer_role_per_deployment(
    kit: GatewayKit, deployment: str, developer_role: str | None, expected_role: str
) -> None:
    write_local_edge_policy(kit)
    if developer_role is not None:
        document = yaml.safe_load(kit.policy_path.read_text())
        for tier in document["tiers"].values():
            for entry in tier["deployments"]:
                if entry["name"] == deployment:
                    entry["developer_role"] = developer_role
        write_yaml(kit.policy_path, document)
    tier = "edge" if deployment == "edge-small" else "mid"
    async with kit.running(settings=kit.settings()) as gateway:
        gateway.runtime.local_model_state = "ready"
        response = await gateway.chat(chat_body(model=deployment, messages=DEVELOPER_MESSAGES))
        records = await gateway.request_records()

    assert response.status_code == 200, response.text
    received = kit.fakes[tier].requests[0].body["messages"]
    assert [message["role"] for message in received] == [expected_role, "user"]
    assert received[0]["content"] == "Answer in one word."
    assert records[0]["status"] == 200


TEXT_PART_MESSAGES = [
    {"role": "developer", "content": [{"type": "text", "text": "Answer in one word."}]},
    {"role": "user", "content": [{"type": "text", "text": "Name a"}, {"type": "text", "text": "colour."}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
    {"role": "user", "content": "Another one."},
    {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot."}]},
    {"role": "user", "content": "Why?"},
]


@pytest.mark.parametrize(
    ("deployment", "expected_contents"),
    [
        # The local model's server returns a 500 for any list of content parts.
        (
            "edge-small",
            ["Answer in one word.", "Name a\ncolour.", "Red.", "Another one.", "I cannot.", "Why?"],
        ),
        ("mid-medium", [message["content"] for message in TEXT_PART_MESSAGES]),
    ],
)
async def test_text_parts_per_deployment(
    kit: GatewayKit, deployment: str, expected_contents: list[Any]
) -> None:
    write_local_edge_policy(kit)
    tier = "edge" if deployment == "edge-small" else "mid"
    async with kit.running(settings=kit.settings()) as gateway:
        gateway.runtime.local_model_state = "ready"
        response = await gateway.chat(chat_body(model=deployment, messages=TEXT_PART_MESSAGES))

    assert response.status_code == 200, response.text
    received = kit.fakes[tier].requests[0].body["messages"]
    assert [message["content"] for message in received] == expected_contents


async def test_local_model_keeps_image_parts(kit: GatewayKit) -> None:
    write_local_edge_policy(kit)
    document = yaml.safe_load(kit.policy_path.read_text())
    document["tiers"]["edge"]["deployments"][0]["capabilities"] = {"vision": True}
    write_yaml(kit.policy_path, document)
    content = [
        {"type": "text", "text": "Describe this."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    async with kit.running(settings=kit.settings()) as gateway:
        gateway.runtime.local_model_state = "ready"
        response = await gateway.chat(
            chat_body(model="edge-small", messages=[{"role": "user", "content": content}])
        )

    assert response.status_code == 200, response.text
    assert kit.fakes["edge"].requests[0].body["messages"][0]["content"] == content
