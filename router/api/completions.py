"""``POST /v1/completions``: OpenAI's legacy Completions API on the chat-completion serving path.

The prompt becomes the one user message of a chat request, which
:func:`router.api.translated.serve_translated` routes, caches, rate-limits, budgets, records
and logs exactly like a chat completion.  The chat completion is turned back into a
``text_completion`` object, and its SSE chunks into ``text_completion`` chunks.

Every deployment is reached through its chat API, as LiteLLM's proxy does for providers
without a completions API.  A chat model answers the prompt as an instruction, so the text
differs from a base model's raw continuation of it.  What a chat request cannot express is
rejected with a 400 that names the parameter:

- a ``prompt`` of several strings (a batch) or of token ids, because the gateway routes
  one text per request and has no tokenizer for the deployments it may choose;
- a non-empty ``suffix`` (insertion), ``logprobs`` and a ``best_of`` other than ``n``;
- the tool parameters of chat (``tools``, ``tool_choice``, ``functions`` and others), whose
  tool calls a ``text_completion`` cannot carry.

``max_tokens`` keeps the legacy default of 16 tokens when it is absent or null.
``echo: true`` puts the prompt before each choice's text, in the first chunk of a stream.
Other parameters (``temperature``, ``top_p``, ``n``, ``stop``, ``seed``, ``user``,
``logit_bias``, the penalties, ``stream_options`` and extensions such as ``top_k``) go into the
chat body unchanged, so the chat endpoint's validation names them in its errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response

from router.api.schemas import invalid_request, null_as_default
from router.api.translated import SseTranslator, content_text, serve_translated
from router.errors import InvalidRequest
from router.upstream.sse import KEEPALIVE

ENDPOINT = "/v1/completions"
DEFAULT_MAX_TOKENS = 16
"""OpenAI's default for ``max_tokens`` on the legacy Completions API."""

router = APIRouter()


class CompletionRequest(BaseModel):
    """The fields of a legacy Completions request that the gateway reads.

    Other fields are kept (``extra="allow"``) and forwarded in the chat body.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    prompt: Any
    max_tokens: int | None = Field(default=None, ge=1)
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    best_of: int | None = Field(default=None, ge=1, le=20)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool = False

    _replace_null_with_default = field_validator("echo", "stream", mode="before")(
        classmethod(lambda cls, value, info: null_as_default(cls, value, info))
    )


@dataclass(frozen=True)
class Translation:
    """The chat body of one request, and the prompt that ``echo`` puts before each answer."""

    body: dict[str, Any]
    echo: str | None = None


@router.post(ENDPOINT, response_model=None)
async def create_completion(request: Request) -> Response:
    return await serve_translated(
        request, to_chat_body, to_completion, StreamTranslator, {"messages": "prompt"}
    )


# Request translation ----------------------------------------------------------------------


CHAT_ONLY_PARAMETERS = ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls")
"""Chat parameters that let the model return a tool call, which a ``text_completion`` cannot carry."""


def to_chat_body(body: dict[str, Any]) -> Translation:
    """Validate a legacy Completions request body and translate it.  Raises InvalidRequest."""
    if "messages" in body:
        raise InvalidRequest(
            f"The parameter 'messages' is a Chat Completions parameter. Send 'prompt' on "
            f"{ENDPOINT}, or send the messages to /v1/chat/completions.",
            param="messages",
            code="unsupported_parameter",
        )
    for name in CHAT_ONLY_PARAMETERS:
        if body.get(name) is not None:
            raise _unsupported(
                name, "a tool call has no place in a text completion. Send the request to "
                "/v1/chat/completions"
            )
    request = _validate(body)
    prompt = _prompt_text(request.prompt)
    _reject_unsupported(request)

    # Forwarded first, so that no forwarded field replaces a translated one.
    chat: dict[str, Any] = dict(request.model_extra or {})
    chat["model"] = request.model
    chat["messages"] = [{"role": "user", "content": prompt}]
    chat["max_tokens"] = request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS
    if request.n is not None:
        chat["n"] = request.n
    if request.stream:
        chat["stream"] = True
    elif "stream_options" in chat and chat["stream_options"] is None:
        del chat["stream_options"]
    return Translation(chat, prompt if request.echo else None)


def _validate(body: dict[str, Any]) -> CompletionRequest:
    try:
        return CompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def _prompt_text(prompt: Any) -> str:
    """Return the one prompt string of ``prompt``: a string, or a list of one string."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(item, str) for item in prompt):
        if len(prompt) == 1:
            text: str = prompt[0]
            return text
        raise InvalidRequest(
            f"A 'prompt' with {len(prompt)} strings is not supported on {ENDPOINT}: the gateway "
            "routes each prompt on its own. Send one request per prompt.",
            param="prompt",
            code="unsupported_parameter",
        )
    if isinstance(prompt, list) and prompt and all(_is_token_ids(item) for item in prompt):
        raise InvalidRequest(
            f"A 'prompt' of token ids is not supported on {ENDPOINT}: the deployment that "
            "serves a request is chosen per request, and token ids differ between models. "
            "Send the prompt as text.",
            param="prompt",
            code="unsupported_parameter",
        )
    raise InvalidRequest(
        "Invalid value for 'prompt': expected a string or a list of one string.", param="prompt"
    )


