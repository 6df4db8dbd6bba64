"""Translation of OpenAI Responses API requests into the OpenAI chat body the gateway serves.

``POST /v1/responses`` validates a Responses request and turns it into a chat-completion
body that the chat serving path routes, caches and records.  It turns the chat completion
back into a ``response`` object with :mod:`router.api.responses_output`, and a stream into
Responses events with :mod:`router.api.responses_stream`.

The gateway stores no responses.  ``store`` is accepted and ignored, and a request that
refers to stored state is rejected: ``previous_response_id``, ``conversation``, ``prompt``
(a stored prompt), ``background: true``, ``item_reference`` input items, and images given
by ``file_id``.

Request mapping:

- ``instructions`` becomes a system message before the input.  A string ``input`` becomes
  one user message.
- Message items keep their role (user, system, developer or assistant).  ``input_text`` and
  ``output_text`` parts become text, ``input_image`` an ``image_url`` part, ``input_file``
  a ``file`` part with its ``file_id``, or its ``file_data`` and ``filename``, and an
  assistant's ``refusal`` part its ``refusal``.  A ``file_id`` names a file uploaded to the
  upstream provider and is forwarded unchanged, as ``/v1/chat/completions`` forwards it.
  ``file_url``, and a ``file_id`` that is a URL, are rejected: the chat part has no URL,
  and litellm would download one given as ``file_id``.
- ``function_call`` items become ``tool_calls`` of an assistant message: calls that follow
  an assistant message or another call join that message.  A ``function_call_output``
  becomes a ``tool`` message.  ``reasoning`` items are dropped, because only the provider
  that wrote them can read their encrypted content.
- ``max_output_tokens`` becomes ``max_tokens``, which every OpenAI-compatible server reads.
  The server of llama-cpp-python 0.3.36, which runs the bundled edge model, ignores
  ``max_completion_tokens``. A deployment's ``output_limit_param`` renames it upstream:
  the direct path to api.openai.com sends ``max_completion_tokens``.
- ``tools`` of type ``function`` become chat function tools.  ``tool_choice`` ``auto``,
  ``none``, ``required`` and ``{"type": "function", "name": ...}`` become their chat forms.
- ``text.format`` of type ``json_object`` or ``json_schema`` becomes ``response_format``,
  ``text.verbosity`` becomes ``verbosity`` and ``reasoning.effort`` ``reasoning_effort``.
- ``metadata`` is repeated in the response and not sent upstream.  ``store``, ``include``,
  ``truncation``, ``stream_options``, ``max_tool_calls`` and ``prompt_cache_retention`` are
  accepted and ignored: the gateway never truncates the input.
- Any other parameter goes into the chat body unchanged, as ``/v1/chat/completions``
  forwards the parameters it does not interpret (``parallel_tool_calls``, ``service_tier``,
  ``prompt_cache_key``, ``safety_identifier`` and others).  A chat parameter whose
  Responses counterpart has another name, such as ``messages`` or ``max_tokens``, is
  rejected with that name.  Fields of input items and tools that the translation does not
  read, such as the ``id`` and ``status`` of earlier output items, are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from router.api.message_checks import URL_FILE_ID_REASON, is_url_file_id
from router.api.schemas import invalid_request, null_as_default
from router.api.translated import compact_parts, invalid_value, required_string
from router.errors import InvalidRequest

ENDPOINT = "/v1/responses"

# Request parameters that need state the gateway does not keep, with the reason for the client.
STATEFUL_PARAMETERS = {
    "previous_response_id": "the gateway stores no responses, so send the whole conversation "
    "in 'input'",
    "conversation": "the gateway stores no conversations, so send the whole conversation in "
    "'input'",
    "prompt": "the gateway has no stored prompts, so send the prompt's text in 'instructions' "
    "and 'input'",
}

# Chat-completion parameters whose Responses counterpart has another name.
CHAT_PARAMETERS = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
    "functions": "tools",
    "function_call": "tool_choice",
}

MAX_METADATA_PAIRS = 16
"""OpenAI's limits on ``metadata``: 16 pairs, keys of up to 64 and values of up to 512 characters."""
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512

INPUT_ROLES = ("user", "system", "developer", "assistant")


# Request models ---------------------------------------------------------------------------


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, min_length=1)
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _check_schema(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.json_schema is None):
            raise ValueError("a format of type 'json_schema' needs 'name' and 'schema'")
        return self


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class Reasoning(BaseModel):
    """Reasoning settings.  Only ``effort`` has a chat counterpart, and the rest is ignored."""

    model_config = ConfigDict(extra="allow", strict=True)

    effort: str | None = None


