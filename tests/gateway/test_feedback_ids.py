"""``POST /v1/feedback`` accepts only request ids the gateway issued to the caller's tenant."""

from __future__ import annotations

import re
import stat
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from router.app import create_app
from router.redis_link import RedisLink
from router.request_ids import (
    SECRET_FILE_NAME,
    RequestIdSigner,
    check_shared_secret,
    load_signer,
    read_or_create_secret_file,
    redis_secret_key,
)
from tests.gateway.conftest import (
    Gateway,
    GatewayKit,
    LiveGateway,
    StubScorer,
    chat_body,
    new_api_key,
)

ISSUED_ID = re.compile(r"^req-[0-9a-f]{48}$")


def not_found_body(request_id: str) -> dict[str, Any]:
    message = (
        f"No request with id '{request_id}' was issued to this API key. Send the x-request-id "
        "that the gateway returned for a request made with the same key and without its own "
        "x-request-id header."
    )
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "request_id",
            "code": "request_id_not_found",
        }
    }


async def send_feedback(gateway: Gateway, request_id: str, api_key: str) -> httpx.Response:
    return await gateway.client.post(
        "/v1/feedback",
        json={"request_id": request_id, "score": 0.5},
        headers={"Authorization": f"Bearer {api_key}"},
    )


# The signer ---------------------------------------------------------------------------------


def test_signer_accepts_own_tenant_only() -> None:
    signer = RequestIdSigner(b"secret")
    request_id = signer.issue("tenant-a")

    assert ISSUED_ID.match(request_id)
    assert signer.verify(request_id, "tenant-a")
    assert not signer.verify(request_id, "tenant-b")
    assert not RequestIdSigner(b"other secret").verify(request_id, "tenant-a")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda rid: rid[:-1] + ("0" if rid[-1] != "0" else "1"),  # MAC changed
        lambda rid: rid[:10] + ("0" if rid[10] != "0" else "1") + rid[11:],  # random part changed
        lambda rid: rid + "0",  # too long
        lambda rid: rid[:-2],  # too short
        lambda rid: rid.upper(),  # not lower-case hex
        lambda rid: "rex-" + rid[4:],  # wrong prefix
    ],
    ids=["mac", "random", "long", "short", "upper", "prefix"],
)
def test_signer_rejects_altered_id(mangle: Any) -> None:
    signer = RequestIdSigner(b"secret")
    request_id = signer.issue("tenant-a")

    assert not signer.verify(mangle(request_id), "tenant-a")


def test_signer_rejects_empty_secret() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        RequestIdSigner(b"")


def test_secret_file_is_created_once_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / SECRET_FILE_NAME
    first = read_or_create_secret_file(path)
    second = read_or_create_secret_file(path)

    assert first == second
    assert len(first) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_signer_marks_unanswered_ids() -> None:
    signer = RequestIdSigner(b"secret")
    request_id = signer.issue("tenant-a")

    unanswered = signer.mark_unanswered(request_id, "tenant-a")

    assert ISSUED_ID.match(unanswered)
    assert unanswered[:36] == request_id[:36]
    assert unanswered != request_id
    assert signer.verify_unanswered(unanswered, "tenant-a")
    assert not signer.verify(unanswered, "tenant-a")
    assert not signer.verify_unanswered(request_id, "tenant-a")
    assert not signer.verify_unanswered(unanswered, "tenant-b")
    assert signer.mark_unanswered("client-7", "tenant-a") == "client-7"
    assert signer.mark_unanswered(request_id, "tenant-b") == request_id


def test_unanswered_ids_survive_secret_change() -> None:
    signer = RequestIdSigner(b"first")
    unanswered = signer.mark_unanswered(signer.issue("tenant-a"), "tenant-a")

    signer.adopt(b"second")

    assert signer.verify_unanswered(unanswered, "tenant-a")


# The endpoint -------------------------------------------------------------------------------


