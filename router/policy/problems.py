"""Describe pydantic's validation errors of a policy in plain words, at their YAML lines."""

from __future__ import annotations

import difflib
import math
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import orjson
import yaml
from pydantic import BaseModel
from pydantic_core import ErrorDetails

from router.policy.schema import TIER_ORDER, Policy

# pydantic's messages for a value of the wrong container type, which name Python types and
# the schema's class names, in the words of a YAML file.
_CONTAINER_MESSAGES = {
    "model_type": "expected a mapping of keys and values",
    "model_attributes_type": "expected a mapping of keys and values",
    "dict_type": "expected a mapping of keys and values",
    "list_type": "expected a list",
}

# pydantic's messages for a scalar of the wrong type ("Input should be a valid integer, unable
# to parse string as an integer"), in YAML's terms.
_SCALAR_MESSAGES = {
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "int_parsing_size": "the number is too large",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number, not .inf or .nan",
    "string_type": "expected a string",
}

# pydantic's messages for a number out of bounds ("Input should be greater than 0"), by the
# name of the bound in the error's context.
_BOUND_MESSAGES = {
    "greater_than": ("gt", "must be greater than {}"),
    "greater_than_equal": ("ge", "must be at least {}"),
    "less_than": ("lt", "must be less than {}"),
    "less_than_equal": ("le", "must be at most {}"),
}


def describe_error(error: ErrorDetails, root: yaml.Node | None, path: Path) -> str:
    """Return one problem line, ``FILE:LINE: KEY: MESSAGE (found VALUE)``, for ``error``."""
    # An error from schema.nested_value_error or nested_missing_error names a value inside
    # the validated field or model.
    context: dict[str, Any] = dict(error.get("ctx") or {})
    nested_location = list(context.get("policy_location", ()))
    location = [part for part in error["loc"] if not _is_validator_name(part)] + nested_location
    is_key_error = bool(location) and location[-1] == "[key]"
    if is_key_error:
        location = location[:-1]
    if error["type"] == "missing" and not nested_location:
        return _missing_key_problem(location, root, path)

    is_unknown_key = error["type"] == "extra_forbidden"
    line = line_of(root, location, key_line=is_key_error or is_unknown_key)
    key = _dotted(location)
    if "policy_location" in context and "policy_found" not in context and error["type"] != "missing":
        # The validator's message already quotes the value.
        return f"{path}:{line}: {key}: {error['msg']}"

    found = context["policy_found"] if "policy_found" in context else error.get("input")
    message, quotes_found = _plain_message(error, location, is_key_error, found)
    if quotes_found or is_key_error:
        # A key error's path ends with the key that was found.
        return f"{path}:{line}: {key}: {message}"
    found_text = _short(found) if error["type"] != "missing" else "nothing"
    if "key_sha256" in location and error["type"] != "missing" and not _looks_like_digest(found):
        # An operator may paste the API key itself here, and problems reach the log.
        found_text = "a value not shown, because it may be the API key itself"
    return f"{path}:{line}: {key}: {message} (found {found_text}){_local_model_hint(location, found)}"


def _local_model_hint(location: list[Any], found: Any) -> str:
    """Return a sentence that tells the two ``local_model`` keys apart, or "".

    The top-level ``local_model`` section holds the liveness probe settings, while a
    deployment's ``local_model: true`` marks a deployment that the local model serves.
    """
    if location == ["local_model"] and isinstance(found, bool):
        return (
            ". The top-level local_model section sets the local model's liveness probe "
            "(probe_interval_s, probe_timeout_s, probe_failures). To mark a deployment that the "
            "local model serves, set local_model: true on that deployment"
        )
    if len(location) > 1 and location[-1] == "local_model" and isinstance(found, dict):
        return (
            ". A deployment's local_model is true or false, and the probe settings belong in "
            "the top-level local_model section"
        )
    return ""


