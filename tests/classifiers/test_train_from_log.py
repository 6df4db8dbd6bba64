"""Reading the gateway's outcome log for training, and ``classifier train --outcomes``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from classifiers import load_artifact
from classifiers.cli import app
from classifiers.outcomes import (
    GATEWAY_SOURCE,
    NothingTrainableError,
    OutcomesError,
    gateway_log_files,
    read_gateway_log,
    scan_gateway_log,
    write_gateway_training_file,
)

runner = CliRunner()
TENANT = "key-0123456789abcdef"


def _request(request_id: str, prompt: str | None = "question", **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "request", "request_id": request_id, "tenant": TENANT,
                              "tier": "edge", "model": "edge-small", "cache_hit": False,
                              "status": 200, "error": None, "cost_usd": 0.0001, "ts": 100.0}
    if prompt is not None:
        record["messages"] = [{"role": "user", "content": prompt}]
    return record | fields


def _feedback(request_id: str, score: float, ts: float, **fields: Any) -> dict[str, Any]:
    return {"type": "feedback", "request_id": request_id, "tenant": TENANT, "score": score,
            "label": None, "ts": ts} | fields


def _shadow_label(request_id: str, score: float | None, ts: float) -> dict[str, Any]:
    """A shadow job's record: ``feedback`` with a score, ``shadow`` without one."""
    return {"type": "feedback" if score is not None else "shadow", "source": "shadow",
            "request_id": request_id, "tenant": TENANT, "score": score,
            "verdict": "parsed" if score is not None else "unparsable", "tier": "edge",
            "model": "edge-small", "ts": ts}


