"""Token estimates of file parts, and how they reach routing and the policy's capabilities."""

from __future__ import annotations

import base64
import random
import zlib
from pathlib import Path
from typing import Any

import pytest

from router.api.chat import _estimate_tokens, _file_token_counter
from router.errors import ContextTooLong, UnsupportedParameter
from router.policy.loader import PolicyError, load_policy
from router.policy.schema import Policy
from router.ratelimits import estimate_prompt_tokens
from router.routing.decide import RequestNeeds, decide
from router.routing.tokens import (
    _PDF_INFLATE_LIMIT,
    TOKENS_PER_IMAGE,
    TOKENS_PER_PDF_PAGE,
    count_file_tokens,
    count_pdf_pages,
    count_prompt_tokens,
    estimate_file_tokens,
)
from tests.support.pdf import build_compressed_pdf, build_pdf, pdf_data_url
from tests.unit.test_policy_loader import VALID, write

PROMPT = "Summarize the file."
IMAGE_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def base64_text(content: bytes) -> str:
    return base64.b64encode(content).decode()


def file_messages(file: dict[str, Any], *parts: dict[str, Any]) -> list[dict[str, Any]]:
    content = [{"type": "text", "text": PROMPT}, {"type": "file", "file": file}, *parts]
    return [{"role": "user", "content": content}]


# estimate_file_tokens -----------------------------------------------------------------------


@pytest.mark.parametrize("pages", [1, 3, 40])
def test_pdf_counts_its_pages(pages: int) -> None:
    assert estimate_file_tokens({"file_data": pdf_data_url(pages)}) == pages * TOKENS_PER_PDF_PAGE


@pytest.mark.parametrize(
    "file_data",
    [
        "data:application/octet-stream;base64," + base64_text(build_pdf(2)),
        base64_text(build_pdf(2)),
        "data:application/pdf;name=plan.pdf;base64," + base64_text(build_pdf(2)),
        "data:APPLICATION/PDF;BASE64," + base64_text(build_pdf(2)),
    ],
    ids=["octet-stream", "bare-base64", "data-url-parameter", "upper-case"],
)
def test_pdf_found_by_header_or_media_type(file_data: str) -> None:
    assert estimate_file_tokens({"file_data": file_data}) == 2 * TOKENS_PER_PDF_PAGE


def test_pdf_header_after_leading_bytes() -> None:
    content = b"\x00" * 1000 + build_pdf(2)
    file_data = "data:application/octet-stream;base64," + base64_text(content)

    assert estimate_file_tokens({"file_data": file_data}) == 2 * TOKENS_PER_PDF_PAGE


def test_text_file_counts_its_bytes() -> None:
    text = "The launch moved from March to May. " * 100
    file_data = "data:text/plain;base64," + base64_text(text.encode())

    assert estimate_file_tokens({"file_data": file_data}) == len(text.encode())


def test_pdf_without_page_objects_counts_bytes() -> None:
    # An object stream without /FlateDecode is not inflated, so no page is found.
    content = b"%PDF-1.5\n1 0 obj << /Type /ObjStm /N 40 >> stream\nx\x9c\x03\x00endstream\n"
    file_data = "data:application/pdf;base64," + base64_text(content)

    assert estimate_file_tokens({"file_data": file_data}) == len(content)


def test_pages_in_object_streams_count() -> None:
    content = build_compressed_pdf(7)
    file_data = "data:application/pdf;base64," + base64_text(content)

    assert b"/Type /Page " not in content
    assert estimate_file_tokens({"file_data": file_data}) == 7 * TOKENS_PER_PDF_PAGE


