"""Replay logged traffic through a policy, offline, with the scores recorded at the time.

Each request record of the outcome log carries the classifier scores and token counts of a
real request, so the routing decision a different policy would have made, and what it
would have cost, can be computed without sending anything.  Quality is known only for
requests with feedback, and only for the tier that actually answered them, so a simulated
quality figure covers the requests whose simulated tier equals the logged one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from router.errors import GatewayError
from router.policy.schema import Policy
from router.routing.decide import RequestNeeds, decide, highest_tier

FeedbackKey = tuple[str | None, str]
"""(tenant, request id) of a feedback record."""


@dataclass
class SimulationResult:
    requests: int = 0
    unroutable: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    cost_usd: float = 0.0
    quality_sum: float = 0.0
    quality_count: int = 0

    @property
    def quality(self) -> float | None:
        return self.quality_sum / self.quality_count if self.quality_count else None

    def share(self, tier: str) -> float:
        return self.tiers[tier] / self.requests if self.requests else 0.0


class OutcomeFileError(ValueError):
    """Raised when a line of an outcome file is not a record; the message names file and line."""


class _InvalidLine(Exception):
    """Raised for one line of an outcome file; load_records adds the file and line number."""


def load_records(path: Path) -> tuple[list[dict[str, Any]], dict[FeedbackKey, float]]:
    """Read routed request records and the feedback score per (tenant, request id).

    ``path`` is an outcome file, or a folder whose ``*.jsonl`` files (searched recursively,
    as ``tierwise outcomes export`` writes them) are read in name order.

    Cache hits and failed requests are skipped, because routing did not decide their outcome.  Feedback
    counts only for a request of the same tenant, because a client may send any request id
    in its own header.  A client's feedback wins over a shadow label; otherwise the latest
    record of a kind wins.

    Raises OutcomeFileError for a line that is not a JSON object, or a feedback record
    without a request id or a numeric score, and OSError when a file cannot be read.
    """
    requests: list[dict[str, Any]] = []
    feedback: dict[FeedbackKey, float] = {}
    from_client: set[FeedbackKey] = set()
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    for file in files:
        for number, line in enumerate(file.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = _parse_line(line)
                if record.get("type") == "feedback" and record.get("score") is not None:
                    key, score = _feedback_of(record)
                    is_shadow = record.get("source") == "shadow"
                    if not (is_shadow and key in from_client):
                        feedback[key] = score
                    if not is_shadow:
                        from_client.add(key)
                elif record.get("type") == "request" and _usable(record):
                    requests.append(record)
            except _InvalidLine as exc:
                raise OutcomeFileError(f"{file}:{number}: {exc}") from None
    return requests, feedback


def _parse_line(line: bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise _InvalidLine(_json_problem(line)) from None
    if not isinstance(record, dict):
        raise _InvalidLine("the line is not a JSON object")
    return record


def _json_problem(line: bytes) -> str:
    """Describe why ``line`` does not parse, in the standard library's words."""
    try:
        json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "the line is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f"the line is not valid JSON ({exc.msg} at column {exc.colno})"
    return "the line is not valid JSON"


def _feedback_of(record: dict[str, Any]) -> tuple[FeedbackKey, float]:
    if "request_id" not in record:
        raise _InvalidLine("the feedback record lacks the field 'request_id'")
    score = record["score"]
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise _InvalidLine(f"the feedback record's field 'score' must be a number, got {score!r:.40}")
    return (record.get("tenant"), record["request_id"]), float(score)


def _usable(record: dict[str, Any]) -> bool:
    return bool(record.get("scores")) and not record.get("cache_hit") and record.get("status") == 200


def simulate(
    policy: Policy, records: Iterable[dict[str, Any]], feedback: dict[FeedbackKey, float]
) -> SimulationResult:
    """Route every record with ``policy`` and add up tiers, cost and known quality.

    Each record's logged ``category`` goes to ``decide``, which applies the policy's
    category floors as the gateway does. The record's alias (``auto`` when ``policy`` lacks
    it) and its tenant's ``min_tier`` and ``blocked_tiers`` in ``policy`` apply too, but
    an ``x-tierwise-min-tier`` header does not, because the record does not keep it.  ``records`` is read once, so it may be a generator
    (the CLI counts progress with one).
    """
    result = SimulationResult()
    for record in records:
        result.requests += 1
        needs = RequestNeeds(prompt_tokens=int(record.get("tokens_in") or 0))
        alias_name = record.get("requested_model")
        if alias_name not in policy.aliases:
            alias_name = "auto"
        alias = policy.aliases.get(alias_name)
        tenant = policy.tenants.entries.get(record.get("tenant") or "")
        try:
            decision = decide(
                policy, record["scores"], needs, requested=alias_name, is_available=lambda d: True,
                min_tier=highest_tier(
                    alias.min_tier if alias is not None else None,
                    tenant.min_tier if tenant is not None else None,
                ),
                blocked_tiers=frozenset(tenant.blocked_tiers) if tenant is not None else frozenset(),
                category=record.get("category"),
            )
        except GatewayError:
            result.unroutable += 1
            continue
        tier = decision.tier
        result.tiers[tier] += 1
        deployment = decision.candidates[0].deployment
        result.cost_usd += deployment.cost_usd(
            int(record.get("tokens_in") or 0),
            int(record.get("tokens_out") or 0),
            int(record.get("tokens_cached") or 0),
        )
        score = feedback.get((record.get("tenant"), record["request_id"]))
        if score is not None and tier == record.get("tier"):
            result.quality_sum += score
            result.quality_count += 1
    return result


def tier_shift_warnings(
    new: SimulationResult, old: SimulationResult, tiers: list[str], limit: float = 0.10
) -> list[str]:
    """Warn for each tier whose share of traffic grows by more than ``limit`` (absolute)."""
    warnings = []
    for tier in tiers:
        growth = new.share(tier) - old.share(tier)
        if growth > limit:
            warnings.append(
                f"WARNING: the {tier} tier would take {new.share(tier):.1%} of requests instead "
                f"of {old.share(tier):.1%} (+{growth * 100:.1f} percentage points)."
            )
    return warnings