class ResponsesRequest(BaseModel):
    """The fields of a Responses request that the gateway reads, with OpenAI's value ranges.

    Other fields are kept (``extra="allow"``) and forwarded in the chat body.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    # Checked first in _check_input_form, whose messages name both allowed forms. The union
    # alone reports only its first branch: "Input should be a valid string".
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    user: str | None = None
    metadata: dict[str, str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    background: bool | None = None
    # Accepted and ignored: they shape OpenAI's storage, output extras or truncation.
    store: bool | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    stream_options: dict[str, Any] | None = None
    max_tool_calls: int | None = Field(default=None, ge=0)
    prompt_cache_retention: str | None = None

    _replace_null_with_default = field_validator("stream", mode="before")(
        classmethod(lambda cls, value, info: null_as_default(cls, value, info))
    )

    @field_validator("input", mode="before")
    @classmethod
    def _check_input_form(cls, value: Any) -> Any:
        if not isinstance(value, str | list):
            raise ValueError("input must be a string or a list of input items")
        for index, item in enumerate(value if isinstance(value, list) else ()):
            if not isinstance(item, dict):
                raise ValueError(
                    f"input[{index}] must be an input item object such as "
                    '{"role": "user", "content": "..."}, not a bare value'
                )
        return value

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_PAIRS:
            raise ValueError(f"at most {MAX_METADATA_PAIRS} key-value pairs are allowed")
        for key, item in value.items():
            if len(key) > MAX_METADATA_KEY_CHARS:
                raise ValueError(f"keys may have at most {MAX_METADATA_KEY_CHARS} characters")
            if len(item) > MAX_METADATA_VALUE_CHARS:
                raise ValueError(f"values may have at most {MAX_METADATA_VALUE_CHARS} characters")
        return value


@dataclass(frozen=True)
class Translation:
    """The OpenAI chat body of one request, and the request fields its response repeats."""

    body: dict[str, Any]
    echo: dict[str, Any] = field(default_factory=dict)


# Request translation ----------------------------------------------------------------------


def to_chat_body(body: dict[str, Any]) -> Translation:
    """Validate a Responses request body and translate it.  Raises InvalidRequest."""
    _reject_unsupported_parameters(body)
    request = _validate(body)

    # Forwarded first, so that no forwarded field replaces a translated one.
    chat: dict[str, Any] = dict(request.model_extra or {})
    chat["model"] = request.model
    chat["messages"] = _instructions(request.instructions) + _conversation(request.input)
    optional = {
        "max_tokens": request.max_output_tokens,
        # As sent, because pydantic turns an integer into a float, and the cache key of
        # {"temperature": 0} must match that of the same chat request.
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "user": request.user,
        "parallel_tool_calls": request.parallel_tool_calls,
        "reasoning_effort": request.reasoning.effort if request.reasoning else None,
        "verbosity": request.text.verbosity if request.text else None,
    }
    chat.update({key: value for key, value in optional.items() if value is not None})

    if request.tools:
        chat["tools"] = [_function_tool(tool, f"tools[{index}]") for index, tool in enumerate(request.tools)]
    if request.tool_choice is not None:
        chat["tool_choice"] = _tool_choice(request.tool_choice)
    text_format = request.text.format if request.text else None
    if text_format is not None and text_format.type != "text":
        chat["response_format"] = _response_format(text_format)

    if request.stream:
        # Usage is always requested, so that response.completed can carry the final counts.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return Translation(chat, _echo(request))


def _reject_unsupported_parameters(body: dict[str, Any]) -> None:
    """Raise InvalidRequest for a parameter that needs stored state or is a chat parameter.

    Checked before validation, so that a body with ``previous_response_id`` and no ``input``
    learns why the parameter does not work, not only that ``input`` is missing.
    """
    for name, reason in STATEFUL_PARAMETERS.items():
        if body.get(name) is not None:
            raise InvalidRequest(
                f"The parameter '{name}' is not supported on {ENDPOINT}: {reason}.",
                param=name,
                code="unsupported_parameter",
            )
    if body.get("background") is True:
        raise InvalidRequest(
            f"The parameter 'background' is not supported on {ENDPOINT}: the gateway returns "
            "every response on the open connection. Leave it unset or false.",
            param="background",
            code="unsupported_parameter",
        )
    for name, counterpart in CHAT_PARAMETERS.items():
        if name in body:
            raise InvalidRequest(
                f"The parameter '{name}' is a Chat Completions parameter. "
                f"Use '{counterpart}' on {ENDPOINT}.",
                param=name,
                code="unsupported_parameter",
            )
    if "n" in body:
        raise InvalidRequest(
            f"The parameter 'n' is not supported on {ENDPOINT}, which returns one output "
            "message per response. Send several requests instead.",
            param="n",
            code="unsupported_parameter",
        )


def _validate(body: dict[str, Any]) -> ResponsesRequest:
    try:
        return ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def _instructions(instructions: str | None) -> list[dict[str, Any]]:
    return [{"role": "system", "content": instructions}] if instructions else []


def _conversation(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not items:
        raise invalid_value("input", "expected a string or at least one input item")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        where = f"input[{index}]"
        # Messages may leave out "type", as the SDK's EasyInputMessageParam does.
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            _add_tool_call(messages, _tool_call(item, where))
        elif kind == "function_call_output":
            messages.append(_tool_output(item, where))
        elif kind != "reasoning":
            raise _unsupported(f"input item type '{kind}'", f"{where}.type",
                               "Send message, function_call or function_call_output items.")
    if not messages:
        raise invalid_value("input", "expected at least one item besides reasoning items")
    return messages


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in INPUT_ROLES:
        raise invalid_value(f"{where}.role", "expected 'user', 'system', 'developer' or 'assistant'")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list) or not content:
        raise invalid_value(f"{where}.content", "expected a string or at least one content part")
    if role == "assistant":
        return _assistant_message(content, where)
    parts = [_input_part(part, f"{where}.content[{index}]") for index, part in enumerate(content)]
    return {"role": role, "content": compact_parts(parts)}


def _assistant_message(content: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    refusals: list[str] = []
    for index, part in enumerate(content):
        part_where = f"{where}.content[{index}]"
        kind = _part_type(part, part_where)
        if kind in ("output_text", "input_text"):
            texts.append(_part_text(part, "text", part_where))
        elif kind == "refusal":
            refusals.append(_part_text(part, "refusal", part_where))
        else:
            raise _unsupported(f"content part type '{kind}'", f"{part_where}.type",
                               "An assistant message takes output_text and refusal parts.")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if refusals:
        message["refusal"] = "".join(refusals)
    return message


def _input_part(part: Any, where: str) -> dict[str, Any]:
    kind = _part_type(part, where)
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": _part_text(part, "text", where)}
    if kind == "input_image":
        return _image_part(part, where)
    if kind == "input_file":
        return _file_part(part, where)
    raise _unsupported(f"content part type '{kind}'", f"{where}.type",
                       "Send input_text, input_image or input_file parts.")


def _image_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    if part.get("file_id") is not None:
        raise _unsupported_field(f"{where}.file_id", "the gateway stores no files, so send the "
                                 "image as 'image_url' (a URL or a data URL)")
    image: dict[str, Any] = {"url": required_string(part, "image_url", where)}
    detail = part.get("detail")
    if detail is not None:
        if detail not in ("low", "high", "auto", "original"):
            raise invalid_value(f"{where}.detail", "expected 'low', 'high', 'auto' or 'original'")
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _file_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    """Translate an ``input_file`` part into the chat ``file`` part that chat forwards.

    The chat part carries the file as ``file_id`` or as ``file_data`` with an optional
    ``filename``. It has no URL and no detail level, so ``file_url`` and a ``detail`` other
    than ``auto`` are rejected.
    """
    if part.get("file_url") is not None:
        raise _unsupported_field(f"{where}.file_url", "a chat file part has no URL and the "
                                 "gateway fetches no URLs, so send the file's content as "
                                 "'file_data' or an uploaded file's 'file_id'")
    has_id = part.get("file_id") is not None
    has_data = part.get("file_data") is not None
    if has_id and has_data:
        raise invalid_value(f"{where}.file_id", "send either 'file_id' or 'file_data', not both")
    if not has_id and not has_data:
        raise invalid_value(f"{where}.file_data", "an input_file part needs 'file_data' (the "
                            "file's content) or 'file_id' (an uploaded file)")
    _check_file_detail(part.get("detail"), f"{where}.detail")
    key = "file_id" if has_id else "file_data"
    file = {key: required_string(part, key, where)}
    if is_url_file_id(file.get("file_id")):
        raise invalid_value(f"{where}.file_id", URL_FILE_ID_REASON)
    if part.get("filename") is not None:
        file["filename"] = required_string(part, "filename", where)
    return {"type": "file", "file": file}


def _check_file_detail(detail: Any, param: str) -> None:
    if detail is None or detail == "auto":
        return
    if detail not in ("low", "high"):
        raise invalid_value(param, "expected 'auto', 'low' or 'high'")
    raise _unsupported_field(param, "a chat file part has no detail level, so leave it unset "
                             "or 'auto'")


def _tool_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        raise invalid_value(f"{where}.arguments", "expected the call's arguments as a JSON string")
    return {
        "id": required_string(item, "call_id", where),
        "type": "function",
        "function": {"name": required_string(item, "name", where), "arguments": arguments},
    }


def _add_tool_call(messages: list[dict[str, Any]], call: dict[str, Any]) -> None:
    """Add ``call`` to the assistant message before it, or start an assistant message.

    A chat model receives the calls of one turn in one assistant message, while Responses
    lists the turn's text and each call as separate items.
    """
    last = messages[-1] if messages else None
    if last is None or last["role"] != "assistant":
        last = {"role": "assistant", "content": None}
        messages.append(last)
    last.setdefault("tool_calls", []).append(call)
    if not last["content"]:
        last["content"] = None


def _tool_output(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = required_string(item, "call_id", where)
    output = item.get("output")
    if isinstance(output, str):
        return {"role": "tool", "tool_call_id": call_id, "content": output}
    if not isinstance(output, list):
        raise invalid_value(f"{where}.output", "expected a string or a list of input_text parts")
    texts: list[str] = []
    for index, part in enumerate(output):
        part_where = f"{where}.output[{index}]"
        kind = _part_type(part, part_where)
        if kind != "input_text":
            raise _unsupported(f"content part type '{kind}'", f"{part_where}.type",
                               "A chat tool message takes text only, so send input_text parts.")
        texts.append(_part_text(part, "text", part_where))
    return {"role": "tool", "tool_call_id": call_id, "content": "\n".join(texts)}


def _function_tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    kind = tool.get("type")
    if kind != "function":
        raise _unsupported(
            f"tool type '{kind}'",
            f"{where}.type",
            "The gateway runs no built-in tools such as web_search or file_search, so define "
            "a tool of type 'function'.",
        )
    function: dict[str, Any] = {"name": required_string(tool, "name", where)}
    description = tool.get("description")
    if description is not None:
        function["description"] = _optional(tool, "description", str, where)
    if tool.get("parameters") is not None:
        function["parameters"] = _optional(tool, "parameters", dict, where)
    if tool.get("strict") is not None:
        function["strict"] = _optional(tool, "strict", bool, where)
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise invalid_value("tool_choice", "expected 'auto', 'none', 'required' or a function")
        return choice
    if choice.get("type") != "function":
        raise InvalidRequest(
            f"The tool_choice type '{choice.get('type')}' is not supported on {ENDPOINT}. Send "
            "'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}.",
            param="tool_choice",
            code="unsupported_parameter",
        )
    return {"type": "function", "function": {"name": required_string(choice, "name", "tool_choice")}}


def _response_format(text_format: TextFormat) -> dict[str, Any]:
    if text_format.type == "json_object":
        return {"type": "json_object"}
    schema: dict[str, Any] = {"name": text_format.name, "schema": text_format.json_schema}
    if text_format.description is not None:
        schema["description"] = text_format.description
    if text_format.strict is not None:
        schema["strict"] = text_format.strict
    return {"type": "json_schema", "json_schema": schema}


def _echo(request: ResponsesRequest) -> dict[str, Any]:
    """Return the request fields that a ``response`` object repeats.

    ``parallel_tool_calls`` and ``tool_choice`` show OpenAI's defaults when the request
    left them out; ``temperature`` and ``top_p`` stay null, because the upstream's default
    is not known.
    """
    text: dict[str, Any] = {"format": {"type": "text"}}
    if request.text is not None:
        if request.text.format is not None:
            text["format"] = request.text.format.model_dump(by_alias=True, exclude_none=True)
        if request.text.verbosity is not None:
            text["verbosity"] = request.text.verbosity
    return {
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "metadata": request.metadata or {},
        "parallel_tool_calls": True if request.parallel_tool_calls is None else request.parallel_tool_calls,
        "previous_response_id": None,
        "reasoning": {"effort": request.reasoning.effort if request.reasoning else None, "summary": None},
        "store": False,
        "temperature": request.temperature,
        "text": text,
        "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
        "tools": request.tools or [],
        "top_p": request.top_p,
        "truncation": request.truncation or "disabled",
        "user": request.user,
    }


def _part_type(part: Any, where: str) -> str:
    if not isinstance(part, dict):
        raise invalid_value(where, "expected a content part object such as "
                            '{"type": "input_text", "text": "..."}')
    kind = part.get("type")
    if not isinstance(kind, str):
        raise invalid_value(f"{where}.type", "each content part needs a string 'type'")
    return kind


def _part_text(part: dict[str, Any], key: str, where: str) -> str:
    text = part.get(key)
    if not isinstance(text, str):
        raise invalid_value(f"{where}.{key}", "expected a string")
    return text


def _optional(block: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = block[key]
    if not isinstance(value, kind):
        raise invalid_value(f"{where}.{key}", f"expected a {_TYPE_NAMES[kind]}")
    return value


_TYPE_NAMES = {str: "string", dict: "JSON object", bool: "boolean"}


def _unsupported_field(param: str, reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"The parameter '{param}' is not supported on {ENDPOINT}: {reason}.",
        param=param,
        code="unsupported_parameter",
    )


def _unsupported(what: str, param: str, advice: str) -> InvalidRequest:
    return InvalidRequest(
        f"The {what} at '{param.removesuffix('.type')}' is not supported on {ENDPOINT}. {advice}",
        param=param,
        code="unsupported_parameter",
    )
