"""Tests of the replay upstream, the scriptable fake upstream and the policy writer."""

from __future__ import annotations

import ast
import asyncio
import csv
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from tests.support import tokens
from tests.support.fake_upstream import FakeUpstream
from tests.support.fixtures import (
    REPLAY_STACK,
    ReplayFactory,
    TierUpstream,
    policy_dict,
    write_policy,
)
from tests.support.prices import ROUTERBENCH_PRICES, fit_routerbench_prices
from tests.support.recorded import (
    BENCH_SOURCES,
    SCRIPTED_ANSWER,
    UnknownModelError,
    load_recorded,
    normalize_prompt,
)
from tests.support.replay_upstream import ReplayOptions, ReplayUpstream
from tests.support.scenario import CONTEXT_LENGTH_ERRORS, Scenario, ToolCall, context_length_error

MISTRAL = "mistralai/mistral-7b-chat"
MIXTRAL = "mistralai/mixtral-8x7b-chat"
GPT4 = "gpt-4-1106-preview"
HI_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]


# Helpers -------------------------------------------------------------------------------------


def csv_rows(path: Path) -> Iterator[dict[str, str]]:
    csv.field_size_limit(1 << 30)
    with path.open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


def first_row(path: Path) -> dict[str, str]:
    return next(csv_rows(path))


def chat_body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": extra.pop("model", "unused"),
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def post(base_url: str, body: dict[str, Any], timeout: float = 10.0) -> httpx.Response:
    return httpx.post(f"{base_url}/chat/completions", json=body, timeout=timeout)


def stream_payloads(base_url: str, body: dict[str, Any]) -> list[str]:
    """Return the ``data:`` payloads of a streamed answer, in order."""
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, timeout=10.0) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [
            line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")
        ]


def chunks(payloads: list[str]) -> list[dict[str, Any]]:
    return [json.loads(p) for p in payloads if p != "[DONE]"]


def joined(chunk_list: list[dict[str, Any]], field: str, index: int = 0) -> str:
    parts = []
    for chunk in chunk_list:
        for choice in chunk.get("choices", []):
            if choice["index"] == index and choice["delta"].get(field):
                parts.append(choice["delta"][field])
    return "".join(parts)


def expected_prompt_tokens(prompt: str) -> int:
    encoding = tokens.encoding()
    return 3 + len(encoding.encode("user")) + len(encoding.encode(prompt)) + 3


@pytest.fixture(scope="module")
def mistral(shared_data: Path) -> Iterator[ReplayUpstream]:
    with ReplayUpstream(MISTRAL) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gpt4(shared_data: Path) -> Iterator[ReplayUpstream]:
    with ReplayUpstream(GPT4) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def mbpp_row(shared_data: Path) -> dict[str, str]:
    return first_row(shared_data / "routerbench-subset/datasets/routerbench_zs/mbpp_test.csv")


@pytest.fixture(scope="module")
def gsm8k_row(shared_data: Path) -> dict[str, str]:
    return first_row(shared_data / "routellm-evals/routellm/evals/gsm8k/gsm8k_responses.csv")


# Recorded answers ----------------------------------------------------------------------------


def test_routerbench_prompt_gets_recorded_answer(
    mistral: ReplayUpstream, mbpp_row: dict[str, str]
) -> None:
    prompt = ast.literal_eval(mbpp_row["prompt"])[0]
    expected = ast.literal_eval(mbpp_row[f"{MISTRAL}|model_response"])[0]
    response = post(mistral.base_url, chat_body(prompt, model=MISTRAL))
    assert response.status_code == 200
    assert response.headers["x-replay-match"] == "exact"
    assert response.json()["choices"][0]["message"]["content"] == expected
    assert response.json()["choices"][0]["finish_reason"] == "stop"