def _is_token_ids(item: Any) -> bool:
    if isinstance(item, int) and not isinstance(item, bool):
        return True
    return isinstance(item, list) and bool(item) and all(
        isinstance(token, int) and not isinstance(token, bool) for token in item
    )


def _reject_unsupported(request: CompletionRequest) -> None:
    if request.suffix:
        raise _unsupported(
            "suffix", "insertion needs a model's completions API, and every deployment is "
            "reached through its chat API. Leave it unset or empty"
        )
    if request.logprobs is not None:
        raise _unsupported(
            "logprobs", "send the request to /v1/chat/completions with 'logprobs': true and "
            "'top_logprobs' instead"
        )
    if request.best_of is not None and request.best_of != (request.n or 1):
        raise _unsupported(
            "best_of", "the gateway returns every choice that it requests. Leave it unset, or "
            "equal to 'n'"
        )


def _unsupported(param: str, advice: str) -> InvalidRequest:
    return InvalidRequest(
        f"The parameter '{param}' is not supported on {ENDPOINT}: {advice}.",
        param=param,
        code="unsupported_parameter",
    )


# Response translation ---------------------------------------------------------------------


def to_completion(completion: dict[str, Any], translation: Translation) -> dict[str, Any]:
    """Turn a chat completion into a ``text_completion`` object."""
    choices = []
    for position, choice in enumerate(completion.get("choices") or []):
        choice = choice if isinstance(choice, dict) else {}
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        text = content_text(message.get("content"))
        choices.append({
            "text": (translation.echo or "") + text,
            "index": choice.get("index", position),
            "logprobs": None,
            "finish_reason": choice.get("finish_reason"),
        })
    result = _text_completion(completion, choices)
    if completion.get("system_fingerprint") is not None:
        result["system_fingerprint"] = completion["system_fingerprint"]
    if completion.get("usage") is not None:
        result["usage"] = completion["usage"]
    return result


def _text_completion(source: dict[str, Any], choices: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a ``text_completion`` object or chunk with the id, time and model of ``source``."""
    return {
        "id": completion_id(source.get("id")),
        "object": "text_completion",
        "created": source.get("created"),
        "model": source.get("model"),
        "choices": choices,
    }


def completion_id(chat_id: Any) -> str:
    """Return a ``cmpl-`` id for the chat completion id ``chat_id``."""
    text = chat_id if isinstance(chat_id, str) and chat_id else "unknown"
    return "cmpl-" + text.removeprefix("chatcmpl-")


class StreamTranslator(SseTranslator):
    """Translate ``chat.completion.chunk`` events into ``text_completion`` chunks.

    A chunk without text and without a finish reason, such as the first chunk that only
    names the role, is dropped, unless the prompt is echoed.  The stream ends with
    ``data: [DONE]``, as OpenAI's does.
    """

    def __init__(self, translation: Translation) -> None:
        self._echo = translation.echo
        self._echoed: set[Any] = set()

    def keepalive(self) -> bytes:
        return KEEPALIVE

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        choices = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            text = content_text(delta.get("content"))
            index = choice.get("index", 0)
            if self._echo is not None and index not in self._echoed:
                self._echoed.add(index)
                text = self._echo + text
            finish_reason = choice.get("finish_reason")
            if not text and finish_reason is None:
                continue
            choices.append({"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason})
        usage = chunk.get("usage")
        if not choices and usage is None:
            return []
        event = _text_completion(chunk, choices)
        if usage is not None:
            event["usage"] = usage
        return [_data(event)]

    def error(self, error: dict[str, Any]) -> list[bytes]:
        return [_data({"error": error})]

    def end(self) -> list[bytes]:
        return [b"data: [DONE]\n\n"]


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
