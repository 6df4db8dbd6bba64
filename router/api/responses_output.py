"""``response`` objects and their parts, built from an OpenAI chat completion.

:func:`to_response` translates a whole completion for ``POST /v1/responses``, and
:mod:`router.api.responses_stream` builds the same objects while it translates a stream.

Response mapping: the first choice's ``reasoning_content`` (which DeepSeek, vLLM and
llama.cpp servers send for reasoning models) becomes a ``reasoning`` item with a
``reasoning_text`` part, its text and refusal one ``message`` item, and each tool call a
``function_call`` item.  A ``length`` or ``content_filter`` finish makes the response
``incomplete``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from router.api.responses_format import Translation
from router.api.translated import content_text


def to_response(completion: dict[str, Any], translation: Translation) -> dict[str, Any]:
    """Translate an OpenAI chat completion (its first choice) into a ``response`` object.

    Fields of the wrong type, which a faulty upstream can send, count as absent.
    """
    choice = _object((completion.get("choices") or [{}])[0])
    message = _object(choice.get("message"))
    status, incomplete_reason = response_status(choice.get("finish_reason"))

    output: list[dict[str, Any]] = []
    item_status = "completed" if status == "completed" else "incomplete"
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(reasoning, item_status))
    content: list[dict[str, Any]] = []
    text = content_text(message.get("content"))
    if text:
        content.append(output_text_part(text))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "refusal", "refusal": refusal})
    if content:
        output.append(message_item(content, item_status))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        fields = _object(call)
        function = _object(fields.get("function"))
        item = function_call_item(fields.get("id"), function.get("name"))
        arguments = function.get("arguments")
        item["arguments"] = arguments if isinstance(arguments, str) else ""
        item["status"] = item_status
        output.append(item)

    model = completion.get("model")
    return response_object(
        translation,
        response_id=new_id("resp"),
        created_at=created_at(completion.get("created")),
        model=model if isinstance(model, str) else "",
        status=status,
        output=output,
        usage=responses_usage(completion.get("usage")),
        incomplete_reason=incomplete_reason,
    )


def response_object(
    translation: Translation,
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a ``response`` object; ``completed_at`` is set when ``status`` is completed."""
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "model": model,
        "output": output,
        "usage": usage,
        **translation.echo,
    }
    if status == "completed":
        body["completed_at"] = int(time.time())
    return body


def response_status(finish_reason: Any) -> tuple[str, str | None]:
    """Return the response ``status`` and incomplete reason for a chat ``finish_reason``."""
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def message_item(content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def reasoning_item(text: str, status: str) -> dict[str, Any]:
    """Build a ``reasoning`` item whose one ``reasoning_text`` part contains ``text``.

    Its ``summary`` is empty, because chat completions carry no reasoning summary.
    """
    return {
        "id": new_id("rs"),
        "type": "reasoning",
        "status": status,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(call_id: Any, name: Any) -> dict[str, Any]:
    """Build an in-progress ``function_call`` item with empty arguments.

    The upstream's call id is kept as ``call_id``, because the client sends it back in its
    ``function_call_output``.  A call without one gets a new ``call_`` id.
    """
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "status": "in_progress",
        "call_id": call_id if isinstance(call_id, str) and call_id else new_id("call"),
        "name": name if isinstance(name, str) else "",
        "arguments": "",
    }


def responses_usage(usage: Any) -> dict[str, Any]:
    """Translate a chat ``usage`` object; a count that is not a whole number becomes 0."""
    usage = usage if isinstance(usage, dict) else {}
    input_tokens = _count(usage.get("prompt_tokens"))
    output_tokens = _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = (
        _count(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else 0
    )
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def created_at(created: Any) -> int:
    """Return the completion's ``created`` time, or now when the upstream sent none."""
    return created if type(created) is int and created > 0 else int(time.time())


def new_id(prefix: str) -> str:
    """Return ``<prefix>_`` and 32 random hex digits, the shape of OpenAI's object ids."""
    return f"{prefix}_{uuid.uuid4().hex}"


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0