def test_routerbench_final_question_matches(mistral: ReplayUpstream, shared_data: Path) -> None:
    row = first_row(
        shared_data / "routerbench-subset/datasets/routerbench_zs/arc_challenge_test.csv"
    )
    full_prompt = ast.literal_eval(row["prompt"])[0]
    question = full_prompt.split("\n\n")[-1]
    assert len(question) < len(full_prompt)
    response = post(mistral.base_url, chat_body(question))
    assert response.headers["x-replay-match"] == "exact"
    expected = ast.literal_eval(row[f"{MISTRAL}|model_response"])[0]
    assert response.json()["choices"][0]["message"]["content"] == expected


def test_gsm8k_prompt_gets_gpt4_answer(gpt4: ReplayUpstream, gsm8k_row: dict[str, str]) -> None:
    response = post(gpt4.base_url, chat_body(gsm8k_row["prompt"], model=GPT4))
    assert response.headers["x-replay-match"] == "exact"
    assert (
        response.json()["choices"][0]["message"]["content"]
        == gsm8k_row["gpt-4-1106-preview_response"]
    )


def test_gsm8k_mixtral_answer_via_request_model(
    gpt4: ReplayUpstream, gsm8k_row: dict[str, str]
) -> None:
    body = chat_body(gsm8k_row["prompt"], model="openai/mistralai/Mixtral-8x7B-Instruct-v0.1")
    response = post(gpt4.base_url, body)
    assert response.headers["x-replay-model"] == MIXTRAL
    expected = gsm8k_row["mistralai/Mixtral-8x7B-Instruct-v0.1_response"]
    assert response.json()["choices"][0]["message"]["content"] == expected


def test_unknown_request_model_uses_instance_model(
    mistral: ReplayUpstream, mbpp_row: dict[str, str]
) -> None:
    prompt = ast.literal_eval(mbpp_row["prompt"])[0]
    response = post(mistral.base_url, chat_body(prompt, model="no-such-model"))
    assert response.headers["x-replay-model"] == MISTRAL
    assert response.json()["model"] == "no-such-model"


def test_chatterbot_reply_is_exact(shared_data: Path) -> None:
    with ReplayUpstream("chatterbot") as upstream:
        response = post(upstream.base_url, chat_body("  What is AI? "))
    assert response.headers["x-replay-match"] == "exact"
    expected = (
        "Artificial Intelligence is the branch of engineering and science devoted to"
        " constructing machines that think."
    )
    assert response.json()["choices"][0]["message"]["content"] == expected


def test_unrecorded_prompt_gets_stable_fallback(mistral: ReplayUpstream, shared_data: Path) -> None:
    prompt = "Compose a limerick about a gateway that routes prompts."
    first = post(mistral.base_url, chat_body(prompt))
    second = post(mistral.base_url, chat_body(prompt))
    assert first.headers["x-replay-match"] == "fallback"
    text = first.json()["choices"][0]["message"]["content"]
    assert text == second.json()["choices"][0]["message"]["content"]
    recorded_texts = {a.text for a in load_recorded(shared_data).resolve(MISTRAL).answers}
    assert text in recorded_texts


def test_traffic_mix_benchmark_prompts_match(shared_data: Path) -> None:
    recorded = load_recorded(shared_data, BENCH_SOURCES)
    models = {"routerbench": [MISTRAL, MIXTRAL, GPT4], "gsm8k": [MIXTRAL, GPT4]}
    checked = 0
    for path in sorted((shared_data / "traffic-mix/tidy").glob("traffic-*.jsonl")):
        # Not splitlines(): prompts contain U+2028, which it treats as a line break.
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line:
                continue
            record = json.loads(line)
            for model in models.get(record["source"], []):
                _answer, match = recorded.resolve(model).lookup(record["prompt"])
                assert match == "exact", (model, record["id"])
                checked += 1
    assert checked == 3164 * 3 + 1319 * 2


