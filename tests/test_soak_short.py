"""A 30-second run of the soak (bench/soak.py) with one Redis kill and restart.

It starts its own redis-server, three replay upstreams and a gateway as processes, so it needs
the redis-server binary and the public data folder, and skips with the reason when either is
missing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import soak

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="redis-server is not installed; the soak runs its own (apt-get install redis-server)",
    ),
]


@pytest.fixture(scope="module")
def soak_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The exit status and JSON report of one 30-second soak with a single Redis kill."""
    folder = tmp_path_factory.mktemp("soak")
    report_path = folder / "report.json"
    status = soak.main(
        [
            "--minutes", "0.5", "--faults", "kill", "--rss-interval", "2",
            "--data-dir", str(shared_data), "--workdir", str(folder / "run"),
            "--json-out", str(report_path),
        ]
    )  # fmt: skip
    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    report["exit_status"] = status
    return report


def test_soak_every_request_succeeds(soak_run: dict[str, Any]) -> None:
    assert soak_run["failures"] == {}
    assert soak_run["sent"] > 0
    assert soak_run["succeeded"] == soak_run["sent"]
    assert soak_run["exit_status"] == 0


def test_soak_mix_covers_every_kind(soak_run: dict[str, Any]) -> None:
    assert soak_run["streamed"] > 0
    assert soak_run["repeats"] > 0
    assert soak_run["feedback_sent"] > 0
    assert soak_run["cache_hits"] > 0


def test_soak_redis_killed_once(soak_run: dict[str, Any]) -> None:
    assert [fault["kind"] for fault in soak_run["faults"]] == ["kill"]


def test_soak_no_outcome_record_missing(soak_run: dict[str, Any]) -> None:
    records = soak_run["records"]
    assert records["expected_records"] == soak_run["sent"]
    assert records["missing"] == 0
    assert records["missing_sample"] == []
    assert records["unexpected"] == 0


def test_soak_records_match_cache_hits(soak_run: dict[str, Any]) -> None:
    assert soak_run["records"]["record_cache_hits"] == soak_run["cache_hits"]


def test_soak_leaves_nothing_running(soak_run: dict[str, Any]) -> None:
    assert soak_run["process_ids"]
    for pid in soak_run["process_ids"]:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} of the soak is still running"