def _write(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_unscored_shadow_record_keeps_request(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [
        _request("a", "what is 2+2?"),
        _feedback("a", 1.0, ts=101.0),
        _shadow_label("a", None, ts=102.0),
    ])
    log = scan_gateway_log([path])
    assert [r.id for r in log.records] == ["a"]
    assert log.records[0].messages == [{"role": "user", "content": "what is 2+2?"}]
    assert log.records[0].quality == {"edge": 1.0}
    assert log.counts.unscored_shadow == 1


def test_unscored_shadow_record_is_no_label(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [_request("a"), _shadow_label("a", None, ts=102.0)])
    log = scan_gateway_log([path])
    assert log.records == []
    assert log.counts.unlabelled == 1
    assert log.counts.unscored_shadow == 1


def test_client_feedback_beats_later_shadow(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [
        _request("a"),
        _feedback("a", 0.0, ts=101.0),
        _shadow_label("a", 1.0, ts=500.0),
    ])
    records = read_gateway_log([path])
    assert records[0].quality == {"edge": 0.0}


def test_shadow_score_used_without_client(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [
        _request("a"),
        _shadow_label("a", 0.25, ts=101.0),
        _shadow_label("a", 0.75, ts=102.0),
    ])
    records = read_gateway_log([path])
    assert records[0].quality == {"edge": 0.75}


def test_latest_feedback_by_timestamp(tmp_path: Path) -> None:
    # The later label comes first in reading order: its ts decides, not its position.
    later = _write(tmp_path / "a.jsonl", [_request("a"), _feedback("a", 0.9, ts=300.0)])
    earlier = _write(tmp_path / "b.jsonl", [_feedback("a", 0.1, ts=200.0)])
    records = read_gateway_log([later, earlier])
    assert records[0].quality == {"edge": 0.9}


def test_equal_timestamps_last_read_wins(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [
        _request("a"), _feedback("a", 0.1, ts=300.0), _feedback("a", 0.8, ts=300.0),
    ])
    assert read_gateway_log([path])[0].quality == {"edge": 0.8}


def test_unlabelled_cache_hits_skipped_and_counted(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [
        _request("a", "first question", cache_hit=True, cost_usd=0.0),
        _request("b"),
        _feedback("b", 1.0, ts=101.0),
    ])
    log = scan_gateway_log([path])
    assert [r.id for r in log.records] == ["b"]
    assert log.counts.cache_hits == 1
    assert log.counts.labelled == 1


def test_hit_label_rates_stored_tier(tmp_path: Path) -> None:
    # The hit's record names the tier whose answer was cached; the client rated that answer.
    path = _write(tmp_path / "log.jsonl", [
        _request("a", "what is 2+2?", cache_hit=True, cost_usd=0.0, tier="mid"),
        _feedback("a", 0.0, ts=101.0),
    ])
    log = scan_gateway_log([path])
    assert [r.id for r in log.records] == ["a"]
    assert log.records[0].quality == {"mid": 0.0}
    assert log.counts.cache_hits == 0
    assert log.counts.labelled == 1


def test_hit_row_has_no_cost(tmp_path: Path) -> None:
    # The gateway logs cost_usd 0 for a hit, which is not what the tier costs.
    path = _write(tmp_path / "log.jsonl", [
        _request("a", "first question", cache_hit=True, cost_usd=0.0, tier="mid"),
        _request("b", "second question", cost_usd=0.002, tier="mid"),
        _feedback("a", 1.0, ts=101.0),
        _feedback("b", 1.0, ts=102.0),
    ])

    log = scan_gateway_log([path])

    assert [r.id for r in log.records] == ["a", "b"]
    assert log.records[0].cost == {}
    assert log.records[1].cost == {"mid": 0.002}


def test_repeated_conversation_scores_averaged(tmp_path: Path) -> None:
    # b is a cache hit of a, and c sends the same question again. Each answer was rated.
    path = _write(tmp_path / "log.jsonl", [
        _request("a", "what is 2+2?", cost_usd=0.002),
        _request("b", "what is 2+2?", cache_hit=True, cost_usd=0.0),
        _request("c", "what is 2+2?", cost_usd=0.002),
        _request("d", "what is 2+2?", tier="mid", cost_usd=0.02),
        _feedback("a", 1.0, ts=101.0),
        _feedback("b", 0.0, ts=102.0),
        _feedback("c", 0.5, ts=103.0),
        _feedback("d", 1.0, ts=104.0),
    ])

    log = scan_gateway_log([path])

    assert [r.id for r in log.records] == ["a", "d"]
    assert log.records[0].quality == {"edge": 0.5}
    assert log.records[0].cost == {"edge": 0.002}
    assert log.records[1].quality == {"mid": 1.0}
    assert log.counts.labelled == 4
    assert log.counts.averaged == 2
    assert ("  labelled requests averaged into the row of an earlier request with the same "
            "conversation and tier: 2") in log.counts.summary_lines()


def test_averaged_row_takes_cost_of_miss(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [
        _request("a", "hello", cache_hit=True, cost_usd=0.0),
        _request("b", "hello", cost_usd=0.002),
        _feedback("a", 1.0, ts=101.0),
        _feedback("b", 1.0, ts=102.0),
    ])

    log = scan_gateway_log([path])

    assert [r.id for r in log.records] == ["a"]
    assert log.records[0].cost == {"edge": 0.002}


def test_missing_prompts_counted(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [
        _request("a", prompt=None), _feedback("a", 1.0, ts=101.0),
        _request("b", prompt=None), _feedback("b", 0.0, ts=101.0),
        _request("c", prompt=None),
        _request("d"), _feedback("d", 1.0, ts=101.0),
    ])
    log = scan_gateway_log([path])
    assert [r.id for r in log.records] == ["d"]
    assert log.counts.prompt_not_stored == 2
    assert log.counts.unlabelled == 1
    assert log.counts.requests == 4
    summary = "\n".join(log.counts.summary_lines())
    assert (
        "labelled requests skipped because their prompt was not stored (the gateway stores "
        "prompts only when the policy sets outcomes.store_prompts: true): 2"
    ) in summary
    assert "outcomes.store_prompts: true" in summary


def test_failed_requests_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [
        _request("a", status=502, error="upstream_unavailable"), _feedback("a", 0.0, ts=101.0),
        _request("b", tier=None), _feedback("b", 0.0, ts=101.0),
    ])
    log = scan_gateway_log([path])
    assert log.records == []
    assert log.counts.failed == 2


def test_embeddings_records_skipped_apart(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [
        _request("a", tier=None, endpoint="embeddings"), _feedback("a", 1.0, ts=101.0),
        _request("b"), _feedback("b", 1.0, ts=101.0),
    ])
    log = scan_gateway_log([path])
    assert [r.id for r in log.records] == ["b"]
    assert log.counts.embeddings == 1
    assert log.counts.failed == 0
    assert "  embeddings requests skipped: 1" in log.counts.summary_lines()


