"""Prompt token counting for context-window checks.

Exact counting with tiktoken costs time on long prompts, so ``count_prompt_tokens`` first
takes the UTF-8 byte length, an upper bound of the cl100k token count, and only encodes
when that bound does not already fit the smallest window in question.

Images and files are not text, so they count as estimates: a fixed count per image, and
for a file part its PDF page count or its decoded size (``estimate_file_tokens``).
"""

from __future__ import annotations

import binascii
import bisect
import importlib.util
import os
import re
import zlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

# Per-message framing tokens and an image's cost, from OpenAI's published counting rules
# (gpt-4 family: 3 tokens per message; a low-detail image is 85 tokens, a high-detail
# 512 px tile 170).  Images are counted at 1,000 tokens each, an estimate.
# NOTE: the high-detail rule scales an image to fit 2048 px, then its short side to 768 px,
# so a tall image takes 8 tiles, 1,445 tokens, and the count is low for it.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 1000

# Estimated tokens of one PDF page. Anthropic's PDF support page (docs.claude.com) gives
# about 7,000 tokens for a 3-page PDF, because each page goes to the model as its extracted
# text and as an image. OpenAI's file inputs guide describes the same two parts.
TOKENS_PER_PDF_PAGE = 3000
# A page object's dictionary entry. The lookahead leaves out ``/Pages``, the page tree's nodes.
_PDF_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9])")
# PDF 1.5 and later can store objects, pages included, in zlib-compressed object streams
# (``/Type /ObjStm``), which a search of the raw bytes does not find. The PDF manuals in
# Debian's libtasn1-doc and shared-mime-info packages keep all their pages in them. Those
# streams are inflated and searched too, at most _PDF_INFLATE_LIMIT bytes per file, so a
# small stream that inflates to gigabytes costs no more than that.
_PDF_STREAM_DATA = re.compile(rb"stream\r?\n")
_PDF_OBJECT_STREAM = re.compile(rb"/Type\s*/ObjStm(?![A-Za-z0-9])")
_PDF_DICTIONARY_LOOKBACK = 1024
_PDF_INFLATE_LIMIT = 8 * 1024 * 1024
_PDF_INFLATE_FIRST_CHUNK = 4 * 1024
# An indirect object's header, such as ``12 0 obj``, so that each page is known by the
# number of the object that contains it.
_PDF_OBJ_KEYWORD = re.compile(rb"obj(?![A-Za-z0-9])")
_PDF_OBJECT_HEADER = re.compile(rb"(?<![0-9])([0-9]+)\s+[0-9]+\s+obj$")
_PDF_STREAM_COUNT = re.compile(rb"/N\s+([0-9]+)")
_PDF_STREAM_FIRST = re.compile(rb"/First\s+([0-9]+)")
# The header is searched for in the first 1,024 bytes, because some files put other data
# before it. 1,368 base64 characters decode to 1,026 bytes, and the count is a multiple of 4,
# so they decode on their own.
_PDF_HEADER = b"%PDF-"
_HEADER_BASE64_CHARS = 1368


