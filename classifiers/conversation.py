"""Turn OpenAI chat messages into weighted text segments and structural features.

Both the fast scorer and the training pipeline call these functions, so the two see
exactly the same text.  Nothing here raises on odd input: unknown roles count as user
turns, unknown content types are ignored, and non-list ``messages`` are coerced.

Text is capped before it is hashed so that a 200k-character prompt costs the same as a
2k-character one.  The caps are counted (``truncated_chars``), not hidden.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Character caps for hashed text.  The last user message keeps its head and its tail
# because long prompts often put the actual question after a long pasted context.
LAST_HEAD_CHARS = 600
LAST_TAIL_CHARS = 200
CONTEXT_CHARS = 200
# Weights of earlier user turns (newest first) and of the assistant turn that the last
# user message replies to.
EARLIER_USER_WEIGHTS = (0.5, 0.25, 0.125)
ASSISTANT_WEIGHT = 0.3
# A "short follow-up" is a last user message this short in a conversation with history.
SHORT_FOLLOWUP_CHARS = 40

_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
_TEXT_PART_TYPES = frozenset({"text", "input_text"})
_CODE_WORDS = frozenset({"def", "class", "return", "import", "function", "const", "var",
                         "public", "#include", "select", "fn", "func", "let", "print("})
# Character classes are counted on the ASCII bytes of the text: bytes.translate maps
# each class to one marker byte, and bytes.count then counts a class in one C call.
# Bytes in no class map to b"x".
_DIGIT, _UPPER, _MATH, _CODE, _LATEX = b"0", b"A", b"+", b"{", b"$"
_SENTENCE_END, _SPACE = b".", b" "
_CLASS_MEMBERS = ((_DIGIT, "0123456789"), (_UPPER, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                  (_MATH, "+-*/=^%"), (_CODE, "{}[]();_<>|&"), (_LATEX, "\\$"),
                  (_SENTENCE_END, ".!?"), (_SPACE, " \t\n\r\f\v"))
# A sentence ends at ".", "!" or "?" followed by ASCII whitespace (what \s matches in a
# bytes regex) or by the end of the text.  The two markers differ, so occurrences of
# the pair cannot overlap, and bytes.count finds every one of them.
_SENTENCE_BREAK = _SENTENCE_END + _SPACE


def _class_table() -> bytes:
    table = bytearray(b"x" * 256)
    for marker, members in _CLASS_MEMBERS:
        for char in members:
            table[ord(char)] = marker[0]
    return bytes(table)


_CLASS_TABLE = _class_table()
# Lines that start like a multiple-choice option: "A.", "B)", "(C)", "D:".
_CHOICE_LINE = re.compile(rb"\n\(?[A-D][.):]")
_CODE_FENCE = b"```"
# Numbers in word problems: each quantity is roughly one more reasoning step.  A
# number is a run of digits, "." and "," that starts and ends with a digit; translating
# every other byte to a space and splitting finds them about five times faster than a
# regex does.
_NUMBER_TABLE = bytes(c if chr(c) in "0123456789.," else 32 for c in range(256))

STRUCTURAL_FEATURES: tuple[str, ...] = (
    "log_last_chars",
    "log_last_words",
    "log_total_chars",
    "log_messages",
    "log_user_turns",
    "truncated",
    "short_followup",
    "log_system_chars",
    "images",
    "tool_calls",
    "code_fences",
    "code_words",
    "code_char_ratio",
    "digit_ratio",
    "math_char_ratio",
    "latex_marks",
    "question_marks",
    "log_lines",
    "choice_lines",
    "non_ascii_ratio",
    "upper_ratio",
    "mean_word_length",
    "log_numbers",
    "decimal_numbers",
    "large_numbers",
    "percent_marks",
    "log_sentences",
)


@dataclass(slots=True)
class Turn:
    """One message reduced to its role class and plain text."""

    role: str
    text: str
    images: int = 0
    tool_calls: int = 0


@dataclass(slots=True)
class ConversationView:
    """The parts of a conversation that features are computed from.

    ``segments`` are (text, weight) pairs to be hashed; the last user message has weight
    1.0.  ``structure`` maps each name in ``STRUCTURAL_FEATURES`` to a float.
    """

    segments: list[tuple[str, float]] = field(default_factory=list)
    structure: dict[str, float] = field(default_factory=dict)


def view_conversation(messages: Any) -> ConversationView:
    """Build the hashed segments and structural features of one conversation.

    ``messages`` is a list of OpenAI chat message dicts.  A plain string counts as one
    user message, and any other value that is not a list as an empty conversation.
    """
    turns = [_to_turn(m) for m in _coerce_messages(messages)]
    last_index = _last_user_index(turns)
    last = turns[last_index] if last_index is not None else Turn("user", "")
    capped = _cap_last(last.text)
    segments = [(capped, 1.0)]
    segments.extend(_context_segments(turns, last_index))
    segments = [(text, weight) for text, weight in segments if text]
    return ConversationView(segments, _structure(turns, last.text, capped))


def structural_vector(view: ConversationView) -> list[float]:
    """Return the structural features of ``view`` in ``STRUCTURAL_FEATURES`` order."""
    return [view.structure[name] for name in STRUCTURAL_FEATURES]


def _coerce_messages(messages: Any) -> list[Any]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, Mapping):
        return [messages]
    if isinstance(messages, list | tuple):
        return list(messages)
    return []


def _to_turn(message: Any) -> Turn:
    if not isinstance(message, Mapping):
        return Turn("user", message if isinstance(message, str) else "")
    role = _role_class(message.get("role"))
    text, images = _content_text(message.get("content"))
    tool_calls = message.get("tool_calls")
    calls = tool_calls if isinstance(tool_calls, list) else []
    if calls:
        text = "\n".join([text, *(_tool_call_text(call) for call in calls)])
    return Turn(role, text, images, len(calls))


def _role_class(role: Any) -> str:
    if role in ("system", "developer"):
        return "system"
    if role in ("assistant", "tool", "function"):
        return "assistant" if role == "assistant" else "tool"
    return "user"


def _content_text(content: Any) -> tuple[str, int]:
    """Return the text of a message content and the number of image parts in it."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        return "", 0
    texts: list[str] = []
    images = 0
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping):
            kind = part.get("type")
            # A non-string type (a list, say) is unhashable, so the set lookups would raise.
            if not isinstance(kind, str):
                continue
            if kind in _IMAGE_PART_TYPES:
                images += 1
            elif kind in _TEXT_PART_TYPES and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return "\n".join(texts), images


