"""Conversions between streamed chunks, whole completions and SSE bytes.

A streamed answer is assembled into one completion so that it can be cached, and a cached
completion is replayed as chunks, so both request styles share one cache entry.
"""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def encode_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


# Top-level chunk fields that the assembled completion's head leaves out. The choices and
# usage are assembled separately, and ``obfuscation`` is random padding that OpenAI adds to
# each chunk.
_CHUNK_ONLY_FIELDS = frozenset({"object", "choices", "usage", "obfuscation"})

# Text fields of the model's reasoning, which streams send in pieces like the content.
# DeepSeek and llama.cpp name it reasoning_content, OpenRouter names it reasoning.
REASONING_FIELDS = ("reasoning_content", "reasoning")

# Message fields that StreamAssembler joins from deltas and completion_to_chunks replays as
# deltas.
STREAMED_MESSAGE_FIELDS = frozenset({"role", "content", "refusal", "tool_calls", *REASONING_FIELDS})


def is_set(value: Any) -> bool:
    """Tell whether a message field's ``value`` is more than a null or an empty string, list or object."""
    return value is not None and value != "" and value != [] and value != {}


class StreamAssembler:
    """Accumulates chunks into the equivalent non-streaming completion.

    The completion keeps everything a cache hit replays: content, reasoning, refusal, tool
    calls, log probabilities, and the first chunk's top-level fields such as
    ``system_fingerprint`` and ``service_tier``.
    """

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.usage: dict[str, Any] | None = None
        self.dropped_fields: set[str] = set()
        """Names of delta fields with a value that the completion leaves out, such as
        ``audio``, ``annotations`` or ``function_call``."""
        self._choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        if not self.head:
            self.head = {k: v for k, v in chunk.items() if k not in _CHUNK_ONLY_FIELDS}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            self._add_choice(choice)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = {
                "content": [], "reasoning": {name: [] for name in REASONING_FIELDS},
                "refusal": [], "tools": {}, "finish": None, "logprobs": None,
            }
        delta = choice.get("delta") or {}
        # One pass over the delta's few fields, each field kept in its own list, so the
        # order of the fields within a delta does not matter.
        for name, value in delta.items():
            if name not in STREAMED_MESSAGE_FIELDS:
                if is_set(value):
                    self.dropped_fields.add(name)
            elif not value or name == "role":
                continue
            elif name == "content" or name == "refusal":
                state[name].append(value)
            elif name == "tool_calls":
                for call in value:
                    self._add_tool_call(state["tools"], call)
            else:
                state["reasoning"][name].append(value)
        logprobs = choice.get("logprobs")
        if logprobs:
            self._add_logprobs(state, logprobs)
        if choice.get("finish_reason"):
            state["finish"] = choice["finish_reason"]

    @staticmethod
    def _add_logprobs(state: dict[str, Any], logprobs: dict[str, Any]) -> None:
        """Append a chunk's token log probabilities to the choice's ``content`` and ``refusal`` lists."""
        merged = state["logprobs"]
        if merged is None:
            merged = state["logprobs"] = {"content": None, "refusal": None}
        for key in ("content", "refusal"):
            tokens = logprobs.get(key)
            if tokens:
                merged[key] = (merged[key] or []) + list(tokens)

    @staticmethod
    def _add_tool_call(tools: dict[int, dict[str, Any]], call: dict[str, Any]) -> None:
        slot = tools.setdefault(
            call.get("index", 0), {"id": None, "type": "function", "name": "", "arguments": []}
        )
        if call.get("id"):
            slot["id"] = call["id"]
        function = call.get("function") or {}
        if function.get("name"):
            slot["name"] += function["name"]
        if function.get("arguments"):
            slot["arguments"].append(function["arguments"])

    @property
    def finished(self) -> bool:
        """Whether every choice seen so far has a finish reason."""
        return bool(self._choices) and all(c["finish"] for c in self._choices.values())

    def finished_all(self, n: int) -> bool:
        """Tell whether choices 0 to ``n - 1`` have each arrived with a finish reason.

        ``finished`` alone passes a stream that never sent one of the ``n`` requested choices.
        """
        return self.finished and all(
            index in self._choices and self._choices[index]["finish"] for index in range(n)
        )

    def completion(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {"role": "assistant", "content": "".join(state["content"])}
            for name, pieces in state["reasoning"].items():
                if pieces:
                    message[name] = "".join(pieces)
            if state["refusal"]:
                message["refusal"] = "".join(state["refusal"])
            if state["tools"]:
                message["tool_calls"] = [
                    {
                        "id": slot["id"],
                        "type": slot["type"],
                        "function": {"name": slot["name"], "arguments": "".join(slot["arguments"])},
                    }
                    for _, slot in sorted(state["tools"].items())
                ]
            if not message["content"] and (state["tools"] or state["refusal"]):
                message["content"] = None
            choice: dict[str, Any] = {"index": index, "message": message}
            if state["logprobs"] is not None:
                choice["logprobs"] = state["logprobs"]
            choice["finish_reason"] = state["finish"]
            choices.append(choice)
        completion = {"object": "chat.completion", **self.head, "choices": choices}
        if self.usage is not None:
            completion["usage"] = self.usage
        return completion


def completion_to_chunks(completion: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """Render a whole completion as the chunks a streaming upstream would have sent.

    Top-level fields besides the choices and usage (``system_fingerprint``, ``service_tier``)
    appear on every chunk, as OpenAI streams them.
    """
    head = {
        "id": completion.get("id", ""),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }
    for key, value in completion.items():
        if key not in head and key not in _CHUNK_ONLY_FIELDS:
            head[key] = value
    chunks: list[dict[str, Any]] = []
    for choice in completion.get("choices", ()):
        chunks.extend(_choice_chunks(head, choice))
    if include_usage:
        chunks.append({**head, "choices": [], "usage": completion.get("usage")})
    return chunks


def _choice_chunks(head: dict[str, Any], choice: dict[str, Any]) -> list[dict[str, Any]]:
    index = choice.get("index", 0)
    message = choice.get("message") or {}
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    for name in REASONING_FIELDS:
        if message.get(name):
            deltas.append({name: message[name]})
    if message.get("content"):
        deltas.append({"content": message["content"]})
    if message.get("refusal"):
        deltas.append({"refusal": message["refusal"]})
    for position, call in enumerate(message.get("tool_calls") or ()):
        deltas.append({"tool_calls": [{"index": position, **call}]})
    chunks = [
        {**head, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}
        for delta in deltas
    ]
    finish = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"}
    chunks.append({**head, "choices": [finish]})
    logprobs = choice.get("logprobs")
    if logprobs:
        # All of the choice's token log probabilities go on the chunk after the role chunk,
        # which carries the reasoning, content or refusal text when there is any.
        chunks[1]["choices"][0]["logprobs"] = logprobs
    return chunks