def _missing_key_problem(location: list[Any], root: yaml.Node | None, path: Path) -> str:
    """Name the missing key and the section that lacks it, at the section's own line."""
    section, missing = location[:-1], location[-1]
    line = line_of(root, section, key_line=True)
    if not section:
        return f"{path}:{line}: missing required top-level key '{missing}'"
    return f"{path}:{line}: {_dotted(section)}: missing required key '{missing}'"


def _plain_message(
    error: ErrorDetails, location: list[Any], is_key_error: bool, found: Any
) -> tuple[str, bool]:
    """Return the message for ``error`` in plain words, and whether it quotes ``found``."""
    error_type = error["type"]
    context: dict[str, Any] = dict(error.get("ctx") or {})
    if error_type in _CONTAINER_MESSAGES:
        return _CONTAINER_MESSAGES[error_type], False
    # pydantic checks an integer Literal's input as an integer first.
    if error_type == "literal_error" or (
        error_type == "int_parsing_size" and _literal_values(location, is_key_error)
    ):
        return _literal_message(location, is_key_error, found, str(context.get("expected", "")))
    if _is_number_too_large(error_type, found):
        bound = _upper_bound(location)
        if bound is not None:
            return f"must be at most {_number(bound)}", False
        return _SCALAR_MESSAGES["int_parsing_size"], False
    if error_type in _SCALAR_MESSAGES:
        message = _SCALAR_MESSAGES[error_type]
        if error_type == "string_type" and isinstance(found, bool | int | float):
            message += "; YAML reads this value as a number or boolean, so put it in quotes"
        elif error_type in ("int_type", "int_parsing") and _is_exponent_text(found):
            # YAML 1.1, which PyYAML reads, takes 1e30 without a dot for a string.
            message += f" written in digits; YAML reads {found} as a string"
        elif error_type == "int_type" and _is_number_text(found):
            # Strict fields reject numbers written in quotes, which YAML reads as strings.
            message += " without quotes"
        return message, False
    if error_type in _BOUND_MESSAGES:
        bound, template = _BOUND_MESSAGES[error_type]
        return template.format(_number(context[bound])), False
    if error_type in ("string_too_short", "too_short"):
        return _too_short_message(error_type, int(context["min_length"])), False
    if error_type == "extra_forbidden":
        return _unknown_key_message(location), False
    message = error["msg"].removeprefix("Value error, ")
    return message, isinstance(found, str) and repr(found) in message


def _is_number_too_large(error_type: str, found: Any) -> bool:
    """Return whether pydantic rejected ``found`` only because it does not fit the field's type.

    A whole number beyond a double's range (10**400) fails a float field as "not a number",
    and a float beyond 64 bits (1.0e+30) fails a lax integer field as too large.
    """
    if error_type == "int_parsing_size":
        return True
    return error_type == "float_type" and isinstance(found, int) and not isinstance(found, bool)


def _upper_bound(location: list[Any]) -> Any:
    """Return the schema's upper bound (``le``) of the number at ``location``, or None."""
    if not location:
        return None
    parent = _annotation_at(location[:-1])
    if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
        return None
    field = parent.model_fields.get(str(location[-1]))
    if field is None:
        return None
    for constraint in field.metadata:
        bound = getattr(constraint, "le", None)
        if bound is not None:
            return bound
    return None


def _too_short_message(error_type: str, min_length: int) -> str:
    if min_length == 1:
        return "must not be empty"
    unit = "characters" if error_type == "string_too_short" else "items"
    return f"must contain at least {min_length} {unit}"


def _unknown_key_message(location: list[Any]) -> str:
    known = _known_keys(location[:-1])
    if not known:
        return "unknown key"
    match = difflib.get_close_matches(str(location[-1]), known, n=1)
    if match:
        return f"unknown key; did you mean '{match[0]}'? Expected one of {', '.join(known)}"
    return f"unknown key; expected one of {', '.join(known)}"


def _literal_message(
    location: list[Any], is_key_error: bool, found: Any, pydantic_expected: str
) -> tuple[str, bool]:
    """Describe a value or mapping key that matches none of a Literal's values."""
    values = _literal_values(location, is_key_error)
    if not values:
        return f"expected {pydantic_expected}", False
    if len(values) == 1:
        return f"expected {values[0]}", False
    expected = f"expected one of {', '.join(values)}"
    match = difflib.get_close_matches(str(found), values, n=1)
    if match and match[0] != str(found):
        expected = f"did you mean '{match[0]}'? Expected one of {', '.join(values)}"
    if tuple(values) == TIER_ORDER:
        return f"unknown tier {_short(found)}; {expected}", True
    if is_key_error:
        return f"unknown key; {expected}", True
    return expected, False


def _literal_values(location: list[Any], is_key_error: bool) -> list[str]:
    """Return the values that the schema's Literal at ``location`` allows, or none."""
    annotation = _annotation_at(location[:-1], key=True) if is_key_error else _annotation_at(location)
    if get_origin(annotation) is not Literal:
        return []
    return [str(value) for value in get_args(annotation)]


def _known_keys(location: list[Any]) -> list[str]:
    """Return the keys that the schema allows in the mapping at ``location``, or none."""
    annotation = _annotation_at(location)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _annotation_at(location: list[Any], key: bool = False) -> Any:
    """Return the schema's type of the value at ``location``, or None if it has none.

    With ``key`` the value at ``location`` must be a mapping, and the type of its keys is
    returned instead.
    """
    annotation: Any = Policy
    for part in location:
        annotation = _unwrap(annotation)
        if get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        else:
            return None
    annotation = _unwrap(annotation)
    if key:
        if get_origin(annotation) is not dict:
            return None
        annotation = _unwrap(get_args(annotation)[0])
    return annotation


def _unwrap(annotation: Any) -> Any:
    """Remove ``Annotated`` and ``| None`` from ``annotation``."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _dotted(location: list[Any]) -> str:
    return ".".join(str(part) for part in location) or "(top level)"


def _is_number_text(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _is_exponent_text(value: Any) -> bool:
    return isinstance(value, str) and _EXPONENT_TEXT.fullmatch(value.strip()) is not None


_EXPONENT_TEXT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


def _number(value: Any) -> str:
    # Whole-number bounds of float fields (MAX_BUDGET_USD) read better in digits than as 1e+12.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _looks_like_digest(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value) is not None


def _is_validator_name(part: Any) -> bool:
    # pydantic puts the branch name of a Literal/union check into the location.
    return isinstance(part, str) and part.startswith(("literal[", "function-"))


def line_of(node: yaml.Node | None, location: list[Any], key_line: bool = False) -> int:
    """1-based line of the deepest YAML node that ``location`` reaches.

    With ``key_line`` the last step stops at the mapping key instead of its value.
    """
    line = node.start_mark.line + 1 if node is not None else 1
    for position, part in enumerate(location):
        at_key = key_line and position == len(location) - 1
        child = _child(node, part, at_key)
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _child(node: yaml.Node | None, part: Any, at_key: bool = False) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == str(part):
                # A scalar's own line is its key's line; nested nodes start on the next line.
                if at_key or isinstance(value_node, yaml.ScalarNode):
                    return key_node
                return value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None


def _short(value: Any) -> str:
    """Describe a found value in a few words: a scalar as written, a mapping by its keys."""
    if isinstance(value, dict):
        text = f"a mapping with keys {', '.join(map(str, value))}" if value else "an empty mapping"
    elif isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        text = f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    elif isinstance(value, bool) or value is None:
        # As YAML spells them, not Python's True and None.
        text = orjson.dumps(value).decode()
    elif isinstance(value, float) and not math.isfinite(value):
        text = ".nan" if math.isnan(value) else f"{'-' if value < 0 else ''}.inf"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
