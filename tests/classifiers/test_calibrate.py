"""Threshold calibration: the simulated routing rule, the choice, the policy copy, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from classifiers.calibrate import (
    CROSS_FIT_NOTE,
    CalibrationError,
    lowest_tiers,
    pick,
    policy_text,
    simulate_grid,
    substitute_thresholds,
    write_policy,
)
from classifiers.cli import calibrate_app
from router.policy.loader import PolicyError, load_policy
from router.routing.decide import RequestNeeds, _choose_tier, decide

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = REPO / "policies" / "default.yaml"

# Three prompts; columns are edge, mid, frontier.  A: edge suffices; B needs mid;
# C needs frontier.  Calls cost 0, 1 and 10 USD.
SCORES = np.array([[0.9, 0.95, 0.99], [0.6, 0.8, 0.9], [0.3, 0.5, 0.9]])
QUALITY = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
COST = np.tile([0.0, 1.0, 10.0], (3, 1))


def test_full_quality_needs_each_prompt_on_its_own_tier() -> None:
    # Edge must take A (0.9) but not B (0.6): edge in (0.6, 0.9]; mid must take B (0.8)
    # but not C (0.5): mid in (0.5, 0.8].  The most cautious pair is (0.90, 0.80).
    chosen = pick(simulate_grid(SCORES, QUALITY, COST), target=1.0)
    assert (chosen.edge, chosen.mid) == (0.9, 0.8)
    assert chosen.cost == pytest.approx(11 / 3)
    assert chosen.quality == pytest.approx(1.0)
    assert chosen.shares == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_two_thirds_quality_sends_the_hard_prompt_to_mid() -> None:
    # C on mid (quality 0, cost 1) is cheaper than B on edge with C on frontier (cost 10/3).
    chosen = pick(simulate_grid(SCORES, QUALITY, COST), target=2 / 3)
    assert (chosen.edge, chosen.mid) == (0.9, 0.5)
    assert chosen.cost == pytest.approx(2 / 3)
    assert chosen.shares == pytest.approx((1 / 3, 2 / 3, 0.0))


def test_budget_picks_the_best_quality_within_it() -> None:
    grid = simulate_grid(SCORES, QUALITY, COST)
    within_one = pick(grid, budget_per_1k=1000.0)  # mean cost <= 1 USD per request
    assert (within_one.edge, within_one.mid) == (0.9, 0.5)
    assert within_one.quality == pytest.approx(2 / 3)
    free = pick(grid, budget_per_1k=0.0)
    # Only "everything on edge" is free: edge <= 0.3; mid then never matters, so 1.00.
    assert (free.edge, free.mid) == (0.3, 1.0)
    assert free.quality == pytest.approx(1 / 3)


def test_unreachable_goals_raise() -> None:
    grid = simulate_grid(SCORES, QUALITY, COST)
    with pytest.raises(CalibrationError, match="no threshold pair"):
        pick(grid, target=1.01)
    with pytest.raises(CalibrationError, match="exactly one"):
        pick(grid, target=0.9, budget_per_1k=1.0)


def test_grid_names_missing_values() -> None:
    scores, cost = SCORES.copy(), COST.copy()
    scores[1, 0] = np.nan
    cost[2, 2] = np.nan

    with pytest.raises(CalibrationError) as raised:
        simulate_grid(scores, QUALITY, cost)

    message = str(raised.value)
    assert "rows are missing values: score for edge in 1 of 3 rows" in message
    assert "cost_usd for frontier in 1 of 3 rows" in message
    assert "quality" not in message


def test_grid_without_rows_raises() -> None:
    with pytest.raises(CalibrationError, match="^no rows to simulate$"):
        simulate_grid(np.empty((0, 3)), np.empty((0, 3)), np.empty((0, 3)))


def test_grid_matches_the_gateway_rule() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((40, 3)), 2)  # on the grid, so ties with thresholds occur
    quality, cost = rng.random((40, 3)), rng.random((40, 3))
    grid = simulate_grid(scores, quality, cost)
    rows = np.arange(40)
    for i, j in [(0, 0), (30, 70), (55, 55), (100, 20), (71, 100)]:
        thresholds = {"edge": grid.thresholds[i], "mid": grid.thresholds[j]}
        tiers = [_choose_tier(["edge", "mid", "frontier"],
                              dict(zip(("edge", "mid", "frontier"), s)), thresholds)[0]
                 for s in scores.tolist()]
        column = np.array([("edge", "mid", "frontier").index(t) for t in tiers])
        assert grid.cost[i, j] == pytest.approx(cost[rows, column].mean())
        assert grid.quality[i, j] == pytest.approx(quality[rows, column].mean())
        assert grid.edge_share[i, j] == pytest.approx(np.mean(column == 0))
        assert grid.mid_share[i, j] == pytest.approx(np.mean(column == 1))


def test_floor_changes_thresholds_and_cost() -> None:
    # A mid floor keeps A off edge, so A costs 1 instead of 0.  Edge then takes no row at
    # any threshold above B's 0.6, so the highest, 1.00, is chosen.
    chosen = pick(simulate_grid(SCORES, QUALITY, COST, lowest=np.array([1, 0, 0])), target=1.0)
    assert (chosen.edge, chosen.mid) == (1.0, 0.8)
    assert chosen.cost == pytest.approx(12 / 3)
    assert chosen.shares == pytest.approx((0.0, 2 / 3, 1 / 3))


def test_frontier_floor_skips_mid() -> None:
    # B's frontier floor sends it to frontier, so mid takes no row at any threshold above
    # C's 0.5 and the highest, 1.00, is chosen.
    chosen = pick(simulate_grid(SCORES, QUALITY, COST, lowest=np.array([0, 2, 0])), target=1.0)
    assert (chosen.edge, chosen.mid) == (0.9, 1.0)
    assert chosen.cost == pytest.approx(20 / 3)
    assert chosen.shares == pytest.approx((1 / 3, 0.0, 2 / 3))


def test_edge_floors_change_nothing() -> None:
    plain = simulate_grid(SCORES, QUALITY, COST)
    floored = simulate_grid(SCORES, QUALITY, COST, lowest=np.zeros(3, dtype=int))
    assert np.array_equal(plain.cost, floored.cost)
    assert np.array_equal(plain.quality, floored.quality)
    assert np.array_equal(plain.edge_share, floored.edge_share)
    assert np.array_equal(plain.mid_share, floored.mid_share)


def test_lowest_tiers_follow_the_policy_floors() -> None:
    floors = {"math": "mid", "code": "frontier", "chat": "edge"}
    lowest = lowest_tiers(["math", "chat", "code", "other"], floors)
    assert lowest.tolist() == [1, 0, 2, 0]


def test_grid_with_floors_matches_decide() -> None:
    rng = np.random.default_rng(5)
    categories = [str(c) for c in rng.choice(["math", "code", "chat", "other"], size=40)]
    scores = np.round(rng.random((40, 3)), 2)  # on the grid, so ties with thresholds occur
    quality, cost = rng.random((40, 3)), rng.random((40, 3))
    floors = {"math": "mid", "code": "frontier", "chat": "edge"}
    grid = simulate_grid(scores, quality, cost, lowest=lowest_tiers(categories, floors))
    base = load_policy(DEFAULT_POLICY).policy
    rows = np.arange(40)
    for i, j in [(0, 0), (30, 70), (55, 55), (100, 20), (71, 100)]:
        routing = base.routing.model_copy(update={
            "thresholds": {"edge": float(grid.thresholds[i]), "mid": float(grid.thresholds[j])},
            "category_floors": floors})
        policy = base.model_copy(update={"routing": routing})
        tiers = [decide(policy, dict(zip(("edge", "mid", "frontier"), s)),
                        RequestNeeds(prompt_tokens=10), requested="auto",
                        is_available=lambda d: True, category=category).tier
                 for s, category in zip(scores.tolist(), categories)]
        column = np.array([("edge", "mid", "frontier").index(t) for t in tiers])
        assert grid.cost[i, j] == pytest.approx(cost[rows, column].mean())
        assert grid.quality[i, j] == pytest.approx(quality[rows, column].mean())
        assert grid.edge_share[i, j] == pytest.approx(np.mean(column == 0))
        assert grid.mid_share[i, j] == pytest.approx(np.mean(column == 1))


def test_substitution_keeps_comments_and_other_keys() -> None:
    text = "# top\nrouting:\n  thresholds:  # tuned\n    edge: 0.8\n\n    mid: 0.65\n  escalate_on_error: true\n"
    edited = substitute_thresholds(text, 0.42, 0.7)
    assert edited == ("# top\nrouting:\n  thresholds:  # tuned\n    edge: 0.42\n    mid: 0.70\n"
                      "  escalate_on_error: true\n")
    flow = substitute_thresholds("routing:\n  thresholds: {edge: 0.8}\n", 0.5, 0.6)
    assert flow == "routing:\n  thresholds:\n    edge: 0.50\n    mid: 0.60\n"
    assert substitute_thresholds("name: x\n", 0.5, 0.6) is None


def test_policy_without_thresholds_is_rewritten(tmp_path: Path) -> None:
    source = tmp_path / "bare.yaml"
    source.write_text("# lost\nversion: 1\nname: bare\n")
    text, kept = policy_text(source, 0.5, 0.6)
    assert not kept
    assert "routing:\n  thresholds:\n    edge: 0.5\n    mid: 0.6\n" in text


def test_default_policy_copy_is_valid_and_keeps_comments(tmp_path: Path) -> None:
    text, kept = policy_text(DEFAULT_POLICY, 0.91, 0.77)
    out = tmp_path / "policy.yaml"
    write_policy(text, out)
    assert kept
    assert load_policy(out).policy.routing.thresholds == {"edge": 0.91, "mid": 0.77}
    assert out.read_text().count("#") == DEFAULT_POLICY.read_text().count("#")


def test_invalid_policy_is_not_written(tmp_path: Path) -> None:
    out = tmp_path / "policy.yaml"
    with pytest.raises(PolicyError):
        write_policy("version: 1\nrouting:\n  thresholds: {giant: 0.5}\n", out)
    assert list(tmp_path.iterdir()) == []


EASY_CHAT = "greet user"
EASY_MATH = "what is 2 + 3"  # categorized as math, which the default policy floors at mid


def _write_generated(path: Path, rows: int = 150, easy: str = EASY_CHAT) -> None:
    """Write rows whose words show difficulty; every third row is in the test split."""
    rng = np.random.default_rng(11)
    with path.open("w") as handle:
        for i in range(rows):
            level = int(rng.integers(3))  # 0 easy, 1 medium, 2 hard
            words = (easy, "summarise the memo", "write a formal proof")[level]
            # Every tenth prompt defeats every tier, so each tier has both labels.
            outcomes = {tier: {"quality": float(rank >= level and i % 10 != 5),
                               "cost_usd": (0.0, 0.001, 0.01)[rank]}
                        for rank, tier in enumerate(("edge", "mid", "frontier"))}
            record = {"id": str(i), "prompt": f"{words} number {i}", "outcomes": outcomes,
                      "split": "test" if i % 3 == 0 else "train"}
            handle.write(json.dumps(record) + "\n")


def test_cli_writes_a_calibrated_policy(tmp_path: Path) -> None:
    data, out = tmp_path / "rows.jsonl", tmp_path / "out" / "policy.yaml"
    _write_generated(data)
    runner = CliRunner()
    result = runner.invoke(calibrate_app, ["--data", str(data), "--target-quality", "0.9",
                                           "--policy", str(DEFAULT_POLICY), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "held-out rows: 50 (own split)" in result.output
    assert "tier mix: edge" in result.output
    assert " ".join(result.output.split()).count(CROSS_FIT_NOTE) == 1
    thresholds = load_policy(out).policy.routing.thresholds
    assert set(thresholds) == {"edge", "mid"}
    assert "comments kept" in result.output
    both = runner.invoke(calibrate_app, ["--data", str(data), "--target-quality", "0.9",
                                         "--budget-per-1k", "1", "--policy", str(DEFAULT_POLICY)])
    assert both.exit_code == 2
    assert "exactly one" in both.output


def test_cli_with_classifier_omits_note(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    _write_generated(data)
    bundled = Path(__file__).resolve().parents[2] / "classifiers" / "default"

    lines = _calibrate_lines(data, DEFAULT_POLICY, "--classifier", str(bundled))

    assert lines[0].startswith("held-out rows: 50 (")
    assert not any(line.startswith("note: these thresholds fit") for line in lines)


def test_cli_warns_about_trained_sets(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    _write_generated(data)
    # The bundled model was trained on every routellm-mmlu row.
    rows = [json.loads(line) | {"source": "routellm-mmlu/anatomy"}
            for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    bundled = Path(__file__).resolve().parents[2] / "classifiers" / "default"

    lines = _calibrate_lines(data, DEFAULT_POLICY, "--classifier", str(bundled))

    assert lines[1].startswith("warning: the classifier was trained on the sets of some scored "
                               "rows: routellm-mmlu (50 rows).")
    assert not any(line.startswith("note: these rows must not") for line in lines)


def test_cli_classifier_bundled_keyword(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "rows.jsonl"
    _write_generated(data)
    # No folder named bundled exists here, so only the keyword can find the model.
    monkeypatch.chdir(tmp_path)

    lines = _calibrate_lines(data, DEFAULT_POLICY, "--classifier", "bundled")

    assert lines[0] == "held-out rows: 50 (the file's test split, scored by bundled)"


def test_cli_notes_unknown_sets(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    _write_generated(data)
    bundled = Path(__file__).resolve().parents[2] / "classifiers" / "default"

    lines = _calibrate_lines(data, DEFAULT_POLICY, "--classifier", str(bundled))

    assert lines[1] == "note: these rows must not have been in the classifier's training data"
    assert not any(line.startswith("warning:") for line in lines)


def _calibrate_lines(data: Path, policy: Path, *options: str) -> list[str]:
    result = CliRunner().invoke(calibrate_app, ["--data", str(data), "--target-quality", "0.9",
                                                "--policy", str(policy), *options])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_cli_applies_floors_unless_ignored(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    _write_generated(data, easy=EASY_MATH)
    floored = _calibrate_lines(data, DEFAULT_POLICY)
    ignored = _calibrate_lines(data, DEFAULT_POLICY, "--ignore-floors")
    # The easy and the hard prompts are math: 32 of the 50 test rows.
    assert floored[1].startswith("category floors applied: 32 of 50 rows have a floor above "
                                 "edge (math 32), and at these thresholds ")
    assert ignored[1].startswith("category floors ignored (--ignore-floors): the gateway "
                                 "applies this policy's floors (math: mid, code: mid, ")
    floored_cost = next(line for line in floored if line.startswith("expected cost"))
    ignored_cost = next(line for line in ignored if line.startswith("expected cost"))
    assert floored_cost != ignored_cost
    floored_mix = next(line for line in floored if line.startswith("tier mix"))
    ignored_mix = next(line for line in ignored if line.startswith("tier mix"))
    assert floored_mix != ignored_mix


def test_cli_without_floors_prints_no_floor_line(tmp_path: Path) -> None:
    data, policy = tmp_path / "rows.jsonl", tmp_path / "no-floors.yaml"
    _write_generated(data, easy=EASY_MATH)
    text = DEFAULT_POLICY.read_text()
    start = text.index("  category_floors:")
    end = text.index("medical: mid\n", start) + len("medical: mid\n")
    policy.write_text(text[:start] + text[end:])
    assert load_policy(policy).policy.routing.category_floors == {}
    plain = _calibrate_lines(data, policy)
    ignored = _calibrate_lines(data, DEFAULT_POLICY, "--ignore-floors")
    assert not any("floor" in line for line in plain)
    # Without floors the figures are those of --ignore-floors, which leaves floors out.
    assert plain == [line for line in ignored if not line.startswith("category floors ignored")]


def test_cli_names_missing_cost(tmp_path: Path) -> None:
    data, costless = tmp_path / "rows.jsonl", tmp_path / "costless.jsonl"
    _write_generated(data)
    with costless.open("w") as handle:
        for line in data.read_text().splitlines():
            record = json.loads(line)
            for tier in ("edge", "mid"):
                del record["outcomes"][tier]["cost_usd"]
            handle.write(json.dumps(record) + "\n")

    result = CliRunner().invoke(calibrate_app, ["--data", str(costless), "--target-quality",
                                                "0.9", "--policy", str(DEFAULT_POLICY)])

    assert result.exit_code == 2
    assert ("none of the 50 held-out rows has quality and cost_usd for all of edge, mid, "
            "frontier (missing: cost_usd for edge in 50 rows, cost_usd for mid in 50 rows)"
            in result.output)
