"""File and document inputs of ``/v1/responses`` and ``/v1/messages``.

The official ``openai`` and ``anthropic`` clients send them to an in-process gateway whose
deployments use the direct or the litellm transport, and the fake upstreams record the chat
body they receive. The same file part sent to ``/v1/chat/completions`` is the reference.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from classifiers.conversation import view_conversation
from router.api.anthropic_format import to_chat_body as anthropic_chat_body
from router.app import create_app
from router.routing.tokens import TOKENS_PER_PDF_PAGE, count_prompt_tokens
from tests.gateway.conftest import (
    TIERS,
    GatewayKit,
    LiveGateway,
    StubScorer,
    new_api_key,
    policy_document,
    write_yaml,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.pdf import build_pdf

anthropic = pytest.importorskip(
    "anthropic", reason="the anthropic client is in the test extra: pip install -e '.[test]'"
)

TRANSPORTS = ["direct", "litellm"]
PDF_BYTES = build_pdf(1)
PDF_BASE64 = base64.b64encode(PDF_BYTES).decode()
PDF_DATA_URL = f"data:application/pdf;base64,{PDF_BASE64}"
# Two pages, estimated at 6,000 tokens: more than the 4,096-token window of the small stack.
TWO_PAGE_PDF_BASE64 = base64.b64encode(build_pdf(2)).decode()
DOCUMENT_TEXT = "The launch moved from March to May because the supplier was late."


@dataclass
class Stack:
    """A live gateway whose deployments take file input, and its fake upstreams."""

    gateway: LiveGateway
    fakes: dict[str, FakeUpstream]
    transport: str

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.gateway.base_url, api_key=new_api_key(), max_retries=0, timeout=15
        )

    def anthropic(self) -> Any:
        return anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{self.gateway.port}",
            api_key=new_api_key(),
            max_retries=0,
            timeout=15,
        )

    def upstream_messages(self) -> list[Any]:
        [request] = [request for fake in self.fakes.values() for request in fake.requests]
        messages: list[Any] = request.body["messages"]
        return messages

    def upstream_requests(self) -> int:
        return sum(len(fake.requests) for fake in self.fakes.values())

    def reset(self) -> None:
        for fake in self.fakes.values():
            fake.reset()


@contextmanager
def run_stack(path: Path, transport: str, context_window: int = 32768) -> Iterator[Stack]:
    fakes = {tier: FakeUpstream(f"fake-{tier}").start() for tier in TIERS}
    kit = GatewayKit(path, fakes)
    try:
        document = policy_document(
            kit.base_urls,
            capabilities={tier: {"files": True} for tier in TIERS},
            context_windows=dict.fromkeys(TIERS, context_window),
            cache_enabled=False,
        )
        for tier in document["tiers"].values():
            for deployment in tier["deployments"]:
                deployment["transport"] = transport
        write_yaml(kit.policy_path, document)
        with LiveGateway(create_app(kit.settings(), StubScorer())) as gateway:
            yield Stack(gateway, fakes, transport)
    finally:
        for fake in fakes.values():
            fake.stop()


@pytest.fixture(scope="module", params=TRANSPORTS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One live gateway per transport for the module."""
    with run_stack(tmp_path_factory.mktemp(f"files-{request.param}"), request.param) as stack:
        yield stack


@pytest.fixture(autouse=True)
def reset_fakes(request: pytest.FixtureRequest) -> None:
    if "live" in request.fixturenames:
        request.getfixturevalue("live").reset()


# /v1/responses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_file", "chat_file"),
    [
        ({"file_id": "file-abc123"}, {"file_id": "file-abc123"}),
        (
            {"file_data": PDF_DATA_URL, "filename": "plan.pdf"},
            {"file_data": PDF_DATA_URL, "filename": "plan.pdf"},
        ),
        ({"file_data": PDF_DATA_URL}, {"file_data": PDF_DATA_URL}),
        ({"file_id": "file-abc123", "detail": "auto"}, {"file_id": "file-abc123"}),
    ],
)
def test_responses_input_file_reaches_upstream(
    live: Stack, input_file: dict[str, Any], chat_file: dict[str, Any]
) -> None:
    items: Any = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Summarize the file."},
                {"type": "input_file", **input_file},
            ],
        }
    ]
    chat_messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Summarize the file."},
                {"type": "file", "file": chat_file},
            ],
        }
    ]

    response = live.openai().responses.create(model="auto", input=items)
    received = live.upstream_messages()
    live.reset()
    live.openai().chat.completions.create(model="auto", messages=chat_messages)
    received_by_chat = live.upstream_messages()

    if live.transport == "litellm" and "file_data" in chat_file and "filename" not in chat_file:
        # litellm 1.110 names file data that has no name (OpenAIGPTConfig._common_file_data_check).
        chat_file["filename"] = "my_file.pdf"
    assert response.status == "completed"
    assert received == chat_messages
    assert received_by_chat == received


