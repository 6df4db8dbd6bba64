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


def token_logprob(token: str) -> dict[str, object]:
    return {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}


RICH_COMPLETION = {
    "object": "chat.completion",
    "id": "c2",
    "created": 2,
    "model": "m",
    "system_fingerprint": "fp_1",
    "service_tier": "default",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello"},
            "logprobs": {"content": [token_logprob("Hel"), token_logprob("lo")], "refusal": None},
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": None, "refusal": "I can't help."},
            "logprobs": {"content": None, "refusal": [token_logprob("I")]},
            "finish_reason": "stop",
        },
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
}


def test_round_trip_keeps_logprobs_refusal_and_fingerprint() -> None:
    assembler = StreamAssembler()
    chunks = completion_to_chunks(RICH_COMPLETION, include_usage=True)
    for chunk in chunks:
        assembler.add(chunk)

    assert assembler.completion() == RICH_COMPLETION
    assert all(chunk["system_fingerprint"] == "fp_1" for chunk in chunks)
    assert all(chunk["service_tier"] == "default" for chunk in chunks)


def test_streamed_logprobs_are_concatenated() -> None:
    assembler = StreamAssembler()
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "system_fingerprint": "fp_2", "obfuscation": "xyz"}
    for piece in ("Hel", "lo"):
        choice = {
            "index": 0,
            "delta": {"content": piece},
            "logprobs": {"content": [token_logprob(piece)], "refusal": None},
            "finish_reason": None,
        }
        assembler.add({**head, "choices": [choice]})
    assembler.add({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    completion = assembler.completion()

    assert completion["system_fingerprint"] == "fp_2"
    assert "obfuscation" not in completion
    choice = completion["choices"][0]
    assert choice["message"]["content"] == "Hello"
    assert choice["logprobs"] == {
        "content": [token_logprob("Hel"), token_logprob("lo")],
        "refusal": None,
    }


def test_delta_fields_assemble_in_any_order() -> None:
    head = {"id": "c", "created": 1, "model": "m"}
    deltas = [
        {"audio": {"id": "a1"}, "content": "Hel", "role": "assistant", "reasoning": "r1"},
        {"refusal": "", "reasoning_content": "t1", "content": "lo", "annotations": []},
        {"reasoning": "r2", "function_call": None, "refusal": "no", "content": None},
    ]
    assembler = StreamAssembler()
    for delta in deltas:
        assembler.add({**head, "choices": [{"index": 0, "delta": delta}]})
    assembler.add({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})

    message = assembler.completion()["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "Hello",
        "reasoning_content": "t1",
        "reasoning": "r1r2",
        "refusal": "no",
    }
    # Only fields with a value count as dropped: the empty list and the null do not.
    assert assembler.dropped_fields == {"audio"}