async def test_feedback_for_own_id_is_accepted(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        answer = await gateway.chat(chat_body())
        request_id = answer.headers["x-request-id"]
        response = await send_feedback(gateway, request_id, gateway.api_key)
        records = await gateway.records()

    assert ISSUED_ID.match(request_id)
    assert response.status_code == 200
    assert response.json() == {"object": "feedback", "request_id": request_id, "accepted": True}
    assert [r["type"] for r in records] == ["request", "feedback"]
    assert records[0]["request_id"] == request_id


async def test_feedback_for_unknown_id_is_404(kit: GatewayKit) -> None:
    unknown = "req-" + "0" * 48
    async with kit.running() as gateway:
        responses = [
            await send_feedback(gateway, request_id, gateway.api_key)
            for request_id in (unknown, "req-never-sent")
        ]
        records = await gateway.records()

    assert [r.status_code for r in responses] == [404, 404]
    assert responses[0].json() == not_found_body(unknown)
    assert responses[1].json() == not_found_body("req-never-sent")
    assert records == []


async def test_feedback_for_other_tenants_id_is_404(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        answer = await gateway.chat(chat_body())
        request_id = answer.headers["x-request-id"]
        response = await send_feedback(gateway, request_id, new_api_key())
        records = await gateway.records()

    assert response.status_code == 404
    assert response.json() == not_found_body(request_id)
    assert [r["type"] for r in records] == ["request"]


async def test_feedback_for_client_chosen_id_is_404(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        answer = await gateway.chat(chat_body(), headers={"x-request-id": "client-7"})
        response = await send_feedback(gateway, "client-7", gateway.api_key)

    assert answer.headers["x-request-id"] == "client-7"
    assert response.status_code == 404
    assert response.json() == not_found_body("client-7")


async def test_replaced_client_id_gets_feedback(kit: GatewayKit) -> None:
    # Behind a proxy that adds x-request-id to every request.
    kit.write_policy()
    settings = kit.settings(keep_client_request_ids=False)
    async with kit.running(settings=settings) as gateway:
        answer = await gateway.chat(chat_body(), headers={"x-request-id": "proxy-trace-1"})
        request_id = answer.headers["x-request-id"]
        response = await send_feedback(gateway, request_id, gateway.api_key)
        records = await gateway.request_records()

    assert ISSUED_ID.match(request_id)
    assert response.status_code == 200
    assert records[0]["request_id"] == request_id
    assert records[0]["client_request_id"] == "proxy-trace-1"


async def test_empty_request_id_header_gets_an_issued_id(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        answer = await gateway.chat(chat_body(), headers={"x-request-id": ""})
        request_id = answer.headers["x-request-id"]
        response = await send_feedback(gateway, request_id, gateway.api_key)

    assert ISSUED_ID.match(request_id)
    assert response.status_code == 200


async def test_configured_secret_is_shared(kit: GatewayKit, tmp_path: Path) -> None:
    kit.write_policy()
    first = kit.settings(feedback_secret="s3cret", data_dir=tmp_path / "one")
    second = kit.settings(feedback_secret="s3cret", data_dir=tmp_path / "two")
    async with kit.running(settings=first) as gateway:
        request_id = (await gateway.chat(chat_body())).headers["x-request-id"]
        api_key = gateway.api_key
    async with kit.running(settings=second) as gateway:
        response = await send_feedback(gateway, request_id, api_key)

    assert response.status_code == 200
    assert not (tmp_path / "one" / SECRET_FILE_NAME).exists()


async def test_secret_file_survives_restart(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        request_id = (await gateway.chat(chat_body())).headers["x-request-id"]
        api_key = gateway.api_key
    async with kit.running() as gateway:
        response = await send_feedback(gateway, request_id, api_key)

    assert response.status_code == 200
    assert (kit.tmp_path / "var" / SECRET_FILE_NAME).exists()


async def test_replicas_share_secret_through_redis(
    redis_kit: GatewayKit, redis_client: redis.Redis, tmp_path: Path
) -> None:
    prefix = f"fb{uuid.uuid4().hex[:8]}"
    redis_kit.write_policy()
    settings = [
        redis_kit.settings(use_redis=True, redis_key_prefix=prefix, data_dir=tmp_path / name)
        for name in ("one", "two")
    ]
    try:
        async with redis_kit.running(settings=settings[0]) as first:
            request_id = (await first.chat(chat_body())).headers["x-request-id"]
            async with redis_kit.running(settings=settings[1]) as second:
                accepted = await send_feedback(second, request_id, first.api_key)
                foreign = await send_feedback(second, request_id, new_api_key())
    finally:
        secret = redis_client.get(redis_secret_key(prefix))
        redis_client.delete(redis_secret_key(prefix))

    assert accepted.status_code == 200
    assert foreign.status_code == 404
    assert secret is not None and len(secret) == 64
    assert not (tmp_path / "one" / SECRET_FILE_NAME).exists()


def test_signer_adopts_secret_keeps_old_ids() -> None:
    signer = RequestIdSigner(b"first")
    before = signer.issue("team-a")
    signer.adopt(b"second")
    after = signer.issue("team-a")

    assert signer.verify(before, "team-a")
    assert signer.verify(after, "team-a")
    assert RequestIdSigner(b"second").verify(after, "team-a")
    assert not RequestIdSigner(b"first").verify(after, "team-a")


async def test_lost_redis_secret_is_restored(redis_url: str, tmp_path: Path) -> None:
    prefix = f"fb{uuid.uuid4().hex[:8]}"
    link = RedisLink(redis_url, timeout_s=1.0)
    key = redis_secret_key(prefix)
    try:
        signer = await load_signer(None, link, prefix, tmp_path)
        original = signer.secret
        await link.client.delete(key)  # Redis restarted without its data
        await check_shared_secret(signer, link, prefix)
        restored = await link.client.get(key)
        await link.client.set(key, b"f" * 64)  # another replica stored a new secret first
        await check_shared_secret(signer, link, prefix)
        issued = signer.issue("team-a")
    finally:
        await link.client.delete(key)
        await link.close()

    assert signer.source == "redis"
    assert restored == original
    assert signer.secret == b"f" * 64
    assert RequestIdSigner(b"f" * 64).verify(issued, "team-a")


def test_openai_client_sees_issued_id(kit: GatewayKit) -> None:
    kit.write_policy()
    api_key = new_api_key()
    app = create_app(kit.settings(), StubScorer())
    with LiveGateway(app) as live:
        client = openai.OpenAI(base_url=live.base_url, api_key=api_key, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Hello."}]
        )
        completion = raw.parse()
        feedback = httpx.post(
            f"{live.base_url}/feedback",
            json={"request_id": completion._request_id, "score": 1.0},
            headers={"Authorization": f"Bearer {api_key}"},
        )

    assert completion._request_id == raw.headers["x-request-id"]
    assert ISSUED_ID.match(raw.headers["x-request-id"])
    assert feedback.status_code == 200


async def test_unwritable_data_dir_uses_process_secret(kit: GatewayKit, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    kit.write_policy()
    async with kit.running(settings=kit.settings(data_dir=blocker / "var")) as gateway:
        request_id = (await gateway.chat(chat_body())).headers["x-request-id"]
        response = await send_feedback(gateway, request_id, gateway.api_key)

    assert response.status_code == 200


# Body validation ----------------------------------------------------------------------------


def invalid_value_body(param: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "message": f"Invalid value for '{param}': {message}.",
            "type": "invalid_request_error",
            "param": param,
            "code": "invalid_request",
        }
    }


@pytest.mark.parametrize(
    ("change", "param", "message"),
    [
        ({"score": True}, "score", "Input should be a valid number"),
        ({"score": False}, "score", "Input should be a valid number"),
        ({"score": "0.5"}, "score", "Input should be a valid number"),
        ({"score": None}, "score", "Input should be a valid number"),
        ({"score": 1.5}, "score", "Input should be less than or equal to 1"),
        ({"score": -1}, "score", "Input should be greater than or equal to 0"),
        ({"score": 2**70}, "score", "Input should be less than or equal to 1"),
        ({"request_id": 7}, "request_id", "Input should be a valid string"),
        ({"label": True}, "label", "Input should be a valid string"),
        ({"label": "x" * 201}, "label", "String should have at most 200 characters"),
        ({"comment": "good"}, "comment", "Extra inputs are not permitted"),
    ],
    ids=[
        "score-true", "score-false", "score-string", "score-null", "score-above", "score-below",
        "score-huge-int", "request-id-int", "label-bool", "label-long", "extra-field",
    ],
)
async def test_feedback_invalid_field_is_400(
    kit: GatewayKit, change: dict[str, Any], param: str, message: str
) -> None:
    async with kit.running() as gateway:
        request_id = (await gateway.chat(chat_body())).headers["x-request-id"]
        response = await gateway.client.post(
            "/v1/feedback",
            json={"request_id": request_id, "score": 0.5} | change,
            headers={"Authorization": f"Bearer {gateway.api_key}"},
        )
        records = await gateway.records()

    assert response.status_code == 400
    assert response.json() == invalid_value_body(param, message)
    assert [r["type"] for r in records] == ["request"]


async def test_feedback_missing_score_is_400(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        request_id = (await gateway.chat(chat_body())).headers["x-request-id"]
        response = await gateway.client.post(
            "/v1/feedback",
            json={"request_id": request_id},
            headers={"Authorization": f"Bearer {gateway.api_key}"},
        )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == "Missing required parameter: 'score'."
    assert error["param"] == "score"
    assert error["code"] == "missing_required_parameter"


@pytest.mark.parametrize("score", [0, 1])
async def test_feedback_integer_score_is_accepted(kit: GatewayKit, score: int) -> None:
    async with kit.running() as gateway:
        request_id = (await gateway.chat(chat_body())).headers["x-request-id"]
        response = await gateway.client.post(
            "/v1/feedback",
            json={"request_id": request_id, "score": score, "label": "checked"},
            headers={"Authorization": f"Bearer {gateway.api_key}"},
        )
        records = await gateway.records()

    assert response.status_code == 200
    assert [r["type"] for r in records] == ["request", "feedback"]
    assert records[1]["score"] == score
    assert records[1]["label"] == "checked"


def not_answered_body(request_id: str) -> dict[str, Any]:
    message = (
        f"The request '{request_id}' ended in an error response, so it has no answer to rate; "
        "send feedback for requests that returned an answer."
    )
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "request_id",
            "code": "request_not_answered",
        }
    }


async def test_feedback_for_rate_limited_request_is_409(kit: GatewayKit) -> None:
    from tests.gateway.test_rate_limits import LimitedTenant, limited_gateway, write_limit_policy

    tenant = LimitedTenant.new()
    write_limit_policy(kit, tenant, 1, cache_enabled=False)
    async with limited_gateway(kit, tenant) as gateway:
        answered = await gateway.chat(chat_body(), api_key=tenant.api_key)
        limited = await gateway.chat(chat_body(), api_key=tenant.api_key)
        limited_id = limited.headers["x-request-id"]
        rejected = await send_feedback(gateway, limited_id, tenant.api_key)
        accepted = await send_feedback(gateway, answered.headers["x-request-id"], tenant.api_key)
        records = await gateway.records()

    assert limited.status_code == 429
    assert ISSUED_ID.match(limited_id)
    assert rejected.status_code == 409
    assert rejected.json() == not_answered_body(limited_id)
    assert accepted.status_code == 200
    # The record of the limited request carries the id that its response returned.
    assert [(r["type"], r["request_id"], r.get("status")) for r in records] == [
        ("request", answered.headers["x-request-id"], 200),
        ("request", limited_id, 429),
        ("feedback", answered.headers["x-request-id"], None),
    ]


async def test_feedback_for_invalid_request_is_409(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        invalid = await gateway.chat({"model": "auto", "messages": []})
        request_id = invalid.headers["x-request-id"]
        response = await send_feedback(gateway, request_id, gateway.api_key)
        other_tenant = await send_feedback(gateway, request_id, new_api_key())

    assert invalid.status_code == 400
    assert response.status_code == 409
    assert response.json() == not_answered_body(request_id)
    # Another tenant learns nothing about the id.
    assert other_tenant.status_code == 404
    assert other_tenant.json() == not_found_body(request_id)
