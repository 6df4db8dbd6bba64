"""``tierwise usage``: each tenant's spend today and this month against its budgets.

The gateways keep spend per tenant in Redis under the keys of ``router.budgets.period_keys``
(UTC day and month), and this command reads the same keys.  Spend that a gateway has not
flushed yet (every ``router.budgets.FLUSH_INTERVAL_S`` seconds) is not included.

With ``--redis-cluster`` it reads a Redis Cluster: the SCAN for unlisted tenants visits
every primary, and each tenant's two keys share one hash slot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from router.budgets import period_keys
from router.cli.redis_client import ClusterOption, redis_session
from router.policy.schema import Policy
from router.redis_link import DEFAULT_KEY_PREFIX

NO_REDIS_MESSAGE = (
    "No Redis URL given, so there is no shared spend to read: a gateway without Redis keeps "
    "usage only in its own process. Ask that gateway with GET /v1/usage (each API key sees "
    "its own spend), or pass --redis-url (or set TIERWISE_REDIS_URL) to the Redis the "
    "gateways use."
)
# Characters that a SCAN pattern or a Redis Cluster hash tag would read as syntax.
PREFIX_FORBIDDEN = frozenset("*?[]\\{}")
SCAN_BATCH = 500
"""Keys per SCAN call when looking for tenants that the policy does not list."""
USD_SIGNIFICANT_DIGITS = 4
"""Minimum significant digits of a USD amount in the table, so a 0.002 budget is not 0.00."""
MAX_USD_DECIMALS = 8
"""Decimals of the smallest amounts in the table, as in the JSON output's rounding."""


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """One tenant's spend and budgets, in USD; a budget of None means no limit."""

    tenant: str
    day_usd: float
    month_usd: float
    day_budget_usd: float | None
    month_budget_usd: float | None

    @property
    def day_share(self) -> float | None:
        """Share of the daily budget used (1.0 is the whole budget), or None without one."""
        return _share(self.day_usd, self.day_budget_usd)

    @property
    def month_share(self) -> float | None:
        """Share of the monthly budget used, or None without a monthly budget."""
        return _share(self.month_usd, self.month_budget_usd)

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form, shaped like the body of ``GET /v1/usage``."""
        return {
            "tenant": self.tenant,
            "spend_usd": {"day": round(self.day_usd, 8), "month": round(self.month_usd, 8)},
            "budget_usd": {"day": self.day_budget_usd, "month": self.month_budget_usd},
            "used": {"day": self.day_share, "month": self.month_share},
        }


def _share(spend: float, budget: float | None) -> float | None:
    # Twelve significant digits, so that JSON shows 1.35 rather than 1.3499999999999999.
    return float(f"{spend / budget:.12g}") if budget else None


def listed_tenants(client: Any, policy: Policy, now: float, prefix: str) -> list[str]:
    """Return the policy's tenants, then every other tenant with spend this month (sorted).

    Other tenants are API keys that match no policy entry; the gateway names them
    ``key-<digest prefix>``.  They are found by a SCAN over this month's spend keys.
    """
    named = list(policy.tenants.entries)
    found = set(tenants_with_spend(client, now, prefix)) - set(named)
    return named + sorted(found)


def tenants_with_spend(client: Any, now: float, prefix: str) -> Iterable[str]:
    """Yield the tenants that have a spend key under ``prefix`` for the month of ``now``."""
    # The month key of the tenant "*" is a SCAN pattern for every tenant's month key.
    pattern = period_keys("*", now, prefix)[1]
    head, _, tail = pattern.partition("*")
    for raw in client.scan_iter(match=pattern, count=SCAN_BATCH):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        yield key[len(head) : len(key) - len(tail)]


def read_usage(
    client: Any, tenants: Sequence[str], policy: Policy, now: float, prefix: str
) -> list[TenantUsage]:
    """Read the spend of ``tenants`` for the UTC day and month of ``now`` from Redis.

    Two GETs per tenant in one non-transactional pipeline, which a Redis Cluster client
    splits by node (it refuses a pipelined MGET).  Raises ``redis.RedisError``.
    """
    pipe = client.pipeline(transaction=False)
    for tenant in tenants:
        for key in period_keys(tenant, now, prefix):
            pipe.get(key)
    replies = pipe.execute() if tenants else []
    pairs = [replies[index : index + 2] for index in range(0, len(replies), 2)]
    return [_usage_of(tenant, pair, policy) for tenant, pair in zip(tenants, pairs, strict=True)]


def _usage_of(tenant: str, reply: Sequence[Any], policy: Policy) -> TenantUsage:
    day, month = (float(value) if value is not None else 0.0 for value in reply)
    entry = policy.tenants.entries.get(tenant)
    budget = entry.budget if entry is not None else None
    return TenantUsage(
        tenant=tenant,
        day_usd=day,
        month_usd=month,
        day_budget_usd=budget.usd_per_day if budget is not None else None,
        month_budget_usd=budget.usd_per_month if budget is not None else None,
    )


def format_table(rows: Sequence[TenantUsage], now: float) -> str:
    """Return a plain-text table with one line per tenant; money in USD."""
    stamp = time.gmtime(now)
    title = (
        f"Spend in USD on {time.strftime('%Y-%m-%d', stamp)} and in "
        f"{time.strftime('%Y-%m', stamp)} (UTC), as flushed to Redis by the gateways"
    )
    width = max([len("tenant"), *(len(row.tenant) for row in rows)])
    header = (
        f"{'tenant':<{width}}  {'today':>12}  {'day budget':>12}  {'used':>7}  "
        f"{'this month':>12}  {'month budget':>12}  {'used':>7}"
    )
    lines = [title, header]
    for row in rows:
        lines.append(
            f"{row.tenant:<{width}}  {format_usd(row.day_usd):>12}  "
            f"{_money(row.day_budget_usd):>12}  {_percent(row.day_share):>7}  "
            f"{format_usd(row.month_usd):>12}  {_money(row.month_budget_usd):>12}  "
            f"{_percent(row.month_share):>7}"
        )
    if not rows:
        lines.append("(no tenant has spend this month, and the policy lists no tenants)")
    return "\n".join(lines)


def format_usd(value: float) -> str:
    """Format a USD amount with cents and at least four significant digits, at most 8 decimals.

    Examples: 0.002 -> "0.002", 0.0027543 -> "0.002754", 0.5 -> "0.50",
    1234.5678 -> "1,234.57".  Zeros after the cents are dropped.
    """
    if value == 0:
        return "0.00"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = min(MAX_USD_DECIMALS, max(2, USD_SIGNIFICANT_DIGITS - 1 - magnitude))
    text = f"{value:,.{decimals}f}"
    if decimals == 2:
        return text
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def _money(value: float | None) -> str:
    return format_usd(value) if value is not None else "-"


def _percent(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "-"


def format_json(rows: Sequence[TenantUsage], now: float) -> str:
    stamp = time.gmtime(now)
    document = {
        "object": "usage_report",
        "day": time.strftime("%Y-%m-%d", stamp),
        "month": time.strftime("%Y-%m", stamp),
        "tenants": [row.as_dict() for row in rows],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def usage_command(
    tenant: Annotated[
        list[str] | None,
        typer.Option(help="Show only this tenant (repeatable); default: every tenant."),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            envvar=["TIERWISE_REDIS_URL", "REDIS_URL"], help="Redis URL that the gateways use."
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            envvar="TIERWISE_POLICY",
            help="Policy YAML file with the tenants' budgets; the bundled default when unset.",
        ),
    ] = None,
    key_prefix: Annotated[
        str,
        typer.Option(
            envvar="TIERWISE_REDIS_KEY_PREFIX",
            help="Namespace of the gateways' Redis keys (their TIERWISE_REDIS_KEY_PREFIX).",
        ),
    ] = DEFAULT_KEY_PREFIX,
    redis_cluster: ClusterOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show each tenant's spend today and this month (UTC) against its budgets.

    Lists the policy's tenants and every other API key with spend this month.

    Spend that a gateway has not flushed to Redis yet (its last 0.2 s) is missing.

    Example: tierwise usage --redis-url redis://127.0.0.1:6379/0 --policy policies/default.yaml
    """
    if not redis_url:
        typer.echo(NO_REDIS_MESSAGE, err=True)
        raise typer.Exit(2)
    if not key_prefix or PREFIX_FORBIDDEN.intersection(key_prefix):
        typer.echo(
            f"Invalid --key-prefix {key_prefix!r}: use the gateways' TIERWISE_REDIS_KEY_PREFIX, "
            "which contains none of * ? [ ] \\ { }.",
            err=True,
        )
        raise typer.Exit(2)
    loaded = _load_policy_or_exit(policy)
    now = time.time()
    with redis_session(redis_url, redis_cluster) as client:
        rows = read_usage(client, tenant or listed_tenants(client, loaded, now, key_prefix),
                          loaded, now, key_prefix)
    for row in rows:
        if tenant and _unknown(row, loaded):
            # A misspelt name would otherwise look like a tenant that spent nothing.
            typer.echo(
                f"warning: tenant '{row.tenant}' is not in the policy and has no spend this "
                "month; check the name (without --tenant, every tenant is listed).",
                err=True,
            )
    typer.echo(format_json(rows, now) if as_json else format_table(rows, now))


def _unknown(row: TenantUsage, policy: Policy) -> bool:
    return row.tenant not in policy.tenants.entries and row.month_usd == 0 and row.day_usd == 0


def _load_policy_or_exit(path: Path | None) -> Policy:
    from router.policy.loader import PolicyError, load_policy
    from router.settings import BUNDLED_POLICY

    try:
        return load_policy(path or BUNDLED_POLICY).policy
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
