"""Translation between Anthropic's Messages API and the OpenAI chat body the gateway serves.

``POST /v1/messages`` validates an Anthropic request, turns it into an OpenAI chat-completion
body that the chat serving path routes, caches and records, and turns the OpenAI completion
back into an Anthropic message (:func:`to_message`); :mod:`router.api.anthropic_stream`
translates streamed answers.

Why not litellm's adapter: litellm 1.110.2 ships one
(``litellm.llms.anthropic.messages.adapters.transformation.LiteLLMAnthropicMessagesAdapter``)
and its request side maps the fields correctly, at 80-165 µs per request on the development
container.  It is not used, because its answer side takes litellm ``ModelResponse`` objects
where the gateway holds plain dicts; because for model names litellm does not know, such as
every router alias, it prints litellm's provider list to stdout on each request; because it
adds ``"thinking_blocks": null`` to assistant messages, an unknown field for strict
OpenAI-compatible servers; and because it imports all of litellm, which deployments on the
direct path never load otherwise.

Request mapping:

- ``system`` (a string or text blocks) becomes one system message; blocks are joined with a
  blank line.  ``cache_control`` on any block is accepted and dropped.
- ``text`` and ``image`` blocks become OpenAI content parts; a base64 image becomes a data URL.
- ``document`` blocks: a ``base64`` PDF becomes a ``file`` part with a data URL and a file
  name, a ``text`` source a text part, and a ``content`` source its text and image parts.
  ``title`` and ``context`` become text before the document.  ``url`` and ``file`` sources
  and enabled ``citations`` are rejected: the gateway fetches no URLs, stores no files, and
  a chat completion returns no citations.  In a ``tool_result`` the document's text joins
  the tool message and a PDF moves to the user message, as images do.
- ``tool_use`` blocks become the assistant's ``tool_calls``; each ``tool_result`` becomes a
  ``tool`` message (text only, prefixed ``Error: `` when ``is_error``).  OpenAI tool messages
  carry no images, so images in tool results move to a user message after the tool messages.
- ``thinking`` blocks of earlier turns are dropped: only Anthropic can verify their signatures.
- ``stop_sequences`` -> ``stop``; ``metadata.user_id`` -> ``user``; ``tool_choice`` ``any`` ->
  ``required`` and ``tool`` -> a named function; ``disable_parallel_tool_use`` ->
  ``parallel_tool_calls: false``; ``top_k`` is forwarded as is (vLLM and llama.cpp read it).
- ``output_config.format`` (a JSON schema) -> ``response_format`` of type ``json_schema``,
  so routing picks a deployment that supports it; ``output_config.effort`` is ignored.
- ``service_tier``, ``inference_geo``, ``speed`` and top-level ``cache_control`` are accepted
  and ignored: they steer Anthropic's own capacity, region and prompt cache.
- ``thinking`` is not forwarded.  It only decides whether an upstream's ``reasoning_content``
  comes back as ``thinking`` blocks, whose ``signature`` is empty.
- Unknown top-level parameters are rejected, as Anthropic's API rejects them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from starlette.responses import Response

from router.api.message_checks import MissingField
from router.api.schemas import error_parameter, invalid_request
from router.api.translated import compact_parts, content_text, invalid_value, required_string
from router.errors import GatewayError, InvalidRequest
from router.outcomes.record import valid_token_count

ENDPOINT = "/v1/messages"

# Anthropic's error ``type`` for each HTTP status the gateway returns; others are api_error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}

# A PDF document's file name, made from its title, is cut to this many characters, the
# name limit of common file systems. NOTE: the limit that providers apply to chat file
# names is not known, so this one is a guess.
MAX_FILENAME_CHARS = 255

# OpenAI finish_reason -> Anthropic stop_reason.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# Request models ---------------------------------------------------------------------------


class ToolParam(BaseModel):
    """A client tool; ``cache_control`` and other hints are accepted and dropped."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _reject_server_tools(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") not in (None, "custom"):
            raise ValueError(
                f"the server tool '{value['type']}' is not supported, "
                "so define a custom tool with name and input_schema"
            )
        return value


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _check_name(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise MissingField(("name",))
        return self


class Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: str | None = None


class Thinking(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    budget_tokens: int | None = None


class OutputFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    format: OutputFormat | None = None
    # NOTE: effort has no OpenAI-compatible counterpart that servers agree on, so it is ignored.
    effort: str | None = None


class MessageParam(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["user", "assistant"]
    # A list of Any, so that a bare value in it gets the translation's error, which names its
    # index, and not the union's "Input should be a valid string".
    content: str | list[Any]

    @field_validator("content", mode="before")
    @classmethod
    def _check_content_form(cls, value: Any) -> Any:
        return require_string_or_list(value, "content", "content blocks")


class MessagesRequest(BaseModel):
    """The fields of an Anthropic Messages request, with Anthropic's value ranges."""

    # Strict, like every model of this request: Anthropic's API rejects "5" for max_tokens
    # and "true" for stream, so pydantic must not convert them. A float such as 5.0 is
    # rejected for an integer field too.
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[Any] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    stream: bool = False
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    # Hints about Anthropic's own capacity, region and prompt cache.  They do not apply to
    # other providers and do not change the output, so they are accepted and ignored.
    service_tier: str | None = None
    inference_geo: str | None = None
    speed: str | None = None
    cache_control: dict[str, Any] | None = None

    @field_validator("system", mode="before")
    @classmethod
    def _check_system_form(cls, value: Any) -> Any:
        return None if value is None else require_string_or_list(value, "system", "text blocks")


def require_string_or_list(value: Any, name: str, items: str) -> Any:
    """Return ``value`` if it is a string or a list, or raise ValueError naming both forms.

    A ``str | list`` field alone would report only its first branch: "Input should be a
    valid string". pydantic turns a ValueError, not a TypeError, into a 400.
    """
    if not isinstance(value, str | list):
        raise ValueError(f"{name} must be a string or a list of {items}")  # noqa: TRY004
    return value


@dataclass(frozen=True)
class Translation:
    """The OpenAI chat body of one request, and what the response translation needs."""

    body: dict[str, Any]
    stop_sequences: tuple[str, ...] = ()
    thinking: bool = False


# Request translation ----------------------------------------------------------------------


def to_chat_body(body: dict[str, Any]) -> Translation:
    """Validate an Anthropic Messages body and translate it.  Raises InvalidRequest."""
    request = _validate(body)
    chat: dict[str, Any] = {
        "model": request.model,
        "messages": _system_messages(request.system) + _conversation(request.messages),
        "max_tokens": request.max_tokens,
    }
    optional = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "stop": request.stop_sequences or None,
        "user": request.metadata.user_id if request.metadata else None,
    }
    chat.update({key: value for key, value in optional.items() if value is not None})
    if request.tools:
        chat["tools"] = [_function_tool(tool) for tool in request.tools]
    if request.tool_choice is not None:
        _apply_tool_choice(chat, request.tool_choice)
    if request.output_config is not None and request.output_config.format is not None:
        schema = {"name": "output", "schema": request.output_config.format.json_schema}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    if request.stream:
        # Usage is always requested, so that message_delta can carry the final counts.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    thinking = request.thinking is not None and request.thinking.type != "disabled"
    return Translation(chat, tuple(request.stop_sequences or ()), thinking)


def _validate(body: dict[str, Any]) -> MessagesRequest:
    try:
        return MessagesRequest.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = error_parameter(error["loc"])
        if error["type"] == "extra_forbidden":
            raise InvalidRequest(
                f"The parameter '{param}' is not supported on {ENDPOINT}. Remove it.",
                param=param,
                code="unsupported_parameter",
            ) from None
        raise invalid_request(exc) from None


def _system_messages(system: str | list[Any] | None) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    texts = [_text(block, f"system[{index}]") for index, block in enumerate(system)]
    return [{"role": "system", "content": "\n\n".join(texts)}] if texts else []


def _conversation(messages: list[MessageParam]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        if message.role == "user":
            result.extend(_user_messages(message.content, position))
        else:
            result.append(_assistant_message(message.content, position))
    return result


def _user_messages(content: str | list[Any], position: int) -> list[dict[str, Any]]:
    """Translate one user turn: its tool results first, then one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not content:
        raise invalid_value(f"messages[{position}].content", "a user message needs at least one block")
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        where = f"messages[{position}].content[{index}]"
        kind = _block_type(block, where)
        if kind == "tool_result":
            message, images = _tool_result(block, where)
            tool_messages.append(message)
            parts.extend(images)
        elif kind == "text":
            parts.append({"type": "text", "text": _text(block, where)})
        elif kind == "image":
            parts.append(_image_part(block, where))
        elif kind == "document":
            parts.extend(_document_parts(block, where))
        else:
            raise _unsupported_block(kind, where)
    if parts:
        tool_messages.append({"role": "user", "content": compact_parts(parts)})
    return tool_messages


def _assistant_message(content: str | list[Any], position: int) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        where = f"messages[{position}].content[{index}]"
        kind = _block_type(block, where)
        if kind == "text":
            texts.append(_text(block, where))
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        elif kind not in ("thinking", "redacted_thinking"):
            raise _unsupported_block(kind, where)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = calls
        message["content"] = message["content"] or None
    return message


def _tool_result(block: dict[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return the tool message of a tool_result block and the image and file parts it carried.

    A chat tool message carries text only, so the caller moves those parts to a user message.
    """
    tool_use_id = required_string(block, "tool_use_id", where)
    content = block.get("content", "")
    texts: list[str] = []
    moved: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for index, item in enumerate(content):
            item_where = f"{where}.content[{index}]"
            kind = _block_type(item, item_where)
            if kind == "text":
                texts.append(_text(item, item_where))
            elif kind == "image":
                moved.append(_image_part(item, item_where))
            elif kind == "document":
                for part in _document_parts(item, item_where):
                    if part["type"] == "text":
                        texts.append(part["text"])
                    else:
                        moved.append(part)
            else:
                raise _unsupported_block(kind, item_where)
    else:
        raise invalid_value(
            f"{where}.content", "expected a string or a list of text, image and document blocks"
        )
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}, moved


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise invalid_value(f"{where}.input", "expected an object")
    return {
        "id": required_string(block, "id", where),
        "type": "function",
        "function": {
            "name": required_string(block, "name", where),
            "arguments": orjson.dumps(arguments).decode(),
        },
    }


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid_value(f"{where}.source", "an image block needs a 'source' object")
    kind = source.get("type")
    if kind == "base64":
        media_type = required_string(source, "media_type", f"{where}.source")
        data = required_string(source, "data", f"{where}.source")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = required_string(source, "url", f"{where}.source")
    else:
        raise invalid_value(f"{where}.source.type", f"expected 'base64' or 'url', got {kind!r}")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_parts(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Translate a document block into chat content parts.

    A ``text`` source and a ``content`` source become text parts, and a ``base64`` PDF a
    ``file`` part with a data URL. ``title`` and ``context`` become a text part before the
    document. ``url`` and ``file`` sources are rejected because the gateway fetches no URLs
    and stores no files, and enabled citations because a chat completion returns none.
    """
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid_value(f"{where}.source", "a document block needs a 'source' object")
    _check_citations(block.get("citations"), f"{where}.citations")
    title = _optional_string(block, "title", where)
    context = _optional_string(block, "context", where)
    source_where = f"{where}.source"
    kind = source.get("type")
    if kind == "base64":
        _require_media_type(source, "application/pdf", source_where)
        data = required_string(source, "data", source_where)
        file = {"filename": _pdf_filename(title), "file_data": f"data:application/pdf;base64,{data}"}
        body = [{"type": "file", "file": file}]
    elif kind == "text":
        _require_media_type(source, "text/plain", source_where)
        body = [{"type": "text", "text": required_string(source, "data", source_where)}]
    elif kind == "content":
        body = _source_content_parts(source.get("content"), f"{source_where}.content")
    elif kind == "url":
        raise _unsupported_source(
            kind, source_where, "the gateway fetches no URLs, so send the PDF as a 'base64' source"
        )
    elif kind == "file":
        raise _unsupported_source(
            kind, source_where, "the gateway stores no files, so send the PDF as a 'base64' "
            "source or the text as a 'text' source"
        )
    else:
        raise invalid_value(
            f"{source_where}.type", f"expected 'base64', 'text' or 'content', got {kind!r}"
        )
    header = _document_header(title, context)
    if header is None:
        return body
    if body[0]["type"] == "text":
        # One text part keeps the title next to the text it names.
        return [{"type": "text", "text": f"{header}\n\n{body[0]['text']}"}, *body[1:]]
    return [{"type": "text", "text": header}, *body]


def _check_citations(citations: Any, where: str) -> None:
    if citations is None:
        return
    if not isinstance(citations, dict):
        raise invalid_value(where, "expected an object such as {\"enabled\": false}")
    enabled = citations.get("enabled")
    if enabled is None or enabled is False:
        return
    if enabled is not True:
        raise invalid_value(f"{where}.enabled", "expected a boolean")
    raise InvalidRequest(
        f"The parameter '{where}.enabled' is not supported on {ENDPOINT}: the gateway serves "
        "the request as a chat completion, which returns no citations. Remove 'citations' or "
        "set 'enabled' to false.",
        param=f"{where}.enabled",
        code="unsupported_parameter",
    )


def _require_media_type(source: dict[str, Any], expected: str, where: str) -> None:
    media_type = required_string(source, "media_type", where)
    if media_type != expected:
        raise invalid_value(
            f"{where}.media_type",
            f"expected '{expected}' for a '{source['type']}' source, got {media_type!r}",
        )


def _source_content_parts(content: Any, where: str) -> list[dict[str, Any]]:
    """Translate the ``content`` of a content source, a string or text and image blocks."""
    if isinstance(content, str) and content:
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise invalid_value(where, "expected a non-empty string or a list of text and image blocks")
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        block_where = f"{where}[{index}]"
        kind = _block_type(block, block_where)
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, block_where)})
        elif kind == "image":
            parts.append(_image_part(block, block_where))
        else:
            raise invalid_value(f"{block_where}.type", f"expected 'text' or 'image', got {kind!r}")
    return parts


def _document_header(title: str | None, context: str | None) -> str | None:
    lines = []
    if title:
        lines.append(f"Document title: {title}")
    if context:
        lines.append(f"Document context: {context}")
    return "\n".join(lines) or None


def _pdf_filename(title: str | None) -> str:
    """Return a file name for a PDF document: its title without path separators, or a default."""
    if not title:
        return "document.pdf"
    name = "".join("_" if char in "/\\" or not char.isprintable() else char for char in title)
    name = name.strip()[:MAX_FILENAME_CHARS - 4] or "document"
    return name if name.lower().endswith(".pdf") else f"{name}.pdf"


def _optional_string(block: dict[str, Any], key: str, where: str) -> str | None:
    value = block.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid_value(f"{where}.{key}", "expected a string")
    return value


def _unsupported_source(kind: str, where: str, reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"The document source type '{kind}' at '{where}' is not supported on {ENDPOINT}: "
        f"{reason}.",
        param=f"{where}.type",
        code="unsupported_parameter",
    )


def _function_tool(tool: ToolParam) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _apply_tool_choice(chat: dict[str, Any], choice: ToolChoice) -> None:
    if choice.type == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if choice.disable_parallel_tool_use:
        chat["parallel_tool_calls"] = False


def _block_type(block: Any, where: str) -> str:
    if not isinstance(block, dict):
        raise invalid_value(where, 'expected a content block object such as {"type": "text", "text": "..."}')
    kind = block.get("type")
    if not isinstance(kind, str):
        raise invalid_value(f"{where}.type", "each content block needs a string 'type'")
    return kind


def _text(block: Any, where: str) -> str:
    if _block_type(block, where) != "text":
        raise invalid_value(f"{where}.type", "expected a text block")
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid_value(f"{where}.text", "expected a string")
    return text


def _unsupported_block(kind: str, where: str) -> InvalidRequest:
    return InvalidRequest(
        f"The content block type '{kind}' at '{where}' is not supported on {ENDPOINT}. "
        "Send text, image, document (user), tool_use (assistant) or tool_result (user) blocks.",
        param=f"{where}.type",
        code="unsupported_parameter",
    )


# Response translation ---------------------------------------------------------------------


def to_message(completion: dict[str, Any], translation: Translation) -> dict[str, Any]:
    """Translate an OpenAI chat completion (its first choice) into an Anthropic message."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if translation.thinking and isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = content_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    content.extend(_tool_use_block(call) for call in calls)
    stop_reason, stop_sequence = stop_details(choice, bool(calls), translation.stop_sequences)
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or "",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(completion.get("usage")),
    }


def stop_details(
    choice: dict[str, Any], has_tool_calls: bool, stop_sequences: tuple[str, ...]
) -> tuple[str, str | None]:
    """Return Anthropic's ``stop_reason`` and ``stop_sequence`` for an OpenAI choice.

    OpenAI reports a matched stop sequence as plain ``stop``.  The sequence is known only when
    the server names it in ``choice.stop_reason``, as vLLM does.
    """
    finish = choice.get("finish_reason") or "stop"
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    if finish == "stop" and has_tool_calls:
        # Some servers end a tool-calling response with "stop", but clients run tools on tool_use.
        return "tool_use", None
    return STOP_REASONS.get(finish, "end_turn"), None


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """Translate an OpenAI ``usage`` object into Anthropic's.

    OpenAI's ``prompt_tokens`` includes the tokens read from the provider's prompt cache
    (``prompt_tokens_details.cached_tokens``), and with litellm 1.110 also the tokens written
    to an Anthropic deployment's cache (``prompt_tokens_details.cache_creation_tokens``).
    Anthropic's ``input_tokens`` leaves both out and reports them as
    ``cache_read_input_tokens`` and ``cache_creation_input_tokens``. A count that is not a whole
    number from 0 to MAX_TOKEN_COUNT is sent as 0, as the outcome record counts it.
    """
    usage = usage if isinstance(usage, dict) else {}
    prompt_tokens = _token_count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, dict):
        details = {}
    cached = min(_token_count(details.get("cached_tokens")), prompt_tokens)
    written = min(_token_count(details.get("cache_creation_tokens")), prompt_tokens - cached)
    result = {
        "input_tokens": prompt_tokens - cached - written,
        "output_tokens": _token_count(usage.get("completion_tokens")),
    }
    if cached > 0:
        result["cache_read_input_tokens"] = cached
    if written > 0:
        result["cache_creation_input_tokens"] = written
    return result


def _token_count(value: Any) -> int:
    return valid_token_count(value) or 0


def message_id(completion_id: Any) -> str:
    """Derive an Anthropic-style ``msg_`` id from the completion id, so it stays traceable."""
    if not isinstance(completion_id, str) or not completion_id:
        return f"msg_{uuid.uuid4().hex}"
    return completion_id if completion_id.startswith("msg_") else f"msg_{completion_id}"


def tool_use_id(call_id: Any) -> str:
    """Return the call's id, or a new ``toolu_`` id when the upstream sent none."""
    return call_id if isinstance(call_id, str) and call_id else f"toolu_{uuid.uuid4().hex}"


def _tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "tool_use",
        "id": tool_use_id(call.get("id")),
        "name": function.get("name") or "",
        "input": _tool_input(function.get("arguments")),
    }


def _tool_input(arguments: Any) -> dict[str, Any]:
    # NOTE: arguments that are not a JSON object (cut by max_tokens, or malformed by the
    # model) become {}, because Anthropic's tool_use.input must be an object.
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# Errors -----------------------------------------------------------------------------------


def error_body(status: int, message: str) -> dict[str, Any]:
    """Build Anthropic's error object for an HTTP status."""
    error_type = ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": error_type, "message": message}}


def render_error(error: GatewayError) -> Response:
    """Render ``error`` as an Anthropic-shaped JSON response with the error's status."""
    return Response(
        orjson.dumps(error_body(error.status, error.message)),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )
