"""Wording of the 400 that a request model's validation error becomes."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError

from router.api.schemas import invalid_request


class _Lists(BaseModel):
    one_or_more: list[int] = Field(default=[1], min_length=1)
    two_or_more: list[int] = Field(default=[1, 2], min_length=2)
    at_most_one: list[int] = Field(default_factory=list, max_length=1)
    at_most_two: list[int] = Field(default_factory=list, max_length=2)


def _message(**fields: object) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as caught:
        _Lists.model_validate(fields)
    error = invalid_request(caught.value)
    return error.message, error.param


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"one_or_more": []}, "Invalid value for 'one_or_more': expected at least 1 item (found an empty list)."),
        ({"two_or_more": [1]}, "Invalid value for 'two_or_more': expected at least 2 items (found 1)."),
        ({"at_most_one": [1, 2]}, "Invalid value for 'at_most_one': expected at most 1 item (found 2)."),
        ({"at_most_two": [1, 2, 3]}, "Invalid value for 'at_most_two': expected at most 2 items (found 3)."),
    ],
)
def test_list_length_message(fields: dict[str, object], expected: str) -> None:
    message, param = _message(**fields)

    assert message == expected
    assert param == next(iter(fields))
    assert "after validation" not in message