def message_texts(messages: Iterable[Any]) -> Iterable[str]:
    """Yield every text fragment of OpenAI-style messages (dicts or pydantic models)."""
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else message.content
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str):
                    yield text
        tool_calls = message.get("tool_calls") if isinstance(message, dict) else message.tool_calls
        # An upstream's completion is not validated, so its parts and calls may be of any type.
        for call in tool_calls if isinstance(tool_calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                yield str(function.get("arguments", ""))


def _content_parts(messages: Iterable[Any]) -> Iterable[Any]:
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else message.content
        if isinstance(content, list):
            yield from content


def count_attachment_tokens(messages: Iterable[Any], *, files: bool = True) -> int:
    """Estimate the tokens of the image parts of ``messages``, and of the file parts unless
    ``files`` is False."""
    tokens = 0
    for part in _content_parts(messages):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image_url":
            tokens += TOKENS_PER_IMAGE
        elif kind == "file" and files:
            tokens += estimate_file_tokens(part.get("file"))
    return tokens


def count_file_tokens(messages: Iterable[Any]) -> int:
    """Estimate the tokens of the ``file`` parts of ``messages`` (``estimate_file_tokens``)."""
    return sum(
        estimate_file_tokens(part.get("file"))
        for part in _content_parts(messages)
        if isinstance(part, dict) and part.get("type") == "file"
    )


def estimate_file_tokens(file: Any) -> int:
    """Estimate the prompt tokens of a chat ``file`` part's ``file`` object.

    A PDF counts ``TOKENS_PER_PDF_PAGE`` per page object (``count_pdf_pages``). Other files
    count their decoded length in bytes, an upper bound of a text file's cl100k tokens. A PDF
    in which no page object is found counts its length too.
    """
    if not isinstance(file, dict):
        return 0
    data = file.get("file_data")
    if not isinstance(data, str):
        # NOTE: a file_id names a file stored with the provider, whose size the gateway
        # cannot see, so it counts as one PDF page however long the file is.
        return TOKENS_PER_PDF_PAGE if file.get("file_id") else 0
    media_type, payload, is_base64 = _split_data_url(data)
    if not is_base64:
        return len(payload.encode())
    size = _decoded_base64_length(payload)
    if media_type != "application/pdf" and not _starts_like_pdf(payload):
        return size
    try:
        content = binascii.a2b_base64(payload)
    except binascii.Error:
        return size
    pages = count_pdf_pages(content)
    return pages * TOKENS_PER_PDF_PAGE if pages else size


def count_pdf_pages(content: bytes) -> int:
    """Count the page objects of a PDF, in its bytes and in its compressed object streams.

    Nothing is parsed: the bytes are searched, and each stream whose dictionary names
    ``/Type /ObjStm`` and ``/FlateDecode`` is inflated and searched the same way. A page
    counts once per object number, because a PDF saved with incremental updates appends a
    new copy of each changed page under its old number.
    """
    numbered: set[int] = set()
    unnumbered = _find_plain_pages(content, numbered)
    budget = _PDF_INFLATE_LIMIT
    view = memoryview(content)
    for match in _PDF_STREAM_DATA.finditer(content):
        start = match.start()
        dictionary = content[max(0, start - _PDF_DICTIONARY_LOOKBACK):start]
        # The stream's own dictionary follows the last "obj" keyword before its data.
        dictionary = dictionary[dictionary.rfind(b"obj") + 1:]
        if b"/FlateDecode" not in dictionary or not _PDF_OBJECT_STREAM.search(dictionary):
            continue
        inflated = _inflate(view[match.end():], budget)
        if inflated is None:
            continue
        unnumbered += _find_stream_pages(inflated, dictionary, numbered)
        budget -= len(inflated)
        if budget <= 0:
            break
    return len(numbered) + unnumbered


def _find_plain_pages(content: bytes, numbered: set[int]) -> int:
    """Add the numbers of the page objects in ``content`` to ``numbered``.

    Returns the count of page dictionaries found before any ``N G obj`` header.
    """
    pages = [match.start() for match in _PDF_PAGE_OBJECT.finditer(content)]
    if not pages:
        return 0
    # A search for the literal keyword is fast, and the number before it is read from the
    # few bytes in front, because a pattern that starts with digits is tried at every byte.
    starts: list[int] = []
    numbers: list[int] = []
    for match in _PDF_OBJ_KEYWORD.finditer(content):
        header = _PDF_OBJECT_HEADER.search(content, max(0, match.start() - 48), match.end())
        if header is not None:
            starts.append(match.start())
            numbers.append(int(header.group(1)))
    return _number_pages(pages, starts, numbers, numbered)


def _find_stream_pages(inflated: bytes, dictionary: bytes, numbered: set[int]) -> int:
    """Add the numbers of the page objects of an inflated object stream to ``numbered``.

    The stream starts with ``/N`` pairs of an object number and its offset from ``/First``.
    Returns the count of pages whose number that header does not give, such as all the
    pages of a stream whose header does not parse.
    """
    pages = [match.start() for match in _PDF_PAGE_OBJECT.finditer(inflated)]
    if not pages:
        return 0
    count_match = _PDF_STREAM_COUNT.search(dictionary)
    first_match = _PDF_STREAM_FIRST.search(dictionary)
    if count_match is None or first_match is None:
        return len(pages)
    count, first = int(count_match.group(1)), int(first_match.group(1))
    fields = inflated[:first].split()
    if count == 0 or len(fields) < 2 * count or not all(field.isdigit() for field in fields):
        return len(pages)
    numbers = [int(field) for field in fields[0:2 * count:2]]
    starts = [first + int(field) for field in fields[1:2 * count:2]]
    if starts != sorted(starts):
        return len(pages)
    return _number_pages(pages, starts, numbers, numbered)


def _number_pages(
    pages: list[int], starts: list[int], numbers: list[int], numbered: set[int]
) -> int:
    """Add to ``numbered`` the number of the object that contains each page position.

    ``starts`` are the sorted positions where the objects ``numbers`` begin. Returns the
    count of pages before the first object, which have no number.
    """
    unnumbered = 0
    for position in pages:
        index = bisect.bisect_right(starts, position) - 1
        if index < 0:
            unnumbered += 1
        else:
            numbered.add(numbers[index])
    return unnumbered


def _inflate(data: memoryview, limit: int) -> bytes | None:
    """Inflate the zlib stream at the start of ``data`` to at most ``limit`` bytes.

    Returns None when the data is not zlib. The input goes in chunks that double from
    4 KiB, because a ``decompress`` call copies all the input after the stream's end into
    ``unused_data``. One call per stream on the rest of the file took 1.4 s for a 3 MiB
    file of 33,000 small streams, on a 2-core virtual machine.
    """
    inflater = zlib.decompressobj()
    output: list[bytes] = []
    size = 0
    offset = 0
    chunk = _PDF_INFLATE_FIRST_CHUNK
    try:
        while offset < len(data) and not inflater.eof and size < limit:
            piece = inflater.decompress(data[offset:offset + chunk], limit - size)
            output.append(piece)
            size += len(piece)
            offset += chunk
            chunk *= 2
    except zlib.error:
        return None
    return b"".join(output)


def _split_data_url(data: str) -> tuple[str, str, bool]:
    """Split ``file_data`` into its media type, payload and whether the payload is base64.

    Text that is not a data URL is taken as bare base64 of unknown media type.
    """
    if not data.startswith("data:"):
        return "", data, True
    header, separator, payload = data.partition(",")
    if not separator:
        return "", data, True
    parameters = header[len("data:"):].split(";")
    media_type = parameters[0].strip().lower()
    is_base64 = any(parameter.strip().lower() == "base64" for parameter in parameters[1:])
    return media_type, payload, is_base64


def _decoded_base64_length(payload: str) -> int:
    return len(payload) * 3 // 4 - payload[-2:].count("=")


def _starts_like_pdf(payload: str) -> bool:
    try:
        head = binascii.a2b_base64(payload[:_HEADER_BASE64_CHARS])
    except binascii.Error:
        return False
    return _PDF_HEADER in head


def count_prompt_tokens(messages: list[Any], fits_below: int, file_tokens: int | None = None) -> int:
    """Count prompt tokens, exactly when the cheap upper bound reaches ``fits_below``.

    Images and files add their estimates (``count_attachment_tokens``). ``file_tokens``, when
    given, replaces the estimate of the file parts, for a caller that has already made it.
    """
    texts = list(message_texts(messages))
    overhead = TOKENS_PER_MESSAGE * len(messages) + count_attachment_tokens(
        messages, files=file_tokens is None
    ) + (file_tokens or 0)
    upper_bound = sum(len(text.encode()) for text in texts) + overhead
    if upper_bound < fits_below:
        return upper_bound
    return count_text_tokens(texts) + overhead


def count_completion_tokens(messages: list[Any]) -> int:
    """Count the tokens of answer messages, without the framing a prompt message adds."""
    return count_text_tokens(list(message_texts(messages)))


def count_text_tokens(texts: list[str]) -> int:
    """Count cl100k_base tokens exactly, or return the UTF-8 byte length (an upper bound)
    when tiktoken's encoding is not available."""
    encoding = _encoding()
    if encoding is None:
        return sum(len(text.encode()) for text in texts)
    return sum(len(encoding.encode(text, disallowed_special=())) for text in texts)


@lru_cache(maxsize=1)
def _encoding() -> Any:
    """cl100k_base, from tiktoken's cache or the copy litellm ships, or None."""
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        bundled = _litellm_tokenizer_dir()
        if bundled is not None:
            os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base")
    except Exception:  # noqa: BLE001 - no network here; fall back to the upper bound
        return None


def _litellm_tokenizer_dir() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return folder if folder.is_dir() else None
