"""Checks of chat message content and tool calls that name the exact field at fault.

pydantic locates a validator's ``ValueError`` at the validated object, such as
``messages[0]``.  The checks here raise :class:`InvalidField`, which carries the path of the
field inside that object, and :func:`router.api.schemas.invalid_request` appends it, so the
400 names ``messages[0].content[1].type`` as OpenAI's API does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The content part types of OpenAI's Chat Completions API. Routing reads them to pick a
# deployment that can take the input, so a type outside this list is rejected rather than
# sent to a server that may fail on it with a 5xx.
CONTENT_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})

# The fields that each content part type requires, as (path of keys from the part, expected
# type) pairs. OpenAI's API rejects a part without them.
_REQUIRED_PART_FIELDS: dict[str, tuple[tuple[tuple[str, ...], type], ...]] = {
    "text": ((("text",), str),),
    "image_url": ((("image_url",), dict), (("image_url", "url"), str)),
    "input_audio": (
        (("input_audio",), dict),
        (("input_audio", "data"), str),
        (("input_audio", "format"), str),
    ),
    "file": ((("file",), dict),),
    "refusal": ((("refusal",), str),),
}

_TYPE_NAMES: dict[type, str] = {str: "a string", dict: "an object"}

# Prefixes that make litellm 1.110 (OpenAIGPTConfig.contains_pdf_url) treat a file part's
# file_id as a URL and download it before it calls the provider.
URL_FILE_ID_PREFIXES = ("https://", "http://", "www.")
URL_FILE_ID_REASON = (
    "a URL is not a file id, and the gateway fetches no URLs, so send the file's content as "
    "'file_data'"
)


class InvalidField(ValueError):
    """A validation error about a field inside the object that a pydantic validator checks.

    ``location`` is the field's path below that object, such as ``("content", 1, "type")``.
    It subclasses ValueError because pydantic turns only ValueError and AssertionError into
    validation errors.
    """

    def __init__(self, location: tuple[str | int, ...], reason: str) -> None:
        super().__init__(reason)
        self.location = location
        self.reason = reason


class MissingField(InvalidField):
    """An InvalidField for a required field that is absent or null."""

    def __init__(self, location: tuple[str | int, ...]) -> None:
        super().__init__(location, "a required field is missing")


def check_message(role: str, content: Any, tool_call_id: str | None) -> None:
    """Raise InvalidField for the content of a ``role`` message that OpenAI's API rejects.

    A tool message also needs the ``tool_call_id`` of the call whose result it contains.
    """
    if content is None and role in ("system", "developer", "user"):
        raise InvalidField(("content",), f"a {role} message needs content (a string or a list of parts)")
    # An empty list carries no input, and the local model's server returns a 500 for it.
    if content == [] and role in ("system", "developer", "user"):
        raise InvalidField(("content",), f"a {role} message needs at least one content part")
    if role == "tool" and tool_call_id is None:
        raise MissingField(("tool_call_id",))
    if role == "tool" and not tool_call_id:
        raise InvalidField(("tool_call_id",), "expected a non-empty string")
    if isinstance(content, list):
        for index, part in enumerate(content):
            check_content_part(part, ("content", index))
    elif content is not None and not isinstance(content, str):
        raise InvalidField(("content",), "expected a string or a list of content parts")


def check_content_part(part: Any, location: tuple[str | int, ...]) -> None:
    """Raise InvalidField for a content part without its type or its type's required fields."""
    if not isinstance(part, dict):
        raise InvalidField(
            location,
            'expected an object such as {"type": "text", "text": "..."}, not a bare value',
        )
    kind = part.get("type")
    if kind is None:
        raise MissingField((*location, "type"))
    if not isinstance(kind, str):
        raise InvalidField((*location, "type"), "expected a string, such as 'text'")
    if kind not in CONTENT_PART_TYPES:
        raise InvalidField(
            (*location, "type"),
            f"unknown content part type '{kind}'. The types are "
            f"{', '.join(sorted(CONTENT_PART_TYPES))}",
        )
    for path, expected in _REQUIRED_PART_FIELDS[kind]:
        value = _lookup(part, path)
        if value is None:
            raise MissingField((*location, *path))
        if not isinstance(value, expected):
            raise InvalidField((*location, *path), f"expected {_TYPE_NAMES[expected]}")
    if kind == "file":
        _check_file(part["file"], (*location, "file"))


def _check_file(file: dict[str, Any], location: tuple[str | int, ...]) -> None:
    """Raise InvalidField for a file part's ``file`` object without a usable file.

    The file travels as ``file_data`` (its content) or ``file_id`` (a file uploaded to the
    provider). Without either, no deployment gets anything to read, and the size estimate
    that routing uses would count nothing.
    """
    for key in ("file_data", "file_id", "filename"):
        if file.get(key) is not None and not isinstance(file[key], str):
            raise InvalidField((*location, key), "expected a string")
    if file.get("file_data") is None and file.get("file_id") is None:
        raise InvalidField(
            (*location, "file_data"),
            "a file part needs 'file_data' (the file's content) or 'file_id' (an uploaded file)",
        )
    if is_url_file_id(file.get("file_id")):
        raise InvalidField((*location, "file_id"), URL_FILE_ID_REASON)


def is_url_file_id(file_id: Any) -> bool:
    """Return whether ``file_id`` is a URL, which the litellm path would download."""
    return isinstance(file_id, str) and file_id.lower().startswith(URL_FILE_ID_PREFIXES)


def check_tool_calls(tool_calls: list[dict[str, Any]] | None) -> None:
    """Raise InvalidField for a tool call whose ``function`` or its fields have the wrong type."""
    for index, call in enumerate(tool_calls or ()):
        function = call.get("function")
        if function is None:
            continue
        location: tuple[str | int, ...] = ("tool_calls", index, "function")
        if not isinstance(function, dict):
            raise InvalidField(location, "expected an object with 'name' and 'arguments'")
        for key in ("name", "arguments"):
            if key in function and not isinstance(function[key], str):
                raise InvalidField((*location, key), "expected a string")


def _lookup(part: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """Return the value at ``path`` in ``part``, or None when a key on the path is absent.

    Every step but the last is an object, because an earlier entry of the same list checked it.
    """
    value: Any = part
    for key in path:
        value = value.get(key)
        if value is None:
            return None
    return value
