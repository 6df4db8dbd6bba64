"""Provider error messages lose the request's prompt text before they are logged."""

from __future__ import annotations

from router.upstream.dispatch import PROMPT_PLACEHOLDER, without_prompts

CHAT_BODY = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "You answer in French only."},
        {"role": "user", "content": [
            {"type": "text", "text": "The plan named zebra-quartz-7"},
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1/cat.png"}},
        ]},
    ],
}


def test_chat_texts_replaced() -> None:
    message = "Bad request: 'The plan named zebra-quartz-7' after 'You answer in French only.'"

    redacted = without_prompts(message, CHAT_BODY)

    assert redacted == f"Bad request: '{PROMPT_PLACEHOLDER}' after '{PROMPT_PLACEHOLDER}'"


def test_embedding_inputs_replaced() -> None:
    body = {"model": "embed", "input": ["first secret input", "second secret input"]}

    redacted = without_prompts("cannot embed ['first secret input', 'second secret input']", body)

    assert redacted == f"cannot embed ['{PROMPT_PLACEHOLDER}', '{PROMPT_PLACEHOLDER}']"


def test_short_texts_and_other_words_kept() -> None:
    body = {"model": "embed", "input": "user"}

    assert without_prompts("the user key is invalid", body) == "the user key is invalid"
    assert without_prompts("model not found", None) == "model not found"


def test_longer_text_replaced_first() -> None:
    body = {"model": "embed", "input": ["secret words", "secret words and more"]}

    assert without_prompts("got secret words and more", body) == f"got {PROMPT_PLACEHOLDER}"
