"""Policy simulation over logged outcome records."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from router.cli.main import app
from router.policy.schema import Policy
from router.policy.simulate import OutcomeFileError, load_records, simulate

POLICY = {
    "tiers": {
        tier: {
            "deployments": [
                {
                    "name": f"{tier}-model",
                    "model": f"openai/{tier}",
                    "api_base": "http://127.0.0.1:9/v1",
                    "price": {"input_per_million": price, "output_per_million": price},
                    "context_window": 100000,
                }
            ]
        }
        for tier, price in (("edge", 1.0), ("mid", 10.0), ("frontier", 100.0))
    },
    "routing": {"thresholds": {"edge": 0.7, "mid": 0.6}},
}


def record(request_id: str, edge: float, mid: float, tier: str) -> dict[str, object]:
    return {
        "type": "request",
        "request_id": request_id,
        "scores": {"edge": edge, "mid": mid, "frontier": 0.9},
        "tier": tier,
        "tokens_in": 1000,
        "tokens_out": 0,
        "cache_hit": False,
        "status": 200,
    }


def write_log(path: Path) -> Path:
    rows = [
        record("a", 0.9, 0.9, "edge"),
        record("b", 0.5, 0.65, "mid"),
        record("c", 0.1, 0.1, "frontier"),
        {**record("d", 0.9, 0.9, "edge"), "cache_hit": True},
        {"type": "feedback", "request_id": "a", "score": 1.0},
        {"type": "feedback", "request_id": "b", "score": 0.5},
    ]
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def test_simulation_counts_tiers_cost_and_quality(tmp_path: Path) -> None:
    records, feedback = load_records(write_log(tmp_path / "log.jsonl"))
    result = simulate(Policy.model_validate(POLICY), records, feedback)
    assert result.requests == 3
    assert dict(result.tiers) == {"edge": 1, "mid": 1, "frontier": 1}
    assert result.cost_usd == (1000 * 1.0 + 1000 * 10.0 + 1000 * 100.0) / 1_000_000
    assert result.quality == 0.75


def test_feedback_joins_by_tenant_and_source(tmp_path: Path) -> None:
    rows = [
        {**record("a", 0.9, 0.9, "edge"), "tenant": "team"},
        {**record("b", 0.9, 0.9, "edge"), "tenant": "team"},
        {"type": "feedback", "tenant": "other", "request_id": "a", "score": 0.0},
        {"type": "feedback", "tenant": "team", "request_id": "a", "score": 1.0},
        {"type": "feedback", "tenant": "team", "request_id": "a", "score": 0.2, "source": "shadow"},
        {"type": "feedback", "tenant": "team", "request_id": "b", "score": 0.4, "source": "shadow"},
    ]
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    records, feedback = load_records(log)
    assert feedback == {("other", "a"): 0.0, ("team", "a"): 1.0, ("team", "b"): 0.4}
    result = simulate(Policy.model_validate(POLICY), records, feedback)
    assert result.quality == (1.0 + 0.4) / 2


def test_load_records_reads_export_folder(tmp_path: Path) -> None:
    one = load_records(write_log(tmp_path / "log.jsonl"))
    rows = (tmp_path / "log.jsonl").read_bytes().splitlines(keepends=True)
    part = tmp_path / "export" / "date=2026-12-04"
    part.mkdir(parents=True)
    (part / "part-1.jsonl").write_bytes(b"".join(rows[:3]))
    (part / "part-2.jsonl").write_bytes(b"".join(rows[3:]))
    assert load_records(tmp_path / "export") == one


def test_stricter_edge_threshold_moves_traffic(tmp_path: Path) -> None:
    records, feedback = load_records(write_log(tmp_path / "log.jsonl"))
    stricter = Policy.model_validate({**POLICY, "routing": {"thresholds": {"edge": 0.95, "mid": 0.6}}})
    result = simulate(stricter, records, feedback)
    assert dict(result.tiers) == {"mid": 2, "frontier": 1}
    assert result.quality == 0.5


def test_simulate_command_warns_about_tier_growth(tmp_path: Path) -> None:
    import yaml

    log = write_log(tmp_path / "log.jsonl")
    current = tmp_path / "current.yaml"
    current.write_text(yaml.safe_dump(POLICY))
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text(yaml.safe_dump({**POLICY, "routing": {"thresholds": {"edge": 0.0, "mid": 0.6}}}))
    result = CliRunner().invoke(
        app,
        ["policy", "simulate", "--policy", str(proposed), "--outcomes", str(log), "--against", str(current)],
    )
    assert result.exit_code == 0, result.output
    assert "3 routed requests in the log, 2 of them with feedback" in result.output
    assert "WARNING: the edge tier would take 100.0% of requests instead of 33.3% (+66.7 percentage points)." in result.output


def test_simulate_command_shows_unroutable_requests(tmp_path: Path) -> None:
    import yaml

    log = write_log(tmp_path / "log.jsonl")
    current = tmp_path / "current.yaml"
    current.write_text(yaml.safe_dump(POLICY))
    # Every logged prompt has 1,000 tokens, more than any context window of this policy.
    small = {
        **POLICY,
        "tiers": {
            tier: {"deployments": [{**spec["deployments"][0], "context_window": 500}]}
            for tier, spec in POLICY["tiers"].items()
        },
    }
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text(yaml.safe_dump(small))

    result = CliRunner().invoke(
        app,
        ["policy", "simulate", "--policy", str(proposed), "--outcomes", str(log), "--against", str(current)],
    )

    assert result.exit_code == 0, result.output
    assert "unroutable              100.0%          0.0%" in result.output
    assert "(proposed 3, current 0); the cost leaves them out" in result.output


def test_simulate_command_without_unroutable_row(tmp_path: Path) -> None:
    import yaml

    log = write_log(tmp_path / "log.jsonl")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))

    result = CliRunner().invoke(app, ["policy", "simulate", "--policy", str(policy), "--outcomes", str(log)])

    assert result.exit_code == 0, result.output
    assert "unroutable" not in result.output


def write_two_version_log(path: Path) -> Path:
    rows = [
        {**record("a", 0.9, 0.9, "edge"), "classifier_version": "v1"},
        {**record("b", 0.5, 0.65, "mid"), "classifier_version": "v2"},
        {**record("c", 0.1, 0.1, "frontier"), "classifier_version": "v2"},
    ]
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def test_simulate_command_names_classifier_version(tmp_path: Path) -> None:
    import yaml

    log = write_log(tmp_path / "log.jsonl")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))

    result = CliRunner().invoke(app, ["policy", "simulate", "--policy", str(policy), "--outcomes", str(log)])

    assert result.exit_code == 0, result.output
    assert "scores logged by classifier unknown (3); the simulation reuses them" in result.output


def test_simulate_command_warns_about_versions(tmp_path: Path) -> None:
    import yaml

    log = write_two_version_log(tmp_path / "log.jsonl")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))

    result = CliRunner().invoke(app, ["policy", "simulate", "--policy", str(policy), "--outcomes", str(log)])

    assert result.exit_code == 0, result.output
    assert "WARNING: scores logged by 2 classifier versions: v1 (1), v2 (2)." in result.output
    assert "3 routed requests in the log" in result.output


def test_simulate_command_keeps_one_version(tmp_path: Path) -> None:
    import yaml

    log = write_two_version_log(tmp_path / "log.jsonl")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))

    result = CliRunner().invoke(
        app,
        ["policy", "simulate", "--policy", str(policy), "--outcomes", str(log), "--classifier-version", "v2"],
    )

    assert result.exit_code == 0, result.output
    assert "2 routed requests in the log" in result.output
    assert "scores logged by classifier v2 (2)" in result.output
    assert "edge share                0.0%" in result.output
    assert "WARNING" not in result.output


def test_simulate_command_unknown_version_exits_1(tmp_path: Path) -> None:
    import yaml

    log = write_two_version_log(tmp_path / "log.jsonl")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))

    result = CliRunner().invoke(
        app,
        ["policy", "simulate", "--policy", str(policy), "--outcomes", str(log), "--classifier-version", "v3"],
    )

    assert result.exit_code == 1
    assert "no routed request in the log was scored by classifier v3; the log has v1, v2" in result.output


FLOORED = {**POLICY, "routing": {"thresholds": {"edge": 0.7, "mid": 0.6}, "category_floors": {"math": "mid"}}}


def test_category_floor_lifts_simulated_tier(tmp_path: Path) -> None:
    rows = [
        {**record("a", 0.9, 0.9, "edge"), "category": "math"},
        {**record("b", 0.9, 0.9, "edge"), "category": "chat"},
        {**record("c", 0.9, 0.1, "edge"), "category": "math"},
    ]
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    records, feedback = load_records(log)
    result = simulate(Policy.model_validate(FLOORED), records, feedback)
    # Mid meets its threshold for a but not for c, which goes to frontier.  b has no floor.
    assert dict(result.tiers) == {"mid": 1, "edge": 1, "frontier": 1}


def test_tenant_and_alias_limits_apply(tmp_path: Path) -> None:
    restricted = {
        **POLICY,
        "aliases": {"auto": {}, "auto-quality": {"min_tier": "frontier"}},
        "tenants": {"entries": {"team-a": {"key_sha256": ["a" * 64], "blocked_tiers": ["edge"]}}},
    }
    rows = [
        {**record("a", 0.9, 0.9, "edge"), "tenant": "team-a", "requested_model": "auto"},
        {**record("b", 0.9, 0.9, "edge"), "tenant": "key-0123456789abcdef", "requested_model": "auto"},
        {**record("c", 0.9, 0.9, "edge"), "requested_model": "auto-quality"},
        {**record("d", 0.9, 0.9, "edge"), "requested_model": "no-such-alias"},
    ]
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    records, feedback = load_records(log)
    result = simulate(Policy.model_validate(restricted), records, feedback)
    # a: team-a may not use edge. b: an unlisted key has no limits. c: the alias starts at
    # frontier. d: an alias the policy lacks is routed as auto.
    assert dict(result.tiers) == {"mid": 1, "edge": 2, "frontier": 1}
    assert result.unroutable == 0


def test_simulate_command_counts_records_without_category(tmp_path: Path) -> None:
    import yaml

    log = write_log(tmp_path / "log.jsonl")
    floored = tmp_path / "floored.yaml"
    floored.write_text(yaml.safe_dump(FLOORED))
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(POLICY))
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["policy", "simulate", "--policy", str(floored), "--outcomes", str(log), "--against", str(plain)],
    )
    assert result.exit_code == 0, result.output
    assert "3 records have no prompt category, so the category floors of the proposed policy apply to none of them" in result.output
    unfloored = runner.invoke(app, ["policy", "simulate", "--policy", str(plain), "--outcomes", str(log)])
    assert unfloored.exit_code == 0, unfloored.output
    assert "no prompt category" not in unfloored.output


INVALID_LINES = [
    (b"not json", "the line is not valid JSON (Expecting value at column 1)"),
    (b"[1, 2]", "the line is not a JSON object"),
    (b'{"type": "request", "x": "\xff"}', "the line is not UTF-8 text"),
    (b'{"type": "feedback", "score": 0.5}', "the feedback record lacks the field 'request_id'"),
    (b'{"type": "feedback", "request_id": "a", "score": "good"}',
     "the feedback record's field 'score' must be a number, got 'good'"),
]


@pytest.mark.parametrize(("line", "expected"), INVALID_LINES)
def test_load_records_names_file_and_line(tmp_path: Path, line: bytes, expected: str) -> None:
    log = write_log(tmp_path / "log.jsonl")
    log.write_bytes(log.read_bytes() + b"\n" + line + b"\n")

    with pytest.raises(OutcomeFileError) as raised:
        load_records(log)

    assert str(raised.value) == f"{log}:8: {expected}"


def test_simulate_command_invalid_line_exits_2(tmp_path: Path) -> None:
    import yaml

    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    log = write_log(tmp_path / "log.jsonl")
    log.write_bytes(log.read_bytes() + b"not json\n")

    result = CliRunner().invoke(
        app, ["policy", "simulate", "--policy", str(policy), "--outcomes", str(log)]
    )

    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert result.output == (
        f"error: {log}:7: the line is not valid JSON (Expecting value at column 1)\n"
    )


def test_simulate_command_other_records_exit_1(tmp_path: Path) -> None:
    import yaml

    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"x": 1}\n{"type": "shadow", "request_id": "a"}\n')

    result = CliRunner().invoke(
        app, ["policy", "simulate", "--policy", str(policy), "--outcomes", str(log)]
    )

    assert result.exit_code == 1
    assert "has no routed request records with scores" in result.output


def test_simulate_command_missing_log_exits_2(tmp_path: Path) -> None:
    import yaml

    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    log = tmp_path / "absent.jsonl"

    result = CliRunner().invoke(
        app, ["policy", "simulate", "--policy", str(policy), "--outcomes", str(log)]
    )

    assert result.exit_code == 2
    assert result.output == (
        f"error: cannot read outcome records from {log}: No such file or directory\n"
    )


def test_simulate_command_invalid_policy_exits_2(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("tiers: 5\n")
    log = write_log(tmp_path / "log.jsonl")

    result = CliRunner().invoke(
        app, ["policy", "simulate", "--policy", str(policy), "--outcomes", str(log)]
    )

    assert result.exit_code == 2
    assert result.output.startswith(f"invalid policy {policy}:")
