"""The labelled-outcomes reader, tier maps, duplicate merging and the gateway-log loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifiers.outcomes import (
    LabelledPrompt,
    OutcomesError,
    imply_tiers,
    parse_implied_tiers,
    parse_tier_map,
    read_gateway_log,
    read_outcomes,
)
from classifiers.trainer import merge_duplicates, split_records


def _write(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_tier_map_accepts_repeats_and_commas() -> None:
    mapping = parse_tier_map(["edge=a", "mid=b,mid=c", "frontier = d"])
    assert mapping == {"a": "edge", "b": "mid", "c": "mid", "d": "frontier"}


@pytest.mark.parametrize("entry", ["edge", "=model", "edge="])
def test_tier_map_rejects_incomplete_entry(entry: str) -> None:
    with pytest.raises(OutcomesError, match="expected TIER=MODEL"):
        parse_tier_map([entry])


def test_read_maps_models_and_masks_missing_tiers(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [
        {"id": "1", "prompt": "hi", "outcomes": {"m-big": {"quality": 1, "cost_usd": 0.5},
                                                  "other": {"quality": 0}}, "split": "test"},
        {"id": "2", "messages": [{"role": "user", "content": "yo"}],
         "outcomes": {"frontier": {"quality": 0.25}}},
    ])
    first, second = read_outcomes([path], {"m-big": "frontier"})
    assert first.messages == [{"role": "user", "content": "hi"}]
    assert first.quality == {"frontier": 1.0}
    assert first.cost == {"frontier": 0.5}
    assert first.split == "test"
    assert second.quality == {"frontier": 0.25}
    assert second.cost == {}


def test_read_without_map_keeps_keys(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [{"prompt": "x", "outcomes": {"edge": {"quality": 0}}}])
    assert read_outcomes([path])[0].quality == {"edge": 0.0}


@pytest.mark.parametrize(("record", "message"), [
    ({"outcomes": {}}, "the record lacks the field 'messages' (or 'prompt')"),
    ({"prompt": "x"}, ("the record lacks the field 'outcomes' (an object of model -> "
                      "{quality, cost_usd})")),
    ({"prompt": "x", "outcomes": []}, ("the field 'outcomes' must be an object of model -> "
                                      "{quality, cost_usd}, not a JSON array")),
    ({"prompt": "x", "outcomes": {"edge": {}}}, "the outcome 'edge' lacks the field 'quality'"),
    ({"prompt": "x", "outcomes": {"edge": 1}}, "the outcome 'edge' lacks the field 'quality'"),
    ({"prompt": "x", "outcomes": {"edge": {"quality": "high"}}},
     "the field 'outcomes.edge.quality' must be a number, got \"high\""),
    ([1, 2], "the line is a JSON array, not an object"),
])
def test_read_names_file_and_line_of_bad_record(tmp_path: Path, record: object,
                                                message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"prompt": "ok", "outcomes": {}}, record])
    with pytest.raises(OutcomesError) as raised:
        read_outcomes([path])
    assert str(raised.value) == f"{path}:2: {message}"


def test_read_names_line_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "outcomes": {}}\n\nnot json\n', encoding="utf-8")
    with pytest.raises(OutcomesError) as raised:
        read_outcomes([path])
    assert str(raised.value) == f"{path}:3: the line is not valid JSON (Expecting value at column 1)"


def test_read_names_line_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "ok", "outcomes": {}}\n\xff\xfe\n')
    with pytest.raises(OutcomesError) as raised:
        read_outcomes([path])
    assert str(raised.value) == f"{path}:2: the line is not UTF-8 text"


def test_merge_unites_labels_and_keeps_test_split(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [
        {"prompt": "same", "outcomes": {"edge": {"quality": 1}}, "split": "train"},
        {"prompt": "same", "outcomes": {"frontier": {"quality": 0}}, "split": "test"},
        {"prompt": "other", "outcomes": {"edge": {"quality": 0}}},
    ])
    merged = merge_duplicates(read_outcomes([path]))
    assert len(merged) == 2
    assert merged[0].quality == {"edge": 1.0, "frontier": 0.0}
    assert merged[0].split == "test"


def test_split_holds_out_test_rows_and_fraction(tmp_path: Path) -> None:
    records = [{"prompt": f"p{i}", "outcomes": {"edge": {"quality": 1}}} for i in range(200)]
    records[0]["split"] = "test"
    records[1]["split"] = "train"
    train, test = split_records(read_outcomes([_write(tmp_path / "d.jsonl", records)]), 0.25, 3)
    assert test[0].messages[0]["content"] == "p0"
    assert "p1" in {r.messages[0]["content"] for r in train}
    assert 30 < len(test) < 75


def test_log_joins_feedback_to_hits(tmp_path: Path) -> None:
    path = _write(tmp_path / "outcomes.jsonl", [
        {"request_id": "a", "tier": "edge", "model": "m", "scores": {}, "cache_hit": False,
         "messages": [{"role": "user", "content": "q1"}], "cost_usd": 0.001},
        {"request_id": "b", "tier": "mid", "model": "m", "cache_hit": True, "prompt": "q2"},
        {"request_id": "c", "tier": "mid", "model": "m", "cache_hit": False},
        {"type": "feedback", "request_id": "a", "score": 0.2},
        {"type": "feedback", "request_id": "a", "score": 0.9},
        {"type": "feedback", "request_id": "b", "score": 1.0},
        {"type": "feedback", "request_id": "c", "score": 1.0},
        {"type": "feedback", "request_id": "unknown", "score": 1.0},
    ])
    records = read_gateway_log([path])
    assert [r.id for r in records] == ["a", "b"]
    assert records[0].quality == {"edge": 0.9}
    assert records[0].cost == {"edge": 0.001}
    assert records[0].source == "gateway-log"
    # A hit costs nothing, so its row has a quality label and no cost.
    assert (records[1].quality, records[1].cost) == ({"mid": 1.0}, {})


def test_source_weights_balance_groups() -> None:
    from classifiers.outcomes import LabelledPrompt
    from classifiers.training import source_weights

    records = [LabelledPrompt(str(i), [], source="big/x") for i in range(3)]
    records.append(LabelledPrompt("3", [], source="small"))
    equal = source_weights(records, 0.0)
    balanced = source_weights(records, 1.0)
    assert equal.tolist() == [1.0, 1.0, 1.0, 1.0]
    # Mean 1, and each group's total weight is the same (2.0).
    assert balanced[:3].sum() == pytest.approx(2.0)
    assert balanced[3] == pytest.approx(2.0)


def test_implied_tier_takes_minimum_of_sources() -> None:
    rules = parse_implied_tiers(["edge=mid+frontier"])
    both = LabelledPrompt("a", [{"role": "user", "content": "x"}], {"mid": 1.0, "frontier": 0.0})
    own = LabelledPrompt("b", [{"role": "user", "content": "y"}],
                         {"edge": 1.0, "mid": 0.0, "frontier": 0.0})
    partial = LabelledPrompt("c", [{"role": "user", "content": "z"}], {"frontier": 1.0})

    imply_tiers([both, own, partial], rules)

    assert rules == {"edge": ("mid", "frontier")}
    assert both.quality["edge"] == 0.0
    assert own.quality["edge"] == 1.0
    assert "edge" not in partial.quality


@pytest.mark.parametrize("entry", ["edge", "edge=", "=mid+frontier", "edge=+"])
def test_implied_tier_rejects_incomplete_entry(entry: str) -> None:
    with pytest.raises(OutcomesError, match="invalid implied tier"):
        parse_implied_tiers([entry])
