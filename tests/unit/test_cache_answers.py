"""Which completions the cache stores, and which it replays as a stream."""

from __future__ import annotations

from typing import Any

import pytest

from router.cache.answers import is_whole_answer, replays_as_stream
from router.upstream.sse import StreamAssembler, completion_to_chunks


def completion(*messages: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "choices": [
            {"index": index, "message": {"role": "assistant", **message}, "finish_reason": finish}
            for index, message in enumerate(messages)
        ],
    }


TOOL_CALL = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    "answer",
    [
        completion({"content": "Paris."}),
        completion({"content": "Par"}, finish="length"),
        completion({"content": None, "tool_calls": [TOOL_CALL]}, finish="tool_calls"),
        completion({"content": None, "refusal": "I can't help with that."}),
        completion({"content": None, "audio": {"id": "a1", "data": "UklGRg=="}}),
    ],
    ids=["text", "length", "tool_calls", "refusal", "audio"],
)
def test_whole_answer_accepted(answer: dict[str, Any]) -> None:
    assert is_whole_answer(answer, 1)


@pytest.mark.parametrize(
    ("answer", "choices_requested"),
    [
        (completion({"content": "Par"}, finish="content_filter"), 1),
        (completion({"content": "Paris."}, finish="function_call"), 1),
        ({"choices": [{"index": 0, "message": {"content": "Paris."}, "finish_reason": None}]}, 1),
        (completion({"content": ""}), 1),
        (completion({"content": None, "tool_calls": []}), 1),
        (completion({"content": "", "reasoning_content": "thinking"}, finish="length"), 1),
        (completion({"content": "Paris."}), 2),
        (completion({"content": "Paris."}, {"content": ""}), 2),
        ({"choices": []}, 1),
        ({"error": {"message": "boom"}}, 1),
        ({"choices": [{"index": 0, "finish_reason": "stop"}]}, 1),
    ],
    ids=["content_filter", "function_call", "no_finish_reason", "empty_text", "empty_tool_calls",
         "reasoning_only", "missing_choice", "one_empty_choice", "no_choices", "error_body",
         "no_message"],
)
def test_partial_answer_rejected(answer: dict[str, Any], choices_requested: int) -> None:
    assert not is_whole_answer(answer, choices_requested)


def test_plain_answer_replays_as_stream() -> None:
    answer = completion({"content": "Paris.", "refusal": None, "annotations": [], "audio": None,
                         "function_call": None, "tool_calls": []})
    assert replays_as_stream(answer)


@pytest.mark.parametrize(
    "message",
    [
        {"content": None, "audio": {"id": "a1", "data": "UklGRg==", "transcript": "Paris."}},
        {"content": "Paris.", "annotations": [{"type": "url_citation"}]},
        {"content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"content": [{"type": "text", "text": "Paris."}]},
    ],
    ids=["audio", "annotations", "function_call", "content_parts"],
)
def test_lossy_answer_not_replayed(message: dict[str, Any]) -> None:
    assert not replays_as_stream(completion(message))


def test_assembler_lists_dropped_fields() -> None:
    assembler = StreamAssembler()
    assembler.add({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "",
                                                       "audio": {"id": "a1", "data": "UklG"}}}]})
    assembler.add({"choices": [{"index": 0, "delta": {"annotations": [], "function_call": None},
                                "finish_reason": "stop"}]})
    assert assembler.dropped_fields == {"audio"}


def test_replayed_chunks_drop_nothing() -> None:
    answer = completion({"content": "Paris.", "reasoning_content": "think"},
                        {"content": None, "tool_calls": [TOOL_CALL]})
    assembler = StreamAssembler()
    for chunk in completion_to_chunks(answer, include_usage=False):
        assembler.add(chunk)
    assert assembler.dropped_fields == set()
    assert is_whole_answer(assembler.completion(), 2)
