"""Token counting and stream chunking with tiktoken's ``cl100k_base`` encoding.

tiktoken downloads its BPE files on first use, and this machine has no route to that host.
litellm ships the same files in ``litellm/litellm_core_utils/tokenizers`` (named by the SHA-1 of
their download URL, which is tiktoken's cache layout), so :func:`encoding` points
``TIKTOKEN_CACHE_DIR`` there before loading. It finds the folder with ``importlib.util.find_spec``,
which locates the package without importing it. An explicit ``TIKTOKEN_CACHE_DIR`` wins.

Prompt tokens follow the chat counting rule from OpenAI's cookbook ("How to count tokens with
tiktoken"): 3 tokens per message, plus the encoded role and content, 1 more for a ``name`` field,
and 3 for the primed assistant reply.
"""

from __future__ import annotations

import codecs
import functools
import importlib.util
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tiktoken

ENCODING_NAME = "cl100k_base"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3


def litellm_tokenizer_dir() -> Path | None:
    """Return litellm's bundled tiktoken cache folder, or None when litellm is not installed."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "litellm_core_utils" / "tokenizers"
        if candidate.is_dir():
            return candidate
    return None


@functools.cache
def encoding() -> tiktoken.Encoding:
    """Return the ``cl100k_base`` encoding, loaded once per process.

    Raises:
        RuntimeError: no BPE file is reachable (litellm missing and no ``TIKTOKEN_CACHE_DIR``).
    """
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        bundled = litellm_tokenizer_dir()
        if bundled is None:
            raise RuntimeError(
                "tiktoken needs its cl100k_base file and cannot download it here: "
                "install litellm (it bundles the file) or set TIKTOKEN_CACHE_DIR"
            )
        os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
    return tiktoken.get_encoding(ENCODING_NAME)


@functools.lru_cache(maxsize=8192)
def encode(text: str) -> tuple[int, ...]:
    """Encode ``text`` to token ids, caching repeats (replayed answers recur often)."""
    return tuple(encoding().encode(text, disallowed_special=()))


def count_text_tokens(text: str) -> int:
    """Return the number of ``cl100k_base`` tokens in ``text``."""
    return len(encode(text))


def message_text(content: Any) -> str:
    """Return the text of a chat message ``content`` (a string or a list of content parts).

    Non-text parts (images, audio) contribute nothing, and ``None`` (an assistant tool-call
    message) is the empty string.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if isinstance(part, Mapping)]
        return "".join(text for text in texts if isinstance(text, str))
    return str(content)


def count_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Return the prompt tokens of a chat request by the cookbook rule in the module docstring.

    NOTE: tool definitions and images add tokens upstream by rules OpenAI does not publish,
    so a request with ``tools`` or image parts counts lower here than a real upstream would.
    """
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        total += count_text_tokens(str(message.get("role", "")))
        total += count_text_tokens(message_text(message.get("content")))
        if message.get("name"):
            total += TOKENS_PER_NAME + count_text_tokens(str(message["name"]))
    return total


def split_tokens(tokens: Sequence[int], per_chunk: int) -> list[str]:
    """Decode ``tokens`` into text pieces of about ``per_chunk`` tokens each.

    A multi-byte character split across token groups is held back until it is complete, so
    every piece is valid text and the pieces join to the same text as ``decode(tokens)``
    (except that an incomplete character at the very end is dropped). Empty pieces are skipped.

    Raises:
        ValueError: ``per_chunk`` is below 1.
    """
    if per_chunk < 1:
        raise ValueError(f"per_chunk must be at least 1, got {per_chunk}")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces: list[str] = []
    for start in range(0, len(tokens), per_chunk):
        raw = encoding().decode_bytes(list(tokens[start : start + per_chunk]))
        piece = decoder.decode(raw, final=False)
        if piece:
            pieces.append(piece)
    return pieces


def decode_prefix(tokens: Sequence[int]) -> str:
    """Decode ``tokens``, dropping a trailing incomplete multi-byte character."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return decoder.decode(encoding().decode_bytes(list(tokens)), final=False)
