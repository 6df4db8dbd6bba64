"""Property tests: arbitrary JSON bodies and arbitrary policy files never crash anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from router.api.chat import parse_chat_request
from router.api.responses_format import to_chat_body
from router.api.responses_output import to_response
from router.api.responses_stream import StreamTranslator
from router.errors import GatewayError
from router.policy.loader import PolicyError, parse_policy

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)

message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "bogus"])},
    optional={
        "content": st.none() | st.text(max_size=50) | st.lists(json_values, max_size=3),
        "tool_calls": json_values,
        "tool_call_id": json_values,
    },
)

chat_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values | st.just("auto"),
        "messages": st.lists(message, max_size=3) | json_values,
        "temperature": json_values,
        "n": json_values,
        "stream": json_values,
        "stream_options": json_values,
        "max_tokens": json_values,
        "tools": json_values,
        "response_format": json_values,
    },
)


@given(body=chat_bodies)
@settings(max_examples=400, deadline=None)
def test_request_parsing_raises_only_gateway_errors(body: dict[str, Any]) -> None:
    try:
        parse_chat_request(body)
    except GatewayError as exc:
        assert exc.status == 400
        assert exc.message


content_part = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text", "input_image", "input_file", "refusal", "x"])},
    optional={
        "text": json_values,
        "image_url": json_values,
        "file_id": json_values,
        "file_data": json_values,
        "detail": json_values,
        "refusal": json_values,
    },
)

input_item = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            ["message", "function_call", "function_call_output", "reasoning", "item_reference"]
        ) | json_values,
        "role": st.sampled_from(["user", "system", "developer", "assistant", "tool"]) | json_values,
        "content": st.text(max_size=20) | st.lists(content_part, max_size=3) | json_values,
        "call_id": json_values | st.just("call_1"),
        "name": json_values | st.just("f"),
        "arguments": json_values | st.just("{}"),
        "output": json_values | st.lists(content_part, max_size=2),
    },
)

responses_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values | st.just("auto"),
        "input": st.lists(input_item, max_size=4) | json_values,
        "instructions": json_values,
        "tools": st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["function", "web_search"]) | json_values},
                optional={"name": json_values, "parameters": json_values, "strict": json_values},
            ),
            max_size=2,
        ) | json_values,
        "tool_choice": json_values | st.just({"type": "function", "name": "f"}),
        "text": json_values | st.just({"format": {"type": "json_object"}}),
        "metadata": json_values,
        "max_output_tokens": json_values,
        "previous_response_id": json_values,
    },
)


@given(body=responses_bodies)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_responses_translation_raises_only_gateway_errors(body: dict[str, Any]) -> None:
    try:
        parse_chat_request(to_chat_body(body).body)
    except GatewayError as exc:
        assert exc.status == 400
        assert exc.message


answer_message = st.dictionaries(
    st.sampled_from(["content", "refusal", "tool_calls"]),
    json_values | st.lists(json_values | st.dictionaries(st.just("function"), json_values)),
)

# The dispatcher passes on only completions with a non-empty list of objects as choices.
completions = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.dictionaries(
                st.sampled_from(["message", "finish_reason", "index"]),
                json_values | answer_message,
            ),
            min_size=1,
            max_size=2,
        )
    },
    optional={"usage": json_values, "model": json_values, "created": json_values},
)


@given(completion=completions)
@settings(max_examples=300, deadline=None)
def test_responses_answer_translation_never_raises(completion: dict[str, Any]) -> None:
    translation = to_chat_body({"model": "auto", "input": "Hi"})
    response = to_response(completion, translation)

    assert response["object"] == "response"


stream_chunks = st.lists(
    st.dictionaries(
        st.sampled_from(["choices", "usage", "model", "created"]),
        json_values
        | st.lists(
            st.dictionaries(
                st.sampled_from(["index", "delta", "finish_reason"]),
                json_values
                | st.dictionaries(
                    st.sampled_from(["content", "refusal", "tool_calls"]),
                    json_values
                    | st.lists(
                        st.dictionaries(st.sampled_from(["index", "id", "function"]), json_values)
                    ),
                ),
            ),
            max_size=2,
        ),
    ),
    max_size=6,
)


@given(chunks=stream_chunks)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_responses_stream_translation_never_raises(chunks: list[dict[str, Any]]) -> None:
    translator = StreamTranslator(to_chat_body({"model": "auto", "input": "Hi"}))
    for chunk in chunks:
        try:
            event = b"data: " + orjson.dumps(chunk) + b"\n\n"
        except TypeError:
            # Integers beyond 64 bits, which the gateway's own orjson encoding never sends.
            assume(False)
        translator.translate(event)
    end = translator.translate(b"data: [DONE]\n\n")

    assert b"event: response.completed" in end or b"event: response.incomplete" in end


@given(document=st.dictionaries(st.sampled_from(["version", "tiers", "routing", "cache", "aliases", "x"]), json_values, max_size=5))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_policy_loader_raises_only_policy_errors(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document)
    try:
        parse_policy(text, Path("fuzz.yaml"))
    except PolicyError as exc:
        assert exc.problems
        assert all(problem.startswith("fuzz.yaml") for problem in exc.problems)


@given(text=st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_policy_loader_survives_arbitrary_text(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text, Path("fuzz.yaml"))
