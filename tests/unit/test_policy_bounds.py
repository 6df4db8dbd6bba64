"""Bounds of the policy's numeric settings: each out-of-range value is named at its line."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from router.policy.loader import PolicyError, load_policy
from router.policy.schema import (
    MAX_BUDGET_USD,
    MAX_CACHE_ENTRIES,
    MAX_COOLDOWN_FAILURES,
    MAX_DURATION_S,
    MAX_EMBEDDING_DIMENSIONS,
    MAX_IN_FLIGHT,
    MAX_PRICE_PER_MILLION,
    MAX_PROBE_FAILURES,
    MAX_PROBE_INTERVAL_S,
    MAX_PROBE_TIMEOUT_S,
    MAX_REQUESTS_PER_MINUTE,
    MAX_TOKEN_COUNT,
    MAX_TOKENS_PER_MINUTE,
    MAX_WEIGHT,
    MIN_PROBE_S,
    Policy,
)
from router.upstream.http1 import MAX_BODY_BYTES

# Every numeric setting of the schema on a line of its own, as a placeholder named after it.
TEMPLATE = """\
version: 1
tiers:
  edge:
    deployments:
      - name: small
        model: openai/small
        api_base: http://127.0.0.1:9/v1
        price:
          input_per_million: {input_price}
          output_per_million: {output_price}
          cached_input_per_million: {cached_price}
        context_window: {context_window}
        default_max_tokens: {default_max_tokens}
        timeout_s: {timeout_s}
        connect_timeout_s: {connect_timeout_s}
        max_in_flight: {max_in_flight}
        weight: {weight}
  frontier:
    deployments:
      - name: big
        model: openai/big
        api_base: http://127.0.0.1:9/v1
        price: {{input_per_million: 5, output_per_million: 15}}
        context_window: 128000
routing:
  cooldown:
    after_failures: {after_failures}
    seconds: {cooldown_seconds}
cache:
  ttl_s: {ttl_s}
  max_entries: {max_entries}
tenants:
  default_requests_per_minute: {default_requests_per_minute}
  default_tokens_per_minute: {default_tokens_per_minute}
  entries:
    team:
      requests_per_minute: {requests_per_minute}
      tokens_per_minute: {tokens_per_minute}
      budget:
        usd_per_day: {usd_per_day}
        usd_per_month: {usd_per_month}
shadow:
  judge:
    deployment: big
    max_tokens: {judge_max_tokens}
  budget_usd_per_day: {shadow_budget}
  concurrency: {shadow_concurrency}
  timeout_s: {shadow_timeout_s}
local_model:
  probe_interval_s: {probe_interval_s}
  probe_timeout_s: {probe_timeout_s}
  probe_failures: {probe_failures}
embeddings:
  deployments:
    - name: embed
      model: openai/embed
      api_base: http://127.0.0.1:9/v1
      price:
        input_per_million: {embedding_price}
      dimensions: {dimensions}
      timeout_s: {embedding_timeout_s}
      connect_timeout_s: {embedding_connect_timeout_s}
