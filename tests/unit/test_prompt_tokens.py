"""Prompt token counts of one-message requests, whatever mapping type holds the message."""

from __future__ import annotations

import pytest

from router.routing.tokens import count_prompt_tokens


class OtherDict(dict):  # type: ignore[type-arg]
    """A dict subclass, which must be counted like a plain dict."""


MESSAGES = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "user", "content": "Größe: 5 × 3 = 15 ✓"},
    {"role": "user", "content": ""},
    {"role": "user", "content": [{"type": "text", "text": "parts"}]},
    {"role": "assistant", "content": "call", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]},
    {"role": "user", "content": "text", "tool_calls": "not a list"},
    {"role": "user", "content": None},
]


@pytest.mark.parametrize("message", MESSAGES)
@pytest.mark.parametrize("fits_below", [0, 5, 128_000])
def test_single_message_count_ignores_type(message: dict[str, object], fits_below: int) -> None:
    expected = count_prompt_tokens([OtherDict(message)], fits_below=fits_below)
    assert count_prompt_tokens([message], fits_below=fits_below) == expected
