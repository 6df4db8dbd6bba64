"""Policy hot reload rejects a policy that `tierwise policy check` rejects, and keeps the old one.

Each case writes a policy that parses as YAML and matches the schema's types, but breaks a
rule: a tenant named like the tenants the gateway generates, or an api_base that is no URL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import (
    RELOAD_INTERVAL_S,
    Gateway,
    GatewayKit,
    chat_body,
    eventually,
    policy_document,
    write_yaml,
)


def name_caller_key_tenant(document: dict[str, Any], gateway: Gateway) -> str:
    document["tenants"] = {"entries": {gateway.tenant: {}}}
    return f"    {gateway.tenant}: {{}}"


def name_anonymous_tenant(document: dict[str, Any], gateway: Gateway) -> str:
    document["tenants"] = {"entries": {"anonymous": {}}}
    return "    anonymous: {}"


def break_edge_api_base(document: dict[str, Any], gateway: Gateway) -> str:
    document["tiers"]["edge"]["deployments"][0]["api_base"] = "not a url"
    return "      api_base: not a url"


async def send_chat(gateway: Gateway, with_key: bool) -> httpx.Response:
    if with_key:
        return await gateway.chat(chat_body())
    return await gateway.client.post("/v1/chat/completions", json=chat_body())


@pytest.mark.parametrize(
    ("edit", "key", "with_key"),
    [
        (name_caller_key_tenant, "tenants.entries.key-", True),
        (name_anonymous_tenant, "tenants.entries.anonymous", False),
        (break_edge_api_base, "tiers.edge.deployments.0.api_base", True),
    ],
    ids=["key-tenant-name", "anonymous-tenant-name", "api-base"],
)
async def test_reload_rejects_invalid_policy(
    kit: GatewayKit,
    edit: Callable[[dict[str, Any], Gateway], str],
    key: str,
    with_key: bool,
) -> None:
    kit.write_policy()
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    async with kit.running(settings=settings) as gateway:
        version = gateway.runtime.policies.current.version
        before = await send_chat(gateway, with_key)

        document = policy_document(kit.base_urls)
        error_line_text = edit(document, gateway)
        write_yaml(kit.policy_path, document)
        error_line = kit.policy_path.read_text().splitlines().index(error_line_text) + 1

        async def rejected() -> bool:
            return gateway.runtime.policies.last_error is not None

        assert await eventually(rejected)
        after = await send_chat(gateway, with_key)
        ready = (await gateway.client.get("/readyz")).json()
        error = gateway.runtime.policies.last_error

    assert [r.status_code for r in (before, after)] == [200, 200]
    # The old policy's edge upstream served both requests.
    assert after.headers["x-tierwise-tier"] == "edge"
    assert len(kit.fakes["edge"].requests) == 2
    assert gateway.runtime.policies.current.version == version
    assert ready["policy"]["version"] == version
    assert ready["policy"]["last_reload_error"] is True
    assert error is not None
    assert f"{kit.policy_path}:{error_line}: {key}" in error
