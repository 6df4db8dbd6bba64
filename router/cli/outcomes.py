"""``tierwise outcomes ...``: commands for the outcome records."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from router.cli.redis_client import ClusterOption, redis_session

if TYPE_CHECKING:
    from router.outcomes.export import ExportSummary

outcomes_app = typer.Typer(
    help="Export the outcome records that gateways write to Redis.\n\n"
    "Example: tierwise outcomes export --redis-url redis://127.0.0.1:6379/0 --out var/export",
    no_args_is_help=True,
)



@outcomes_app.command("export")
def export(
    out: Annotated[Path, typer.Option(help="Output folder; files go to OUT/date=YYYY-MM-DD/.")],
    redis_url: Annotated[
        str | None,
        typer.Option(envvar=["TIERWISE_REDIS_URL", "REDIS_URL"], help="Redis URL of the gateways."),
    ] = None,
    group: Annotated[
        str, typer.Option(help="Consumer group; one group exports each record once.")
    ] = "tierwise-export",
    consumer: Annotated[
        str,
        typer.Option(
            help="Consumer name, stable across restarts; give parallel exporters distinct names."
        ),
    ] = "exporter",
    batch: Annotated[int, typer.Option(help="Records per read and per file (at most).")] = 500,
    flush_interval: Annotated[
        float,
        typer.Option(
            help="With --follow, write a file at least this often (seconds) while records "
            "arrive, even when it contains fewer than --batch; 0 writes after every read. At "
            "most half of --claim-idle-ms."
        ),
    ] = 30.0,
    file_format: Annotated[
        str, typer.Option("--format", help="jsonl, or parquet (needs pyarrow).")
    ] = "jsonl",
    follow: Annotated[
        bool, typer.Option(help="Keep exporting new records until SIGTERM or Ctrl-C.")
    ] = False,
    stream: Annotated[
        str | None,
        typer.Option(help="Stream key that gateways write to; {PREFIX}:outcomes when unset."),
    ] = None,
    key_prefix: Annotated[
        str,
        typer.Option(
            envvar="TIERWISE_REDIS_KEY_PREFIX",
            help="Key prefix of the gateways; the stream is {PREFIX}:outcomes.",
        ),
    ] = "tw",
    redis_cluster: ClusterOption = False,
    start_id: Annotated[
        str,
        typer.Option(help="Where a new group starts: 0 for the whole stream, $ for new records."),
    ] = "0",
    claim_idle_ms: Annotated[
        int, typer.Option(help="Claim records another consumer left pending this long (ms).")
    ] = 60_000,
    log_format: Annotated[
        str,
        typer.Option(
            envvar="TIERWISE_LOG_FORMAT", help="json, console, or auto (console on a terminal)."
        ),
    ] = "auto",
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Draw no progress bar, even on a terminal.")
    ] = False,
) -> None:
    """Copy outcome records from the Redis stream into partitioned files, each exactly once.

    Records are acknowledged only after their file is on disk, so a killed export can be
    restarted with the same --group and --consumer and neither loses nor repeats a record.
    With --follow, records are gathered until there are --batch of them or
    --flush-interval has passed since the first, and what was gathered is written on
    SIGTERM or Ctrl-C.
    A progress bar is drawn on standard error when it is a terminal, unless --quiet is given.

    Example: tierwise outcomes export --redis-url redis://127.0.0.1:6379/0 --out var/export
    """
    from router.cli.export_progress import run_with_progress
    from router.logging_setup import configure_logging
    from router.outcomes.export import ExportError, ExportOptions, OutcomeExporter
    from router.outcomes.log import stream_key

    configure_logging(log_format)

    options = ExportOptions(
        out_dir=out, stream=stream or stream_key(key_prefix), group=group, consumer=consumer,
        batch=batch, file_format=file_format, follow=follow, start_id=start_id,
        claim_idle_ms=claim_idle_ms, flush_interval_s=flush_interval,
    )  # fmt: skip
    stop = _StopFlag()
    with redis_session(redis_url, redis_cluster) as client:
        try:
            summary = run_with_progress(OutcomeExporter(client, options), stop.is_set, quiet)
        except ExportError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    typer.echo(describe_export(summary, out))


def describe_export(summary: ExportSummary, out: Path) -> str:
    """Return the one-line summary that ``tierwise outcomes export`` prints at the end."""
    return (
        f"exported {_count(summary.records, 'record')} into {_count(summary.files, 'file')} "
        f"under {out} ({summary.recovered} recovered, {summary.already_exported} already on "
        f"disk, {summary.missing} trimmed before export, {summary.invalid} invalid)"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class _StopFlag:
    """Set by SIGTERM or SIGINT, so that a follow run writes what it gathered and ends."""

    def __init__(self) -> None:
        self._set = False
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set
