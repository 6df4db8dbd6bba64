"""Validation of OpenAI chat-completion request bodies.

Parameters the gateway does not interpret are kept (``extra="allow"``) and forwarded, so
new OpenAI parameters work without a release.  Parameters that would let a client pick
the provider endpoint or credentials are rejected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from router.api.message_checks import (
    InvalidField,
    MissingField,
    check_message,
    check_tool_calls,
)
from router.errors import InvalidRequest

# Body keys that litellm or provider SDKs would treat as connection settings, credentials,
# request headers, retries or fallbacks. litellm (1.110) reads the keyword arguments of
# litellm.completion and litellm.embedding from the body's fields, so a key missing here
# reaches litellm when a deployment uses the litellm transport.
FORBIDDEN_PARAMETERS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "api_type",
        "organization",
        "custom_llm_provider",
        "extra_headers",
        "extra_body",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_region_name",
        "vertex_project",
        "vertex_location",
        "vertex_credentials",
        "azure_ad_token",
        "mock_response",
        "litellm_params",
        "proxy_server_request",
        # litellm sends "headers" as request headers, so a client could replace the
        # deployment's Authorization header.
        "headers",
        "provider_specific_header",
        # "ssl_verify": false would turn off the check of the provider's TLS certificate.
        "ssl_verify",
        # Retries and fallbacks inside litellm, beyond the policy's.
        "max_retries",
        "fallbacks",
        "context_window_fallback_dict",
        "use_litellm_proxy",
        "mock_delay",
        "mock_timeout",
        "mock_tool_calls",
        # Credentials, and a path of a credentials file that litellm reads.
        "client_id",
        "client_secret",
        "tenant_id",
        "azure_username",
        "azure_password",
        "azure_scope",
        "chatgpt_auth_file",
        "aws_session_token",
        "aws_role_name",
        "aws_profile_name",
        "aws_web_identity_token",
        "aws_sts_endpoint",
        "aws_bedrock_runtime_endpoint",
    }
)


def find_forbidden_parameter(body: dict[str, Any]) -> str | None:
    """Return the first provider connection parameter set in ``body``, if any."""
    forbidden = FORBIDDEN_PARAMETERS.intersection(body)
    return min(forbidden) if forbidden else None


def reject_forbidden_parameter(body: dict[str, Any]) -> None:
    """Raise InvalidRequest when ``body`` sets a provider connection parameter."""
    forbidden = find_forbidden_parameter(body)
    if forbidden is not None:
        raise InvalidRequest(
            f"The parameter '{forbidden}' cannot be set by clients, because the gateway's policy "
            "chooses the provider endpoint and credentials. Remove it from the request.",
            param=forbidden,
            code="unsupported_parameter",
        )


class Message(BaseModel):
    # Strict: the validated body is forwarded as sent, so "0.5" must not pass as a number.
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    # Checked in _check_content, whose errors name the part at fault; a union type would
    # report "Input should be a valid string" for a list with a string in it.
    content: Any = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _check_content(self) -> Message:
        check_message(self.role, self.content, self.tool_call_id)
        check_tool_calls(self.tool_calls)
        return self


def null_as_default(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """Return the field's default for a null ``value``, for a ``mode="before"`` validator.

    The openai SDK types some fields as Optional and sends null when a caller passes None.
    """
    if value is None and info.field_name is not None:
        return model.model_fields[info.field_name].default
    return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    # The sampling and tool parameters below are checked against OpenAI's types and ranges,
    # then forwarded as sent. Without the check, the direct path would pass a wrong type to a
    # server that may ignore it, while litellm rejects some values itself.
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    # Checked in _check_stop and _check_tool_choice, whose messages name both allowed forms.
    stop: Any = None
    seed: int | None = None
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    # OpenAI's API takes string keys and values. litellm reads metadata itself and fails on
    # anything but an object.
    metadata: dict[str, str] | None = None

    _replace_null_with_default = field_validator("stream", "n", mode="before")(
        classmethod(lambda cls, value, info: null_as_default(cls, value, info))
    )

    @field_validator("response_format")
    @classmethod
    def _check_response_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") not in ("text", "json_object", "json_schema"):
            raise InvalidField(("type",), "expected 'text', 'json_object' or 'json_schema'")
        return value

    @field_validator("tools")
    @classmethod
    def _check_tools(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for index, tool in enumerate(value or ()):
            kind = tool.get("type")
            if kind is None:
                raise MissingField((index, "type"))
            if not isinstance(kind, str):
                raise InvalidField((index, "type"), "expected a string, such as 'function'")
            if kind != "function":
                continue
            function = tool.get("function")
            if function is None:
                raise MissingField((index, "function"))
            if not isinstance(function, dict):
                raise InvalidField((index, "function"), "expected an object with a string 'name'")
            if function.get("name") is None:
                raise MissingField((index, "function", "name"))
            if not isinstance(function["name"], str):
                raise InvalidField((index, "function", "name"), "expected a string")
        return value

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError("stop must be a string or a list of strings")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _check_tool_choice(cls, value: Any) -> Any:
        if value is None or value in ("none", "auto", "required"):
            return value
        if not isinstance(value, dict):
            raise ValueError("tool_choice must be 'none', 'auto', 'required' or an object naming a tool")
        if value.get("type") is None:
            raise MissingField(("type",))
        if not isinstance(value["type"], str):
            raise InvalidField(("type",), "expected a string, such as 'function'")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.isdigit():
                raise ValueError(f"logit_bias keys are token ids written as strings, not '{token}'")
            if not -100 <= bias <= 100:
                raise InvalidField((token,), "expected a bias from -100 to 100")
        return value

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def output_token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def effective_temperature(self) -> float:
        """The temperature the model uses: OpenAI's default is 1 when the field is absent."""
        return 1.0 if self.temperature is None else self.temperature

    @property
    def needs_json_schema(self) -> bool:
        return self.response_format is not None and self.response_format.get("type") in (
            "json_schema",
            "json_object",
        )

    @property
    def has_tool_messages(self) -> bool:
        """Tell whether a message carries tool calls or is a tool or function result."""
        return has_tool_messages(self.messages)

    @property
    def content_part_types(self) -> frozenset[str]:
        """The ``type`` of every content part in the messages (empty for text-only content)."""
        return frozenset(
            part["type"]
            for message in self.messages
            if isinstance(message.content, list)
            for part in message.content
        )


