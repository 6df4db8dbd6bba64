"""Stream assembly and replay: a completion survives the round trip through chunks."""

from __future__ import annotations

from router.upstream.sse import StreamAssembler, completion_to_chunks

COMPLETION = {
    "object": "chat.completion",
    "id": "c1",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello", "reasoning_content": "think"},
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            "finish_reason": "tool_calls",
        },
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


def test_replayed_chunks_assemble_to_the_same_completion() -> None:
    assembler = StreamAssembler()
    for chunk in completion_to_chunks(COMPLETION, include_usage=True):
        assembler.add(chunk)
    assert assembler.completion() == COMPLETION
    assert assembler.finished


def test_usage_chunk_is_last_and_only_when_asked() -> None:
    with_usage = completion_to_chunks(COMPLETION, include_usage=True)
    assert with_usage[-1]["choices"] == []
    assert with_usage[-1]["usage"] == COMPLETION["usage"]
    assert sum(1 for c in with_usage if "usage" in c) == 1
    without = completion_to_chunks(COMPLETION, include_usage=False)
    assert all("usage" not in c for c in without)


def test_tool_call_arguments_are_joined_across_chunks() -> None:
    assembler = StreamAssembler()
    head = {"id": "c", "created": 1, "model": "m"}
    for piece in ('{"a"', ": 1}"):
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        assembler.add({**head, "choices": [{"index": 0, "delta": delta}]})
    assembler.add({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    message = assembler.completion()["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    assert message["content"] is None
