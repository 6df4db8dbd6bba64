"""A coarse topic category of a prompt, for the tier mix per category in ``/metrics``.

The category comes from keyword and symbol rules on the first ``SCAN_CHARS`` characters of
the last user message and never calls a model.  Over the 9,821 traffic-mix prompts of
``bench/`` it took a mean of about 6 µs of CPU per prompt on a 2-core VM.  It labels
metrics and outcome records.  The policy's ``routing.category_floors`` may name a lowest
tier per category, and the scores and thresholds choose among the tiers at or above it.

The set of categories is fixed (:data:`CATEGORIES`), so a metric labelled with it keeps a
bounded number of series whatever clients send.

NOTE: the rules match English words only; prompts in other languages fall into ``chat``
(when short) or ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

CATEGORIES: tuple[str, ...] = (
    "math", "code", "science", "legal", "medical", "writing", "chat", "other",
)  # fmt: skip
SCAN_CHARS = 256
"""Characters of the message that the rules read: the start of a prompt usually names its
topic, and the cost grows with the characters read."""
CHAT_MAX_WORDS = 12
"""A message with no keyword and at most this many words counts as ``chat``."""

# bytes.translate table that keeps the ASCII letters a-z and turns every other byte into a
# space.  UTF-8 encodes each non-ASCII character as bytes of 0x80 and up only, so splitting
# the translated text gives the same words as the pattern ``[a-z]+`` on the text, in about
# half its time.
_LETTERS_ONLY = bytes(byte if 0x61 <= byte <= 0x7A else 0x20 for byte in range(256))
# Symbols that rarely occur outside their category: code fences and operators, math notation.
_CODE_MARKERS: tuple[str, ...] = ("```", "def ", "();", "=>", "#include", "</", "::", "!=", "&&")
_MATH_PATTERN = re.compile(r"[∫∑√π≤≥≠∞^]|\d ?[-+*/=<>] ?\d|\\(?:frac|sqrt)")
# Every match of _MATH_PATTERN starts with one of these characters.  Python's re scans for
# one character class quickly but tries the alternation at every position, so the full
# pattern is tried only from the first such character.
_MATH_START = re.compile(r"[∫∑√π≤≥≠∞^\d\\]")
_DIGIT = re.compile(r"\d")
# On ASCII text _MATH_PATTERN's symbols reduce to "^", and "\d ?[-+*/=<>] ?\d" matches where
# the text translated with _DIGITS_AND_OPERATORS (digits to "0", the operators to "+", every
# other byte unchanged) matches _DIGIT_OPERATOR_DIGIT.  No other byte becomes a "0", a "+"
# or a space, so the two find the same places.
_DIGITS_AND_OPERATORS = bytes.maketrans(b"0123456789-*/=<>", b"0000000000++++++")
_DIGIT_OPERATOR_DIGIT = re.compile(rb"0 ?\+ ?0")


def _keywords(words: str) -> frozenset[str]:
    return frozenset(words.split())


_KEYWORDS: dict[str, frozenset[str]] = {
    "math": _keywords(
        "equation equations solve integral derivative derivatives calculus algebra algebraic "
        "geometry theorem prove proof lemma matrix matrices probability polynomial factorial "
        "arithmetic fraction fractions sum product divisible prime primes triangle circle "
        "radius angle percent percentage average median multiply divide logarithm sqrt "
        "integer integers remainder"
    ),
    "code": _keywords(
        "code python javascript typescript java rust golang cpp sql function functions class "
        "method compile compiler bug debug error exception stacktrace api regex script "
        "programming program implement algorithm array string json html css variable loop "
        "recursion git docker kubernetes bash shell linux refactor"
    ),
    "science": _keywords(
        "physics chemistry biology molecule molecules atom atoms electron quantum energy "
        "gravity cell cells evolution species reaction chemical photosynthesis dna protein "
        "planet planets astronomy climate ecosystem experiment hypothesis velocity "
        "acceleration thermodynamics"
    ),
    "legal": _keywords(
        "law laws legal lawyer attorney court contract contracts lawsuit sue liability "
        "statute regulation regulations copyright trademark patent tenant landlord "
        "jurisdiction plaintiff defendant clause gdpr"
    ),
    "medical": _keywords(
        "doctor medical medicine symptom symptoms disease diagnosis treatment patient "
        "patients drug drugs dose dosage pain infection cancer diabetes blood surgery "
        "therapy vaccine clinical pregnancy allergy"
    ),
    "writing": _keywords(
        "write essay story poem poems letter email blog article rewrite paraphrase "
        "summarize summary draft edit proofread slogan lyrics novel character plot tone "
        "headline outline cover"
    ),
    "chat": _keywords(
        "hi hello hey thanks thank bye morning evening joke jokes feel feeling favorite "
        "opinion recommend advice chat"
    ),
}
# Ties go to the earlier category: a keyword of a specialised field outweighs a generic one.
_ORDER: tuple[str, ...] = ("math", "code", "science", "legal", "medical", "writing", "chat")
_CATEGORY_OF_WORD: dict[str, str] = {
    word: name for name in reversed(_ORDER) for word in _KEYWORDS[name]
}
"""Each keyword mapped to its category; a word listed twice maps to the earlier category."""
_CATEGORY_OF_WORD_BYTES: dict[bytes, str] = {
    word.encode(): name for word, name in _CATEGORY_OF_WORD.items()
}
_ALL_KEYWORDS: frozenset[bytes] = frozenset(_CATEGORY_OF_WORD_BYTES)


def prompt_category(messages: Sequence[Any]) -> str:
    """Return the category (one of :data:`CATEGORIES`) of the last user message.

    ``messages`` are OpenAI-style messages, as dicts or objects with ``role`` and ``content``
    attributes.  A conversation without a user text message is ``other``.
    """
    text = _last_user_text(messages)
    if not text:
        return "other"
    return categorize_text(text)


def categorize_text(text: str) -> str:
    """Return the category of ``text``; see the module docstring for the rules."""
    head = text[:SCAN_CHARS].lower()
    # map() runs the substring checks in C, without a generator frame per marker.
    if any(map(head.__contains__, _CODE_MARKERS)):
        return "code"
    # "surrogatepass" encodes a lone surrogate as three bytes of 0x80 and up, not an error.
    encoded = head.encode("utf-8", "surrogatepass")
    words = encoded.translate(_LETTERS_ONLY).split()
    # One set intersection finds the few keywords present; only those are then counted.
    found = _ALL_KEYWORDS.intersection(words)
    # A "how many" or "how much" question with a number in it is a word problem.
    word_problem = ("how many" in head or "how much" in head) and _DIGIT.search(head)
    math_like = word_problem or _has_math_notation(head, encoded)
    if not found and not math_like:
        return "chat" if len(words) <= CHAT_MAX_WORDS else "other"
    counts = dict.fromkeys(_ORDER, 0)
    for word in found:
        counts[_CATEGORY_OF_WORD_BYTES[word]] += 1
    if math_like:
        counts["math"] += 2
    return max(_ORDER, key=counts.__getitem__)


def _has_math_notation(head: str, encoded: bytes) -> bool:
    """Tell whether ``_MATH_PATTERN`` matches ``head``, whose UTF-8 bytes are ``encoded``."""
    if head.isascii():
        # One character is found by memchr, so "\\" is looked for before "\\frac" and "\\sqrt".
        if b"^" in encoded or (b"\\" in encoded and (b"\\frac" in encoded or b"\\sqrt" in encoded)):
            return True
        return _DIGIT_OPERATOR_DIGIT.search(encoded.translate(_DIGITS_AND_OPERATORS)) is not None
    start = _MATH_START.search(head)
    return start is not None and _MATH_PATTERN.search(head, start.start()) is not None


def _last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        role = _field(message, "role")
        if role != "user":
            continue
        content = _field(message, "content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return _head_of_parts(content)
        return ""
    return ""


def _head_of_parts(parts: list[Any]) -> str:
    """Join the text of content parts with spaces, stopping once ``SCAN_CHARS`` are joined."""
    texts: list[str] = []
    length = 0
    for part in parts:
        text = _part_text(part)
        texts.append(text)
        length += len(text) + 1
        if length > SCAN_CHARS:
            break
    return " ".join(texts)


def _field(message: Any, name: str) -> Any:
    if isinstance(message, Mapping):
        return message.get(name)
    return getattr(message, name, None)


def _part_text(part: Any) -> str:
    text = part.get("text") if isinstance(part, Mapping) else None
    return text if isinstance(text, str) else ""
