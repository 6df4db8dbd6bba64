"""OpenTelemetry tracing (TIERWISE_TRACING): spans, trace propagation, OTLP export, off by default.

Most tests read the spans from an in-memory exporter. The upstreams are the fake tier
upstreams on 127.0.0.1, which keep the headers of every request they receive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import httpx
import pytest
import structlog

pytest.importorskip(
    "opentelemetry.sdk.trace", reason="tracing needs the otel extra: pip install -e '.[otel]'"
)
pytest.importorskip(
    "opentelemetry.exporter.otlp.proto.http",
    reason="tracing needs the otel extra: pip install -e '.[otel]'",
)

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from router.app import create_app
from router.tracing import TracingUnavailable
from tests.gateway.conftest import (
    GatewayKit,
    LiveGateway,
    StubScorer,
    chat_body,
    open_gateway,
    parse_sse,
)
from tests.gateway.test_litellm_path import write_litellm_policy
from tests.support.scenario import Scenario
from tests.support.stack import free_port

CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"
PROMPT = "Explain the secret plan named zebra-quartz-7 in one sentence."
SERVER_SPAN = "POST /v1/chat/completions"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


class TracedKit:
    """Starter of gateways of ``kit`` that trace to ``exporter``."""

    def __init__(self, kit: GatewayKit, provider: TracerProvider, exporter: InMemorySpanExporter):
        self.kit = kit
        self.provider = provider
        self.exporter = exporter

    def running(self, **settings: Any) -> Any:
        return open_gateway(
            self.kit.settings(tracing=True, **settings), StubScorer(), None, self.provider
        )

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]


@pytest.fixture
def traced(kit: GatewayKit, provider: TracerProvider, exporter: InMemorySpanExporter) -> TracedKit:
    kit.write_policy()
    return TracedKit(kit, provider, exporter)


def only(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0]


def span_text(spans: list[ReadableSpan]) -> str:
    """Every name, attribute value and event of ``spans`` as one string."""
    parts: list[str] = []
    for span in spans:
        parts.append(span.name)
        parts.extend(f"{key}={value}" for key, value in (span.attributes or {}).items())
        for event in span.events:
            parts.append(event.name)
            parts.extend(f"{key}={value}" for key, value in (event.attributes or {}).items())
        if span.status.description:
            parts.append(span.status.description)
    return "\n".join(parts)


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


# Spans ----------------------------------------------------------------------------------------


async def test_chat_spans_join_client_trace(traced: TracedKit) -> None:
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with traced.running() as gateway:
            response = await gateway.chat(
                chat_body(PROMPT, temperature=0), headers={"traceparent": CLIENT_TRACEPARENT}
            )
            records = await gateway.request_records()

    assert response.status_code == 200, response.text
    server = only(traced.named(SERVER_SPAN))
    assert server.kind == SpanKind.SERVER
    assert hex_id(server.context.trace_id, 32) == CLIENT_TRACE_ID
    assert server.parent is not None
    assert hex_id(server.parent.span_id, 16) == CLIENT_SPAN_ID
    attributes = server.attributes or {}
    assert attributes["gen_ai.request.model"] == "auto"
    assert attributes["gen_ai.response.model"] == "fake-edge"
    assert attributes["tierwise.tier"] == "edge"
    assert attributes["tierwise.deployment"] == "edge-small"
    assert attributes["tierwise.cache_hit"] is False
    assert attributes["tierwise.cost_usd"] == records[0]["cost_usd"]
    assert attributes["gen_ai.usage.input_tokens"] == records[0]["tokens_in"]
    assert attributes["gen_ai.usage.output_tokens"] == records[0]["tokens_out"]
    assert attributes["http.response.status_code"] == 200
    assert attributes["tierwise.request_id"] == response.headers["x-request-id"]
    assert server.status.status_code == StatusCode.UNSET

    events = {event.name: dict(event.attributes or {}) for event in server.events}
    assert list(events) == ["tierwise.cache.lookup", "tierwise.classify"]
    assert events["tierwise.cache.lookup"]["tierwise.cache.found"] is False
    assert events["tierwise.cache.lookup"]["tierwise.cache.backend"] == "memory"
    assert events["tierwise.classify"]["tierwise.classifier_version"] == "stub-1"
    assert events["tierwise.classify"]["tierwise.score.edge"] == 0.9
    assert events["tierwise.classify"]["tierwise.duration_ms"] >= 0

    attempt = only(traced.named("chat fake-edge"))
    assert attempt.parent is not None
    assert attempt.parent.span_id == server.context.span_id
    assert attempt.context.trace_id == server.context.trace_id
    attempt_attributes = attempt.attributes or {}
    assert attempt.kind == SpanKind.CLIENT
    assert attempt_attributes["gen_ai.provider.name"] == "openai"
    assert attempt_attributes["gen_ai.request.model"] == "fake-edge"
    assert attempt_attributes["gen_ai.response.model"] == "fake-edge"
    assert attempt_attributes["tierwise.tier"] == "edge"
    assert attempt_attributes["tierwise.attempt"] == 1
    assert attempt_attributes["server.address"] == "127.0.0.1"
    assert attempt_attributes["gen_ai.usage.input_tokens"] == records[0]["tokens_in"]
    assert attempt_attributes["gen_ai.response.finish_reasons"] == ("stop",)

    assert records[0]["trace_id"] == CLIENT_TRACE_ID
    request_lines = [line for line in logs if line["event"] == "request"]
    assert len(request_lines) == 1
    assert request_lines[0]["trace_id"] == CLIENT_TRACE_ID
    assert "zebra-quartz" not in span_text(traced.spans())
    assert gateway.api_key not in span_text(traced.spans())


async def test_upstream_gets_traceparent(traced: TracedKit) -> None:
    async with traced.running() as gateway:
        response = await gateway.chat(chat_body(), headers={"traceparent": CLIENT_TRACEPARENT})

    assert response.status_code == 200, response.text
    received = traced.kit.fakes["edge"].requests[-1].headers
    version, trace_id, parent_id, flags = received["traceparent"].split("-")
    attempt = only(traced.named("chat fake-edge"))
    assert version == "00"
    assert trace_id == CLIENT_TRACE_ID
    assert parent_id == hex_id(attempt.context.span_id, 16)
    assert flags == "01"


async def test_stream_span_ends_with_stream(traced: TracedKit) -> None:
    async with traced.running() as gateway:
        response = await gateway.chat(chat_body(PROMPT, stream=True))
        records = await gateway.request_records()

    assert response.status_code == 200, response.text
    assert parse_sse(response.content).done
    server = only(traced.named(SERVER_SPAN))
    attempt = only(traced.named("chat fake-edge"))
    assert attempt.end_time is not None and server.end_time is not None
    assert attempt.end_time <= server.end_time
    assert (server.attributes or {})["tierwise.stream"] is True
    assert (server.attributes or {})["gen_ai.usage.output_tokens"] == records[0]["tokens_out"]
    assert (attempt.attributes or {})["gen_ai.usage.output_tokens"] == records[0]["tokens_out"]
    assert (attempt.attributes or {})["tierwise.stream"] is True
    assert "zebra-quartz" not in span_text(traced.spans())


async def test_cut_stream_marks_spans(traced: TracedKit) -> None:
    traced.kit.fakes["edge"].enqueue(Scenario.cut(after_events=2))
    async with traced.running() as gateway:
        response = await gateway.chat(chat_body(stream=True))
        records = await gateway.request_records()

    assert response.status_code == 200
    assert records[0]["status"] == 502
    server = only(traced.named(SERVER_SPAN))
    assert server.status.status_code == StatusCode.ERROR
    assert (server.attributes or {})["error.type"] == records[0]["error"]
    attempt = only(traced.named("chat fake-edge"))
    assert attempt.status.status_code == StatusCode.ERROR
    assert (attempt.attributes or {})["error.type"] == "connection"


async def test_failover_gets_attempt_spans(traced: TracedKit) -> None:
    traced.kit.fakes["edge"].enqueue(Scenario.http_error(503, "overloaded"))
    async with traced.running() as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 200, response.text
    failed = only(traced.named("chat fake-edge"))
    served = only(traced.named("chat fake-mid"))
    assert failed.status.status_code == StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "server"
    assert (failed.attributes or {})["http.response.status_code"] == 503
    assert (failed.attributes or {})["tierwise.attempt"] == 1
    assert served.status.status_code == StatusCode.UNSET
    assert (served.attributes or {})["tierwise.attempt"] == 2
    assert (served.attributes or {})["tierwise.tier"] == "mid"
    server = only(traced.named(SERVER_SPAN))
    assert (server.attributes or {})["tierwise.attempts"] == 2
    assert (server.attributes or {})["tierwise.tier"] == "mid"
    assert "overloaded" not in span_text(traced.spans())


async def test_empty_stream_fails_over(traced: TracedKit) -> None:
    # A stream that sends only [DONE] ends before its first chunk.
    traced.kit.fakes["edge"].enqueue(Scenario.stream_of())
    async with traced.running() as gateway:
        response = await gateway.chat(chat_body(stream=True))

    assert response.status_code == 200, response.text
    assert parse_sse(response.content).done
    empty = only(traced.named("chat fake-edge"))
    assert empty.status.status_code == StatusCode.ERROR
    assert (empty.attributes or {})["error.type"] == "stream"
    served = only(traced.named("chat fake-mid"))
    assert (served.attributes or {})["tierwise.attempt"] == 2


async def test_cache_hit_has_no_attempt(traced: TracedKit) -> None:
    async with traced.running() as gateway:
        first = await gateway.chat(chat_body(temperature=0))
        traced.exporter.clear()
        second = await gateway.chat(chat_body(temperature=0))

    assert first.status_code == second.status_code == 200
    assert second.headers["x-tierwise-cache"] == "hit"
    server = only(traced.named(SERVER_SPAN))
    assert (server.attributes or {})["tierwise.cache_hit"] is True
    assert (server.attributes or {})["tierwise.cost_usd"] == 0.0
    lookups = [event for event in server.events if event.name == "tierwise.cache.lookup"]
    assert len(lookups) == 1
    assert (lookups[0].attributes or {})["tierwise.cache.found"] is True
    assert [event.name for event in server.events if event.name == "tierwise.classify"] == []
    assert [span.name for span in traced.spans() if span.kind == SpanKind.CLIENT] == []


async def test_failed_request_sets_error_status(traced: TracedKit) -> None:
    for fake in traced.kit.fakes.values():
        fake.set_default(Scenario.http_error(500, "broken"))
    async with traced.running() as gateway:
        response = await gateway.chat(chat_body())

    assert response.status_code == 502
    server = only(traced.named(SERVER_SPAN))
    assert server.status.status_code == StatusCode.ERROR
    assert (server.attributes or {})["http.response.status_code"] == 502
    assert (server.attributes or {})["error.type"] == "upstream_error"


async def test_client_error_keeps_status_unset(traced: TracedKit) -> None:
    async with traced.running() as gateway:
        response = await gateway.chat(chat_body(model="no-such-model"))

    assert response.status_code == 404
    server = only(traced.named(SERVER_SPAN))
    assert server.status.status_code == StatusCode.UNSET
    assert (server.attributes or {})["error.type"] == "model_not_found"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/messages",
            {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]},
        ),
        ("/v1/responses", {"model": "auto", "input": PROMPT}),
    ],
)
async def test_translated_endpoints_get_spans(traced: TracedKit, path: str, body: dict[str, Any]) -> None:
    async with traced.running() as gateway:
        response = await gateway.client.post(
            path,
            json=body,
            headers={"Authorization": f"Bearer {gateway.api_key}", "traceparent": CLIENT_TRACEPARENT},
        )

    assert response.status_code == 200, response.text
    server = only(traced.named(f"POST {path}"))
    assert hex_id(server.context.trace_id, 32) == CLIENT_TRACE_ID
    assert (server.attributes or {})["tierwise.tier"] == "edge"
    attempt = only(traced.named("chat fake-edge"))
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    assert "zebra-quartz" not in span_text(traced.spans())


async def test_swapped_scorer_still_traced(traced: TracedKit) -> None:
    # A classifier published through Redis replaces runtime.scorer in the same way.
    async with traced.running() as gateway:
        gateway.runtime.scorer = StubScorer(version="stub-2")
        response = await gateway.chat(chat_body())

    assert response.status_code == 200, response.text
    server = only(traced.named(SERVER_SPAN))
    classify = [event for event in server.events if event.name == "tierwise.classify"]
    assert len(classify) == 1
    assert (classify[0].attributes or {})["tierwise.classifier_version"] == "stub-2"


async def test_other_paths_get_no_span(traced: TracedKit) -> None:
    async with traced.running() as gateway:
        response = await gateway.client.get("/v1/models")

    assert response.status_code == 200
    assert traced.spans() == []


async def test_litellm_path_sends_traceparent(
    kit: GatewayKit, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    write_litellm_policy(kit)
    traced = TracedKit(kit, provider, exporter)
    async with traced.running() as gateway:
        response = await gateway.chat(chat_body(), headers={"traceparent": CLIENT_TRACEPARENT})

    assert response.status_code == 200, response.text
    attempt = only([span for span in traced.spans() if span.kind == SpanKind.CLIENT])
    assert (attempt.attributes or {})["tierwise.transport"] == "litellm"
    received = kit.fakes["edge"].requests[-1].headers
    assert received["traceparent"] == (
        f"00-{CLIENT_TRACE_ID}-{hex_id(attempt.context.span_id, 16)}-01"
    )


async def test_without_traceparent_starts_trace(traced: TracedKit) -> None:
    async with traced.running() as gateway:
        response = await gateway.chat(chat_body())
        records = await gateway.request_records()

    assert response.status_code == 200
    server = only(traced.named(SERVER_SPAN))
    assert server.parent is None
    assert records[0]["trace_id"] == hex_id(server.context.trace_id, 32)


def test_live_gateway_traces_streams(traced: TracedKit) -> None:
    # uvicorn with the protocol of `tierwise serve`, and a client that leaves mid-stream.
    traced.kit.fakes["edge"].enqueue(Scenario.pause(after_events=2, seconds=30))
    # A short keep-alive interval makes the gateway write, and so notice the cut, within
    # the upstream's pause.
    settings = traced.kit.settings(tracing=True, keepalive_interval_s=0.2)
    app = create_app(settings, StubScorer(), traced.provider)
    headers = {"Authorization": "Bearer sk-test-live", "traceparent": CLIENT_TRACEPARENT}
    with LiveGateway(app) as live, httpx.Client(base_url=live.base_url, timeout=30) as client:
        with client.stream(
            "POST", "/chat/completions", json=chat_body(stream=True), headers=headers
        ) as response:
            first = next(response.iter_bytes())
        cut_server = wait_for_span(traced, SERVER_SPAN)
        traced.exporter.clear()
        whole = client.post("/chat/completions", json=chat_body(stream=True), headers=headers)
        whole_server = wait_for_span(traced, SERVER_SPAN)

    assert response.status_code == 200
    assert first
    assert (cut_server.attributes or {})["tierwise.status"] == 499
    assert (cut_server.attributes or {})["error.type"] == "client_disconnected"
    assert hex_id(cut_server.context.trace_id, 32) == CLIENT_TRACE_ID
    assert whole.status_code == 200
    assert parse_sse(whole.content).done
    assert (whole_server.attributes or {})["tierwise.status"] == 200
    attempt = only(traced.named("chat fake-edge"))
    received = traced.kit.fakes["edge"].requests[-1].headers
    assert received["traceparent"] == (
        f"00-{CLIENT_TRACE_ID}-{hex_id(attempt.context.span_id, 16)}-01"
    )


def wait_for_span(traced: TracedKit, name: str) -> ReadableSpan:
    """Return the one finished span named ``name``, waiting up to 30 s for it to end."""
    deadline = time.monotonic() + 30
    while not traced.named(name) and time.monotonic() < deadline:
        time.sleep(0.02)
    return only(traced.named(name))


# OTLP export --------------------------------------------------------------------------------


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 that keeps each export request it gets."""

    def __init__(self) -> None:
        received: list[ExportTraceServiceRequest] = []
        self.received = received
        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                export = ExportTraceServiceRequest()
                export.ParseFromString(body)
                paths.append(self.path)
                received.append(export)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


