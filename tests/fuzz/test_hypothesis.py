"""Property tests: arbitrary JSON bodies and arbitrary policy files never crash anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.api.chat import parse_chat_request
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
