"""Responses API stream events from the OpenAI SSE events of one streamed completion.

The chat serving path relays an upstream stream (or replays a cached completion) as OpenAI
chat chunks; :class:`StreamTranslator` turns them into the Responses events, each with a
``sequence_number`` counted from 0::

    response.created, response.in_progress
    response.output_item.added                               (per output item)
      reasoning:     response.reasoning_text.delta ...
                     response.reasoning_text.done
      message:       response.content_part.added
                     response.output_text.delta ... (or response.refusal.delta ...)
                     response.output_text.done (or response.refusal.done)
                     response.content_part.done
      function_call: response.function_call_arguments.delta ...
                     response.function_call_arguments.done
    response.output_item.done
    response.completed, or response.incomplete when the output reached max_output_tokens

Keep-alive comments are passed on.  A stream that fails after its first byte ends with an
``error`` event and a ``response.failed`` event, and no ``response.completed``, so no client
mistakes a cut response for a complete one.
"""

from __future__ import annotations

from typing import Any

import orjson

from router.api.responses_format import Translation
from router.api.responses_output import (
    created_at,
    function_call_item,
    message_item,
    new_id,
    output_text_part,
    reasoning_item,
    response_object,
    response_status,
    responses_usage,
)
from router.api.translated import SseTranslator
from router.upstream.sse import KEEPALIVE

# Per content part type: the field that contains its text, and the names of its events.
_PART_EVENTS = {
    "output_text": ("text", "response.output_text.delta", "response.output_text.done"),
    "refusal": ("refusal", "response.refusal.delta", "response.refusal.done"),
}


