"""RecordingResponse runs its outcome callback after the body, also when sending fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.responses import Response

from router.api.recording import json_response

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


async def _receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def test_callback_runs_after_body_is_sent() -> None:
    events: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        events.append(message["type"])

    response = json_response({"id": "x"}, {"x-request-id": "r1"}, on_sent=lambda: events.append("recorded"))
    asyncio.run(response(SCOPE, _receive, send))

    assert events == ["http.response.start", "http.response.body", "recorded"]


def test_callback_runs_when_send_fails() -> None:
    recorded: list[bool] = []

    async def send(message: dict[str, Any]) -> None:
        raise OSError("connection reset by peer")

    response = json_response({"id": "x"}, {}, on_sent=lambda: recorded.append(True))
    with pytest.raises(OSError):
        asyncio.run(response(SCOPE, _receive, send))

    assert recorded == [True]


def test_callback_runs_once() -> None:
    calls: list[int] = []
    response = json_response({"id": "x"}, {}, on_sent=lambda: calls.append(1))

    response.run_on_sent()
    response.run_on_sent()

    assert calls == [1]


def test_headers_match_starlette_response() -> None:
    headers = {
        "x-request-id": "req-1",
        "x-tierwise-tier": "edge",
        "x-tierwise-cost-usd": "0.00001300",
        "x-ratelimit-remaining-tokens": "9000",
    }
    body = b'{"id":"x"}'

    response = json_response({"id": "x"}, headers)
    expected = Response(body, headers=headers, media_type="application/json")

    assert response.body == expected.body
    assert response.status_code == expected.status_code == 200
    assert response.raw_headers == expected.raw_headers
    assert response.background is None
