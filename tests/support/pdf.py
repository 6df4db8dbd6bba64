"""Minimal valid PDFs for tests: a catalog, a page tree and blank letter-size pages.

``build_pdf`` writes the objects uncompressed with a cross-reference table, and
``build_compressed_pdf`` writes them into a zlib-compressed object stream with a
cross-reference stream, as PDF 1.5 writers do. Both give the real byte offsets, so PDF
readers open the files.
"""

from __future__ import annotations

import base64
import struct
import zlib


def _page_objects(pages: int) -> list[str]:
    """Return the bodies of objects 1 (catalog), 2 (page tree) and 3 onwards (the pages)."""
    page_numbers = range(3, 3 + pages)
    kids = " ".join(f"{number} 0 R" for number in page_numbers)
    return [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>",
        *("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>" for _ in page_numbers),
    ]


def build_pdf(pages: int) -> bytes:
    """Return a PDF 1.4 file with ``pages`` blank pages."""
    objects = _page_objects(pages)
    output = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(output))
        output += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref_offset = len(output)
    output += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        output += f"{offset:010d} 00000 n \n".encode()
    output += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n"
        f"startxref\n{xref_offset}\n%%EOF\n"
    ).encode()
    return bytes(output)


def build_compressed_pdf(pages: int) -> bytes:
    """Return a PDF 1.5 file with ``pages`` blank pages, all its objects in one object stream."""
    objects = _page_objects(pages)
    header = bytearray()
    body = bytearray()
    for number, text in enumerate(objects, start=1):
        header += f"{number} {len(body)} ".encode()
        body += text.encode() + b"\n"
    packed = zlib.compress(bytes(header) + bytes(body))
    stream_number = len(objects) + 1
    xref_number = stream_number + 1
    output = bytearray(b"%PDF-1.5\n")
    stream_offset = len(output)
    output += (
        f"{stream_number} 0 obj\n<< /Type /ObjStm /N {len(objects)} /First {len(header)} "
        f"/Filter /FlateDecode /Length {len(packed)} >>\nstream\n"
    ).encode() + packed + b"\nendstream\nendobj\n"
    xref_offset = len(output)
    # Entries of /W [1 4 2]: type 0 is free, 1 is at a byte offset, 2 is inside an object stream.
    rows = [struct.pack(">BIH", 0, 0, 0xFFFF)]
    rows += [struct.pack(">BIH", 2, stream_number, index) for index in range(len(objects))]
    rows += [struct.pack(">BIH", 1, stream_offset, 0), struct.pack(">BIH", 1, xref_offset, 0)]
    table = b"".join(rows)
    output += (
        f"{xref_number} 0 obj\n<< /Type /XRef /Size {xref_number + 1} /W [1 4 2] /Root 1 0 R "
        f"/Length {len(table)} >>\nstream\n"
    ).encode() + table + b"\nendstream\nendobj\n"
    output += f"startxref\n{xref_offset}\n%%EOF\n".encode()
    return bytes(output)


def pdf_data_url(pages: int) -> str:
    """Return a ``data:application/pdf;base64,`` URL of a PDF with ``pages`` blank pages."""
    return "data:application/pdf;base64," + base64.b64encode(build_pdf(pages)).decode()