def test_model_names_resolve(shared_data: Path) -> None:
    recorded = load_recorded(shared_data)
    assert recorded.resolve("openai/mistralai/mistral-7b-chat").name == MISTRAL
    assert recorded.resolve("mixtral-8x7b-chat").name == MIXTRAL
    assert recorded.resolve("GPT4_1106_PREVIEW").name == GPT4
    with pytest.raises(UnknownModelError, match="no recorded answers for model 'gpt-5'"):
        recorded.resolve("gpt-5")


def test_unknown_instance_model_is_rejected(shared_data: Path) -> None:
    with pytest.raises(UnknownModelError):
        ReplayUpstream("gpt-5")


# Tokens, n, max_tokens -----------------------------------------------------------------------


def test_usage_counts_equal_tiktoken(mistral: ReplayUpstream, mbpp_row: dict[str, str]) -> None:
    prompt = ast.literal_eval(mbpp_row["prompt"])[0]
    body = post(mistral.base_url, chat_body(prompt)).json()
    text = body["choices"][0]["message"]["content"]
    encoding = tokens.encoding()
    assert body["usage"]["prompt_tokens"] == expected_prompt_tokens(prompt)
    assert body["usage"]["completion_tokens"] == len(encoding.encode(text))
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_max_tokens_truncates_with_length(gpt4: ReplayUpstream, gsm8k_row: dict[str, str]) -> None:
    body = post(gpt4.base_url, chat_body(gsm8k_row["prompt"], max_tokens=7)).json()
    full = gsm8k_row["gpt-4-1106-preview_response"]
    encoding = tokens.encoding()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == encoding.decode(encoding.encode(full)[:7])
    assert body["usage"]["completion_tokens"] == 7


def test_n_repeats_answer_per_index(gpt4: ReplayUpstream, gsm8k_row: dict[str, str]) -> None:
    body = post(gpt4.base_url, chat_body(gsm8k_row["prompt"], n=2)).json()
    full = gsm8k_row["gpt-4-1106-preview_response"]
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert [c["message"]["content"] for c in body["choices"]] == [full, full]
    assert body["usage"]["completion_tokens"] == 2 * tokens.count_text_tokens(full)


def test_tools_request_gets_text(gpt4: ReplayUpstream, gsm8k_row: dict[str, str]) -> None:
    tool = {
        "type": "function",
        "function": {"name": "calc", "parameters": {"type": "object", "properties": {}}},
    }
    body = post(gpt4.base_url, chat_body(gsm8k_row["prompt"], tools=[tool])).json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["content"] == gsm8k_row["gpt-4-1106-preview_response"]
    assert "tool_calls" not in body["choices"][0]["message"]


def test_invalid_body_gets_openai_error(gpt4: ReplayUpstream) -> None:
    response = post(gpt4.base_url, {"model": GPT4, "messages": []})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == "messages must be a non-empty list of objects"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"


def test_max_tokens_zero_is_rejected(gpt4: ReplayUpstream) -> None:
    response = post(gpt4.base_url, chat_body("Hi", max_tokens=0))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "max_tokens must be a positive integer, got 0"


# Streaming -----------------------------------------------------------------------------------


