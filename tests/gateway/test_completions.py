"""``POST /v1/completions``: the official ``openai`` client against a live gateway, and the
translation functions on their own."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from router.api.completions import (
    DEFAULT_MAX_TOKENS,
    StreamTranslator,
    Translation,
    to_chat_body,
    to_completion,
)
from router.errors import InvalidRequest
from tests.gateway.conftest import GatewayKit, new_api_key, read_file_records
from tests.gateway.live_stack import OpenAIStack, reset_live_stack, run_live_stack
from tests.support.recorded import SCRIPTED_ANSWER

PROMPT = "Say hello in one short sentence."


class LiveStack(OpenAIStack):
    path = "/completions"

    def post(self, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {new_api_key()}"}
        return httpx.post(self.url, json=body, headers=headers, timeout=15)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    yield from run_live_stack(tmp_path_factory, "completions-client", LiveStack)


@pytest.fixture(autouse=True)
def reset_fakes(request: pytest.FixtureRequest) -> None:
    reset_live_stack(request)


# The official client ------------------------------------------------------------------------


def test_text_completion_from_chat_answer(live: LiveStack) -> None:
    raw = live.client().completions.with_raw_response.create(
        model="auto", prompt=PROMPT, max_tokens=200
    )
    completion = raw.parse()

    assert raw.headers["x-tierwise-tier"] == "edge"
    assert raw.headers["x-tierwise-model"] == "edge-small"
    assert raw.headers["x-tierwise-cache"] == "miss"
    assert raw.headers["x-request-id"].startswith("req-")
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.model == "fake-edge"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.text == SCRIPTED_ANSWER
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.logprobs is None
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0


def test_request_reaches_upstream_as_chat_body(live: LiveStack) -> None:
    live.client().completions.create(
        model="auto",
        prompt=[PROMPT],
        max_tokens=64,
        temperature=0.5,
        top_p=0.9,
        stop=["\n\n"],
        seed=7,
        user="user-7",
        presence_penalty=0.1,
        extra_body={"top_k": 20},
    )

    received = live.fakes["edge"].requests[0].body
    assert received["messages"] == [{"role": "user", "content": PROMPT}]
    assert received["model"] == "fake-edge"
    assert received["max_tokens"] == 64
    assert received["temperature"] == 0.5
    assert received["top_p"] == 0.9
    assert received["stop"] == ["\n\n"]
    assert received["seed"] == 7
    assert received["user"] == "user-7"
    assert received["presence_penalty"] == 0.1
    assert received["top_k"] == 20
    assert "prompt" not in received
    assert "echo" not in received


def test_max_tokens_defaults_to_sixteen(live: LiveStack) -> None:
    completion = live.client().completions.create(model="auto", prompt=PROMPT)

    assert live.fakes["edge"].requests[0].body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == DEFAULT_MAX_TOKENS
    assert SCRIPTED_ANSWER.startswith(completion.choices[0].text)


def test_echo_puts_prompt_first(live: LiveStack) -> None:
    completion = live.client().completions.create(
        model="auto", prompt=PROMPT, echo=True, max_tokens=200
    )

    assert completion.choices[0].text == PROMPT + SCRIPTED_ANSWER


def test_several_choices(live: LiveStack) -> None:
    completion = live.client().completions.create(model="auto", prompt=PROMPT, n=2, max_tokens=200)

    assert [choice.index for choice in completion.choices] == [0, 1]
    assert [choice.text for choice in completion.choices] == [SCRIPTED_ANSWER, SCRIPTED_ANSWER]
    assert live.fakes["edge"].requests[0].body["n"] == 2


def test_stream_chunks_assemble_text(live: LiveStack) -> None:
    stream = live.client().completions.create(
        model="auto", prompt=PROMPT, stream=True, max_tokens=200,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert all(chunk.object == "text_completion" for chunk in chunks)
    assert all(chunk.id.startswith("cmpl-") for chunk in chunks)
    text_chunks = [chunk for chunk in chunks if chunk.choices]
    assert "".join(chunk.choices[0].text for chunk in text_chunks) == SCRIPTED_ANSWER
    assert text_chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.choices[0].finish_reason is None for chunk in text_chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    received = live.fakes["edge"].requests[0].body
    assert received["stream"] is True


def test_stream_ends_with_done(live: LiveStack) -> None:
    headers = {"Authorization": f"Bearer {new_api_key()}"}
    body = {"model": "auto", "prompt": PROMPT, "stream": True, "echo": True, "max_tokens": 200}
    with httpx.stream("POST", live.url, json=body, headers=headers, timeout=15) as response:
        lines = [line for line in response.iter_lines() if line]

    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    payloads = [json.loads(line[5:]) for line in lines[:-1] if line.startswith("data:")]
    text = "".join(choice["text"] for payload in payloads for choice in payload["choices"])
    assert text == PROMPT + SCRIPTED_ANSWER
    assert payloads[0]["choices"][0]["text"].startswith(PROMPT)


def test_second_request_is_cache_hit(live: LiveStack) -> None:
    client = live.client()
    first = client.completions.with_raw_response.create(
        model="auto", prompt="Name a prime number.", max_tokens=200, temperature=0
    )
    second = client.completions.with_raw_response.create(
        model="auto", prompt="Name a prime number.", max_tokens=200, temperature=0
    )

    assert first.headers["x-tierwise-cache"] == "miss"
    assert second.headers["x-tierwise-cache"] == "hit"
    assert second.parse().choices[0].text == first.parse().choices[0].text
    assert len(live.fakes["edge"].requests) == 1


def test_outcome_is_recorded(live: LiveStack) -> None:
    raw = live.client().completions.with_raw_response.create(
        model="auto", prompt="Record this completion.", max_tokens=200
    )
    request_id = raw.headers["x-request-id"]

    records: list[dict[str, Any]] = []
    for _ in range(100):
        records = [r for r in read_file_records(live.gateway.runtime.outcomes.path)
                   if r.get("request_id") == request_id]
        if records:
            break
        time.sleep(0.1)
    assert len(records) == 1
    assert records[0]["api"] == "completions"
    assert records[0]["tier"] == "edge"
    assert records[0]["status"] == 200
    assert records[0]["tokens_out"] > 0


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "auto"}, "prompt", "Missing required parameter: 'prompt'"),
        ({"prompt": PROMPT}, "model", "Missing required parameter: 'model'"),
        ({"model": "auto", "prompt": ["one", "two"]}, "prompt", "2 strings is not supported"),
        ({"model": "auto", "prompt": [1, 2, 3]}, "prompt", "token ids is not supported"),
        ({"model": "auto", "prompt": [[1, 2], [3]]}, "prompt", "token ids is not supported"),
        ({"model": "auto", "prompt": []}, "prompt", "expected a string or a list of one string"),
        ({"model": "auto", "prompt": {"text": "x"}}, "prompt", "expected a string"),
        ({"model": "auto", "prompt": PROMPT, "suffix": "end"}, "suffix", "insertion"),
        ({"model": "auto", "prompt": PROMPT, "logprobs": 2}, "logprobs", "/v1/chat/completions"),
        ({"model": "auto", "prompt": PROMPT, "best_of": 3}, "best_of", "equal to 'n'"),
        ({"model": "auto", "prompt": PROMPT, "max_tokens": 0}, "max_tokens", "Invalid value"),
        ({"model": "auto", "prompt": PROMPT, "max_tokens": "5"}, "max_tokens",
         "Invalid value for 'max_tokens': Input should be a valid integer."),
        ({"model": "auto", "prompt": PROMPT, "max_tokens": 5.0}, "max_tokens",
         "Invalid value for 'max_tokens': Input should be a valid integer."),
        ({"model": "auto", "prompt": PROMPT, "stream": "true"}, "stream",
         "Invalid value for 'stream': Input should be a valid boolean."),
        ({"model": "auto", "prompt": PROMPT, "n": 1.0}, "n",
         "Invalid value for 'n': Input should be a valid integer."),
        # Forwarded to the chat body, whose validation names them.
        ({"model": "auto", "prompt": PROMPT, "top_p": "1"}, "top_p",
         "Invalid value for 'top_p': Input should be a valid number."),
        ({"model": "auto", "prompt": PROMPT, "seed": "1"}, "seed",
         "Invalid value for 'seed': Input should be a valid integer."),
        ({"model": "auto", "prompt": PROMPT, "echo": "yes"}, "echo", "Invalid value"),
        ({"model": "auto", "prompt": PROMPT, "temperature": 3}, "temperature", "Invalid value"),
        ({"model": "auto", "messages": []}, "messages", "Send 'prompt'"),
        ({"model": "auto", "prompt": PROMPT, "tools": [{"type": "function", "function": {"name": "f"}}]},
         "tools", "/v1/chat/completions"),
        ({"model": "auto", "prompt": PROMPT, "tool_choice": "auto"}, "tool_choice", "tool call"),
        ({"model": "auto", "prompt": PROMPT, "stream_options": {"include_usage": True}},
         "stream_options", "only when 'stream' is true"),
    ],
)
def test_invalid_request_is_400(live: LiveStack, body: dict[str, Any], param: str, fragment: str) -> None:
    response = live.post(body)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    assert response.headers["x-request-id"].startswith("req-")
    assert all(not fake.requests for fake in live.fakes.values())


async def test_context_error_names_prompt(kit: GatewayKit) -> None:
    windows = {"edge": 1024, "mid": 1024, "frontier": 2048}
    async with kit.running(context_windows=windows) as gateway:
        response = await gateway.client.post(
            "/v1/completions",
            json={"model": "auto", "prompt": "lorem " * 3000},
            headers={"Authorization": f"Bearer {gateway.api_key}"},
        )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "prompt"
    assert error["code"] == "context_length_exceeded"


def test_unknown_model_is_404(live: LiveStack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        live.client().completions.create(model="no-such-model", prompt=PROMPT)

    assert caught.value.body is not None
    assert "no-such-model" in str(caught.value.body)


def test_client_errors_keep_openai_shape(live: LiveStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        live.client().completions.create(model="auto", prompt=PROMPT, best_of=2)

    assert caught.value.param == "best_of"
    assert caught.value.code == "unsupported_parameter"


# The translation on its own -------------------------------------------------------------------


def test_null_fields_take_defaults() -> None:
    translation = to_chat_body(
        {"model": "auto", "prompt": "x", "max_tokens": None, "echo": None, "stream": None,
         "suffix": None, "logprobs": None, "best_of": None, "n": None, "stream_options": None}
    )

    assert translation.body == {
        "model": "auto",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    assert translation.echo is None


def test_best_of_equal_to_n_is_accepted() -> None:
    translation = to_chat_body({"model": "auto", "prompt": "x", "n": 3, "best_of": 3})

    assert translation.body["n"] == 3
    assert "best_of" not in translation.body


def test_empty_suffix_is_accepted() -> None:
    assert to_chat_body({"model": "auto", "prompt": "x", "suffix": ""}).body["messages"][0]["content"] == "x"


def test_boolean_prompt_items_are_not_token_ids() -> None:
    with pytest.raises(InvalidRequest, match="expected a string"):
        to_chat_body({"model": "auto", "prompt": [True, False]})


def test_completion_keeps_fingerprint_and_id() -> None:
    completion = {
        "id": "chatcmpl-abc",
        "created": 1,
        "model": "m",
        "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }

    result = to_completion(completion, Translation({}, "Q: "))

    assert result["id"] == "cmpl-abc"
    assert result["system_fingerprint"] == "fp_1"
    assert result["choices"] == [{"text": "Q: Hi", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert result["usage"]["total_tokens"] == 2


def test_completion_with_null_content() -> None:
    completion = {"id": "x", "choices": [{"index": 0, "message": {"content": None}, "finish_reason": "stop"}]}

    assert to_completion(completion, Translation({}))["choices"][0]["text"] == ""


def test_stream_translator_drops_role_chunk() -> None:
    translator = StreamTranslator(Translation({}))
    role = {"id": "chatcmpl-1", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}

    assert translator.translate(b"data: " + json.dumps(role).encode() + b"\n\n") == b""
    assert translator.translate(b": keep-alive\n\n") == b": keep-alive\n\n"
    assert translator.translate(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"


def test_stream_translator_passes_error() -> None:
    translator = StreamTranslator(Translation({}))
    error = {"error": {"message": "upstream failed", "type": "upstream_error", "param": None, "code": None}}

    out = translator.translate(b"data: " + json.dumps(error).encode() + b"\n\n")

    assert json.loads(out[5:]) == error