@pytest.mark.parametrize(
    ("input_file", "param", "code"),
    [
        ({"file_url": "https://example.com/a.pdf"}, "input[0].content[1].file_url",
         "unsupported_parameter"),
        ({"file_id": "file-1", "file_data": PDF_DATA_URL}, "input[0].content[1].file_id", "invalid_request"),
        ({"filename": "a.pdf"}, "input[0].content[1].file_data", "invalid_request"),
        ({"file_id": ""}, "input[0].content[1].file_id", "invalid_request"),
        ({"file_id": "https://example.com/a.pdf"}, "input[0].content[1].file_id", "invalid_request"),
        ({"file_id": "www.example.com/a.pdf"}, "input[0].content[1].file_id", "invalid_request"),
        ({"file_id": "file-1", "detail": "high"}, "input[0].content[1].detail",
         "unsupported_parameter"),
    ],
)
def test_responses_untranslatable_file_is_400(
    live: Stack, input_file: dict[str, Any], param: str, code: str
) -> None:
    content = [{"type": "input_text", "text": "Summarize."}, {"type": "input_file", **input_file}]
    items: Any = [{"role": "user", "content": content}]
    with pytest.raises(openai.BadRequestError) as caught:
        live.openai().responses.create(model="auto", input=items)

    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert caught.value.code == code
    assert caught.value.type == "invalid_request_error"
    assert f"'{param}'" in caught.value.message
    assert live.upstream_requests() == 0


@pytest.mark.parametrize("file_id", ["https://example.com/a.pdf", "http://127.0.0.1:1/a.pdf"])
def test_chat_url_file_id_is_400(live: Stack, file_id: str) -> None:
    messages: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": "Summarize."},
                                     {"type": "file", "file": {"file_id": file_id}}]}
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        live.openai().chat.completions.create(model="auto", messages=messages)

    body: Any = caught.value.body
    assert caught.value.param == "messages[0].content[1].file.file_id"
    assert body["message"] == (
        "Invalid value for 'messages[0].content[1].file.file_id': a URL is not a file id, and "
        "the gateway fetches no URLs, so send the file's content as 'file_data'."
    )
    assert live.upstream_requests() == 0


@pytest.mark.parametrize(
    ("file", "param", "reason"),
    [
        ({}, "file_data",
         "a file part needs 'file_data' (the file's content) or 'file_id' (an uploaded file)"),
        ({"filename": "a.pdf"}, "file_data",
         "a file part needs 'file_data' (the file's content) or 'file_id' (an uploaded file)"),
        ({"file_data": 5}, "file_data", "expected a string"),
        ({"file_id": ["file-1"]}, "file_id", "expected a string"),
        ({"file_id": "file-1", "filename": 3}, "filename", "expected a string"),
    ],
)
def test_chat_file_without_usable_file_is_400(
    live: Stack, file: dict[str, Any], param: str, reason: str
) -> None:
    messages: list[Any] = [{"role": "user", "content": [{"type": "file", "file": file}]}]
    with pytest.raises(openai.BadRequestError) as caught:
        live.openai().chat.completions.create(model="auto", messages=messages)

    body: Any = caught.value.body
    assert caught.value.param == f"messages[0].content[0].file.{param}"
    assert body["message"] == f"Invalid value for 'messages[0].content[0].file.{param}': {reason}."
    assert live.upstream_requests() == 0


# /v1/messages -------------------------------------------------------------------------------


def test_messages_pdf_document_reaches_upstream(live: Stack) -> None:
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_BASE64},
        "title": "Launch plan",
        "context": "Written by the product team.",
        "citations": {"enabled": False},
        "cache_control": {"type": "ephemeral"},
    }
    message = live.anthropic().messages.create(
        model="auto",
        max_tokens=256,
        messages=[{"role": "user", "content": [document, {"type": "text", "text": "Summarize it."}]}],
    )

    assert message.stop_reason == "end_turn"
    assert live.upstream_messages() == [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "Document title: Launch plan\nDocument context: Written by the product team.",
                },
                {"type": "file", "file": {"filename": "Launch plan.pdf", "file_data": PDF_DATA_URL}},
                {"type": "text", "text": "Summarize it."},
            ],
        }
    ]


@pytest.mark.parametrize(
    "source",
    [
        {"type": "text", "media_type": "text/plain", "data": DOCUMENT_TEXT},
        {"type": "content", "content": DOCUMENT_TEXT},
    ],
)
def test_messages_text_document_reaches_upstream(live: Stack, source: dict[str, Any]) -> None:
    document = {"type": "document", "source": source, "title": "Status"}
    live.anthropic().messages.create(
        model="auto",
        max_tokens=256,
        messages=[{"role": "user", "content": [document, {"type": "text", "text": "Why?"}]}],
    )

    assert live.upstream_messages() == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"Document title: Status\n\n{DOCUMENT_TEXT}"},
                {"type": "text", "text": "Why?"},
            ],
        }
    ]