def test_feedback_from_other_tenant_ignored(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [
        _request("a"),
        _feedback("a", 1.0, ts=101.0),
        _feedback("a", 0.0, ts=200.0, tenant="key-ffffffffffffffff"),
    ])
    log = scan_gateway_log([path])
    assert log.records[0].quality == {"edge": 1.0}
    assert log.counts.unmatched_labels == 1


def test_shared_request_id_labels_per_tenant(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [
        _request("same-id", "first tenant's question", tenant="team-a"),
        _request("same-id", "second tenant's question", tenant="team-b"),
        _feedback("same-id", 1.0, ts=10.0, tenant="team-a"),
        _feedback("same-id", 0.0, ts=11.0, tenant="team-b"),
    ])
    log = scan_gateway_log([path])
    labelled = {r.messages[-1]["content"]: r.quality for r in log.records}
    assert labelled == {"first tenant's question": {"edge": 1.0},
                        "second tenant's question": {"edge": 0.0}}
    assert log.counts.unmatched_labels == 0


def test_invalid_lines_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    lines = [json.dumps(_request("a")), json.dumps(_feedback("a", 1.0, ts=1.0)),
             '{"type": "feedback", "request_id": "a", "score": 7}', "[1, 2]", '{"type": "req']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = scan_gateway_log([path])
    assert [r.id for r in log.records] == ["a"]
    assert log.counts.invalid_lines == 3


def test_non_utf8_log_line_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    lines = [json.dumps(_request("a")).encode(), json.dumps(_feedback("a", 1.0, ts=1.0)).encode(),
             b'{"type": "req\xff']
    path.write_bytes(b"\n".join(lines) + b"\n")
    log = scan_gateway_log([path])
    assert [r.id for r in log.records] == ["a"]
    assert log.counts.invalid_lines == 1


