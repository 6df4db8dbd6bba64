"""The x-request-id of an error response matches its outcome record, its log lines and feedback."""

from __future__ import annotations

import re

import pytest

from tests.gateway.conftest import FailingScorer, GatewayKit, chat_body
from tests.gateway.test_feedback_ids import not_answered_body, send_feedback
from tests.support.fake_upstream import Scenario


async def test_feedback_for_internal_error_is_409(kit: GatewayKit) -> None:
    async with kit.running(scorer=FailingScorer()) as gateway:
        failed = await gateway.chat(chat_body())
        request_id = failed.headers["x-request-id"]
        response = await send_feedback(gateway, request_id, gateway.api_key)
        records = await gateway.request_records()

    assert failed.status_code == 500
    assert response.status_code == 409
    assert response.json() == not_answered_body(request_id)
    assert [r["request_id"] for r in records] == [request_id]


async def test_feedback_for_messages_internal_error_is_409(kit: GatewayKit) -> None:
    body = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    async with kit.running(scorer=FailingScorer()) as gateway:
        failed = await gateway.client.post(
            "/v1/messages", json=body, headers={"x-api-key": gateway.api_key}
        )
        request_id = failed.headers["x-request-id"]
        response = await send_feedback(gateway, request_id, gateway.api_key)

    assert failed.status_code == 500
    assert failed.headers["request-id"] == request_id
    assert response.status_code == 409


async def test_upstream_failure_log_links_ids(
    kit: GatewayKit, capfd: pytest.CaptureFixture[str]
) -> None:
    for fake in kit.fakes.values():
        fake.set_default(Scenario.http_error(503, "overloaded"))
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body())

    output = capfd.readouterr()
    lines = (output.out + output.err).splitlines()
    failures = [line for line in lines if "upstream_failed" in line]
    summaries = [line for line in lines if "[info     ] request " in line]
    request_id = response.headers["x-request-id"]
    assert response.status_code == 502
    assert len(failures) == 3
    assert len(summaries) == 1
    assert f"request_id={request_id}" in summaries[0]
    # The summary line names the issued id, which the lines logged before the error carry.
    issued = re.search(r"issued_request_id=(req-[0-9a-f]{48})", summaries[0])
    assert issued is not None
    assert issued[1] != request_id
    assert issued[1][:36] == request_id[:36]
    assert [f"request_id={issued[1]}" in line for line in failures] == [True] * 3


async def test_answered_request_log_has_one_id(
    kit: GatewayKit, capfd: pytest.CaptureFixture[str]
) -> None:
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body())

    output = capfd.readouterr()
    summaries = [line for line in (output.out + output.err).splitlines()
                 if "[info     ] request " in line]
    assert response.status_code == 200
    assert len(summaries) == 1
    assert f"request_id={response.headers['x-request-id']}" in summaries[0]
    assert "issued_request_id" not in summaries[0]
