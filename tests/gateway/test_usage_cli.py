"""``tierwise usage`` reads back the spend that gateways wrote to Redis, per tenant."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from typer.testing import CliRunner

from router.budgets import period_keys
from router.cli.main import app
from router.cli.usage import NO_REDIS_MESSAGE, TenantUsage, format_table, format_usd
from tests.gateway.conftest import (
    GatewayKit,
    chat_body,
    open_redis_client,
    policy_document,
    tenant_of_key,
    write_yaml,
)
from tests.support.redis_check import require_redis

USAGE_REDIS_DB = 11
"""The Redis database of these tests, apart from the other gateway tests' database."""
# Tenant "alpha" has both budgets and sends three requests; "beta" has a monthly budget only.
BUDGETS: dict[str, dict[str, float]] = {
    "alpha": {"usd_per_day": 0.5, "usd_per_month": 10.0},
    "beta": {"usd_per_month": 2.0},
}
REQUESTS_PER_TENANT: dict[str, int] = {"alpha": 3, "beta": 1}


@pytest.fixture
def usage_redis_url(redis_url: str) -> str:
    """The test Redis server's URL with this module's database number."""
    parts = urlsplit(redis_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{USAGE_REDIS_DB}", "", ""))
    return require_redis(url, "the usage tests need database 11 of the test Redis")


@pytest.fixture
def tenant_names() -> Iterator[dict[str, str]]:
    """Fresh tenant names for this test run, so parallel runs never share spend keys."""
    run = uuid.uuid4().hex[:8]
    yield {short: f"{short}-{run}" for short in BUDGETS}


def usage_policy(kit: GatewayKit, names: dict[str, str], keys: dict[str, str]) -> Path:
    document = policy_document(kit.base_urls, cache_enabled=False)
    document["tenants"] = {
        "entries": {
            names[short]: {
                "key_sha256": [hashlib.sha256(keys[short].encode()).hexdigest()],
                "budget": budget,
            }
            for short, budget in BUDGETS.items()
        }
    }
    return write_yaml(kit.policy_path, document)


def run_usage(*args: str, env: dict[str, str] | None = None) -> Any:
    # Without an explicit environment the command could read a Redis URL from the shell.
    base_env = {
        "TIERWISE_REDIS_URL": "",
        "REDIS_URL": "",
        "TIERWISE_POLICY": "",
        "TIERWISE_REDIS_KEY_PREFIX": "",
    }
    return CliRunner().invoke(app, ["usage", *args], env=base_env | (env or {}))


def delete_spend(url: str, tenants: list[str]) -> None:
    client = open_redis_client(url)
    try:
        client.delete(*[key for tenant in tenants for key in period_keys(tenant)])
    finally:
        client.close()


async def test_usage_reports_spend_of_two_tenants(
    kit: GatewayKit, usage_redis_url: str, tenant_names: dict[str, str]
) -> None:
    keys = {short: f"sk-usage-{short}-{uuid.uuid4().hex}" for short in BUDGETS}
    unlisted_key = f"sk-usage-unlisted-{uuid.uuid4().hex}"
    policy_path = usage_policy(kit, tenant_names, keys)
    kit.redis_url = usage_redis_url
    costs: dict[str, float] = {}
    try:
        async with kit.running(settings=kit.settings(use_redis=True)) as gateway:
            for short, count in REQUESTS_PER_TENANT.items():
                costs[short] = await send_requests(gateway, keys[short], count)
            costs["unlisted"] = await send_requests(gateway, unlisted_key, 1)
            await gateway.runtime.budgets.flush()
            usage_alpha = await gateway.client.get(
                "/v1/usage", headers={"Authorization": f"Bearer {keys['alpha']}"}
            )
        table = run_usage("--redis-url", usage_redis_url, "--policy", str(policy_path))
        as_json = run_usage(
            "--json",
            env={"TIERWISE_REDIS_URL": usage_redis_url, "TIERWISE_POLICY": str(policy_path)},
        )
    finally:
        delete_spend(usage_redis_url, [*tenant_names.values(), tenant_of_key(unlisted_key)])

    assert table.exit_code == 0, table.output
    assert as_json.exit_code == 0, as_json.output
    report = orjson.loads(as_json.output)
    rows = {row["tenant"]: row for row in report["tenants"]}
    alpha, beta = rows[tenant_names["alpha"]], rows[tenant_names["beta"]]
    unlisted = rows[tenant_of_key(unlisted_key)]

    assert report["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert [row["tenant"] for row in report["tenants"]][:2] == list(tenant_names.values())
    assert alpha["spend_usd"] == usage_alpha.json()["spend_usd"]
    assert alpha["spend_usd"]["day"] == pytest.approx(costs["alpha"])
    assert alpha["spend_usd"]["month"] == pytest.approx(costs["alpha"])
    assert alpha["budget_usd"] == {"day": 0.5, "month": 10.0}
    assert alpha["used"]["day"] == pytest.approx(costs["alpha"] / 0.5)
    assert alpha["used"]["month"] == pytest.approx(costs["alpha"] / 10.0)
    assert beta["spend_usd"]["day"] == pytest.approx(costs["beta"])
    assert beta["budget_usd"] == {"day": None, "month": 2.0}
    assert beta["used"] == {"day": None, "month": pytest.approx(costs["beta"] / 2.0)}
    assert unlisted["spend_usd"]["month"] == pytest.approx(costs["unlisted"])
    assert unlisted["budget_usd"] == {"day": None, "month": None}
    assert costs["alpha"] > costs["beta"] > 0
    table_lines = {line.split()[0]: line for line in table.output.splitlines()[2:]}
    assert format_usd(costs["alpha"]) in table_lines[tenant_names["alpha"]]
    assert "0.50" in table_lines[tenant_names["alpha"]]
    assert table_lines[tenant_names["beta"]].split()[2:4] == ["-", "-"]


async def send_requests(gateway: Any, api_key: str, count: int) -> float:
    """Send ``count`` chat requests with ``api_key``; return their summed cost in USD."""
    total = 0.0
    for number in range(count):
        response = await gateway.chat(chat_body(f"Usage test request {number}."), api_key=api_key)
        assert response.status_code == 200, response.text
        total += float(response.headers["x-tierwise-cost-usd"])
    return total


def test_usage_filters_by_tenant(
    kit: GatewayKit, usage_redis_url: str, tenant_names: dict[str, str]
) -> None:
    keys = {short: f"sk-usage-{short}-{uuid.uuid4().hex}" for short in BUDGETS}
    policy_path = usage_policy(kit, tenant_names, keys)
    alpha = tenant_names["alpha"]
    day_key, month_key = period_keys(alpha)
    client = open_redis_client(usage_redis_url)
    try:
        client.set(day_key, "0.25")
        client.set(month_key, "1.5")
        result = run_usage(
            "--redis-url", usage_redis_url, "--policy", str(policy_path),
            "--tenant", alpha, "--tenant", "nobody-spent-here", "--json",
        )  # fmt: skip
    finally:
        client.delete(day_key, month_key)
        client.close()

    assert result.exit_code == 0, result.output
    rows = orjson.loads(result.stdout)["tenants"]
    assert [row["tenant"] for row in rows] == [alpha, "nobody-spent-here"]
    assert result.stderr == (
        "warning: tenant 'nobody-spent-here' is not in the policy and has no spend this month; "
        "check the name (without --tenant, every tenant is listed).\n"
    )
    assert rows[0]["spend_usd"] == {"day": 0.25, "month": 1.5}
    assert rows[0]["used"] == {"day": 0.5, "month": 0.15}
    assert rows[1]["spend_usd"] == {"day": 0.0, "month": 0.0}
    assert rows[1]["used"] == {"day": None, "month": None}


def test_usage_without_redis_points_at_endpoint() -> None:
    result = run_usage()

    assert result.exit_code == 2
    assert NO_REDIS_MESSAGE in result.output
    assert "GET /v1/usage" in result.output


def test_usage_unreachable_redis_is_one_line() -> None:
    # Port 1 on the loopback address has no listener, so the connection is refused at once.
    result = run_usage("--redis-url", "redis://user:secret@127.0.0.1:1/0")

    assert result.exit_code == 1
    assert result.output.startswith("error: Redis at redis://127.0.0.1:1/0 failed: ")
    assert "secret" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_usage_invalid_policy_is_reported(tmp_path: Path, usage_redis_url: str) -> None:
    broken = write_yaml(tmp_path / "broken.yaml", {"version": 1})

    result = run_usage("--redis-url", usage_redis_url, "--policy", str(broken))

    assert result.exit_code == 2
    assert f"invalid policy {broken}" in result.output


def test_usage_reads_key_prefix(usage_redis_url: str, tenant_names: dict[str, str]) -> None:
    tenant = tenant_names["beta"]
    day_key, month_key = period_keys(tenant, prefix="staging")
    client = open_redis_client(usage_redis_url)
    try:
        client.set(day_key, "0.125")
        client.set(month_key, "0.75")
        found = run_usage(
            "--redis-url", usage_redis_url, "--json",
            env={"TIERWISE_REDIS_KEY_PREFIX": "staging"},
        )  # fmt: skip
        default_prefix = run_usage("--redis-url", usage_redis_url, "--tenant", tenant, "--json")
    finally:
        client.delete(day_key, month_key)
        client.close()

    assert found.exit_code == 0, found.output
    rows = {row["tenant"]: row for row in orjson.loads(found.output)["tenants"]}
    assert rows[tenant]["spend_usd"] == {"day": 0.125, "month": 0.75}
    assert default_prefix.exit_code == 0, default_prefix.output
    assert orjson.loads(default_prefix.stdout)["tenants"][0]["spend_usd"] == {
        "day": 0.0,
        "month": 0.0,
    }


def test_usage_rejects_pattern_prefix() -> None:
    result = run_usage("--redis-url", "redis://127.0.0.1:1/0", "--key-prefix", "tw*")

    assert result.exit_code == 2
    assert result.output.startswith("Invalid --key-prefix 'tw*': ")


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (0.0, "0.00"),
        (0.002, "0.002"),
        (0.00275, "0.00275"),
        (0.0027543, "0.002754"),
        (0.5, "0.50"),
        (12.3456, "12.35"),
        (1234.5678, "1,234.57"),
        (1e-12, "0.00"),
    ],
)
def test_usd_format_keeps_small_amounts(amount: float, expected: str) -> None:
    assert format_usd(amount) == expected


def test_usage_table_shows_small_budget() -> None:
    row = TenantUsage("tiny", 0.00275, 0.00275, day_budget_usd=0.002, month_budget_usd=None)

    line = format_table([row], now=0.0).splitlines()[2]

    assert line.split() == ["tiny", "0.00275", "0.002", "137.5%", "0.00275", "-", "-"]


def test_usage_share_has_no_float_artefacts() -> None:
    usage = TenantUsage("team-a", day_usd=0.0135, month_usd=0.0135,
                        day_budget_usd=0.01, month_budget_usd=None)
    assert usage.as_dict()["used"] == {"day": 1.35, "month": None}
