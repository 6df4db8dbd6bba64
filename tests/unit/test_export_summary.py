"""The closing line of ``tierwise outcomes export``."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli.outcomes import describe_export
from router.outcomes.export import ExportError, ExportSummary, JsonlFormat


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


def test_jsonl_read_ids_names_invalid_line(tmp_path: Path) -> None:
    path = tmp_path / "part.jsonl"
    path.write_bytes(b'{"stream_id": "1-0"}\n\n{"stream_id": "2-0"}\nnot json\n')

    with pytest.raises(ExportError) as raised:
        JsonlFormat().read_ids(path)

    assert str(raised.value).startswith(
        f"{path}:4: the line is not an exported record with a stream_id; repair the line"
    )


def test_jsonl_read_ids_requires_stream_id(tmp_path: Path) -> None:
    path = tmp_path / "part.jsonl"
    path.write_bytes(b'{"stream_id": "1-0"}\n{"type": "request"}\n')

    with pytest.raises(ExportError, match=r"part\.jsonl:2: the line is not an exported record"):
        JsonlFormat().read_ids(path)


def test_jsonl_read_ids_reads_every_row(tmp_path: Path) -> None:
    path = tmp_path / "part.jsonl"
    path.write_bytes(b'{"stream_id": "1-0"}\n\n{"stream_id": "2-0"}\n')

    assert JsonlFormat().read_ids(path) == {"1-0", "2-0"}
