"""The observations of the replica proof (``bench/replicas.py``) and the checks on them.

Every check appends one line per problem to ``ProofReport.failures``; a run passes when the
list is empty.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from router.outcomes.log import STREAM_KEY


@dataclass
class Replica:
    name: str
    process: subprocess.Popen[str]
    base: str
    log_path: Path
    signal_sent: str | None = None
    signal_at: float | None = None
    in_rotation: bool = True


@dataclass
class Attempt:
    """One HTTP request to one replica; ``status`` is None when no response arrived."""

    request_id: str
    replica: str
    stream: bool
    sent_at: float
    status: int | None = None
    completed: bool = False
    error: str | None = None


@dataclass
class ProofReport:
    """Counts of one run, and one line per failed check (``failures`` is empty on success)."""

    attempts: list[Attempt] = field(default_factory=list)
    records: Counter[str] = field(default_factory=Counter)
    convergence_s: dict[str, float | None] = field(default_factory=dict)
    rejected_by: list[str] = field(default_factory=list)
    converged_at: float | None = None
    versions_after_convergence: Counter[str] = field(default_factory=Counter)
    exported: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    """Attempts whose response the client received in full, or any response from a replica
    that was not SIGKILLed; each must have exactly one outcome record."""
    accepted_with_record: int = 0
    lost_on_sigkill: int = 0
    """Completed attempts on the SIGKILLed replica without a record (must be 0)."""
    restarted: str | None = None
    """Name of the process started on the SIGKILLed replica's data folder."""
    spool_left: int = 0
    """Spool segment files still on disk after every replica stopped (must be 0)."""
    failures: list[str] = field(default_factory=list)


@dataclass
class Versions:
    """The classifier and policy versions of the run, and the corrupt classifier's version."""

    classifier: str = ""
    policy: str = ""
    bad_classifier: str = ""


# Checks --------------------------------------------------------------------------------------


def run_records(redis_client: Any, stream_start: str, run_id: str) -> list[dict[str, Any]]:
    """Return the outcome records of this run's requests, added after ``stream_start``."""
    entries = redis_client.xrange(STREAM_KEY, min=f"({stream_start}", max="+")
    records = [orjson.loads(fields[b"record"]) for _, fields in entries]
    prefix = f"rep-{run_id}-"
    return [record for record in records if str(record.get("request_id")).startswith(prefix)]


def check_attempts(report: ProofReport, replicas: dict[str, Replica]) -> None:
    for attempt in report.attempts:
        replica = replicas[attempt.replica]
        if replica.signal_sent == "SIGKILL":
            continue
        if attempt.status is None and replica.signal_sent is None:
            report.failures.append(
                f"{attempt.request_id}: {replica.name} did not answer ({attempt.error}) "
                "although it was never stopped"
            )
        elif attempt.status is not None and not attempt.completed:
            report.failures.append(
                f"{attempt.request_id}: {replica.name} answered {attempt.status} "
                f"{'with an unfinished stream' if attempt.stream else ''}".rstrip()
            )


def check_records(
    report: ProofReport, replicas: dict[str, Replica], records: list[dict[str, Any]]
) -> None:
    report.records = Counter(str(record["request_id"]) for record in records)
    sent = {attempt.request_id for attempt in report.attempts}
    for request_id in sorted(set(report.records) - sent):
        report.failures.append(f"{request_id}: an outcome record for a request never sent")
    for attempt in report.attempts:
        count = report.records[attempt.request_id]
        killed = replicas[attempt.replica].signal_sent == "SIGKILL"
        # A response cut by the SIGKILL may or may not have left a record; any other
        # response the client received must have exactly one.
        accepted = attempt.completed if killed else attempt.status is not None
        expected_max = 1 if accepted or killed else 0
        if accepted:
            report.accepted += 1
            report.accepted_with_record += int(count == 1)
            if count == 0:
                report.lost_on_sigkill += int(killed)
                report.failures.append(f"{attempt.request_id}: no outcome record")
        if count > expected_max:
            report.failures.append(f"{attempt.request_id}: {count} outcome records")