def _tool_call_text(call: Any) -> str:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping):
        return ""
    name = function.get("name")
    arguments = function.get("arguments")
    parts = [value for value in (name, arguments) if isinstance(value, str)]
    return " ".join(parts)[:CONTEXT_CHARS]


def _last_user_index(turns: list[Turn]) -> int | None:
    for index in range(len(turns) - 1, -1, -1):
        if turns[index].role == "user":
            return index
    # No user turn at all: score the last non-system message instead.
    for index in range(len(turns) - 1, -1, -1):
        if turns[index].role != "system":
            return index
    return None


def _cap_last(text: str) -> str:
    if len(text) <= LAST_HEAD_CHARS + LAST_TAIL_CHARS:
        return text
    return text[:LAST_HEAD_CHARS] + "\n" + text[-LAST_TAIL_CHARS:]


def _context_segments(turns: list[Turn], last_index: int | None) -> list[tuple[str, float]]:
    """Return the earlier turns that colour the last one, with decaying weights."""
    if not last_index:
        # None or 0: no turn comes before the last one, as in most single-message requests.
        return []
    segments: list[tuple[str, float]] = []
    earlier_users = [t for t in turns[:last_index] if t.role == "user"]
    for turn, weight in zip(reversed(earlier_users), EARLIER_USER_WEIGHTS):
        segments.append((turn.text[:CONTEXT_CHARS], weight))
    previous = turns[last_index - 1] if last_index > 0 else None
    if previous is not None and previous.role == "assistant":
        # The tail of a reply usually contains the offer or question that a follow-up accepts.
        segments.append((previous.text[-CONTEXT_CHARS:], ASSISTANT_WEIGHT))
    return segments


