"""Start-up and reload log lines of the runtime: the local model's readiness, tiers without scores."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from structlog.testing import capture_logs

import router.edge
import router.runtime
from router.edge import EdgeModelServer, EdgeModelStartFailed
from router.policy.loader import load_policy
from router.runtime import Runtime
from router.settings import BUNDLED_POLICY, Settings
from tests.gateway.conftest import StubScorer, policy_document, write_yaml

EDGE_API_BASE = "http://127.0.0.1:18081/v1"


class TwoTierScorer(StubScorer):
    """A classifier stand-in trained without the edge tier."""

    tiers: tuple[str, ...] = ("mid", "frontier")

    def score(self, messages: list[Any]) -> dict[str, float]:
        return {"mid": 0.9, "frontier": 0.9}


class FakeEdgeServer:
    """A stand-in for `EdgeModelServer` that records its arguments and is ready at once."""

    created: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.port = self.requested_port = options["port"]
        FakeEdgeServer.created.append(options)

    @staticmethod
    def is_available() -> tuple[bool, str]:
        return True, "installed"

    async def start(self) -> None:
        self.exited = asyncio.Event()

    async def stop(self) -> None:
        return None

    async def wait_for_exit(self) -> str:
        await self.exited.wait()
        return "the llama.cpp server exited with code -11; no server output"


def write_policy(path: Path, *, local_model: bool = False, thresholds: dict[str, float] | None = None) -> Path:
    urls = {tier: f"http://127.0.0.1:1/{tier}" for tier in ("edge", "mid", "frontier")}
    urls["edge"] = EDGE_API_BASE
    document = policy_document(urls, thresholds=thresholds)
    document["tiers"]["edge"]["deployments"][0]["local_model"] = local_model
    return write_yaml(path, document)


def make_settings(tmp_path: Path, policy: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "policy": policy,
        "data_dir": tmp_path / "var",
        "policy_reload_interval_s": 0.0,
        "local_model": False,
        "log_format": "json",
    }
    return Settings(**(values | overrides))


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def test_unscored_tier_warns_at_start(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    runtime = Runtime.build(make_settings(tmp_path, policy), TwoTierScorer())
    with capture_logs() as logs:
        await runtime.start()
        await runtime.stop()

    warnings = events(logs, "classifier_cannot_score_tier")
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["tier"] == "edge"
    assert warnings[0]["classifier_tiers"] == ["mid", "frontier"]
    assert "never picks the edge tier" in warnings[0]["effect"]
    assert "most capable available tier" in warnings[0]["effect"]
    assert "remove the edge tier from the policy" in warnings[0]["fix"]


async def test_scored_tiers_log_no_warning(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    runtime = Runtime.build(make_settings(tmp_path, policy), StubScorer())
    with capture_logs() as logs:
        await runtime.start()
        await runtime.stop()

    assert events(logs, "classifier_cannot_score_tier") == []


def test_unscored_tier_warns_on_reload(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml", thresholds={"mid": 0.6})
    runtime = Runtime.build(make_settings(tmp_path, policy), TwoTierScorer())
    write_policy(policy, thresholds={"edge": 0.7, "mid": 0.6})
    with capture_logs() as logs:
        runtime.policies.check_for_change()

    assert len(events(logs, "policy_reloaded")) == 1
    warnings = events(logs, "classifier_cannot_score_tier")
    assert [warning["tier"] for warning in warnings] == ["edge"]


async def wait_for_state(runtime: Runtime, state: str) -> None:
    async with asyncio.timeout(10):
        while runtime.local_model_state != state:
            await asyncio.sleep(0.005)


def start_local_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server_class: type = FakeEdgeServer
) -> tuple[Runtime, Path]:
    """Return a runtime whose policy has a local edge model, started on ``server_class``, and the policy."""
    monkeypatch.setattr(router.edge, "EdgeModelServer", server_class)
    policy = write_policy(tmp_path / "policy.yaml", local_model=True)
    runtime = Runtime.build(make_settings(tmp_path, policy, local_model=True), StubScorer())
    runtime._start_local_model()
    return runtime, policy


async def test_local_model_ready_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router.edge, "EdgeModelServer", FakeEdgeServer)
    FakeEdgeServer.created.clear()
    policy = write_policy(tmp_path / "policy.yaml", local_model=True)
    settings = make_settings(tmp_path, policy, local_model=True, model_dir=tmp_path / "models")
    runtime = Runtime.build(settings, StubScorer())
    with capture_logs() as logs:
        runtime._start_local_model()
        await wait_for_state(runtime, "ready")
    await runtime.stop()

    ready = events(logs, "local_model_ready")
    assert runtime.local_model_state == "ready"
    assert len(ready) == 1
    assert ready[0]["deployments"] == ["edge-small"]
    assert ready[0]["port"] == 18081
    assert ready[0]["seconds"] >= 0
    assert FakeEdgeServer.created[0]["model_dir"] == tmp_path / "models"
    assert FakeEdgeServer.created[0]["port"] == 18081
    # The server's context is the policy's context window for the local deployment.
    edge = runtime.policies.current.policy.tiers["edge"].deployments[0]
    assert FakeEdgeServer.created[0]["n_ctx"] == edge.context_window


async def test_local_model_exit_restarts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router.runtime, "LOCAL_MODEL_RESTART_DELAYS_S", (0.2, 0.4))
    runtime, _ = start_local_model(tmp_path, monkeypatch)
    await wait_for_state(runtime, "ready")
    edge = runtime.policies.current.policy.local_model_deployments()[0]
    assert runtime.is_available(edge)

    with capture_logs() as logs:
        runtime.extra["local_model"].exited.set()
        await wait_for_state(runtime, "restarting")
        # Until the new server is ready, edge deployments are unavailable with the cause.
        assert not runtime.is_available(edge)
        assert "exited with code -11" in (runtime.unavailable_reason(edge) or "")
        assert "restarting in 0.2 s" in (runtime.unavailable_reason(edge) or "")
        assert "exited and is restarting" in (runtime.client_unavailable_reason(edge) or "")
        await wait_for_state(runtime, "ready")
    await runtime.stop()

    assert runtime.extra.get("local_model_task") is None
    exited = events(logs, "local_model_exited")
    assert len(exited) == 1
    assert exited[0]["log_level"] == "error"
    assert "code -11" in exited[0]["reason"]
    assert exited[0]["restart_in_s"] == 0.2
    ready = events(logs, "local_model_ready")
    assert [entry["restarts"] for entry in ready] == [1]


class FlakyEdgeServer(FakeEdgeServer):
    """Ready at the first start, fails the next two starts, then starts again."""

    starts = 0

    async def start(self) -> None:
        FlakyEdgeServer.starts += 1
        if FlakyEdgeServer.starts in (2, 3):
            raise EdgeModelStartFailed("the llama.cpp server exited with code -9 before it was ready")
        await super().start()


async def test_failed_restart_waits_longer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router.runtime, "LOCAL_MODEL_RESTART_DELAYS_S", (0.05, 0.1, 0.15))
    FlakyEdgeServer.starts = 0
    runtime, _ = start_local_model(tmp_path, monkeypatch, FlakyEdgeServer)
    await wait_for_state(runtime, "ready")

    with capture_logs() as logs:
        runtime.extra["local_model"].exited.set()
        await wait_for_state(runtime, "restarting")
        await wait_for_state(runtime, "ready")
    await runtime.stop()

    assert FlakyEdgeServer.starts == 4
    failed = events(logs, "local_model_restart_failed")
    assert [(entry["restarts"], entry["restart_in_s"]) for entry in failed] == [(1, 0.1), (2, 0.15)]
    assert all("code -9" in entry["reason"] for entry in failed)
    assert [entry["restarts"] for entry in events(logs, "local_model_ready")] == [3]


async def test_failed_first_start_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FlakyEdgeServer.starts = 1  # the next start is the failing second one
    runtime, _ = start_local_model(tmp_path, monkeypatch, FlakyEdgeServer)
    await runtime.extra["local_model_task"]

    assert runtime.local_model_state == "failed"
    assert FlakyEdgeServer.starts == 2


async def test_edge_server_wait_for_exit_reports_code(tmp_path: Path) -> None:
    server = EdgeModelServer(model_dir=tmp_path)
    assert await server.wait_for_exit() == "the llama.cpp server is not running"

    server._workdir = tmp_path
    (tmp_path / "server.log").write_text("ValidationError: 'input': 'a user prompt'\n")
    command = [sys.executable, "-c", "raise SystemExit(3)"]
    server._process = subprocess.Popen(command)  # noqa: ASYNC220 - the server holds a Popen
    reason = await server.wait_for_exit(poll_s=0.01)

    assert server._process.returncode == 3
    assert reason == "the llama.cpp server exited with code 3"


def test_edge_server_spawn_error_is_start_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(**_: Any) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(router.edge.tempfile, "mkdtemp", full_disk)
    server = EdgeModelServer(model_dir=tmp_path)

    # The restart loop retries EdgeModelStartFailed; another error would end the loop.
    with pytest.raises(EdgeModelStartFailed, match="No space left on device"):
        server._spawn(tmp_path / "model.gguf", 8123)


async def test_edge_server_wait_for_exit_names_signal(tmp_path: Path) -> None:
    server = EdgeModelServer(model_dir=tmp_path)
    server._workdir = tmp_path
    (tmp_path / "server.log").write_text("ValidationError: 'input': 'a user prompt'\n")
    command = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    server._process = subprocess.Popen(command)  # noqa: ASYNC220 - the server holds a Popen
    reason = await server.wait_for_exit(poll_s=0.01)

    assert server._process.returncode == -9
    assert reason == "the llama.cpp server was killed by SIGKILL (exit code -9)"


async def test_moved_local_model_port_warns_on_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, policy = start_local_model(tmp_path, monkeypatch)
    await wait_for_state(runtime, "ready")
    text = policy.read_text().replace(EDGE_API_BASE, "http://127.0.0.1:18095/v1")
    policy.write_text(text)
    with capture_logs() as logs:
        runtime.policies.check_for_change()
    await runtime.stop()

    moved = events(logs, "local_model_port_changed")
    assert len(moved) == 1
    assert moved[0]["running_port"] == 18081
    assert moved[0]["policy_port"] == 18095


async def test_moved_local_model_port_warns_on_publish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, policy = start_local_model(tmp_path, monkeypatch)
    await wait_for_state(runtime, "ready")
    published = tmp_path / "published.yaml"
    published.write_text(policy.read_text().replace(EDGE_API_BASE, "http://127.0.0.1:18096/v1"))
    with capture_logs() as logs:
        runtime.policies.use_published(load_policy(published))
    await runtime.stop()

    moved = events(logs, "local_model_port_changed")
    assert len(moved) == 1
    assert moved[0]["running_port"] == 18081
    assert moved[0]["policy_port"] == 18096


def test_port_hint_names_policy_and_deployment(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml", local_model=True)
    runtime = Runtime.build(make_settings(tmp_path, policy), StubScorer())
    deployment = runtime.policies.current.policy.tiers["edge"].deployments[0]
    hint = runtime._local_port_hint(deployment)

    assert hint == f"change the port in the api_base of deployment 'edge-small' in the policy {policy}"


def test_port_hint_for_published_policy(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml", local_model=True)
    runtime = Runtime.build(make_settings(tmp_path, policy), StubScorer())
    published = load_policy(write_policy(tmp_path / "published.yaml", local_model=True))
    runtime.policies.use_published(published)
    deployment = runtime.policies.current.policy.tiers["edge"].deployments[0]
    hint = runtime._local_port_hint(deployment)

    assert hint == (
        "start this gateway with --no-local-model, because it serves the published policy "
        f"{published.version}, which gives every gateway on Redis the port in the api_base of "
        f"deployment 'edge-small', and an edit to {policy} has no effect"
    )


def test_port_hint_for_bundled_policy(tmp_path: Path) -> None:
    runtime = Runtime.build(make_settings(tmp_path, BUNDLED_POLICY), StubScorer())
    deployment = runtime.policies.current.policy.tiers["edge"].deployments[0]
    hint = runtime._local_port_hint(deployment)

    assert hint.startswith(f"copy the bundled policy {BUNDLED_POLICY}, change the port in the ")
    assert f"api_base of deployment '{deployment.name}'" in hint
    assert "--policy COPY (or TIERWISE_POLICY=COPY)" in hint


def test_busy_port_error_ends_with_hint() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = EdgeModelServer(port=port, port_hint="change the port in FILE")
        with pytest.raises(EdgeModelStartFailed) as raised:
            server._choose_port()

    assert str(raised.value) == (
        f"port {port} on 127.0.0.1 is already in use; stop the process that listens on it, "
        "or change the port in FILE. To use a model server you run yourself on that port, "
        "remove local_model: true from the deployment"
    )


async def test_unreachable_redis_names_address(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    # A bound socket that does not listen refuses connections, so the port stays ours.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        url = f"redis://user:hunter2@127.0.0.1:{port}/3"
        settings = make_settings(tmp_path, policy, redis_url=url, redis_timeout_s=0.2)
        runtime = Runtime.build(settings, StubScorer())
        with capture_logs() as logs:
            await runtime.start()
            await runtime.stop()

    [warning] = events(logs, "redis_unreachable_at_start")
    assert warning["redis"] == f"redis://127.0.0.1:{port}/3"
    assert "hunter2" not in str(warning)
    assert "Check --redis-url (or REDIS_URL)" in warning["hint"]