"""

VALID_VALUES: dict[str, object] = {
    "input_price": 0.1,
    "output_price": 0.2,
    "cached_price": 0.05,
    "context_window": 4096,
    "default_max_tokens": 256,
    "timeout_s": 30,
    "connect_timeout_s": 5,
    "max_in_flight": 4,
    "weight": 1,
    "after_failures": 3,
    "cooldown_seconds": 30,
    "ttl_s": 3600,
    "max_entries": 10000,
    "default_requests_per_minute": 60,
    "default_tokens_per_minute": 100000,
    "requests_per_minute": 60,
    "tokens_per_minute": 100000,
    "usd_per_day": 10,
    "usd_per_month": 100,
    "judge_max_tokens": 16,
    "shadow_budget": 5,
    "shadow_concurrency": 2,
    "shadow_timeout_s": 120,
    "probe_interval_s": 5,
    "probe_timeout_s": 3,
    "probe_failures": 3,
    "embedding_price": 0.02,
    "dimensions": 1536,
    "embedding_timeout_s": 30,
    "embedding_connect_timeout_s": 5,
}

# The largest value of each setting, which must load.
MAXIMUM_VALUES: dict[str, object] = {
    "input_price": MAX_PRICE_PER_MILLION,
    "output_price": MAX_PRICE_PER_MILLION,
    "cached_price": MAX_PRICE_PER_MILLION,
    "context_window": MAX_TOKEN_COUNT,
    "default_max_tokens": MAX_TOKEN_COUNT,
    "timeout_s": MAX_DURATION_S,
    "connect_timeout_s": MAX_DURATION_S,
    "max_in_flight": MAX_IN_FLIGHT,
    "weight": MAX_WEIGHT,
    "after_failures": MAX_COOLDOWN_FAILURES,
    "cooldown_seconds": MAX_DURATION_S,
    "max_entries": MAX_CACHE_ENTRIES,
    "default_requests_per_minute": MAX_REQUESTS_PER_MINUTE,
    "default_tokens_per_minute": MAX_TOKENS_PER_MINUTE,
    "requests_per_minute": MAX_REQUESTS_PER_MINUTE,
    "tokens_per_minute": MAX_TOKENS_PER_MINUTE,
    "usd_per_day": MAX_BUDGET_USD,
    "usd_per_month": MAX_BUDGET_USD,
    "judge_max_tokens": MAX_TOKEN_COUNT,
    "shadow_budget": MAX_BUDGET_USD,
    "shadow_concurrency": MAX_IN_FLIGHT,
    "shadow_timeout_s": MAX_DURATION_S,
    "probe_interval_s": MAX_PROBE_INTERVAL_S,
    "probe_timeout_s": MAX_PROBE_TIMEOUT_S,
    "probe_failures": MAX_PROBE_FAILURES,
    "embedding_price": MAX_PRICE_PER_MILLION,
    "dimensions": MAX_EMBEDDING_DIMENSIONS,
    "embedding_timeout_s": MAX_DURATION_S,
    "embedding_connect_timeout_s": MAX_DURATION_S,
}

EDGE = "tiers.edge.deployments.0"
EMBED = "embeddings.deployments.0"
TWO_TO_64 = str(2**64)
HUGE_INTEGER = "1" + "0" * 400
HUGE_INTEGER_FOUND = HUGE_INTEGER[:57] + "..."

# Placeholder, value written in the YAML, dotted key, and the message after the key.
OUT_OF_RANGE: list[tuple[str, str, str, str]] = [
    ("input_price", "1.0e+30", f"{EDGE}.price.input_per_million",
     "must be at most 1000000 (found 1e+30)"),
    ("output_price", "1.7e+308", f"{EDGE}.price.output_per_million",
     "must be at most 1000000 (found 1.7e+308)"),
    ("cached_price", TWO_TO_64, f"{EDGE}.price.cached_input_per_million",
     f"must be at most 1000000 (found {TWO_TO_64})"),
    ("context_window", TWO_TO_64, f"{EDGE}.context_window",
     f"must be at most {2**63 - 1} (found {TWO_TO_64})"),
    ("default_max_tokens", "1.0e+30", f"{EDGE}.default_max_tokens",
     f"must be at most {2**63 - 1} (found 1e+30)"),
    ("timeout_s", HUGE_INTEGER, f"{EDGE}.timeout_s",
     f"must be at most 86400 (found {HUGE_INTEGER_FOUND})"),
    ("connect_timeout_s", "1.0e+30", f"{EDGE}.connect_timeout_s",
     "must be at most 86400 (found 1e+30)"),
    ("max_in_flight", TWO_TO_64, f"{EDGE}.max_in_flight",
     f"must be at most 1048576 (found {TWO_TO_64})"),
    ("weight", "1.0e+30", f"{EDGE}.weight", "must be at most 1000000 (found 1e+30)"),
    ("after_failures", TWO_TO_64, "routing.cooldown.after_failures",
     f"must be at most 1000 (found {TWO_TO_64})"),
    ("cooldown_seconds", "1.7e+308", "routing.cooldown.seconds",
     "must be at most 86400 (found 1.7e+308)"),
    ("ttl_s", TWO_TO_64, "cache.ttl_s", f"must be at most 3155760000 (found {TWO_TO_64})"),
    ("max_entries", HUGE_INTEGER, "cache.max_entries",
     f"must be at most 1000000000 (found {HUGE_INTEGER_FOUND})"),
    ("default_requests_per_minute", TWO_TO_64, "tenants.default_requests_per_minute",
     f"must be at most {2**63 - 1} (found {TWO_TO_64})"),
    ("default_tokens_per_minute", TWO_TO_64, "tenants.default_tokens_per_minute",
     f"must be at most {2**53} (found {TWO_TO_64})"),
    ("requests_per_minute", HUGE_INTEGER, "tenants.entries.team.requests_per_minute",
     f"must be at most {2**63 - 1} (found {HUGE_INTEGER_FOUND})"),
    ("tokens_per_minute", str(2**53 + 1), "tenants.entries.team.tokens_per_minute",
     f"must be at most {2**53} (found {2**53 + 1})"),
    ("usd_per_day", "1.0e+30", "tenants.entries.team.budget.usd_per_day",
     "must be at most 1000000000000 (found 1e+30)"),
    ("usd_per_month", HUGE_INTEGER, "tenants.entries.team.budget.usd_per_month",
     f"must be at most 1000000000000 (found {HUGE_INTEGER_FOUND})"),
    ("judge_max_tokens", TWO_TO_64, "shadow.judge.max_tokens",
     f"must be at most {2**63 - 1} (found {TWO_TO_64})"),
    ("shadow_budget", "1.7e+308", "shadow.budget_usd_per_day",
     "must be at most 1000000000000 (found 1.7e+308)"),
    ("shadow_concurrency", TWO_TO_64, "shadow.concurrency",
     f"must be at most 1048576 (found {TWO_TO_64})"),
    ("shadow_timeout_s", "1.0e+30", "shadow.timeout_s", "must be at most 86400 (found 1e+30)"),
    ("probe_interval_s", "61", "local_model.probe_interval_s", "must be at most 60 (found 61)"),
    ("probe_interval_s", "0.01", "local_model.probe_interval_s",
     "must be at least 0.1 (found 0.01)"),
    ("probe_timeout_s", "1.0e+30", "local_model.probe_timeout_s",
     "must be at most 60 (found 1e+30)"),
    ("probe_timeout_s", "0", "local_model.probe_timeout_s", "must be at least 0.1 (found 0)"),
    ("probe_failures", "101", "local_model.probe_failures", "must be at most 100 (found 101)"),
    ("probe_failures", "0", "local_model.probe_failures", "must be at least 1 (found 0)"),
    ("probe_failures", "true", "local_model.probe_failures",
     "expected a whole number (found true)"),
    ("embedding_price", "1.0e+30", f"{EMBED}.price.input_per_million",
     "must be at most 1000000 (found 1e+30)"),
    ("dimensions", TWO_TO_64, f"{EMBED}.dimensions",
     f"must be at most 134217728 (found {TWO_TO_64})"),
    ("embedding_timeout_s", "1.7e+308", f"{EMBED}.timeout_s",
     "must be at most 86400 (found 1.7e+308)"),
    ("embedding_connect_timeout_s", TWO_TO_64, f"{EMBED}.connect_timeout_s",
     f"must be at most 86400 (found {TWO_TO_64})"),
]


def policy_text(**values: object) -> str:
    return TEMPLATE.format(**(VALID_VALUES | values))


def placeholder_line(placeholder: str) -> int:
    lines = TEMPLATE.splitlines()
    [line] = [number for number, text in enumerate(lines, 1) if f"{{{placeholder}}}" in text]
    return line


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_template_loads(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, policy_text())).policy
    assert policy.local_model.probe_failures == 3
    assert policy.embeddings is not None


def test_maximum_values_load(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, policy_text(**MAXIMUM_VALUES))).policy
    assert policy.cache.max_entries == MAX_CACHE_ENTRIES
    assert policy.tenants.default_tokens_per_minute == MAX_TOKENS_PER_MINUTE
    assert policy.local_model.probe_interval_s == MAX_PROBE_INTERVAL_S


@pytest.mark.parametrize(("placeholder", "value", "key", "message"), OUT_OF_RANGE)
def test_out_of_range_names_line(
    tmp_path: Path, placeholder: str, value: str, key: str, message: str
) -> None:
    path = write(tmp_path, policy_text(**{placeholder: value}))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [f"{path}:{placeholder_line(placeholder)}: {key}: {message}"]


def test_exponent_without_dot_is_explained(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e30 as a string, and a strict whole-number field rejects strings.
    path = write(tmp_path, policy_text(max_in_flight="1e30"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    line = placeholder_line("max_in_flight")
    expected = (
        f"{path}:{line}: {EDGE}.max_in_flight: expected a whole number written in digits; "
        "YAML reads 1e30 as a string (found '1e30')"
    )
    assert caught.value.problems == [expected]


def test_exponent_string_in_float_field_is_bounded(tmp_path: Path) -> None:
    path = write(tmp_path, policy_text(weight="1e30"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    line = placeholder_line("weight")
    assert caught.value.problems == [
        f"{path}:{line}: {EDGE}.weight: must be at most 1000000 (found '1e30')"
    ]


def test_embedding_bound_follows_body_limit() -> None:
    assert MAX_EMBEDDING_DIMENSIONS == MAX_BODY_BYTES // 2
    assert MIN_PROBE_S < 3.0 < MAX_PROBE_TIMEOUT_S


def _numeric_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """List (dotted name, FieldInfo) of every int or float field reachable from ``model``."""
    found: list[tuple[str, Any]] = []
    for name, field in model.model_fields.items():
        for member in _members(field.annotation):
            if member in (int, float):
                found.append((f"{prefix}{name}", field))
            elif isinstance(member, type) and issubclass(member, BaseModel):
                found += _numeric_fields(member, f"{prefix}{name}.")
    return found


def _members(annotation: Any) -> list[Any]:
    """Unwrap Annotated, unions, lists and dict values down to their member types."""
    if get_origin(annotation) is Annotated:
        return _members(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    if get_origin(annotation) is list:
        return _members(get_args(annotation)[0])
    if get_origin(annotation) is dict:
        return _members(get_args(annotation)[1])
    return [annotation]


# Settings bounded by a validator instead of ``le``, with tests in test_policy_loader.py:
# thresholds (0 to 1, _check_threshold) and the shadow sample rate.
BOUNDED_ELSEWHERE = {"aliases.thresholds", "routing.thresholds", "shadow.sample_rate"}


def test_every_numeric_setting_has_upper_bound() -> None:
    fields = _numeric_fields(Policy)
    assert len(fields) >= 25
    unbounded = [
        name for name, field in fields
        if name not in BOUNDED_ELSEWHERE
        and not any(getattr(item, "le", None) is not None for item in field.metadata)
    ]
    assert unbounded == []


def test_every_numeric_setting_is_in_table() -> None:
    tested = {key.rsplit(".", 1)[-1] for _, _, key, _ in OUT_OF_RANGE}
    names = {
        name.rsplit(".", 1)[-1]
        for name, _ in _numeric_fields(Policy)
        if name not in BOUNDED_ELSEWHERE
    }
    assert names - tested == set()


def test_local_model_flag_at_top_level_is_explained(tmp_path: Path) -> None:
    text = policy_text().replace(
        "local_model:\n  probe_interval_s: 5\n  probe_timeout_s: 3\n  probe_failures: 3\n",
        "local_model: true\n",
    )

    with pytest.raises(PolicyError) as caught:
        load_policy(write(tmp_path, text))

    message = str(caught.value)
    assert "local_model: expected a mapping of keys and values (found true)" in message
    assert "set local_model: true on that deployment" in message


def test_probe_settings_on_deployment_are_explained(tmp_path: Path) -> None:
    text = policy_text().replace(
        "        weight: 1\n",
        "        weight: 1\n        local_model:\n          probe_interval_s: 5\n",
    )

    with pytest.raises(PolicyError) as caught:
        load_policy(write(tmp_path, text))

    message = str(caught.value)
    assert "tiers.edge.deployments.0.local_model: expected true or false" in message
    assert "the probe settings belong in the top-level local_model section" in message