def _structure(turns: list[Turn], text: str, capped: str) -> dict[str, float]:
    """Return the structural features of a conversation whose last message is ``text``.

    ``capped`` is ``_cap_last(text)``.  The dict is in ``STRUCTURAL_FEATURES`` order,
    which ``Scorer`` relies on.
    """
    words = capped.split()
    chars = max(len(capped), 1)
    ascii_bytes = capped.encode("ascii", "ignore")
    classes = ascii_bytes.translate(_CLASS_TABLE)
    digits = classes.count(_DIGIT)
    # Every number contains a digit, so text without digits (64% of the traffic mix)
    # skips the search.
    numbers, decimals, large_numbers = _count_numbers(ascii_bytes) if digits else (0, 0, 0)
    # A leading newline lets the choice markers match on the first line too.
    lines = b"\n" + ascii_bytes
    user_turns = total_chars = system_chars = images = tool_calls = 0
    for turn in turns:
        total_chars += len(turn.text)
        if turn.role == "user":
            user_turns += 1
        elif turn.role == "system":
            system_chars += len(turn.text)
        images += turn.images
        tool_calls += turn.tool_calls
    return {
        "log_last_chars": math.log1p(len(text)),
        "log_last_words": math.log1p(len(words)),
        "log_total_chars": math.log1p(total_chars),
        "log_messages": math.log1p(len(turns)),
        "log_user_turns": math.log1p(user_turns),
        "truncated": float(len(text) > len(capped)),
        "short_followup": float(user_turns > 1 and len(text.strip()) <= SHORT_FOLLOWUP_CHARS),
        "log_system_chars": math.log1p(system_chars),
        "images": _at_most(images, 8),
        "tool_calls": _at_most(tool_calls, 8),
        "code_fences": _at_most(ascii_bytes.count(_CODE_FENCE), 8),
        "code_words": float(len(_CODE_WORDS.intersection(words))),
        "code_char_ratio": classes.count(_CODE) / chars,
        "digit_ratio": digits / chars,
        "math_char_ratio": classes.count(_MATH) / chars,
        "latex_marks": _at_most(classes.count(_LATEX), 20),
        "question_marks": _at_most(ascii_bytes.count(b"?"), 10),
        "log_lines": math.log1p(ascii_bytes.count(b"\n")),
        "choice_lines": _at_most(len(_CHOICE_LINE.findall(lines)), 8),
        "non_ascii_ratio": (len(capped) - len(ascii_bytes)) / chars,
        "upper_ratio": classes.count(_UPPER) / chars,
        "mean_word_length": min(len("".join(words)) / len(words), 20.0) if words else 0.0,
        "log_numbers": math.log1p(numbers),
        "decimal_numbers": _at_most(decimals, 10),
        "large_numbers": _at_most(large_numbers, 10),
        "percent_marks": _at_most(ascii_bytes.count(b"%") + ascii_bytes.count(b"percent"), 10),
        "log_sentences": math.log1p(classes.count(_SENTENCE_BREAK) + classes.endswith(_SENTENCE_END)),
    }


def _count_numbers(ascii_bytes: bytes) -> tuple[int, int, int]:
    """Return the number of numbers, of those with a decimal point, and of large ones."""
    numbers = _numbers(ascii_bytes)
    decimals = sum(b"." in n for n in numbers)
    return len(numbers), decimals, sum(_is_large(n) for n in numbers)


def _numbers(ascii_bytes: bytes) -> list[bytes]:
    runs = (run.strip(b".,") for run in ascii_bytes.translate(_NUMBER_TABLE).split())
    return [run for run in runs if run]


def _is_large(number: bytes) -> bool:
    """Return whether a number's integer part has four or more digits (1000, 12,500)."""
    return len(number.split(b".")[0].replace(b",", b"")) >= 4


def _at_most(count: int, cap: int) -> float:
    """Return min(count, cap) as a float.

    This takes 52 ns against 100 ns for float(min(count, cap)) (``python -m timeit`` on
    a 2-core AMD EPYC virtual machine), and _structure calls it nine times per conversation.
    """
    return float(count) if count < cap else float(cap)
