"""The scale-out proof of ``bench/replicas.py`` at a smaller size.

Three ``tierwise serve`` processes share the test Redis and the replay upstreams.  While
traffic flows, the run publishes versions, SIGTERMs one replica and SIGKILLs another.  Then
it checks requests, outcome records, versions and the exporter's files.  The SIGKILLed
replica is restarted on its spool folder, and no accepted request may lose its record.
"""

from __future__ import annotations

from pathlib import Path

from bench.replicas import CONVERGENCE_WAIT_S, ProofConfig, run_proof
from tests.scaleout.support import make_artifact


def test_three_replicas_share_redis(shared_data: Path, redis_url: str, tmp_path: Path) -> None:
    classifier = make_artifact(tmp_path / "model", "replicas-test-1")
    # The rollout time is only reported here: a test must not depend on the machine's speed.
    config = ProofConfig(
        tmp_path / "run", requests=120, concurrency=6, redis_url=redis_url,
        classifier=classifier, convergence_limit_s=CONVERGENCE_WAIT_S,
    )  # fmt: skip

    report = run_proof(config)

    assert report.failures == []
    answered = {name: 0 for name in ("replica-0", "replica-1", "replica-2", "replica-2-restarted")}
    for attempt in report.attempts:
        answered[attempt.replica] += attempt.status is not None
    assert all(count > 0 for count in answered.values()), answered
    assert report.convergence_s["classifier"] is not None
    assert report.convergence_s["policy"] is not None
    assert report.rejected_by == ["replica-0", "replica-1", "replica-2"]
    assert report.versions_after_convergence["new"] > 0
    assert report.versions_after_convergence["old"] == 0
    assert report.exported["rows"] == report.exported["stream_entries"]
    assert report.exported["duplicates"] == 0
    assert report.exported["missing"] == 0
    assert sum(report.records.values()) == len(report.records)
    assert report.restarted == "replica-2-restarted"
    assert report.accepted > 0
    assert report.accepted_with_record == report.accepted
    assert report.lost_on_sigkill == 0
    assert report.spool_left == 0