def test_object_stream_inflation_is_bounded() -> None:
    # 12 bytes per page object: 400 MiB of them compress to about 1 MB.
    page = b"/Type /Page "
    packed = zlib.compress(page * (400 * 1024 * 1024 // len(page)), 9)
    content = (b"%PDF-1.5\n4 0 obj << /Type /ObjStm /Filter /FlateDecode >>\nstream\n"
               + packed + b"\nendstream\nendobj\n")

    assert count_pdf_pages(content) == _PDF_INFLATE_LIMIT // len(page)


def test_incremental_update_counts_page_once() -> None:
    # An incremental update appends a new copy of each changed object under its old number.
    update = b"".join(
        f"{number} 0 obj\n<< /Type /Page /Parent 2 0 R /Rotate 90 >>\nendobj\n".encode()
        for number in (3, 4, 5)
    )

    assert count_pdf_pages(build_pdf(3) + update) == 3


def test_update_of_compressed_page_counts_once() -> None:
    # build_compressed_pdf numbers its pages from 3; object 9 is the fourth page.
    update = b"9 0 obj\n<< /Type /Page /Parent 2 0 R /Rotate 90 >>\nendobj\n"

    assert count_pdf_pages(build_compressed_pdf(7) + update) == 7


def test_new_page_in_update_counts() -> None:
    update = b"40 0 obj\n<< /Type /Page /Parent 2 0 R >>\nendobj\n"

    assert count_pdf_pages(build_pdf(3) + update) == 4


def test_object_stream_without_header_counts_each_page() -> None:
    packed = zlib.compress(b"<< /Type /Page >>\n<< /Type /Page >>\n")
    content = (b"%PDF-1.5\n4 0 obj << /Type /ObjStm /Filter /FlateDecode >>\nstream\n"
               + packed + b"\nendstream\nendobj\n")

    assert count_pdf_pages(content) == 2


def test_long_object_stream_inflates_whole() -> None:
    # About 750 kB of compressed filler puts the pages far past the first input chunk.
    filler = base64_text(random.Random(7).randbytes(750_000)).encode()
    body = filler + b"\n<< /Type /Page >>\n<< /Type /Page >>\n"
    header = f"3 {len(filler) + 1} 4 {len(filler) + 19} ".encode()
    packed = zlib.compress(header + body)
    content = (
        f"%PDF-1.5\n5 0 obj << /Type /ObjStm /N 2 /First {len(header)} /Filter /FlateDecode "
        f"/Length {len(packed)} >>\nstream\n".encode()
        + packed + b"\nendstream\nendobj\n"
    )

    assert len(packed) > 500_000
    assert count_pdf_pages(content) == 2


def test_corrupt_object_stream_is_skipped() -> None:
    content = build_pdf(2) + b"9 0 obj << /Type /ObjStm /Filter /FlateDecode >>\nstream\nnot zlib\nendstream\n"

    assert count_pdf_pages(content) == 2


def test_page_tree_nodes_are_not_pages() -> None:
    content = b"%PDF-1.4\n<< /Type /Pages /Count 9 >>\n<< /Type/Page >>\n<</Type\n/Page/Parent 2 0 R>>"
    file_data = "data:application/pdf;base64," + base64_text(content)

    assert estimate_file_tokens({"file_data": file_data}) == 2 * TOKENS_PER_PDF_PAGE


def test_invalid_base64_pdf_counts_bytes() -> None:
    file_data = "data:application/pdf;base64,JVBERi0xLjQK" + "A"  # one character too many

    assert estimate_file_tokens({"file_data": file_data}) == 9


def test_percent_encoded_data_url_counts_text() -> None:
    # The encoded length, 13, is an upper bound of the 11 decoded bytes.
    assert estimate_file_tokens({"file_data": "data:text/plain,Hello%20there"}) == 13


def test_file_id_counts_one_page() -> None:
    assert estimate_file_tokens({"file_id": "file-abc123"}) == TOKENS_PER_PDF_PAGE


@pytest.mark.parametrize("file", [None, "file-abc", {}, {"file_data": 12}, {"file_id": ""}])
def test_malformed_file_counts_nothing(file: Any) -> None:
    assert estimate_file_tokens(file) == 0


# count_prompt_tokens and the token-rate estimate ------------------------------------------------


def test_prompt_tokens_add_file_estimate() -> None:
    plain = [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}]
    with_pdf = file_messages({"filename": "plan.pdf", "file_data": pdf_data_url(40)})

    expected = count_prompt_tokens(plain, fits_below=0) + 40 * TOKENS_PER_PDF_PAGE
    assert count_prompt_tokens(with_pdf, fits_below=0) == expected
    # The cheap upper bound includes the estimate as well.
    assert count_prompt_tokens(with_pdf, fits_below=10**9) >= expected


def test_given_file_tokens_replace_count() -> None:
    messages = file_messages({"file_data": pdf_data_url(40)})
    plain = [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}]

    assert count_file_tokens(messages) == 40 * TOKENS_PER_PDF_PAGE
    assert count_prompt_tokens(messages, fits_below=0, file_tokens=7) == (
        count_prompt_tokens(plain, fits_below=0) + 7
    )


def test_files_in_several_messages_add_up() -> None:
    first = file_messages({"file_data": pdf_data_url(2)})
    second = file_messages({"file_data": pdf_data_url(3)})

    assert count_file_tokens(first + second) == 5 * TOKENS_PER_PDF_PAGE


def test_token_rate_estimate_counts_attachments() -> None:
    messages = file_messages({"file_data": pdf_data_url(4)}, IMAGE_PART)
    text_estimate = estimate_prompt_tokens([PROMPT], 1)
    file_tokens = _file_token_counter(messages, {"text", "file", "image_url"})

    assert _estimate_tokens(messages, file_tokens) == (
        text_estimate + 4 * TOKENS_PER_PDF_PAGE + TOKENS_PER_IMAGE
    )


def test_file_estimate_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def counting(messages: list[Any]) -> int:
        calls.append(messages)
        return count_file_tokens(messages)

    monkeypatch.setattr("router.api.chat.count_file_tokens", counting)
    messages = file_messages({"file_data": pdf_data_url(2)})
    file_tokens = _file_token_counter(messages, {"text", "file"})

    assert file_tokens() == 2 * TOKENS_PER_PDF_PAGE
    assert file_tokens() == 2 * TOKENS_PER_PDF_PAGE
    assert len(calls) == 1


