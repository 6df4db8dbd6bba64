"""Request bodies of the maximum accepted size, one per shape that a client can send.

Each builder fills one list, string or object of an otherwise small request until the
serialized body is just under ``limit`` bytes, so the gateway reads it in full. The shapes
are valid requests unless the name says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

DEFAULT_LIMIT = 4 * 1024 * 1024
"""TIERWISE_MAX_BODY_BYTES's default, in bytes."""


def _fill(limit: int, base: dict[str, Any], place: Callable[[dict[str, Any], list[Any]], None],
          item: Any) -> bytes:
    """Return ``base`` with as many copies of ``item`` as fit in ``limit`` bytes.

    ``place`` puts the list of items into a copy of ``base``.
    """
    empty = dict(base)
    place(empty, [])
    fixed = len(orjson.dumps(empty))
    per_item = len(orjson.dumps(item)) + 1
    count = max(1, (limit - fixed - 16) // per_item)
    body = dict(base)
    place(body, [item] * count)
    return orjson.dumps(body)


def _set(key: str) -> Callable[[dict[str, Any], list[Any]], None]:
    def place(body: dict[str, Any], items: list[Any]) -> None:
        body[key] = items
    return place


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}


def tiny_messages(limit: int) -> bytes:
    return _fill(limit, _chat(), _set("messages"), {"role": "user", "content": "hi"})


def huge_string(limit: int) -> bytes:
    fixed = len(orjson.dumps(_chat()))
    text = "lorem ipsum dolor sit amet " * ((limit - fixed) // 27)
    return orjson.dumps(_chat(messages=[{"role": "user", "content": text[: limit - fixed - 16]}]))


def content_parts(limit: int) -> bytes:
    def place(body: dict[str, Any], parts: list[Any]) -> None:
        body["messages"] = [{"role": "user", "content": parts or [{"type": "text", "text": "hi"}]}]
    return _fill(limit, _chat(), place, {"type": "text", "text": "hi"})


def many_tools(limit: int) -> bytes:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    return _fill(limit, _chat(), _set("tools"), tool)


def many_tool_calls(limit: int) -> bytes:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}

    def place(body: dict[str, Any], calls: list[Any]) -> None:
        body["messages"] = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": calls or [call]},
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ]
    return _fill(limit, _chat(), place, call)


def long_stop(limit: int) -> bytes:
    return _fill(limit, _chat(), _set("stop"), "x")


def logit_bias(limit: int) -> bytes:
    fixed = len(orjson.dumps(_chat(logit_bias={})))
    count = (limit - fixed - 16) // len('"1000000":1,')
    return orjson.dumps(_chat(logit_bias={str(1000000 + i): 1 for i in range(count)}))


def metadata_keys(limit: int) -> bytes:
    fixed = len(orjson.dumps(_chat(metadata={})))
    count = (limit - fixed - 16) // len('"k1000000":"v",')
    return orjson.dumps(_chat(metadata={f"k{1000000 + i}": "v" for i in range(count)}))


def deep_brackets(limit: int) -> bytes:
    """A valid body with many empty lists in one message's extra field, under the depth limit."""
    def place(body: dict[str, Any], items: list[Any]) -> None:
        body["messages"] = [{"role": "user", "content": "hi", "x": items}]
    return _fill(limit, _chat(), place, [[]])


def invalid_last_message(limit: int) -> bytes:
    """Many valid messages and an invalid last one: validation fails at the end."""
    body = orjson.loads(tiny_messages(limit - 64))
    body["messages"].append({"role": "user"})
    return orjson.dumps(body)


def anthropic_messages(limit: int) -> bytes:
    base = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    # Alternating turns, because each Anthropic user message becomes one chat message.
    pair = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    body = orjson.loads(_fill(limit, base, _set("messages"), pair))
    body["messages"] = [turn for turns in body["messages"] for turn in turns] + [pair[0]]
    return orjson.dumps(body)


def responses_input(limit: int) -> bytes:
    base = {"model": "auto", "input": "hi"}
    return _fill(limit, base, _set("input"), {"role": "user", "content": "hi"})


def embedding_inputs(limit: int) -> bytes:
    """2,048 string inputs, the most that OpenAI's API and the gateway accept."""
    fixed = len(orjson.dumps({"model": "embed", "input": []}))
    text = "hi " * ((limit - fixed) // 2048 // 3 - 2)
    return orjson.dumps({"model": "embed", "input": [text] * 2048})


def embedding_tokens(limit: int) -> bytes:
    """One input given as a token array."""
    return _fill(limit, {"model": "embed", "input": [1]}, _set("input"), 1000)


CHAT_SHAPES: dict[str, Callable[[int], bytes]] = {
    "tiny_messages": tiny_messages,
    "huge_string": huge_string,
    "content_parts": content_parts,
    "many_tools": many_tools,
    "many_tool_calls": many_tool_calls,
    "long_stop": long_stop,
    "logit_bias": logit_bias,
    "metadata_keys": metadata_keys,
    "deep_brackets": deep_brackets,
    "invalid_last_message": invalid_last_message,
}
SHAPES: dict[str, tuple[str, Callable[[int], bytes]]] = {
    **{name: ("/v1/chat/completions", build) for name, build in CHAT_SHAPES.items()},
    "anthropic_messages": ("/v1/messages", anthropic_messages),
    "responses_input": ("/v1/responses", responses_input),
    "embedding_inputs": ("/v1/embeddings", embedding_inputs),
    "embedding_tokens": ("/v1/embeddings", embedding_tokens),
}
"""Each shape's endpoint and builder."""
