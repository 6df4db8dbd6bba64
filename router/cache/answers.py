"""Which chat completions the cache may store, and which it may replay as a stream.

An entry is served in place of the upstream, so it must be an answer that the same request
could get as it is: each of the ``n`` requested choices, each ended by a finish reason that
ends an answer, and each with some output. A content filter's stop, an error, a choice the
upstream left out and an empty message are left to the next request instead.
"""

from __future__ import annotations

from typing import Any

from router.upstream.sse import STREAMED_MESSAGE_FIELDS, is_set

# Finish reasons of a whole answer. "length" is one too, because the output-token limit that
# cut it is part of the cache key. The deprecated "function_call" is left out.
CACHED_FINISH_REASONS = frozenset({"stop", "tool_calls", "length"})


def is_whole_answer(completion: dict[str, Any], choices_requested: int) -> bool:
    """Tell whether ``completion`` contains choices 0 to ``choices_requested - 1``, each whole."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    indexes = set()
    for choice in choices:
        if not isinstance(choice, dict):
            return False
        if choice.get("finish_reason") not in CACHED_FINISH_REASONS:
            return False
        message = choice.get("message")
        if not isinstance(message, dict) or not _has_output(message):
            return False
        indexes.add(choice.get("index", 0))
    return indexes.issuperset(range(choices_requested))


def replays_as_stream(completion: dict[str, Any]) -> bool:
    """Tell whether the chunks replayed for ``completion`` carry every part of its messages.

    A message with text content parts, audio, annotations, a ``function_call`` or another
    field that the replay has no delta for would lose it in a stream.
    """
    for choice in completion.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            return False
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            return False
        if any(is_set(value) for name, value in message.items()
               if name not in STREAMED_MESSAGE_FIELDS):
            return False
    return True


def _has_output(message: dict[str, Any]) -> bool:
    """Tell whether an answer's message has text, a refusal, tool calls or audio."""
    return any(
        is_set(message.get(name)) for name in ("content", "refusal", "tool_calls", "audio")
    )