def check_versions(report: ProofReport, versions: Versions, records: list[dict[str, Any]]) -> None:
    converged_at = report.converged_at
    for kind, elapsed in report.convergence_s.items():
        if elapsed is None:
            report.failures.append(f"the replicas did not all report the new {kind} within 30 s")
    if converged_at is None:
        return
    late = {a.request_id for a in report.attempts if a.sent_at > converged_at and a.completed}
    for record in records:
        if record["request_id"] in late:
            current = (record["classifier_version"], record["policy_version"]) == (
                versions.classifier, versions.policy,
            )  # fmt: skip
            report.versions_after_convergence["new" if current else "old"] += 1
    if report.versions_after_convergence["old"]:
        report.failures.append("requests sent after the rollout were served with old versions")
    if not report.versions_after_convergence["new"]:
        report.failures.append("no request was answered after the rollout")
    if not report.rejected_by:
        report.failures.append("not every replica reported the corrupt classifier as rejected")


def check_export(report: ProofReport, redis_client: Any, workdir: Path, stream_start: str) -> None:
    from tests.scaleout.support import exported_rows

    exported = [str(row["stream_id"]) for row in exported_rows(workdir / "export")]
    in_stream = [
        entry_id.decode()
        for entry_id, _ in redis_client.xrange(STREAM_KEY, min=f"({stream_start}", max="+")
    ]
    report.exported = {
        "stream_entries": len(in_stream),
        "rows": len(exported),
        "duplicates": len(exported) - len(set(exported)),
        "missing": len(set(in_stream) - set(exported)),
    }
    if report.exported["duplicates"] or report.exported["missing"]:
        report.failures.append(f"the export is not exactly once: {report.exported}")


def check_spools(report: ProofReport, workdir: Path) -> None:
    """Fail when a replica's spool folder still holds a segment after the run."""
    left = sorted(workdir.glob("replica-*/spool/outcomes-*.jsonl"))
    report.spool_left = len(left)
    for path in left:
        report.failures.append(f"{path.relative_to(workdir)}: a spool segment was not delivered")


def check_convergence_limit(report: ProofReport, limit_s: float) -> None:
    for kind, elapsed in report.convergence_s.items():
        if elapsed is not None and elapsed > limit_s:
            report.failures.append(f"the new {kind} took {elapsed:.2f} s to reach every replica")


# Report --------------------------------------------------------------------------------------


def print_report(report: ProofReport, convergence_limit_s: float) -> None:
    """Print the counts of ``report`` and its failures."""
    attempts = report.attempts
    logical = len({a.request_id.split("-r")[0] for a in attempts})
    print(f"requests: {logical} sent as {len(attempts)} attempts "
          f"({len(attempts) - logical} resent after a replica left the rotation)")  # fmt: skip
    for name in sorted({a.replica for a in attempts}):
        mine = [a for a in attempts if a.replica == name]
        answered = [a for a in mine if a.status is not None]
        print(f"  {name}: {len(mine)} attempts, {len(answered)} answered, "
              f"{sum(a.completed for a in mine)} succeeded")  # fmt: skip
    print(f"outcome records: {sum(report.records.values())} for {len(report.records)} request ids")
    print(f"accepted requests: {report.accepted}, with exactly one record: "
          f"{report.accepted_with_record}; lost by the SIGKILLed replica: "
          f"{report.lost_on_sigkill}")  # fmt: skip
    if report.restarted:
        print(f"restarted on the SIGKILLed replica's spool: {report.restarted}; "
              f"spool segments left at the end: {report.spool_left}")  # fmt: skip
    for kind, elapsed in report.convergence_s.items():
        duration = "not reached" if elapsed is None else f"{elapsed:.2f} s"
        print(f"rollout of the new {kind}: {duration} (limit {convergence_limit_s:.1f} s)")
    print(f"corrupt classifier rejected by: {', '.join(report.rejected_by) or 'none'}")
    print(f"records after the rollout: {dict(report.versions_after_convergence)}")
    print(f"export: {report.exported}")
    print("PASS" if not report.failures else "FAIL")
    for failure in report.failures[:50]:
        print(f"  - {failure}")