def test_messages_content_document_blocks(live: Stack) -> None:
    source = {
        "type": "content",
        "content": [
            {"type": "text", "text": "First part."},
            {"type": "text", "text": "Second part."},
        ],
    }
    live.anthropic().messages.create(
        model="auto",
        max_tokens=256,
        messages=[{"role": "user", "content": [{"type": "document", "source": source}]}],
    )

    assert live.upstream_messages() == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "First part."},
                {"type": "text", "text": "Second part."},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (
            {"source": {"type": "url", "url": "https://example.com/a.pdf"}},
            "messages[0].content[0].source",
        ),
        (
            {"source": {"type": "file", "file_id": "file_011"}},
            "messages[0].content[0].source",
        ),
        (
            {
                "source": {"type": "text", "media_type": "text/plain", "data": DOCUMENT_TEXT},
                "citations": {"enabled": True},
            },
            "messages[0].content[0].citations.enabled",
        ),
        (
            {"source": {"type": "base64", "media_type": "text/plain", "data": PDF_BASE64}},
            "messages[0].content[0].source.media_type",
        ),
    ],
)
def test_messages_untranslatable_document_is_400(
    live: Stack, document: dict[str, Any], field: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        live.anthropic().messages.create(
            model="auto",
            max_tokens=256,
            messages=[{"role": "user", "content": [{"type": "document", **document}]}],
        )

    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert f"'{field}'" in caught.value.body["error"]["message"]
    assert live.upstream_requests() == 0


def test_messages_document_in_tool_result(live: Stack) -> None:
    result = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": DOCUMENT_TEXT},
            },
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_BASE64},
            },
        ],
    }
    call = {"type": "tool_use", "id": "toolu_1", "name": "fetch_report", "input": {}}
    live.anthropic().messages.create(
        model="auto",
        max_tokens=256,
        messages=[
            {"role": "user", "content": "Fetch the report."},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [result]},
        ],
    )

    assert live.upstream_messages()[2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": DOCUMENT_TEXT},
        {
            "role": "user",
            "content": [
                {"type": "file", "file": {"filename": "document.pdf", "file_data": PDF_DATA_URL}}
            ],
        },
    ]


# Token counts and the classifier --------------------------------------------------------------


def pdf_request(data: str) -> dict[str, Any]:
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": data},
    }
    content = [document, {"type": "text", "text": "Summarize it."}]
    return {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": content}]}


def text_document_request(text: str) -> dict[str, Any]:
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
    content = [document, {"type": "text", "text": "Summarize it."}]
    return {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": content}]}


def count_request(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "max_tokens"}


def test_count_tokens_reads_document_text(live: Stack) -> None:
    client = live.anthropic()
    plain = client.messages.count_tokens(
        model="auto", messages=[{"role": "user", "content": "Summarize it."}]
    )
    with_text = client.messages.count_tokens(**count_request(text_document_request(DOCUMENT_TEXT * 20)))
    with_pdf = client.messages.count_tokens(**count_request(pdf_request(TWO_PAGE_PDF_BASE64)))

    # Twenty copies of a sentence of 13 cl100k tokens.
    assert with_text.input_tokens - plain.input_tokens >= 200
    assert with_pdf.input_tokens == plain.input_tokens + 2 * TOKENS_PER_PDF_PAGE


def test_pdf_pages_exceed_small_context(tmp_path: Path) -> None:
    with run_stack(tmp_path, "direct", context_window=4096) as stack:
        one_page = stack.anthropic().messages.create(**pdf_request(PDF_BASE64))
        with pytest.raises(anthropic.BadRequestError) as caught:
            stack.anthropic().messages.create(**pdf_request(TWO_PAGE_PDF_BASE64))
        upstream_requests = stack.upstream_requests()

    assert one_page.stop_reason == "end_turn"
    assert "exceeds the context window" in caught.value.body["error"]["message"]
    assert "6000 of them estimated for its files" in caught.value.body["error"]["message"]
    assert upstream_requests == 1


def test_prompt_tokens_count_pdf_pages() -> None:
    pdf_messages = anthropic_chat_body(pdf_request(TWO_PAGE_PDF_BASE64)).body["messages"]
    text_messages = anthropic_chat_body(text_document_request(DOCUMENT_TEXT)).body["messages"]
    plain = [{"role": "user", "content": "Summarize it."}]
    plain_tokens = count_prompt_tokens(plain, fits_below=0)

    assert count_prompt_tokens(pdf_messages, fits_below=0) == plain_tokens + 2 * TOKENS_PER_PDF_PAGE
    assert count_prompt_tokens(text_messages, fits_below=0) > plain_tokens


def test_classifier_reads_document_text_only() -> None:
    pdf_view = view_conversation(anthropic_chat_body(pdf_request(PDF_BASE64)).body["messages"])
    text_view = view_conversation(
        anthropic_chat_body(text_document_request(DOCUMENT_TEXT)).body["messages"]
    )

    pdf_text = " ".join(text for text, _ in pdf_view.segments)
    text_text = " ".join(text for text, _ in text_view.segments)
    assert pdf_text == "Summarize it."
    assert PDF_BASE64 not in pdf_text
    assert DOCUMENT_TEXT in text_text
    assert "Summarize it." in text_text