def encode_event(payload: dict[str, Any]) -> bytes:
    """Encode one Responses SSE event: an ``event:`` line named by its type, a ``data:`` line."""
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class StreamTranslator(SseTranslator):
    """Translate the OpenAI SSE events of one streamed completion, in order, into Responses events."""

    def __init__(self, translation: Translation) -> None:
        self.translation = translation
        self.response_id = new_id("resp")
        self.started = False
        self._sequence = 0
        self._created_at = 0
        self._model = ""
        self._items: list[dict[str, Any]] = []
        """Output items in output order; the open one is still being streamed."""
        self._open: int | None = None
        """Output index of the open item, if one is open."""
        self._calls: dict[int, int] = {}
        """Chat tool-call index -> output index of its function_call item."""
        self._finish: Any = None
        self._usage: Any = None

    def keepalive(self) -> bytes:
        return KEEPALIVE

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        events = self._start(chunk)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            # A response has one output, and the translated body never sets n.
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = {}
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                events.extend(self._reasoning_delta(reasoning))
            text, refusal = delta.get("content"), delta.get("refusal")
            if isinstance(text, str) and text:
                events.extend(self._text_delta("output_text", text))
            if isinstance(refusal, str) and refusal:
                events.extend(self._text_delta("refusal", refusal))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    events.extend(self._call_delta(call))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    def end(self) -> list[bytes]:
        status, reason = response_status(self._finish)
        events = self._start({})
        events.extend(self._close_item("completed" if status == "completed" else "incomplete"))
        response = self._response(status, usage=responses_usage(self._usage), incomplete_reason=reason)
        name = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(name, response=response))
        return events

    def error(self, error: dict[str, Any]) -> list[bytes]:
        events = self._start({})
        message = str(error.get("message") or "The stream failed.")
        events.append(
            self._event("error", code=error.get("code"), message=message, param=error.get("param"))
        )
        if self._open is not None:
            self._items[self._open]["status"] = "incomplete"
        # ResponseError.code has a fixed set of values, of which server_error fits every
        # failure the gateway reports after the first byte.
        failure = {"code": "server_error", "message": message}
        events.append(self._event("response.failed", response=self._response("failed", error=failure)))
        return events

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        """Return response.created and response.in_progress before the first event, else nothing."""
        if self.started:
            return []
        self.started = True
        model = chunk.get("model")
        self._model = model if isinstance(model, str) else ""
        self._created_at = created_at(chunk.get("created"))
        response = self._response("in_progress")
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _text_delta(self, kind: str, text: str) -> list[bytes]:
        """Append ``text`` to the open message's last part, opening the item or part as needed."""
        events: list[bytes] = []
        if self._open is None or self._items[self._open]["type"] != "message":
            events.extend(self._close_item("completed"))
            events.extend(self._add_item(message_item([], "in_progress")))
        index = self._open
        assert index is not None
        item = self._items[index]
        content = item["content"]
        if not content or content[-1]["type"] != kind:
            events.extend(self._close_part(index))
            part = output_text_part("") if kind == "output_text" else {"type": kind, "refusal": ""}
            content.append(part)
            events.append(self._event("response.content_part.added", item_id=item["id"],
                                      output_index=index, content_index=len(content) - 1,
                                      part=part))
        field, delta_event, _ = _PART_EVENTS[kind]
        content[-1][field] += text
        extra: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
        events.append(self._event(delta_event, item_id=item["id"], output_index=index,
                                  content_index=len(content) - 1, delta=text, **extra))
        return events

    def _reasoning_delta(self, text: str) -> list[bytes]:
        """Append ``text`` to the open reasoning item, opening one first as needed."""
        events: list[bytes] = []
        if self._open is None or self._items[self._open]["type"] != "reasoning":
            events.extend(self._close_item("completed"))
            events.extend(self._add_item(reasoning_item("", "in_progress")))
        index = self._open
        assert index is not None
        item = self._items[index]
        item["content"][0]["text"] += text
        events.append(self._event("response.reasoning_text.delta", item_id=item["id"],
                                  output_index=index, content_index=0, delta=text))
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        position = call.get("index", 0)
        if not isinstance(position, int):
            position = 0
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        if position not in self._calls:
            events.extend(self._close_item("completed"))
            events.extend(self._add_item(function_call_item(call.get("id"), function.get("name"))))
            self._calls[position] = len(self._items) - 1
        index = self._calls[position]
        item = self._items[index]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            # NOTE: servers stream tool calls one after another.  Arguments for an earlier
            # call that arrive after a later call started reach only the final response.
            if index == self._open:
                events.append(self._event("response.function_call_arguments.delta",
                                          item_id=item["id"], output_index=index, delta=arguments))
        return events

    def _add_item(self, item: dict[str, Any]) -> list[bytes]:
        self._items.append(item)
        self._open = len(self._items) - 1
        return [self._event("response.output_item.added", output_index=self._open, item=item)]

    def _close_part(self, index: int) -> list[bytes]:
        """Return the done events of the message's last content part, if it has one."""
        item = self._items[index]
        if not item["content"]:
            return []
        part = item["content"][-1]
        content_index = len(item["content"]) - 1
        field, _, done_event = _PART_EVENTS[part["type"]]
        extra: dict[str, Any] = {"logprobs": []} if part["type"] == "output_text" else {}
        return [
            self._event(done_event, item_id=item["id"], output_index=index,
                        content_index=content_index, **{field: part[field]}, **extra),
            self._event("response.content_part.done", item_id=item["id"], output_index=index,
                        content_index=content_index, part=part),
        ]

    def _close_item(self, status: str) -> list[bytes]:
        """Return the done events of the open item, which gets ``status``, if one is open."""
        index = self._open
        if index is None:
            return []
        self._open = None
        item = self._items[index]
        events: list[bytes] = []
        if item["type"] == "message":
            events.extend(self._close_part(index))
        elif item["type"] == "reasoning":
            events.append(self._event("response.reasoning_text.done", item_id=item["id"],
                                      output_index=index, content_index=0,
                                      text=item["content"][0]["text"]))
        else:
            events.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                      output_index=index, name=item["name"],
                                      arguments=item["arguments"]))
        item["status"] = status
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def _response(
        self,
        status: str,
        *,
        usage: dict[str, Any] | None = None,
        incomplete_reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return response_object(
            self.translation,
            response_id=self.response_id,
            created_at=self._created_at,
            model=self._model,
            status=status,
            output=self._items,
            usage=usage,
            incomplete_reason=incomplete_reason,
            error=error,
        )

    def _event(self, event_type: str, /, **fields: Any) -> bytes:
        """Encode an event of ``event_type`` with the next sequence number.

        The payload is encoded at once, so later changes to the items do not reach it.
        """
        payload = {"type": event_type, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return encode_event(payload)