def test_unmatched_feedback_counted(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", [_feedback("elsewhere", 1.0, ts=1.0)])
    log = scan_gateway_log([path])
    assert log.records == []
    assert log.counts.unmatched_labels == 1


def test_folder_searched_recursively(tmp_path: Path) -> None:
    export = tmp_path / "export"
    _write(export / "date=2026-12-01" / "part-1-0-2-0.jsonl", [_request("a")])
    _write(export / "date=2026-12-02" / "part-3-0-4-0.jsonl", [_feedback("a", 1.0, ts=1.0)])
    _write(export / "date=2026-12-02" / ".part-5-0-6-0.jsonl.exporter.tmp", [_request("x")])
    _write(export / "date=2026-12-02" / ".hidden.jsonl", [_request("y")])
    files = gateway_log_files([export])
    assert [f.parent.name for f in files] == ["date=2026-12-01", "date=2026-12-02"]
    records = read_gateway_log([export])
    assert [r.id for r in records] == ["a"]


def test_parquet_export_read(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow (the parquet extra) is not installed")
    from router.outcomes.export import ParquetFormat

    path = tmp_path / "date=2026-12-01" / "part-1-0-2-0.parquet"
    path.parent.mkdir()
    rows = [_request("a", "hello") | {"stream_id": "1-0"},
            _feedback("a", 1.0, ts=1.0) | {"stream_id": "2-0"}]
    # Every row gets every column here, because pyarrow infers the columns of a list of
    # rows from its first row only.
    columns = {key: None for row in rows for key in row}
    ParquetFormat().write(path, [columns | row for row in rows])
    records = read_gateway_log([tmp_path])
    assert records[0].messages == [{"role": "user", "content": "hello"}]
    assert records[0].quality == {"edge": 1.0}


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(OutcomesError, match="not found"):
        gateway_log_files([tmp_path / "absent"])


def test_training_file_has_tier_outcomes(tmp_path: Path) -> None:
    log = _write(tmp_path / "log.jsonl", [_request("a", "hi"), _feedback("a", 0.5, ts=1.0)])
    written, counts = write_gateway_training_file([log], tmp_path / "scratch")
    assert written is not None
    rows = [json.loads(line) for line in written.read_text().splitlines()]
    assert rows == [{"id": "a", "messages": [{"role": "user", "content": "hi"}],
                     "outcomes": {"edge": {"quality": 0.5, "cost_usd": 0.0001}},
                     "source": GATEWAY_SOURCE}]
    assert counts.labelled == 1


def test_training_file_requires_min_rows(tmp_path: Path) -> None:
    log = _write(tmp_path / "log.jsonl", [_request("a", prompt=None), _feedback("a", 1.0, ts=1.0)])
    with pytest.raises(NothingTrainableError, match="0 trainable rows") as raised:
        write_gateway_training_file([log], tmp_path / "scratch")
    assert raised.value.counts.prompt_not_stored == 1
    assert write_gateway_training_file([log], tmp_path / "scratch", min_rows=0)[0] is None


# The train command -------------------------------------------------------------------------


def _gateway_log(path: Path, rows: int = 80) -> Path:
    """Write requests with feedback: 'proof' prompts fail on edge, greetings pass."""
    records: list[dict[str, Any]] = []
    for i in range(rows):
        hard = i % 2 == 0
        text = f"write a formal proof about lemma {i}" if hard else f"greet user number {i}"
        records.append(_request(f"r{i}", text))
        records.append(_feedback(f"r{i}", 0.0 if hard else 1.0, ts=200.0))
    records.append(_request("no-prompt", prompt=None))
    records.append(_feedback("no-prompt", 1.0, ts=200.0))
    return _write(path, records)


def _labelled_file(path: Path, rows: int = 60) -> Path:
    records = []
    for i in range(rows):
        hard = i % 3 == 0
        text = f"derive the closed form of series {i}" if hard else f"say thanks to friend {i}"
        records.append({"id": f"l{i}", "prompt": text, "outcomes": {
            "edge": {"quality": 0.0 if hard else 1.0},
            "mid": {"quality": 1.0 if i % 2 else 0.0},
            "frontier": {"quality": 0.0 if i % 7 == 0 else 1.0}}})
    return _write(path, records)


def test_train_outcomes_with_data(tmp_path: Path) -> None:
    log = _gateway_log(tmp_path / "export" / "date=2026-12-01" / "part-1-0-2-0.jsonl")
    data = _labelled_file(tmp_path / "labelled.jsonl")
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--outcomes", str(log.parents[1]), "--data", str(data),
                                 "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "outcome log: 81 requests in 1 file, 80 usable for training" in result.output
    assert "outcomes.store_prompts: true): 1" in result.output
    scorer = load_artifact(out)
    scores = scorer.score([{"role": "user", "content": "write a formal proof about lemma 999"}])
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    card = json.loads((out / "model.json").read_text())
    assert card["training"]["rows"]["input"][GATEWAY_SOURCE] == 80
    assert "gateway-log.jsonl" in card["training"]["data_files"]
    assert not list(out.rglob("gateway-log.jsonl"))


def test_train_nothing_trainable_exits_3(tmp_path: Path) -> None:
    log = _write(tmp_path / "log.jsonl", [_request("a", prompt=None), _feedback("a", 1.0, ts=1.0)])
    data = _labelled_file(tmp_path / "labelled.jsonl")
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--outcomes", str(log), "--data", str(data),
                                 "--out", str(out)])
    assert result.exit_code == 3
    assert "nothing to train: the outcome log yielded 0 trainable rows" in result.output
    assert "outcomes.store_prompts: true" in result.output
    assert not out.exists()


def test_train_min_log_rows_zero(tmp_path: Path) -> None:
    log = _write(tmp_path / "log.jsonl", [_request("a", prompt=None), _feedback("a", 1.0, ts=1.0)])
    data = _labelled_file(tmp_path / "labelled.jsonl")
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--outcomes", str(log), "--data", str(data),
                                 "--out", str(out), "--min-log-rows", "0"])
    assert result.exit_code == 0, result.output
    assert GATEWAY_SOURCE not in json.loads((out / "model.json").read_text())["training"]["rows"]["input"]


def test_train_without_inputs_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "model")])
    assert result.exit_code == 2
    assert "no training data: give --data FILE or --outcomes PATH" in result.output


def test_train_missing_outcomes_path_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--outcomes", str(tmp_path / "absent"),
                                 "--out", str(tmp_path / "model")])
    assert result.exit_code == 2
    assert "absent: not found" in result.output


def test_default_version_includes_time() -> None:
    import datetime as dt

    from classifiers.trainer import default_version

    morning = default_version(dt.datetime(2026, 12, 4, 1, 30, 5, tzinfo=dt.UTC))
    evening = default_version(dt.datetime(2026, 12, 4, 23, 0, 0, tzinfo=dt.UTC))
    assert morning == "2026.12.04-013005"
    assert morning < evening