def test_token_rate_estimate_without_attachments() -> None:
    messages = [{"role": "user", "content": PROMPT}]

    file_tokens = _file_token_counter(messages, set())

    assert _estimate_tokens(messages, file_tokens) == estimate_prompt_tokens([PROMPT], 1)


# Routing -------------------------------------------------------------------------------------


def files_policy(edge_files: bool = True, mid_files: bool = True, mid_window: int = 128000) -> Policy:
    def deployment(name: str, window: int, files: bool) -> dict[str, object]:
        return {
            "name": name,
            "model": f"openai/{name}",
            "api_base": "http://127.0.0.1:9/v1",
            "price": {"input_per_million": 1, "output_per_million": 1},
            "context_window": window,
            "capabilities": {"files": files},
        }

    return Policy.model_validate(
        {
            "aliases": {"auto": {}},
            "tiers": {
                "edge": {"deployments": [deployment("small", 2048, edge_files)]},
                "mid": {"deployments": [deployment("medium", mid_window, mid_files)]},
                "frontier": {"deployments": [deployment("large", mid_window, False)]},
            },
            "routing": {"thresholds": {"edge": 0.7, "mid": 0.6}},
        }
    )


def pdf_needs(pages: int) -> RequestNeeds:
    messages = file_messages({"file_data": pdf_data_url(pages)})
    file_tokens = count_file_tokens(messages)
    return RequestNeeds(
        prompt_tokens=count_prompt_tokens(messages, fits_below=2048, file_tokens=file_tokens),
        files=True,
        file_tokens=file_tokens,
    )


def test_large_pdf_skips_small_edge() -> None:
    decision = decide(files_policy(), {"edge": 0.9, "mid": 0.9}, pdf_needs(40),
                      requested="auto", is_available=lambda d: True)

    assert decision.tier == "mid"
    assert decision.skipped == {"small": "context", "large": "capability:messages:file"}


def test_one_page_pdf_still_skips_2048_window() -> None:
    # One page is estimated at 3,000 tokens, more than the 2,048-token window.
    decision = decide(files_policy(), {"edge": 0.9, "mid": 0.9}, pdf_needs(1),
                      requested="auto", is_available=lambda d: True)

    assert decision.tier == "mid"


def test_pdf_larger_than_every_window_names_files() -> None:
    with pytest.raises(ContextTooLong) as caught:
        decide(files_policy(mid_window=100_000), {"edge": 0.9}, pdf_needs(40),
               requested="auto", is_available=lambda d: True)

    needs = pdf_needs(40)
    assert caught.value.param == "messages"
    assert caught.value.message == (
        f"The conversation needs about {needs.prompt_tokens} tokens plus the requested output, "
        "120000 of them estimated for its files (3000 per PDF page, else one per byte), which "
        "exceeds the context window of every deployment that could serve it. Send fewer or "
        "smaller files, shorten the conversation or lower max_tokens."
    )


def test_no_file_capable_deployment_is_unsupported() -> None:
    policy = files_policy(edge_files=False, mid_files=False)
    with pytest.raises(UnsupportedParameter) as caught:
        decide(policy, {"edge": 0.9}, pdf_needs(1), requested="auto", is_available=lambda d: True)

    assert caught.value.param == "messages"
    assert caught.value.message == (
        "No available deployment supports file input of this request. Remove it, or add a "
        "deployment that supports it to the policy."
    )


# Policy validation ---------------------------------------------------------------------------


def test_files_capability_defaults_to_false(tmp_path: Path) -> None:
    loaded = load_policy(write(tmp_path, VALID))

    assert [d.capabilities.files for d in loaded.policy.all_deployments()] == [False, False]


@pytest.mark.parametrize(
    ("value", "found"),
    [('"yes"', "'yes'"), ('"true"', "'true'"), ("1", "1"), ("pdf", "'pdf'")],
)
def test_files_capability_rejects_non_booleans(tmp_path: Path, value: str, found: str) -> None:
    text = VALID.replace(
        "        context_window: 4096\n",
        f"        context_window: 4096\n        capabilities: {{files: {value}}}\n",
    )
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    problem = (
        f"{path}:10: tiers.edge.deployments.0.capabilities.files: expected true or false "
        f"(found {found})"
    )
    assert caught.value.problems == [problem]


@pytest.mark.parametrize(
    "policy_file", ["policies/default.yaml", "policies/examples/three-tier-cloud.yaml"]
)
def test_shipped_policies_send_pdf_to_mid(policy_file: str) -> None:
    root = Path(__file__).resolve().parents[2]
    policy = load_policy(root / policy_file).policy

    decision = decide(policy, {"edge": 0.99, "mid": 0.99}, pdf_needs(40),
                      requested="auto", is_available=lambda d: True)

    assert decision.tier == "mid"
    assert decision.candidates[0].deployment.name == "gpt-4o-mini"
    [edge] = policy.tiers["edge"].deployments
    assert decision.skipped == {edge.name: "capability:messages:file"}
