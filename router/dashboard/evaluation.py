"""The cost-quality curves of an evaluation report (``tierwise evaluate --json``) for the dashboard.

The report's ``cost_quality`` table contains, per router, a ``curve`` of (mean cost per
request in USD, mean quality) points and its ``aiq``.  Its ``always-<tier>`` entries
contain a ``cost_share`` (of the frontier tier's mean cost) and a ``quality``, and
``frontier_cost`` is the frontier tier's mean cost.  The dashboard plots cost as a share
of ``frontier_cost``, so every router and fixed tier share one axis.  The file is read
again only when its modification time changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

log = structlog.get_logger("tierwise.dashboard")

MAX_CURVE_POINTS = 200


class ReportError(ValueError):
    """Raised when an evaluation report is not the JSON that ``tierwise evaluate`` writes."""


@dataclass
class EvaluationReport:
    """The configured report file and the last summary read from it."""

    path: Path | None
    _cached: tuple[int, dict[str, Any]] | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """Return ``{"status": ...}``: ``not_configured``, ``unavailable``, ``invalid`` or ``ok``.

        ``ok`` comes with ``curves``, ``points`` and ``rows``; the others with a ``message``.
        """
        if self.path is None:
            return {"status": "not_configured", "message": "no evaluation configured"}
        try:
            modified = self.path.stat().st_mtime_ns
        except OSError as exc:
            return _failure("unavailable", f"cannot read {self.path.name}: {exc.strerror}")
        if self._cached is not None and self._cached[0] == modified:
            return self._cached[1]
        result = self._read()
        self._cached = (modified, result)
        return result

    def _read(self) -> dict[str, Any]:
        assert self.path is not None
        try:
            result = summarize_report(orjson.loads(self.path.read_bytes()))
        except OSError as exc:
            return _failure("unavailable", f"cannot read {self.path.name}: {exc.strerror}")
        except orjson.JSONDecodeError as exc:
            return _failure("invalid", f"{self.path.name} is not valid JSON ({exc.msg})")
        except ReportError as exc:
            return _failure("invalid", f"{self.path.name}: {exc}")
        result["file"] = self.path.name
        return result


def _failure(status: str, message: str) -> dict[str, Any]:
    log.warning("evaluation_report_unusable", status=status, reason=message)
    return {"status": status, "message": message}


def summarize_report(report: Any) -> dict[str, Any]:
    """Return the routers' curves and the fixed tiers' points on a cost-share axis.

    Raises ReportError when the report has no usable ``cost_quality`` table.
    """
    table = _cost_quality_table(report)
    frontier_cost = _number(table, "frontier_cost")
    if frontier_cost <= 0:
        raise ReportError(f"'frontier_cost' must be positive; got {frontier_cost}")
    curves: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    for name, entry in table.items():
        if not isinstance(entry, dict):
            continue
        if "curve" in entry:
            curves.append(_curve(name, entry, frontier_cost))
        elif "cost_share" in entry and "quality" in entry:
            points.append(
                {"name": name, "cost_share": _number(entry, "cost_share"),
                 "quality": _number(entry, "quality")}
            )
    if not curves and not points:
        raise ReportError("the 'cost_quality' table has no router curves and no tier points")
    return {
        "status": "ok",
        "rows": table.get("rows"),
        "frontier_quality": table.get("frontier_quality"),
        "curves": curves,
        "points": points,
    }


def _cost_quality_table(report: Any) -> dict[str, Any]:
    """Find ``cost_quality`` at the top level or one level down (a wrapped report)."""
    if not isinstance(report, dict):
        raise ReportError(f"expected a JSON object; got {type(report).__name__}")
    candidates = [report, *(value for value in report.values() if isinstance(value, dict))]
    for candidate in candidates:
        table = candidate.get("cost_quality")
        if isinstance(table, dict):
            return table
    raise ReportError(
        "no 'cost_quality' table; evaluate with three tiers whose rows have cost and quality"
    )


def _curve(name: str, entry: dict[str, Any], frontier_cost: float) -> dict[str, Any]:
    raw = entry["curve"]
    if not isinstance(raw, list) or not all(_is_point(p) for p in raw):
        raise ReportError(f"'{name}.curve' must be a list of [cost, quality] pairs")
    # Thin long curves for drawing; the last point (the frontier end) is always kept.
    step = max(1, len(raw) // MAX_CURVE_POINTS)
    thinned = raw[::step]
    if raw and thinned[-1] is not raw[-1]:
        thinned.append(raw[-1])
    return {
        "name": name,
        "aiq": entry.get("aiq"),
        "cost_share_95": entry.get("cost_share_95"),
        "points": [[float(cost) / frontier_cost, float(quality)] for cost, quality in thinned],
    }


def _is_point(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


def _number(mapping: dict[str, Any], key: str) -> float:
    value = mapping.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ReportError(f"'{key}' must be a number; got {value!r}")
    return float(value)