async def test_otlp_receiver_gets_spans(kit: GatewayKit, monkeypatch: pytest.MonkeyPatch) -> None:
    kit.write_policy()
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "tierwise-test")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        async with open_gateway(kit.settings(tracing=True), StubScorer(), None) as gateway:
            response = await gateway.chat(
                chat_body(temperature=0), headers={"traceparent": CLIENT_TRACEPARENT}
            )
        # Leaving the gateway ran its shutdown, which exports the queued spans.

    assert response.status_code == 200, response.text
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    spans = [
        (resource_spans.resource, span)
        for export in receiver.received
        for resource_spans in export.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    names = {span.name for _, span in spans}
    assert names == {SERVER_SPAN, "chat fake-edge"}
    events = {event.name for _, span in spans for event in span.events}
    assert events == {"tierwise.classify", "tierwise.cache.lookup"}
    assert {span.trace_id.hex() for _, span in spans} == {CLIENT_TRACE_ID}
    services = {
        attribute.value.string_value
        for resource, _ in spans
        for attribute in resource.attributes
        if attribute.key == "service.name"
    }
    assert services == {"tierwise-test"}


# Off by default, and a missing extra ------------------------------------------------------

_SERVE_AND_REPORT = """
import json, os, signal, sys, threading, time, urllib.error, urllib.request

def request_then_stop():
    base = "http://127.0.0.1:" + sys.argv[1]
    for _ in range(600):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    chat = urllib.request.Request(
        base + "/v1/chat/completions", body.encode(), {"Content-Type": "application/json"}
    )
    try:
        status = urllib.request.urlopen(chat, timeout=30).status
    except urllib.error.HTTPError as error:
        status = error.code
    loaded = sorted(
        name for name in sys.modules
        if name.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter", "router.tracing"))
    )
    print(json.dumps({"status": status, "loaded": loaded}), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=request_then_stop, daemon=True).start()
from router.cli.main import main
sys.argv = ["tierwise", "serve", "--no-local-model", "--port", sys.argv[1]]
main()
"""


def test_default_serve_loads_no_tracing(tmp_path: Any) -> None:
    # Other opentelemetry modules are loaded anyway: FastAPI 0.165 imports the API, and
    # redis-py 8.2 imports opentelemetry.sdk.metrics whenever the SDK is installed.
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIERWISE_")}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "TIERWISE_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_AND_REPORT, str(free_port())],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )

    # uvicorn raises SIGTERM again after its shutdown, so the process ends by that signal.
    assert result.returncode in (0, -signal.SIGTERM), result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The bundled policy's tiers are unavailable here (no local model, no provider keys),
    # so the request gets a 503. It still passed through the whole serving path.
    assert report["status"] == 503
    assert report["loaded"] == []


