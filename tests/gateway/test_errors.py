"""Invalid requests and the gateway's own faults: OpenAI-shaped errors with exact messages."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from router.app import create_app
from tests.gateway.conftest import (
    INTERNAL_ERROR_MESSAGE,
    FailingScorer,
    GatewayKit,
    LiveGateway,
    chat_body,
    policy_document,
    write_yaml,
)


def invalid(
    message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    if code is None:
        # OpenAI's API gives a missing field its own code.
        missing = message.startswith("Missing required parameter")
        code = "missing_required_parameter" if missing else "invalid_request"
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


FORBIDDEN_MESSAGE = (
    "The parameter '{0}' cannot be set by clients, because the gateway's policy chooses the "
    "provider endpoint and credentials. Remove it from the request."
)

# (case id, request body, expected status, expected error body)
INVALID_REQUESTS: list[tuple[str, Any, int, dict[str, Any]]] = [
    (
        "truncated_json",
        b'{"model": "auto", ',
        400,
        invalid(
            "The request body is not valid JSON (unexpected end of data at position 18).",
            code="invalid_json",
        ),
    ),
    (
        "empty_body",
        b"",
        400,
        invalid(
            "The request body is not valid JSON (Input is a zero-length, empty document at position 0).",
            code="invalid_json",
        ),
    ),
    (
        "invalid_utf8",
        b'{"model":"auto","messages":[{"role":"user","content":"\xff\xfe"}]}',
        400,
        invalid(
            "The request body is not valid UTF-8 (invalid byte at position 54). "
            "Encode the JSON body as UTF-8.",
            code="invalid_json",
        ),
    ),
    (
        "json_array",
        [chat_body()],
        400,
        invalid("The request body must be a JSON object.", code="invalid_json"),
    ),
    (
        "json_string",
        "hello",
        400,
        invalid("The request body must be a JSON object.", code="invalid_json"),
    ),
    (
        "messages_string",
        {"model": "auto", "messages": "Hello"},
        400,
        invalid("Invalid value for 'messages': Input should be a valid list.", "messages"),
    ),
    (
        "temperature_word",
        chat_body(temperature="hot"),
        400,
        invalid(
            "Invalid value for 'temperature': Input should be a valid number.",
            "temperature",
        ),
    ),
    (
        "temperature_numeric_string",
        chat_body(temperature="0.5"),
        400,
        invalid("Invalid value for 'temperature': Input should be a valid number.", "temperature"),
    ),
    (
        "stream_word",
        chat_body(stream="yes"),
        400,
        invalid("Invalid value for 'stream': Input should be a valid boolean.", "stream"),
    ),
    (
        "stream_string_true",
        chat_body(stream="true"),
        400,
        invalid("Invalid value for 'stream': Input should be a valid boolean.", "stream"),
    ),
    (
        "max_tokens_numeric_string",
        chat_body(max_tokens="5"),
        400,
        invalid("Invalid value for 'max_tokens': Input should be a valid integer.", "max_tokens"),
    ),
    (
        "max_completion_tokens_float",
        chat_body(max_completion_tokens=5.0),
        400,
        invalid(
            "Invalid value for 'max_completion_tokens': Input should be a valid integer.",
            "max_completion_tokens",
        ),
    ),
    (
        "n_float",
        chat_body(n=1.0),
        400,
        invalid("Invalid value for 'n': Input should be a valid integer.", "n"),
    ),
    (
        "include_usage_string",
        chat_body(stream=True, stream_options={"include_usage": "true"}),
        400,
        invalid(
            "Invalid value for 'stream_options.include_usage': Input should be a valid boolean.",
            "stream_options.include_usage",
        ),
    ),
    (
        "temperature_above_two",
        chat_body(temperature=2.5),
        400,
        invalid(
            "Invalid value for 'temperature': Input should be less than or equal to 2.",
            "temperature",
        ),
    ),
    (
        "n_zero",
        chat_body(n=0),
        400,
        invalid("Invalid value for 'n': Input should be greater than or equal to 1.", "n"),
    ),
    (
        "max_tokens_zero",
        chat_body(max_tokens=0),
        400,
        invalid(
            "Invalid value for 'max_tokens': Input should be greater than or equal to 1.",
            "max_tokens",
        ),
    ),
    (
        "empty_messages",
        {"model": "auto", "messages": []},
        400,
        invalid(
            "Invalid value for 'messages': expected at least 1 item (found an empty list).",
            "messages",
        ),
    ),
    (
        "user_content_null",
        {"model": "auto", "messages": [{"role": "user", "content": None}]},
        400,
        invalid(
            "Invalid value for 'messages[0].content': a user message needs content (a string or a "
            "list of parts).",
            "messages[0].content",
        ),
    ),
    (
        "unknown_role",
        {"model": "auto", "messages": [{"role": "wizard", "content": "Hi"}]},
        400,
        invalid(
            "Invalid value for 'messages[0].role': Input should be 'system', 'developer', 'user', "
            "'assistant', 'tool' or 'function'.",
            "messages[0].role",
        ),
    ),
    (
        "tool_message_without_id",
        {"model": "auto", "messages": [{"role": "tool", "content": "42"}]},
        400,
        invalid(
            "Missing required parameter: 'messages[0].tool_call_id'.", "messages[0].tool_call_id"
        ),
    ),
    (
        "tool_message_empty_id",
        {"model": "auto", "messages": [{"role": "tool", "content": "42", "tool_call_id": ""}]},
        400,
        invalid(
            "Invalid value for 'messages[0].tool_call_id': expected a non-empty string.",
            "messages[0].tool_call_id",
        ),
    ),
    (
        "content_empty_list",
        {"model": "auto", "messages": [{"role": "user", "content": []}]},
        400,
        invalid(
            "Invalid value for 'messages[0].content': a user message needs at least one content part.",
            "messages[0].content",
        ),
    ),
    (
        "content_part_without_type",
        {"model": "auto", "messages": [{"role": "user", "content": [{"text": "Hi"}]}]},
        400,
        invalid(
            "Missing required parameter: 'messages[0].content[0].type'.",
            "messages[0].content[0].type",
        ),
    ),
    (
        "content_part_bare_string",
        {"model": "auto", "messages": [{"role": "user", "content": ["Hi"]}]},
        400,
        invalid(
            "Invalid value for 'messages[0].content[0]': expected an object such as "
            '{"type": "text", "text": "..."}, not a bare value.',
            "messages[0].content[0]",
        ),
    ),
    (
        "text_part_without_text",
        {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        400,
        invalid(
            "Missing required parameter: 'messages[0].content[0].text'.",
            "messages[0].content[0].text",
        ),
    ),
    (
        "content_part_unknown_type",
        {"model": "auto", "messages": [{"role": "user", "content": [{"type": "bogus"}]}]},
        400,
        invalid(
            "Invalid value for 'messages[0].content[0].type': unknown content part type 'bogus'. "
            "The types are file, image_url, input_audio, refusal, text.",
            "messages[0].content[0].type",
        ),
    ),
    (
        "content_number",
        {"model": "auto", "messages": [{"role": "user", "content": 5}]},
        400,
        invalid(
            "Invalid value for 'messages[0].content': expected a string or a list of content parts.",
            "messages[0].content",
        ),
    ),
    *[
        (
            f"content_part_{index}",
            {"model": "auto", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": role, "content": [{"type": "text", "text": "Look:"}, part]},
            ]},
            400,
            invalid(message, param),
        )
        for index, (role, part, param, message) in enumerate(
            [
                ("user", {"type": 5}, "messages[1].content[1].type",
                 "Invalid value for 'messages[1].content[1].type': expected a string, such as 'text'."),
                ("user", {"type": "text", "text": 5}, "messages[1].content[1].text",
                 "Invalid value for 'messages[1].content[1].text': expected a string."),
                ("user", {"type": "image_url"}, "messages[1].content[1].image_url",
                 "Missing required parameter: 'messages[1].content[1].image_url'."),
                ("user", {"type": "image_url", "image_url": "https://example.com/cat.png"},
                 "messages[1].content[1].image_url",
                 "Invalid value for 'messages[1].content[1].image_url': expected an object."),
                ("user", {"type": "image_url", "image_url": {"detail": "low"}},
                 "messages[1].content[1].image_url.url",
                 "Missing required parameter: 'messages[1].content[1].image_url.url'."),
                ("user", {"type": "image_url", "image_url": {"url": 5}},
                 "messages[1].content[1].image_url.url",
                 "Invalid value for 'messages[1].content[1].image_url.url': expected a string."),
                ("user", {"type": "input_audio", "input_audio": {"data": "UklGRg=="}},
                 "messages[1].content[1].input_audio.format",
                 "Missing required parameter: 'messages[1].content[1].input_audio.format'."),
                ("user", {"type": "file", "file": "report.pdf"}, "messages[1].content[1].file",
                 "Invalid value for 'messages[1].content[1].file': expected an object."),
                ("assistant", {"type": "refusal"}, "messages[1].content[1].refusal",
                 "Missing required parameter: 'messages[1].content[1].refusal'."),
            ]
        )
    ],
    (
        "tool_call_function_string",
        {"model": "auto", "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": {}}},
            ]},
        ]},
        400,
        invalid(
            "Invalid value for 'messages[1].tool_calls[1].function.arguments': expected a string.",
            "messages[1].tool_calls[1].function.arguments",
        ),
    ),
    (
        "missing_model",
        {"messages": [{"role": "user", "content": "Hi"}]},
        400,
        invalid("Missing required parameter: 'model'.", "model"),
    ),
    (
        "response_format_xml",
        chat_body(response_format={"type": "xml"}),
        400,
        invalid(
            "Invalid value for 'response_format.type': expected 'text', 'json_object' or "
            "'json_schema'.",
            "response_format.type",
        ),
    ),
    *[
        (
            f"{name}_{index}",
            chat_body(**{name: value}),
            400,
            invalid(f"Invalid value for '{param}': {message}", param),
        )
        for index, (name, value, param, message) in enumerate(
            [
                ("top_p", "high", "top_p", "Input should be a valid number."),
                ("top_p", 1.5, "top_p", "Input should be less than or equal to 1."),
                ("presence_penalty", -3, "presence_penalty", "Input should be greater than or equal to -2."),
                ("frequency_penalty", "0", "frequency_penalty", "Input should be a valid number."),
                ("stop", 5, "stop", "stop must be a string or a list of strings."),
                ("stop", ["END", 1], "stop", "stop must be a string or a list of strings."),
                ("seed", 1.5, "seed", "Input should be a valid integer."),
                ("user", 42, "user", "Input should be a valid string."),
                ("logprobs", 1, "logprobs", "Input should be a valid boolean."),
                ("top_logprobs", 21, "top_logprobs", "Input should be less than or equal to 20."),
                ("logit_bias", {"hello": 5}, "logit_bias",
                 "logit_bias keys are token ids written as strings, not 'hello'."),
                ("logit_bias", {"50256": -101}, "logit_bias.50256",
                 "expected a bias from -100 to 100."),
                ("logit_bias", {"50256": "1"}, "logit_bias.50256", "Input should be a valid number."),
                ("tool_choice", "any", "tool_choice",
                 "tool_choice must be 'none', 'auto', 'required' or an object naming a tool."),
                ("tool_choice", {"type": 5, "function": {"name": "f"}}, "tool_choice.type",
                 "expected a string, such as 'function'."),
                ("tools", [{"type": 5, "function": {"name": "f"}}], "tools[0].type",
                 "expected a string, such as 'function'."),
                ("tools", [{"type": "function", "function": []}], "tools[0].function",
                 "expected an object with a string 'name'."),
                ("tools", [{"type": "function", "function": {"name": 5}}], "tools[0].function.name",
                 "expected a string."),
                ("parallel_tool_calls", "yes", "parallel_tool_calls", "Input should be a valid boolean."),
                ("messages", ["Hello"], "messages[0]", "Input should be a JSON object."),
                ("stream_options", "usage", "stream_options", "Input should be a JSON object."),
                ("response_format", "json", "response_format", "Input should be a JSON object."),
                ("metadata", "tag", "metadata", "Input should be a JSON object."),
            ]
        )
    ],
    *[
        (
            f"{name}_missing_{index}",
            chat_body(**{name: value}),
            400,
            invalid(f"Missing required parameter: '{param}'.", param),
        )
        for index, (name, value, param) in enumerate(
            [
                ("tool_choice", {"function": {"name": "f"}}, "tool_choice.type"),
                ("tools", [{"function": {"name": "f"}}], "tools[0].type"),
                ("tools", [{"type": "function"}], "tools[0].function"),
                ("tools", [{"type": "function", "function": {}}], "tools[0].function.name"),
            ]
        )
    ],
    (
        "unknown_model",
        chat_body(model="gpt-9"),
        404,
        invalid(
            "The model 'gpt-9' does not exist on this gateway. Use a router alias such as 'auto' or a "
            "model listed by GET /v1/models.",
            "model",
            "model_not_found",
        ),
    ),
    *[
        (
            f"forbidden_{name}",
            chat_body(**{name: "http://127.0.0.1:1/v1" if name != "api_key" else "sk-client"}),
            400,
            invalid(FORBIDDEN_MESSAGE.format(name), name, "unsupported_parameter"),
        )
        for name in ("api_base", "base_url", "api_key")
    ],
    *[
        (
            f"forbidden_{name}",
            chat_body(**{name: value}),
            400,
            invalid(FORBIDDEN_MESSAGE.format(name), name, "unsupported_parameter"),
        )
        for name, value in (
            ("headers", {"authorization": "Bearer sk-client"}),
            ("ssl_verify", False),
            ("fallbacks", ["openai/other-model"]),
        )
    ],
]


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [case[1:] for case in INVALID_REQUESTS],
    ids=[case[0] for case in INVALID_REQUESTS],
)
async def test_invalid_request_gets_openai_error(
    kit: GatewayKit, body: Any, status: int, expected: dict[str, Any]
) -> None:
    async with kit.running() as gateway:
        response = await gateway.chat(body)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == expected
    assert response.headers["x-request-id"].startswith("req-")
    for fake in kit.fakes.values():
        assert fake.requests == []


async def test_client_request_id_is_echoed(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        ok = await gateway.chat(chat_body(), headers={"x-request-id": "client-42"})
        failed = await gateway.chat(chat_body(model="gpt-9"), headers={"x-request-id": "client-43"})

    assert ok.headers["x-request-id"] == "client-42"
    assert failed.headers["x-request-id"] == "client-43"


async def test_forbidden_parameter_is_never_forwarded(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body(custom_llm_provider="openai", mock_response="hi"))

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "custom_llm_provider"
    assert kit.fakes["edge"].requests == []


VALID_SAMPLING_PARAMETERS: dict[str, Any] = {
    "top_p": 0.5,
    "presence_penalty": -2,
    "frequency_penalty": 1.5,
    "stop": ["END", "\n\n"],
    "seed": 7,
    "user": "user-1",
    "logprobs": True,
    "top_logprobs": 3,
    "logit_bias": {"50256": -100},
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    "parallel_tool_calls": False,
    "reasoning_effort": "low",
    "top_k": 40,
}


async def test_checked_parameters_are_forwarded_as_sent(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body(**VALID_SAMPLING_PARAMETERS))
        nulls = await gateway.chat(chat_body(stop=None, seed=None, user=None, tool_choice=None))

    assert response.status_code == 200, response.text
    assert nulls.status_code == 200, nulls.text
    forwarded = kit.fakes["edge"].requests[0].body
    for name, value in VALID_SAMPLING_PARAMETERS.items():
        assert forwarded[name] == value, name


async def test_body_over_limit_gets_413(kit: GatewayKit) -> None:
    kit.write_policy()
    settings = kit.settings(max_body_bytes=4096)
    async with kit.running(settings=settings) as gateway:
        response = await gateway.chat(chat_body("x" * 5000))
        small = await gateway.chat(chat_body("x" * 100))

    assert response.status_code == 413
    assert response.json() == {
        "error": {
            "message": "The request body exceeds the limit of 4096 bytes.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }
    assert small.status_code == 200


async def test_chunked_body_over_limit_gets_413(kit: GatewayKit) -> None:
    # Without Content-Length the limit is checked on the bytes actually read.
    kit.write_policy()
    async with kit.running(settings=kit.settings(max_body_bytes=4096)) as gateway:

        async def chunks() -> Any:
            yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
            yield b"x" * 5000
            yield b'"}]}'

        response = await gateway.client.post(
            "/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


async def test_unknown_path_gets_openai_404(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.post("/v1/images/generations", json={"prompt": "hi"})

    assert response.status_code == 404
    assert response.json() == invalid(
        "Unknown path /v1/images/generations. This gateway serves /v1/chat/completions, "
        "/v1/completions, /v1/responses, "
        "/v1/messages, /v1/messages/count_tokens, /v1/embeddings, /v1/models, /v1/feedback, "
        "/v1/usage, /metrics, /dashboard, /healthz and /readyz.",
        code="not_found",
    )


@pytest.mark.parametrize(
    ("path", "advice"),
    [
        ("/chat/completions", " Set the client's base_url to end in /v1."),
        ("/models/auto", " Set the client's base_url to end in /v1."),
        (
            "/v1/v1/messages",
            " The client's base_url must not end in /v1 when the client adds /v1 itself.",
        ),
        ("/responses", " Set the client's base_url to end in /v1."),
        ("/embeddings", " Set the client's base_url to end in /v1."),
        ("/completions", " Set the client's base_url to end in /v1."),
        ("/v1/audio/speech", ""),
    ],
)
async def test_unknown_path_advises_base_url(kit: GatewayKit, path: str, advice: str) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.post(path, json={"model": "auto"})

    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert message.startswith(f"Unknown path {path}. This gateway serves /v1/chat/completions")
    assert message.endswith("/healthz and /readyz." + advice)


async def test_wrong_method_gets_openai_405(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.client.get("/v1/chat/completions")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == invalid(
        "GET is not supported on /v1/chat/completions. Use POST.", code="method_not_allowed"
    )


async def test_no_context_window_fits_gets_400(kit: GatewayKit) -> None:
    prompt = "lorem " * 3000
    async with kit.running(
        context_windows={"edge": 1024, "mid": 1024, "frontier": 2048}
    ) as gateway:
        response = await gateway.chat(chat_body(prompt))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert error["code"] == "context_length_exceeded"
    assert error["message"].startswith("The conversation needs about ")
    assert error["message"].endswith(
        " tokens plus the requested output, which exceeds the context window of every deployment "
        "that could serve it. Shorten the conversation or lower max_tokens."
    )
    for fake in kit.fakes.values():
        assert fake.requests == []


async def test_max_tokens_beyond_every_window_gets_400(kit: GatewayKit) -> None:
    async with kit.running(
        context_windows={"edge": 1024, "mid": 1024, "frontier": 2048}
    ) as gateway:
        response = await gateway.chat(chat_body(max_tokens=4096))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


async def test_no_deployment_supports_images_gets_400(kit: GatewayKit) -> None:
    no_vision = {tier: {"vision": False} for tier in ("edge", "mid", "frontier")}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}],
    }
    async with kit.running(capabilities=no_vision) as gateway:
        response = await gateway.chat(body)

    assert response.status_code == 400
    assert response.json() == invalid(
        "No available deployment supports image input of this request. Remove it, or add a deployment "
        "that supports it to the policy.",
        "messages",
        "unsupported_parameter",
    )


async def test_unavailable_deployments_get_503(
    kit: GatewayKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIERWISE_TEST_UNSET_KEY", raising=False)
    document = policy_document(kit.base_urls)
    for tier in document["tiers"].values():
        tier["deployments"][0]["api_key_env"] = "TIERWISE_TEST_UNSET_KEY"
    write_yaml(kit.policy_path, document)
    async with kit.running(settings=kit.settings()) as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "message": "No deployment is available for model 'auto', which may use the edge, mid and "
            "frontier tiers. Deployments: edge-small (edge) is unavailable because environment variable "
            "TIERWISE_TEST_UNSET_KEY is not set; mid-medium (mid) is unavailable because environment "
            "variable TIERWISE_TEST_UNSET_KEY is not set; frontier-large (frontier) is unavailable "
            "because environment variable TIERWISE_TEST_UNSET_KEY is not set. Fix these causes, or "
            "request a model whose tier is available (GET /v1/models shows which deployments are "
            "available).",
            "type": "api_error",
            "param": None,
            "code": "no_deployment_available",
        }
    }


async def test_scorer_fault_gets_fixed_500(
    kit: GatewayKit, capfd: pytest.CaptureFixture[str]
) -> None:
    async with kit.running(scorer=FailingScorer()) as gateway:
        response = await gateway.chat(chat_body(), headers={"x-request-id": "req-fault-1"})
        records = await gateway.request_records()

    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": INTERNAL_ERROR_MESSAGE,
            "type": "api_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert response.headers["x-request-id"] == "req-fault-1"
    assert [(r["request_id"], r["status"], r["error"]) for r in records] == [
        ("req-fault-1", 500, "internal_error")
    ]
    captured = capfd.readouterr()
    assert FailingScorer.secret not in response.text
    assert FailingScorer.secret not in captured.out + captured.err
    assert FailingScorer.secret not in str(records)


def test_live_scorer_fault_leaks_nothing(
    kit: GatewayKit, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # uvicorn logs the traceback of any exception that leaves the app, so this runs on a live
    # server to prove that none does.
    caplog.set_level(logging.DEBUG)
    kit.write_policy()
    app = create_app(kit.settings(), FailingScorer())
    with LiveGateway(app) as live:
        response = httpx.post(f"{live.base_url}/chat/completions", json=chat_body(), timeout=10)
        models = httpx.get(f"{live.base_url}/models", timeout=10)

    assert response.status_code == 500
    assert response.json()["error"]["message"] == INTERNAL_ERROR_MESSAGE
    assert response.headers["x-request-id"].startswith("req-")
    # The server keeps serving after the fault.
    assert models.status_code == 200
    captured = capfd.readouterr()
    assert FailingScorer.secret not in response.text
    assert FailingScorer.secret not in caplog.text
    assert FailingScorer.secret not in captured.out + captured.err
    assert "internal_error" in captured.out + captured.err + caplog.text
    assert "Exception in ASGI application" not in caplog.text


async def test_invalid_requests_never_get_5xx(kit: GatewayKit) -> None:
    bodies: list[Any] = [
        b"\xff\xfe",
        b"null",
        b"{}",
        {"model": ["auto"], "messages": [{"role": "user", "content": "x"}]},
        {"model": "auto", "messages": [None]},
        {"model": "auto", "messages": [{"role": "user", "content": [1, 2]}]},
        {"model": "auto", "messages": [{"role": "user", "content": {"text": "x"}}]},
        {"model": "auto", "messages": [{"content": "x"}]},
        chat_body(stream_options="yes"),
        chat_body(tools="all"),
        chat_body(n=1000),
        chat_body(max_tokens=-5),
        chat_body(response_format="json"),
        chat_body(temperature=None, top_p="high"),
    ]
    async with kit.running() as gateway:
        statuses = [(await gateway.chat(body)).status_code for body in bodies]

    for body, status in zip(bodies, statuses, strict=True):
        assert 400 <= status < 500 or status == 200, (body, status)


AUDIO_PART = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
FILE_PART = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}}


@pytest.mark.parametrize(
    ("part", "capability", "what"),
    [(AUDIO_PART, "audio", "audio input"), (FILE_PART, "files", "file input")],
)
async def test_no_deployment_supports_part_gets_400(
    kit: GatewayKit, part: dict[str, Any], capability: str, what: str
) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": [part]}]}
    async with kit.running() as gateway:
        response = await gateway.chat(body)

    assert response.status_code == 400
    assert response.json() == invalid(
        f"No available deployment supports {what} of this request. Remove it, or add a "
        "deployment that supports it to the policy.",
        "messages",
        "unsupported_parameter",
    )
    for fake in kit.fakes.values():
        assert fake.requests == []


@pytest.mark.parametrize(("part", "capability"), [(AUDIO_PART, "audio"), (FILE_PART, "files")])
async def test_part_routed_to_capable_tier(
    kit: GatewayKit, part: dict[str, Any], capability: str
) -> None:
    # The classifier would pick edge; only frontier declares the capability.
    body = {"model": "auto", "messages": [{"role": "user", "content": [part]}]}
    async with kit.running(capabilities={"frontier": {capability: True}}) as gateway:
        response = await gateway.chat(body)

    assert response.status_code == 200
    assert response.headers["x-tierwise-tier"] == "frontier"
    assert len(kit.fakes["frontier"].requests) == 1
    assert kit.fakes["edge"].requests == []


async def test_stream_options_without_stream_gets_400(kit: GatewayKit) -> None:
    async with kit.running() as gateway:
        response = await gateway.chat(chat_body(stream_options={"include_usage": True}))
        allowed = await gateway.chat(chat_body(stream_options=None))

    assert response.status_code == 400
    assert response.json() == invalid(
        "The parameter 'stream_options' is allowed only when 'stream' is true; remove it or "
        "set 'stream': true.",
        "stream_options",
    )
    assert allowed.status_code == 200
    for fake in kit.fakes.values():
        assert len(fake.requests) <= 1
