"""Structural features whose fast computation replaces a simpler definition."""

from __future__ import annotations

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from classifiers.conversation import (
    LAST_HEAD_CHARS,
    STRUCTURAL_FEATURES,
    _cap_last,
    view_conversation,
)

# The definition of a sentence end: ".", "!" or "?" before ASCII whitespace or the end.
SENTENCE_END = re.compile(rb"[.!?](?:\s|$)")
# Sentence marks, every ASCII whitespace character, characters that str.split() treats as
# whitespace but \s in a bytes regex does not, and non-ASCII characters that are dropped.
SENTENCE_ALPHABET = ".!?a \t\n\r\x0b\x0c\x1c\x1f\x85\u3002é"


def features_of(text: str) -> dict[str, float]:
    return view_conversation([{"role": "user", "content": text}]).structure


def count_sentence_ends(text: str) -> int:
    return len(SENTENCE_END.findall(_cap_last(text).encode("ascii", "ignore")))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=SENTENCE_ALPHABET, max_size=40))
def test_sentence_count_matches_regex(text: str) -> None:
    assert features_of(text)["log_sentences"] == math.log1p(count_sentence_ends(text))


def test_sentence_count_on_written_cases() -> None:
    cases = {"": 0, "Done.": 1, "Really?! Yes.": 2, "a.b. c": 1, "end.\n": 1, "x.é y": 1,
             "Wait...": 1, "1.5 and 2.5": 0, "One. Two!\tThree?\x0bFour.\x0cFive": 4}
    for text, expected in cases.items():
        assert count_sentence_ends(text) == expected, text
        assert features_of(text)["log_sentences"] == math.log1p(expected), text


def test_sentence_count_uses_capped_text() -> None:
    text = "Hi. " * LAST_HEAD_CHARS
    assert features_of(text)["truncated"] == 1.0
    assert features_of(text)["log_sentences"] == math.log1p(count_sentence_ends(text))


def test_numbers_counted_only_with_digits() -> None:
    without_digits = features_of("One thousand, point five. Twelve, fifty.")
    assert without_digits["log_numbers"] == 0.0
    assert without_digits["decimal_numbers"] == 0.0
    assert without_digits["large_numbers"] == 0.0
    with_digits = features_of("Pay 1,234.50 and 12,500 then 3.5, 7 and .5 more.")
    assert with_digits["log_numbers"] == math.log1p(5)
    assert with_digits["decimal_numbers"] == 2.0
    assert with_digits["large_numbers"] == 2.0


def test_structure_keeps_feature_order() -> None:
    for messages in ([], "text", [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]):
        assert tuple(view_conversation(messages).structure) == STRUCTURAL_FEATURES


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=1200), st.sampled_from([None, [], "calls"]))
def test_single_message_view_ignores_container(text: str, tool_calls: object) -> None:
    message: dict[str, object] = {"role": "user", "content": text}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    as_list = view_conversation([message])
    # A tuple of messages must give the view of the same list.
    as_tuple = view_conversation((message,))
    assert as_list.segments == as_tuple.segments
    assert as_list.structure == as_tuple.structure
