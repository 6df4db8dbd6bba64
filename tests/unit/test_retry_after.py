"""Parsing of the retry-after headers of upstream error responses."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from router.errors import MAX_RETRY_AFTER_S, retry_after_headers
from router.upstream.base import parse_retry_after


@pytest.mark.parametrize(
    ("retry_after_ms", "retry_after", "expected"),
    [
        (None, None, None),
        (None, "2", 2.0),
        (None, "1.5", 1.5),
        ("1500", "9", 1.5),
        ("invalid", "3", 3.0),
        ("-5", None, None),
        (None, "-1", None),
        (None, "soon", None),
        (None, "inf", None),
        (None, "nan", None),
    ],
)
def test_retry_after_values(
    retry_after_ms: str | None, retry_after: str | None, expected: float | None
) -> None:
    assert parse_retry_after(retry_after_ms, retry_after) == expected


def test_retry_after_http_date() -> None:
    future = parse_retry_after(None, formatdate(time.time() + 30, usegmt=True))
    past = parse_retry_after(None, formatdate(time.time() - 30, usegmt=True))

    assert future is not None
    assert 0 < future <= 30
    assert past == 0.0


def test_client_wait_is_capped() -> None:
    far = parse_retry_after(None, "Fri, 31 Dec 9999 23:59:59 GMT")
    assert far is not None

    assert retry_after_headers(far) == {
        "retry-after": str(MAX_RETRY_AFTER_S),
        "retry-after-ms": str(MAX_RETRY_AFTER_S * 1000),
    }
    assert retry_after_headers(0.2) == {"retry-after": "1", "retry-after-ms": "200"}