def has_tool_messages(messages: Iterable[Any]) -> bool:
    """Tell whether any message carries tool calls or is a tool or function result.

    Takes validated ``Message`` objects, or the raw dicts that ``tierwise policy explain``
    reads from a file; other items count as plain messages.
    """
    calls: Any
    role: Any
    for message in messages:
        if isinstance(message, Message):
            calls, role = message.tool_calls, message.role
            legacy_call = (message.model_extra or {}).get("function_call")
        elif isinstance(message, dict):
            calls, role = message.get("tool_calls"), message.get("role")
            legacy_call = message.get("function_call")
        else:
            continue
        if calls or role in ("tool", "function") or legacy_call is not None:
            return True
    return False


def invalid_request(exc: ValidationError) -> InvalidRequest:
    """Return the 400 for the first error of a request model's validation.

    A missing field gets "Missing required parameter" and the code
    ``missing_required_parameter``, as OpenAI's API words them. An
    InvalidField raised by a validator adds its path to pydantic's location, so ``param``
    names the field inside the validated object, such as ``messages[0].content[1].type``.
    """
    error = exc.errors()[0]
    location = tuple(error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, InvalidField):
        location += cause.location
    param = error_parameter(location)
    if error["type"] == "missing" or isinstance(cause, MissingField):
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if isinstance(cause, InvalidField):
        message = cause.reason
    elif error["type"] in ("model_type", "dict_type"):
        # pydantic writes "a valid dictionary or instance of StreamOptions", naming a Python class.
        message = "Input should be a JSON object"
    elif error["type"] in ("too_short", "too_long"):
        # pydantic writes "List should have at least 1 item after validation, not 0".
        message = _length_message(error)
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return InvalidRequest(f"Invalid value for '{param}': {message}.", param=param)


def _length_message(error: Any) -> str:
    """Word a list length error as "expected at least 2 items (found 1)"."""
    context = error.get("ctx", {})
    if error["type"] == "too_short":
        bound, limit = "at least", context.get("min_length")
    else:
        bound, limit = "at most", context.get("max_length")
    noun = "item" if limit == 1 else "items"
    message = f"expected {bound} {limit} {noun}"

    found = context.get("actual_length")
    if found == 0:
        return f"{message} (found an empty list)"
    if found is not None:
        return f"{message} (found {found})"
    return message


def error_parameter(location: tuple[Any, ...]) -> str:
    """Render a pydantic error location as ``messages[0].content``, without union branch names."""
    name = ""
    for part in location:
        if isinstance(part, int):
            name += f"[{part}]"
        elif not _is_type_tag(str(part)):
            name += f".{part}" if name else str(part)
    return name or "body"


def _is_type_tag(part: str) -> bool:
    """Tell whether a pydantic error location part names a union branch, not a field."""
    return part in ("str", "int", "float", "bool", "dict[str,any]") or part.startswith(
        ("list[", "literal[", "function-", "dict[")
    )
