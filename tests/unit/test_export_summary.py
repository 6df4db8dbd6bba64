"""The closing line of ``tierwise outcomes export``."""

from __future__ import annotations

from pathlib import Path

from router.cli.outcomes import describe_export
from router.outcomes.export import ExportSummary


def test_summary_uses_singular_for_one() -> None:
    line = describe_export(ExportSummary(records=1, files=1), Path("out"))

    assert line.startswith("exported 1 record into 1 file under out (")


def test_summary_uses_plural_otherwise() -> None:
    many = describe_export(ExportSummary(records=12, files=3), Path("out"))
    none = describe_export(ExportSummary(), Path("out"))

    assert many.startswith("exported 12 records into 3 files under out (")
    assert none.startswith("exported 0 records into 0 files under out (")
    assert none.endswith(
        "(0 recovered, 0 already on disk, 0 trimmed before export, 0 invalid)"
    )
