"""The judge prompt and the parser of its verdict.

The judge grades pointwise with a reference: it sees the conversation, the reference
tier's answer and the served answer, and replies with an integer from 0 to 10.  The
parser accepts the usual ways of writing one number ("7", "Score: 7", "7/10", "**7**",
"7 out of 10").  It returns None when the reply holds no score or several different ones,
so an unclear verdict is recorded as unparsable instead of being guessed.
"""

from __future__ import annotations

import re
from typing import Any

from router.routing.tokens import message_texts

MAX_SCORE = 10.0

JUDGE_INSTRUCTIONS = (
    "You grade the answers of an AI assistant. You receive a conversation, a reference answer "
    "written by a strong model, and a candidate answer. Judge whether the candidate serves the "
    "user as well as the reference does: correct, complete and helpful. Reply with a single "
    "integer from 0 (wrong or useless) to 10 (as good as the reference or better), and nothing "
    "else."
)

# Echoes of the scale itself ("0-10", "0 to 10"), removed before looking for the score.
_SCALE = re.compile(r"\(?\b0\s*(?:-|–|to)\s*10\b\)?", re.IGNORECASE)
# A number not preceded by a sign, digit or decimal point, with an optional "/10" or
# "out of 10" that is consumed so the 10 is not read as a second score.
_SCORE = re.compile(r"(?<![\w.\-])(\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*10\b)?", re.IGNORECASE)


def judge_messages(
    conversation: list[dict[str, Any]], reference_answer: str, served_answer: str
) -> list[dict[str, str]]:
    """Build the chat messages that ask the judge for a score.

    Only the text of the conversation is shown; images and tool definitions are left out.
    """
    prompt = (
        f"[Conversation]\n{render_conversation(conversation)}\n\n"
        f"[Reference answer]\n{reference_answer}\n\n"
        f"[Candidate answer]\n{served_answer}\n\n"
        "Score of the candidate answer (0-10):"
    )
    return [
        {"role": "system", "content": JUDGE_INSTRUCTIONS},
        {"role": "user", "content": prompt},
    ]


def render_conversation(messages: list[dict[str, Any]]) -> str:
    """Write each message as ``role: text``, one block per message."""
    blocks = []
    for message in messages:
        text = "\n".join(message_texts([message]))
        blocks.append(f"{message.get('role', 'user')}: {text}")
    return "\n\n".join(blocks)


def parse_verdict(text: str | None) -> float | None:
    """Return the judge's score scaled to [0, 1], or None when the reply holds no single score.

    A reply with two different numbers ("7 or 8") or a number above 10 is unparsable.
    """
    if not text:
        return None
    cleaned = _SCALE.sub(" ", text)
    values = {float(match.group(1)) for match in _SCORE.finditer(cleaned)}
    if len(values) != 1:
        return None
    value = values.pop()
    if value > MAX_SCORE:
        return None
    return value / MAX_SCORE


def answer_text(completion: dict[str, Any]) -> str | None:
    """Return the text of the first choice of a chat completion, or None when it has none."""
    choices = completion.get("choices") or []
    if not choices:
        return None
    content = (choices[0].get("message") or {}).get("content")
    return content if isinstance(content, str) and content.strip() else None
