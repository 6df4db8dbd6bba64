"""Minimal valid PDFs for tests: a catalog, a page tree and blank letter-size pages.

The objects are written uncompressed and the cross-reference table has the real byte
offsets, so PDF readers open the files.
"""

from __future__ import annotations

import base64


def build_pdf(pages: int) -> bytes:
    """Return a PDF 1.4 file with ``pages`` blank pages."""
    page_numbers = range(3, 3 + pages)
    kids = " ".join(f"{number} 0 R" for number in page_numbers)
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>",
        *("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>" for _ in page_numbers),
    ]
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


def pdf_data_url(pages: int) -> str:
    """Return a ``data:application/pdf;base64,`` URL of a PDF with ``pages`` blank pages."""
    return "data:application/pdf;base64," + base64.b64encode(build_pdf(pages)).decode()
