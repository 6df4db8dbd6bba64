"""Prompt token counting for context-window checks.

Exact counting with tiktoken costs time on long prompts, so ``count_prompt_tokens`` first
takes the UTF-8 byte length, an upper bound of the cl100k token count, and only encodes
when that bound does not already fit the smallest window in question.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

# Per-message framing tokens and an image's cost, from OpenAI's published counting rules
# (gpt-4 family: 3 tokens per message; a low-detail image is 85 tokens, a high-detail
# 512 px tile 170).  Images are counted at a conservative 1,000 tokens each.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 1000


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


def count_images(messages: Iterable[Any]) -> int:
    count = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else message.content
        if isinstance(content, list):
            count += sum(1 for part in content if part.get("type") == "image_url")
    return count


def count_prompt_tokens(messages: list[Any], fits_below: int) -> int:
    """Count prompt tokens, exactly when the cheap upper bound reaches ``fits_below``.

    NOTE: a ``file`` part counts 0 tokens. Its ``file_data`` is encoded bytes, not prompt
    text, and the gateway does not extract a PDF's text, so the count is low for files.
    """
    texts = list(message_texts(messages))
    overhead = TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_IMAGE * count_images(messages)
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