async def test_disabled_sdk_keeps_client_trace(
    kit: GatewayKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit.write_policy()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    async with open_gateway(kit.settings(tracing=True), StubScorer(), None) as gateway:
        alone = await gateway.chat(chat_body())
        joined = await gateway.chat(chat_body(), headers={"traceparent": CLIENT_TRACEPARENT})
        records = await gateway.request_records()

    assert alone.status_code == joined.status_code == 200
    assert "trace_id" not in records[0]
    # The disabled SDK's spans take the client's context, so logs still join its trace.
    assert records[1]["trace_id"] == CLIENT_TRACE_ID


def test_missing_extra_fails_at_start(kit: GatewayKit, monkeypatch: pytest.MonkeyPatch) -> None:
    kit.write_policy()
    # A None entry in sys.modules makes the import raise ImportError, as for a missing package.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    monkeypatch.delitem(sys.modules, "router.tracing.otel", raising=False)

    with pytest.raises(TracingUnavailable) as raised:
        create_app(kit.settings(tracing=True), StubScorer())

    assert "pip install 'tierwise[otel]'" in str(raised.value)
    assert "TIERWISE_TRACING" in str(raised.value)


_SERVE_WITHOUT_SDK = """
import sys
# A None entry in sys.modules makes the import raise ImportError, as for a missing package.
sys.modules["opentelemetry.sdk.trace"] = None
from router.cli.main import main
sys.argv = ["tierwise", "serve", "--no-local-model", "--port", sys.argv[1]]
main()
"""


def test_serve_without_extra_exits(tmp_path: Any) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIERWISE_")}
    env |= {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "TIERWISE_TRACING": "true",
        "TIERWISE_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_WITHOUT_SDK, "8171"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )

    assert result.returncode == 2, result.stderr[-2000:]
    assert "TIERWISE_TRACING is on" in result.stderr
    assert "pip install 'tierwise[otel]'" in result.stderr
