"""The progress bar of ``tierwise outcomes export``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from router.cli.progress import bars_enabled, progress_bars

if TYPE_CHECKING:
    from router.outcomes.export import ExportOptions, ExportSummary, OutcomeExporter


def run_with_progress(
    exporter: OutcomeExporter, should_stop: Callable[[], bool], quiet: bool
) -> ExportSummary:
    """Run ``exporter`` with a bar of entries done against the backlog found at the start.

    The bar moves when the exporter checks ``should_stop``, which it does between batches.
    A ``follow`` run has no end, so its bar only counts.  Raises what ``exporter.run`` raises.
    """
    enabled = bars_enabled(quiet)
    options = exporter.options
    backlog = export_backlog(exporter.client, options) if enabled and not options.follow else None
    with progress_bars(enabled) as bars:
        bar = bars.add("export records", total=backlog)

        def check_and_count() -> bool:
            summary = exporter.summary
            bars.update(bar, summary.records + summary.already_exported + summary.missing)
            return should_stop()

        summary = exporter.run(check_and_count)
        bars.finish(bar)
    return summary


def export_backlog(client: Any, options: ExportOptions) -> int | None:
    """Return the entries a one-shot export would read, or None when Redis cannot tell.

    For an existing group this is its lag plus its pending entries (``lag`` needs Redis 7).
    A new group that starts at ``0`` reads the whole stream, and one that starts at ``$``
    reads nothing.  Raises ``redis.RedisError`` when Redis fails.
    """
    import redis

    try:
        groups: list[dict[str, Any]] = client.xinfo_groups(options.stream)
    except redis.ResponseError:
        # The stream does not exist yet, so there is nothing to export.
        return 0
    for group in groups:
        if _text(group["name"]) == options.group:
            lag = group.get("lag")
            return None if lag is None else int(lag) + int(group["pending"])
    return int(client.xlen(options.stream)) if options.start_id == "0" else 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
