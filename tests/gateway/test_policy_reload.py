"""Policy hot reload: a broken file keeps the last good policy, a valid change applies."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.gateway.conftest import (
    RELOAD_INTERVAL_S,
    GatewayKit,
    chat_body,
    eventually,
    policy_document,
    write_yaml,
)
from tests.support.fake_upstream import FakeUpstream


async def test_invalid_policy_keeps_old_then_valid_applies(kit: GatewayKit) -> None:
    kit.write_policy()
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    with FakeUpstream("fake-replacement") as replacement:
        async with kit.running(settings=settings) as gateway:
            first_version = gateway.runtime.policies.current.version
            before = await gateway.chat(chat_body())

            # A policy without tiers is invalid: the gateway keeps serving the old one.
            broken = policy_document(kit.base_urls)
            del broken["tiers"]
            write_yaml(kit.policy_path, broken)

            async def reports_error() -> bool:
                ready = (await gateway.client.get("/readyz")).json()
                return bool(ready["policy"]["last_reload_error"])

            assert await eventually(reports_error)
            during = await gateway.chat(chat_body())
            ready_during = (await gateway.client.get("/readyz")).json()

            # A valid change pointing the edge tier at another upstream applies to new requests.
            changed = policy_document({**kit.base_urls, "edge": replacement.base_url})
            write_yaml(kit.policy_path, changed)

            async def reloaded() -> bool:
                return gateway.runtime.policies.current.version != first_version

            assert await eventually(reloaded)
            after = await gateway.chat(chat_body())
            ready_after = (await gateway.client.get("/readyz")).json()
            records = await gateway.request_records()

    assert [r.status_code for r in (before, during, after)] == [200, 200, 200]
    assert ready_during["status"] == "ready"
    assert ready_during["policy"]["version"] == first_version
    assert ready_during["policy"]["last_reload_error"] is True
    rejected = ready_during["policy"]["rejected_edit"]
    assert rejected["problems"] == 1
    assert rejected["lines"] == [1]
    assert abs(rejected["at"] - time.time()) < 60
    assert ready_after["policy"]["last_reload_error"] is False
    assert ready_after["policy"]["rejected_edit"] is None
    assert ready_after["policy"]["version"] != first_version
    # The first two requests went to the original edge upstream, the third to the replacement.
    assert len(kit.fakes["edge"].requests) == 2
    assert len(replacement.requests) == 1
    assert replacement.requests[0].body["model"] == "fake-edge"
    assert [r["policy_version"] for r in records] == [
        first_version,
        first_version,
        ready_after["policy"]["version"],
    ]


async def test_reload_changes_routing_thresholds(kit: GatewayKit) -> None:
    kit.write_policy()
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    async with kit.running(settings=settings) as gateway:
        before = await gateway.chat(chat_body())
        # The stub scores every tier 0.9; an edge threshold of 0.95 sends requests to mid.
        document: dict[str, Any] = policy_document(
            kit.base_urls, thresholds={"edge": 0.95, "mid": 0.6}
        )
        write_yaml(kit.policy_path, document)
        version = gateway.runtime.policies.current.version

        async def reloaded() -> bool:
            return gateway.runtime.policies.current.version != version

        assert await eventually(reloaded)
        after = await gateway.chat(chat_body())

    assert before.headers["x-tierwise-tier"] == "edge"
    assert after.headers["x-tierwise-tier"] == "mid"


async def test_unreadable_yaml_keeps_old_policy(kit: GatewayKit) -> None:
    kit.write_policy()
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    async with kit.running(settings=settings) as gateway:
        version = gateway.runtime.policies.current.version
        kit.policy_path.write_text("tiers: [unclosed\n", encoding="utf-8")

        async def rejected() -> bool:
            return gateway.runtime.policies.last_error is not None

        assert await eventually(rejected)
        response = await gateway.chat(chat_body())
        error = gateway.runtime.policies.last_error

    assert response.status_code == 200
    assert gateway.runtime.policies.current.version == version
    assert error is not None
    assert f"{kit.policy_path}:2: invalid YAML" in error


async def test_deleted_policy_file_reported(kit: GatewayKit) -> None:
    kit.write_policy()
    text = kit.policy_path.read_text(encoding="utf-8")
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    with capture_logs() as logs:
        async with kit.running(settings=settings) as gateway:
            version = gateway.runtime.policies.current.version
            kit.policy_path.unlink()

            async def reports_missing() -> bool:
                ready = (await gateway.client.get("/readyz")).json()
                return ready["policy"]["file_error"] == "No such file or directory"

            assert await eventually(reports_missing)
            response = await gateway.chat(chat_body())
            await asyncio.sleep(RELOAD_INTERVAL_S * 3)  # more checks while the file is missing
            kit.policy_path.write_text(text, encoding="utf-8")

            async def readable() -> bool:
                return gateway.runtime.policies.file_error is None

            assert await eventually(readable)
            ready_after = (await gateway.client.get("/readyz")).json()

    assert response.status_code == 200
    assert gateway.runtime.policies.current.version == version
    assert ready_after["policy"]["file_error"] is None
    missing = [entry for entry in logs if entry["event"] == "policy_file_unreadable"]
    assert len(missing) == 1
    assert missing[0]["log_level"] == "warning"
    assert missing[0]["path"] == str(kit.policy_path)
    assert "keeps serving" in missing[0]["effect"]
    assert [entry["event"] for entry in logs if entry["event"] == "policy_file_readable"] == [
        "policy_file_readable"
    ]


async def test_non_utf8_edit_keeps_reloading(kit: GatewayKit) -> None:
    kit.write_policy()
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    async with kit.running(settings=settings) as gateway:
        version = gateway.runtime.policies.current.version
        # A key pasted from a file in another encoding: Latin-1 bytes are not valid UTF-8.
        kit.policy_path.write_bytes(b"# key: sk-\xe9t\xe9-secret\n" + kit.policy_path.read_bytes())

        async def rejected() -> bool:
            return gateway.runtime.policies.rejected is not None

        assert await eventually(rejected)
        ready_during = (await gateway.client.get("/readyz")).json()
        write_yaml(kit.policy_path, policy_document(kit.base_urls, thresholds={"edge": 0.95}))

        async def reloaded() -> bool:
            return gateway.runtime.policies.current.version != version

        assert await eventually(reloaded)
        ready_after = (await gateway.client.get("/readyz")).json()

    assert ready_during["policy"]["version"] == version
    assert ready_during["policy"]["rejected_edit"]["problems"] == 1
    assert ready_during["policy"]["rejected_edit"]["lines"] == [1]
    assert "secret" not in str(ready_during)
    assert ready_after["policy"]["rejected_edit"] is None


async def test_failing_reload_hook_keeps_watching(
    kit: GatewayKit, capfd: pytest.CaptureFixture[str]
) -> None:
    kit.write_policy()
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    async with kit.running(settings=settings) as gateway:
        store = gateway.runtime.policies
        hook = store.on_reload
        calls = 0

        def failing_once(loaded: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("hook failed")
            assert hook is not None
            hook(loaded)

        store.on_reload = failing_once
        write_yaml(kit.policy_path, policy_document(kit.base_urls, thresholds={"edge": 0.95}))
        async def hook_failed() -> bool:
            return calls == 1

        assert await eventually(hook_failed)
        write_yaml(kit.policy_path, policy_document(kit.base_urls, thresholds={"edge": 0.9}))

        async def second_edit_loaded() -> bool:
            return store.current.policy.routing.thresholds["edge"] == 0.9

        assert await eventually(second_edit_loaded)
        response = await gateway.chat(chat_body())

    assert calls == 2
    assert response.status_code == 200
    logged = capfd.readouterr()
    assert "policy_watch_failed" in logged.out + logged.err
    assert "hook failed" not in logged.out + logged.err