def test_stream_shape_with_usage(gpt4: ReplayUpstream, gsm8k_row: dict[str, str]) -> None:
    body = chat_body(gsm8k_row["prompt"], stream=True, stream_options={"include_usage": True})
    payloads = stream_payloads(gpt4.base_url, body)
    parsed = chunks(payloads)
    assert payloads[-1] == "[DONE]"
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert parsed[-1]["choices"] == []
    assert parsed[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(chunk["usage"] is None for chunk in parsed[:-1])
    full = gsm8k_row["gpt-4-1106-preview_response"]
    assert joined(parsed, "content") == full
    assert parsed[-1]["usage"]["completion_tokens"] == tokens.count_text_tokens(full)
    assert parsed[-1]["usage"]["prompt_tokens"] == expected_prompt_tokens(gsm8k_row["prompt"])
    assert len(parsed) > 5


def test_stream_without_usage_option(gpt4: ReplayUpstream, gsm8k_row: dict[str, str]) -> None:
    parsed = chunks(stream_payloads(gpt4.base_url, chat_body(gsm8k_row["prompt"], stream=True)))
    assert all("usage" not in chunk for chunk in parsed)
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_chunk_size_option(
    replay_upstream_factory: ReplayFactory, gsm8k_row: dict[str, str]
) -> None:
    options = ReplayOptions(first_byte_delay_s=0.01, chunk_delay_s=0.001, chunk_tokens=1)
    upstream = replay_upstream_factory(GPT4, options)
    parsed = chunks(stream_payloads(upstream.base_url, chat_body(gsm8k_row["prompt"], stream=True)))
    full = gsm8k_row["gpt-4-1106-preview_response"]
    content_chunks = [c for c in parsed if c["choices"][0]["delta"].get("content")]
    assert joined(parsed, "content") == full
    assert len(content_chunks) == tokens.count_text_tokens(full)


def test_stream_max_tokens_ends_with_length(
    gpt4: ReplayUpstream, gsm8k_row: dict[str, str]
) -> None:
    parsed = chunks(
        stream_payloads(gpt4.base_url, chat_body(gsm8k_row["prompt"], stream=True, max_tokens=5))
    )
    assert parsed[-1]["choices"][0]["finish_reason"] == "length"
    assert tokens.count_text_tokens(joined(parsed, "content")) <= 5


def test_multibyte_text_streams_intact() -> None:
    text = "Grüße, 東京 🚀 — ok"
    encoded = tokens.encode(text)
    assert "".join(tokens.split_tokens(encoded, 1)) == text
    assert "".join(tokens.split_tokens(encoded, 3)) == text


# Official client, models, request log, CLI ---------------------------------------------------


def test_openai_client_against_replay(gpt4: ReplayUpstream, gsm8k_row: dict[str, str]) -> None:
    client = openai.OpenAI(base_url=gpt4.base_url, api_key="test-key", max_retries=0)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": gsm8k_row["prompt"]}]
    raw = client.chat.completions.with_raw_response.create(model=GPT4, messages=messages)
    completion = raw.parse()
    assert raw.headers["x-replay-match"] == "exact"
    assert completion.choices[0].message.content == gsm8k_row["gpt-4-1106-preview_response"]
    assert completion.usage is not None
    stream = client.chat.completions.create(
        model=GPT4, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    streamed = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == gsm8k_row["gpt-4-1106-preview_response"]
    assert streamed[-1].usage is not None
    assert streamed[-1].usage.completion_tokens == completion.usage.completion_tokens


def test_models_endpoint_lists_model(gpt4: ReplayUpstream) -> None:
    body = httpx.get(f"{gpt4.base_url}/models", timeout=10.0).json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [GPT4]


def test_received_requests_are_recorded(gpt4: ReplayUpstream) -> None:
    gpt4.clear_requests()
    body = chat_body("Hi", model=GPT4, temperature=0.2)
    httpx.post(
        f"{gpt4.base_url}/chat/completions",
        json=body,
        headers={"x-request-id": "req-1"},
        timeout=10.0,
    )
    received = gpt4.requests
    assert len(received) == 1
    assert received[0].path == "/v1/chat/completions"
    assert received[0].headers["x-request-id"] == "req-1"
    assert received[0].body == body


def test_cli_serves_recorded_answers(shared_data: Path, gsm8k_row: dict[str, str]) -> None:
    command = [
        sys.executable,
        "-m",
        "tests.support.replay_upstream",
        "--model",
        GPT4,
        "--sources",
        "gsm8k",
    ]
    repo = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        base_url = banner.rsplit(" ", 1)[-1].strip()
        assert base_url.startswith("http://127.0.0.1:")
        response = post(base_url, chat_body(gsm8k_row["prompt"]))
        assert (
            response.json()["choices"][0]["message"]["content"]
            == gsm8k_row["gpt-4-1106-preview_response"]
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_cli_rejects_unknown_model(shared_data: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "tests.support.replay_upstream",
        "--model",
        "gpt-5",
        "--sources",
        "gsm8k",
    ]
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        command, check=False, cwd=repo, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "no recorded answers for model 'gpt-5'" in result.stderr


# Prices and policy ---------------------------------------------------------------------------


def test_price_fit_reproduces_table(shared_data: Path) -> None:
    fitted = fit_routerbench_prices(shared_data, ROUTERBENCH_PRICES)
    for model, (input_price, output_price) in ROUTERBENCH_PRICES.items():
        assert fitted[model].input_per_million == pytest.approx(input_price, abs=1e-3)
        assert fitted[model].output_per_million == pytest.approx(output_price, abs=1e-3)
        assert fitted[model].r_squared > 0.999


def test_written_policy_validates(tmp_path: Path) -> None:
    schema = pytest.importorskip(
        "router.policy.schema", reason="the gateway's policy schema is not importable"
    )
    upstreams = [
        TierUpstream(spec, f"http://127.0.0.1:{9000 + i}/v1") for i, spec in enumerate(REPLAY_STACK)
    ]
    path = write_policy(tmp_path / "policy.yaml", upstreams, thresholds={"edge": 0.5, "mid": 0.4})
    policy = schema.Policy.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    edge = policy.tiers["edge"].deployments[0]
    assert edge.api_base == "http://127.0.0.1:9000/v1"
    assert edge.upstream_model == MISTRAL
    assert edge.uses_direct_path
    assert policy.tiers["frontier"].deployments[0].price.output_per_million == 30.0
    assert policy.routing.thresholds == {"edge": 0.5, "mid": 0.4}


def test_policy_groups_deployments_by_tier() -> None:
    upstreams = [TierUpstream(spec, "http://127.0.0.1:1/v1") for spec in REPLAY_STACK]
    tiers = policy_dict(upstreams)["tiers"]
    assert list(tiers) == ["edge", "mid", "frontier"]
    assert [d["name"] for d in tiers["mid"]["deployments"]] == ["mixtral-8x7b"]


def test_replay_stack_fixture_serves_each_tier(
    replay_upstreams: dict[str, str], shared_data: Path
) -> None:
    row = first_row(shared_data / "routerbench-subset/datasets/routerbench_zs/winograde_test.csv")
    question = ast.literal_eval(row["prompt"])[0].split("\n\n")[-1]
    for spec in REPLAY_STACK:
        response = post(replay_upstreams[spec.tier], chat_body(question))
        expected = ast.literal_eval(row[f"{spec.model}|model_response"])[0]
        assert response.json()["choices"][0]["message"]["content"] == expected, spec.tier


# Fake upstream scenarios (no public data needed) ---------------------------------------------


def test_fake_default_is_scripted_replay(fake_upstream: FakeUpstream) -> None:
    response = post(fake_upstream.base_url, chat_body("Hello"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == SCRIPTED_ANSWER


def test_fake_cut_stream_after_events(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Scenario.cut(after_events=3))
    received: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST", f"{fake_upstream.base_url}/chat/completions", json=chat_body("Hi", stream=True)
        ) as r,
    ):
        received.extend(line for line in r.iter_lines() if line.startswith("data: "))
    assert len(received) == 3
    assert "[DONE]" not in received[-1]


def test_fake_cut_before_json_answer(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Scenario.cut(after_events=0))
    with pytest.raises(httpx.RemoteProtocolError):
        post(fake_upstream.base_url, chat_body("Hi"))


def test_fake_hang_never_answers(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Scenario.hang())
    with pytest.raises(httpx.ReadTimeout):
        post(fake_upstream.base_url, chat_body("Hi"), timeout=0.3)
    assert post(fake_upstream.base_url, chat_body("Hi")).status_code == 200


@pytest.mark.parametrize("after_events", [0, 2])
def test_fake_stream_error_event(fake_upstream: FakeUpstream, after_events: int) -> None:
    fake_upstream.enqueue(Scenario.stream_error(after_events, "upstream exploded"))
    payloads = stream_payloads(fake_upstream.base_url, chat_body("Hi", stream=True))
    assert len(payloads) == after_events + 1
    assert json.loads(payloads[-1]) == {
        "error": {
            "message": "upstream exploded",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def test_fake_http_error_body(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(
        Scenario.http_error(503, "The engine is currently overloaded.", "server_error")
    )
    response = post(fake_upstream.base_url, chat_body("Hi"))
    assert response.status_code == 503
    assert response.json()["error"]["message"] == "The engine is currently overloaded."


def test_fake_rate_limit_has_retry_after(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Scenario.rate_limited(retry_after_s=2))
    response = post(fake_upstream.base_url, chat_body("Hi"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("server", sorted(CONTEXT_LENGTH_ERRORS))
def test_fake_context_length_wordings(fake_upstream: FakeUpstream, server: str) -> None:
    fake_upstream.enqueue(context_length_error(server))
    response = post(fake_upstream.base_url, chat_body("Hi"))
    status, body = CONTEXT_LENGTH_ERRORS[server]
    assert response.status_code == status
    assert response.json() == body


def test_fake_pause_keeps_stream_whole(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Scenario.pause(after_events=2, seconds=0.05))
    parsed = chunks(stream_payloads(fake_upstream.base_url, chat_body("Hi", stream=True)))
    assert joined(parsed, "content") == SCRIPTED_ANSWER
    assert fake_upstream.served[-1].pause_s == 0.05


def test_fake_streamed_tool_calls(fake_upstream: FakeUpstream) -> None:
    arguments = '{"city": "Paris", "unit": "celsius"}'
    fake_upstream.enqueue(Scenario.tools(ToolCall("get_weather", arguments, "call_abc")))
    parsed = chunks(stream_payloads(fake_upstream.base_url, chat_body("Weather?", stream=True)))
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in parsed
        if c["choices"][0]["delta"].get("tool_calls")
    ]
    assert calls[0]["id"] == "call_abc"
    assert calls[0]["function"]["name"] == "get_weather"
    assert "".join(call["function"]["arguments"] for call in calls) == arguments
    assert parsed[0]["choices"][0]["delta"]["content"] is None
    assert parsed[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_fake_json_tool_calls(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Scenario.tools(ToolCall("lookup", '{"q": "x"}')))
    message = post(fake_upstream.base_url, chat_body("Find x")).json()["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["content"] is None
    assert message["message"]["tool_calls"][0]["function"] == {
        "name": "lookup",
        "arguments": '{"q": "x"}',
    }


def test_fake_n2_streams_both_indexes(fake_upstream: FakeUpstream) -> None:
    parsed = chunks(stream_payloads(fake_upstream.base_url, chat_body("Hi", stream=True, n=2)))
    assert joined(parsed, "content", 0) == SCRIPTED_ANSWER
    assert joined(parsed, "content", 1) == SCRIPTED_ANSWER
    finals = [c["choices"][0] for c in parsed if c["choices"][0]["finish_reason"]]
    assert sorted(choice["index"] for choice in finals) == [0, 1]


def test_fake_reasoning_deltas_precede_content(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Scenario.with_reasoning("First, think it through."))
    parsed = chunks(stream_payloads(fake_upstream.base_url, chat_body("Hi", stream=True)))
    assert joined(parsed, "reasoning_content") == "First, think it through."
    kinds = [next(iter(c["choices"][0]["delta"])) for c in parsed[1:-1]]
    assert kinds.index("content") > kinds.index("reasoning_content")
    assert kinds[-1] == "content"


def test_fake_queue_order_and_default(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Scenario.http_error(500, "first"), Scenario.http_error(502, "second"))
    fake_upstream.set_default(Scenario.http_error(503, "default"))
    statuses = [post(fake_upstream.base_url, chat_body("Hi")).status_code for _ in range(4)]
    assert statuses == [500, 502, 503, 503]
    assert fake_upstream.pending == 0
    fake_upstream.reset()
    assert post(fake_upstream.base_url, chat_body("Hi")).status_code == 200


def test_fake_queue_from_many_threads(fake_upstream: FakeUpstream) -> None:
    def enqueue_errors() -> None:
        for _ in range(25):
            fake_upstream.enqueue(Scenario.http_error(500, "queued"))

    workers = [threading.Thread(target=enqueue_errors) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert fake_upstream.pending == 100


def test_fake_records_forwarded_headers(fake_upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=fake_upstream.base_url, api_key="sk-forwarded", max_retries=0)
    client.chat.completions.create(model="m", messages=HI_MESSAGES)
    received = fake_upstream.requests[-1]
    assert received.headers["authorization"] == "Bearer sk-forwarded"
    assert received.body["messages"] == [{"role": "user", "content": "Hi"}]


def test_fake_openai_client_sees_stream_error(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Scenario.stream_error(after_events=2, message="boom"))
    client = openai.OpenAI(base_url=fake_upstream.base_url, api_key="k", max_retries=0)
    stream = client.chat.completions.create(model="m", messages=HI_MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="boom"):
        list(stream)


def test_normalize_prompt_collapses_whitespace() -> None:
    assert normalize_prompt("  a\n\n b\tc ") == "a b c"


# Replay driver (bench/replay.py) -------------------------------------------------------------


def load_bench_module() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "replay.py"
    spec = importlib.util.spec_from_file_location("tierwise_bench_replay", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> Any:
    return load_bench_module()


@pytest.fixture(scope="module")
def correctness(shared_data: Path) -> Any:
    from tests.support.correctness import load_correctness

    return load_correctness(shared_data)


def test_bench_prompts_skip_nc_and_train(bench: Any, shared_data: Path, correctness: Any) -> None:
    prompts = bench.load_prompts(shared_data, correctness, count=100_000, seed=7)
    sources = {p.source for p in prompts}
    assert "wizardlm_testset" not in sources
    assert "alpaca_eval" not in sources
    routerbench_ids = {p.id for p in prompts if p.source == "routerbench"}
    assert routerbench_ids
    assert routerbench_ids <= correctness.routerbench_test_ids
    assert {"chatterbot", "gsm8k", "mmlu"} <= sources


def test_bench_prompt_order_is_seeded(bench: Any, shared_data: Path, correctness: Any) -> None:
    first = bench.load_prompts(shared_data, correctness, count=50, seed=7)
    again = bench.load_prompts(shared_data, correctness, count=50, seed=7)
    other = bench.load_prompts(shared_data, correctness, count=50, seed=8)
    assert [p.id for p in first] == [p.id for p in again]
    assert [p.id for p in first] != [p.id for p in other]
    assert len(first) == 50


def test_bench_prompt_filters(bench: Any, shared_data: Path, correctness: Any) -> None:
    prompts = bench.load_prompts(
        shared_data, correctness, count=300, seed=1, sources={"gsm8k"}, max_chars=200
    )
    assert {p.source for p in prompts} == {"gsm8k"}
    assert all(len(p.text) <= 200 for p in prompts)


def test_bench_api_key_option(bench: Any, shared_data: Path, correctness: Any) -> None:
    assert bench.parse_args(["--start-stack"]).api_key == "replay-bench"
    args = bench.parse_args(["--start-stack", "--api-key", "team-key"])
    prompts = bench.load_prompts(shared_data, correctness, count=2, seed=7)

    with ReplayUpstream(MISTRAL) as upstream:
        results = asyncio.run(
            bench.send_all(
                upstream.base_url,
                prompts,
                model=MISTRAL,
                concurrency=1,
                stream=False,
                timeout_s=30.0,
                api_key=args.api_key,
            )
        )
        received = upstream.requests

    assert [result.error for result in results] == [None, None]
    assert [request.headers["authorization"] for request in received] == [
        "Bearer team-key",
        "Bearer team-key",
    ]


def test_bench_summary_costs_and_quality(bench: Any) -> None:
    from tests.support.correctness import Correctness

    deployments = {
        "small": bench.DeploymentView("small", "edge", f"openai/{MISTRAL}", 1.0, 1.0),
        "big": bench.DeploymentView("big", "frontier", f"openai/{GPT4}", 10.0, 30.0),
    }
    scores = Correctness(
        scores={"a": {MISTRAL: 1.0, GPT4: 1.0}, "b": {MISTRAL: 0.0, GPT4: 1.0}, "c": {GPT4: 0.0}}
    )
    results = [
        bench.Result(
            "a",
            "s",
            tier="edge",
            deployment="small",
            cost_usd=0.5,
            prompt_tokens=1000,
            completion_tokens=0,
        ),
        bench.Result(
            "b", "s", tier="edge", deployment="small", prompt_tokens=1000, completion_tokens=1000
        ),
        bench.Result(
            "c",
            "s",
            tier="edge",
            deployment="small",
            cost_usd=0.0,
            cache="hit",
            prompt_tokens=0,
            completion_tokens=1000,
        ),
        bench.Result("d", "s", error="HTTP 500"),
    ]
    summary = bench.summarize(results, deployments, scores)
    assert summary["cost_usd"] == pytest.approx(0.5 + 0.002)
    assert summary["all_frontier_cost_usd"] == pytest.approx(0.01 + 0.04 + 0.03)
    assert summary["cache_hits"] == 1
    assert summary["errors"] == {"HTTP 500": 1}
    assert summary["tiers"] == {"edge": 3}
    quality = summary["quality"]
    assert quality["prompts_compared"] == 2
    assert quality["prompts_used_model_unscored"] == 1
    assert quality["delivered_accuracy"] == pytest.approx(0.5)
    assert quality["always_frontier_accuracy"] == pytest.approx(1.0)


def test_bench_sends_through_openai_client(
    bench: Any, gpt4: ReplayUpstream, gsm8k_row: dict[str, str]
) -> None:
    prompts = [
        bench.Prompt("gsm8k/test/0", "gsm8k", gsm8k_row["prompt"]),
        bench.Prompt("x", "chatterbot", "Hello"),
    ]
    for stream in (False, True):
        results = asyncio.run(
            bench.send_all(
                gpt4.base_url, prompts, model=GPT4, concurrency=2, stream=stream, timeout_s=30.0
            )
        )
        assert [r.error for r in results] == [None, None]
        assert results[0].completion_tokens == tokens.count_text_tokens(
            gsm8k_row["gpt-4-1106-preview_response"]
        )
        assert results[0].prompt_tokens == expected_prompt_tokens(gsm8k_row["prompt"])


def test_bench_runs_through_gateway_stack(bench: Any, shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("router.app", reason="the gateway package is not importable")
    from tests.support.stack import run_replay_stack

    args = bench.parse_args(["--start-stack", "--count", "60", "--concurrency", "6"])
    with run_replay_stack(REPLAY_STACK, tmp_path) as running:
        summary = bench.run(args, running.gateway_url, running.policy_path, shared_data)
    assert summary["requests"] == 60
    assert summary["errors"] == {}
    assert set(summary["tiers"]) <= {"edge", "mid", "frontier"}
    assert sum(summary["tiers"].values()) == 60
    assert 0 < summary["cost_usd"] <= summary["all_frontier_cost_usd"]
    assert summary["quality"]["prompts_compared"] > 0
