"""Start-up and reload log lines of the runtime: the local model's readiness, tiers without scores."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from structlog.testing import capture_logs

import router.edge
import router.local_model
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
        self.n_ctx = options.get("n_ctx", 8192)
        self.kills = 0
        FakeEdgeServer.created.append(options)

    @staticmethod
    def is_available() -> tuple[bool, str]:
        return True, "installed"

    async def start(self) -> None:
        self.exited = asyncio.Event()
        self.killed = False
        self.pid = 4242
        self.load_time_s = 2.5

    async def stop(self) -> None:
        return None

    @property
    def running(self) -> bool:
        return not self.exited.is_set()

    async def wait_for_exit(self) -> str:
        await self.exited.wait()
        if self.killed:
            return "the llama.cpp server was killed by SIGKILL (exit code -9)"
        return "the llama.cpp server exited with code -11; no server output"

    async def responds(self, timeout_s: float) -> bool:
        return True

    def kill(self) -> None:
        self.kills += 1
        self.killed = True
        self.exited.set()


def write_policy(
    path: Path,
    *,
    local_model: bool = False,
    thresholds: dict[str, float] | None = None,
    probe: dict[str, float] | None = None,
) -> Path:
    """Write a test policy; ``probe`` is its ``local_model`` section (the liveness probe)."""
    urls = {tier: f"http://127.0.0.1:1/{tier}" for tier in ("edge", "mid", "frontier")}
    urls["edge"] = EDGE_API_BASE
    document = policy_document(urls, thresholds=thresholds)
    document["tiers"]["edge"]["deployments"][0]["local_model"] = local_model
    if probe is not None:
        document["local_model"] = probe
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
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server_class: type = FakeEdgeServer,
    probe: dict[str, float] | None = None,
) -> tuple[Runtime, Path]:
    """Return a runtime whose policy has a local edge model, started on ``server_class``, and the policy."""
    monkeypatch.setattr(router.edge, "EdgeModelServer", server_class)
    policy = write_policy(tmp_path / "policy.yaml", local_model=True, probe=probe)
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
    monkeypatch.setattr(router.local_model, "LOCAL_MODEL_RESTART_DELAYS_S", (0.2, 0.4))
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
    monkeypatch.setattr(router.local_model, "LOCAL_MODEL_RESTART_DELAYS_S", (0.05, 0.1, 0.15))
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


async def test_moved_local_model_port_edit_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, policy = start_local_model(tmp_path, monkeypatch)
    await wait_for_state(runtime, "ready")
    serving = runtime.policies.current.version
    text = policy.read_text()
    line = text[: text.index(EDGE_API_BASE)].count("\n") + 1
    policy.write_text(text.replace(EDGE_API_BASE, "http://127.0.0.1:18095/v1"))
    with capture_logs() as logs:
        runtime.policies.check_for_change()
    rejected_version = runtime.policies.current.version
    rejected = runtime.policies.rejected
    # Another edit that keeps the running port applies again.
    policy.write_text(text.replace("context_window: 32768", "context_window: 16384", 1))
    runtime.policies.check_for_change()
    await runtime.stop()

    assert rejected_version == serving
    assert events(logs, "local_model_port_changed") == []
    [reload_rejected] = events(logs, "policy_reload_rejected")
    expected = (
        f"{policy}:{line}: tiers.edge.deployments.0.api_base: the local model runs on port "
        "18081 until the gateway restarts; keep port 18081 here, or restart the gateway to "
        "move the model"
    )
    assert reload_rejected["problems"] == [expected]
    assert rejected is not None
    assert rejected["lines"] == [line]
    assert runtime.policies.current.version != serving
    assert runtime.policies.rejected is None


async def test_larger_local_context_warns_on_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, policy = start_local_model(tmp_path, monkeypatch)
    await wait_for_state(runtime, "ready")
    text = policy.read_text()
    policy.write_text(text.replace("context_window: 32768", "context_window: 65536", 1))
    with capture_logs() as larger_logs:
        runtime.policies.check_for_change()
    policy.write_text(text.replace("context_window: 32768", "context_window: 4096", 1))
    with capture_logs() as smaller_logs:
        runtime.policies.check_for_change()
    await runtime.stop()

    [changed] = events(larger_logs, "local_model_context_changed")
    assert changed["running_n_ctx"] == 32768
    assert changed["policy_context_window"] == 65536
    # A smaller window only leaves part of the server's context unused.
    assert events(smaller_logs, "local_model_context_changed") == []


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


class HangingEdgeServer(FakeEdgeServer):
    """Returns the results in ``answers`` from the liveness probe, then True once they run out."""

    answers: ClassVar[list[bool]] = []
    probes = 0

    async def responds(self, timeout_s: float) -> bool:
        HangingEdgeServer.probes += 1
        return HangingEdgeServer.answers.pop(0) if HangingEdgeServer.answers else True


# The shortest probe interval and timeout that the policy allows.
FAST_PROBES = {"probe_interval_s": 0.1, "probe_timeout_s": 0.1, "probe_failures": 3}


def fast_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router.local_model, "LOCAL_MODEL_RESTART_DELAYS_S", (0.2,))


async def test_unresponsive_local_model_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_restarts(monkeypatch)
    HangingEdgeServer.answers = [False, False, False]
    HangingEdgeServer.probes = 0
    runtime, _ = start_local_model(tmp_path, monkeypatch, HangingEdgeServer, FAST_PROBES)
    edge = runtime.policies.current.policy.local_model_deployments()[0]

    with capture_logs() as logs:
        await wait_for_state(runtime, "unresponsive")
        assert not runtime.is_available(edge)
        assert "stopped responding, was killed and is restarting" in (
            runtime.client_unavailable_reason(edge) or ""
        )
        assert runtime.local_model_stopped()
        wait = runtime.local_model_retry_after_s()
        assert wait is not None
        assert wait >= 1.0
        await wait_for_state(runtime, "ready")
    server = runtime.extra["local_model"]
    await runtime.stop()

    assert server.kills == 1
    [unresponsive] = events(logs, "local_model_unresponsive")
    assert unresponsive["log_level"] == "error"
    assert unresponsive["pid"] == 4242
    assert unresponsive["failed_probes"] == 3
    assert unresponsive["silent_s"] >= 0
    assert unresponsive["probe_timeout_s"] == 0.1
    # The kill is the supervisor's own, so it is not logged as an exit as well.
    assert events(logs, "local_model_exited") == []
    # The first start, then the restart after the kill.
    assert [entry.get("restarts") for entry in events(logs, "local_model_ready")] == [None, 1]


async def test_answered_probe_resets_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_restarts(monkeypatch)
    HangingEdgeServer.answers = [False, False, True, False, False, True, False, False]
    HangingEdgeServer.probes = 0
    runtime, _ = start_local_model(tmp_path, monkeypatch, HangingEdgeServer, FAST_PROBES)

    with capture_logs() as logs:
        await wait_for_state(runtime, "ready")
        async with asyncio.timeout(10):
            while HangingEdgeServer.probes < 12:
                await asyncio.sleep(0.01)
        state = runtime.local_model_state
    server = runtime.extra["local_model"]
    await runtime.stop()

    assert state == "ready"
    assert server.kills == 0
    assert events(logs, "local_model_unresponsive") == []


class ProbeRecordingEdgeServer(FakeEdgeServer):
    """Records the timeout of each liveness probe, returns ``answer`` from it, counts starts."""

    timeouts: ClassVar[list[float]] = []
    answer: ClassVar[bool] = True
    starts = 0

    async def start(self) -> None:
        ProbeRecordingEdgeServer.starts += 1
        await super().start()

    async def responds(self, timeout_s: float) -> bool:
        ProbeRecordingEdgeServer.timeouts.append(timeout_s)
        return ProbeRecordingEdgeServer.answer


def reset_probe_recorder(*, answer: bool) -> None:
    ProbeRecordingEdgeServer.timeouts = []
    ProbeRecordingEdgeServer.answer = answer
    ProbeRecordingEdgeServer.starts = 0


async def wait_for_probes(count: int) -> None:
    async with asyncio.timeout(10):
        while len(ProbeRecordingEdgeServer.timeouts) < count:
            await asyncio.sleep(0.01)


def test_probe_defaults_match_docs(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path / "policy.yaml", local_model=True)).policy
    assert policy.local_model.probe_interval_s == 5.0
    assert policy.local_model.probe_timeout_s == 3.0
    assert policy.local_model.probe_failures == 3


async def test_reload_applies_probe_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_probe_recorder(answer=True)
    runtime, policy = start_local_model(
        tmp_path, monkeypatch, ProbeRecordingEdgeServer, FAST_PROBES
    )
    await wait_for_state(runtime, "ready")
    await wait_for_probes(1)

    write_policy(policy, local_model=True, probe=FAST_PROBES | {"probe_timeout_s": 0.2})
    with capture_logs() as logs:
        runtime.policies.check_for_change()
        async with asyncio.timeout(10):
            while ProbeRecordingEdgeServer.timeouts[-1] != 0.2:
                await asyncio.sleep(0.01)
    server = runtime.extra["local_model"]
    state = runtime.local_model_state
    await runtime.stop()

    assert len(events(logs, "policy_reloaded")) == 1
    assert ProbeRecordingEdgeServer.timeouts[0] == 0.1
    # The running server keeps serving: it was started once and never killed.
    assert state == "ready"
    assert ProbeRecordingEdgeServer.starts == 1
    assert server.kills == 0
    assert events(logs, "local_model_ready") == []


async def test_reload_lowers_probe_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_restarts(monkeypatch)
    reset_probe_recorder(answer=False)
    patient = FAST_PROBES | {"probe_failures": 100}
    runtime, policy = start_local_model(tmp_path, monkeypatch, ProbeRecordingEdgeServer, patient)
    await wait_for_state(runtime, "ready")
    await wait_for_probes(4)
    # Four failed probes, below the 100 that the policy allows.
    assert runtime.local_model_state == "ready"

    write_policy(policy, local_model=True, probe=FAST_PROBES)
    with capture_logs() as logs:
        runtime.policies.check_for_change()
        await wait_for_state(runtime, "unresponsive")
    server = runtime.extra["local_model"]
    await runtime.stop()

    assert server.kills == 1
    [unresponsive] = events(logs, "local_model_unresponsive")
    assert unresponsive["failed_probes"] >= 4
    assert unresponsive["failed_probes"] < 100


async def test_reload_rejects_invalid_probe_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_probe_recorder(answer=True)
    runtime, policy = start_local_model(
        tmp_path, monkeypatch, ProbeRecordingEdgeServer, FAST_PROBES
    )
    await wait_for_state(runtime, "ready")
    version = runtime.policies.current.version

    write_policy(policy, local_model=True, probe=FAST_PROBES | {"probe_interval_s": 0.0})
    with capture_logs() as logs:
        runtime.policies.check_for_change()
        count = len(ProbeRecordingEdgeServer.timeouts)
        await wait_for_probes(count + 2)
    await runtime.stop()

    [rejected] = events(logs, "policy_reload_rejected")
    [problem] = rejected["problems"]
    assert problem.endswith(
        ": local_model.probe_interval_s: must be at least 0.1 (found 0.0)"
    )
    assert runtime.policies.current.version == version
    assert runtime.policies.current.policy.local_model.probe_interval_s == 0.1
    assert set(ProbeRecordingEdgeServer.timeouts) == {0.1}


async def test_restarted_local_model_clears_cooldown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from router.upstream.base import UpstreamError

    monkeypatch.setattr(router.local_model, "LOCAL_MODEL_RESTART_DELAYS_S", (0.05,))
    runtime, _ = start_local_model(tmp_path, monkeypatch)
    await wait_for_state(runtime, "ready")
    policy = runtime.policies.current.policy
    edge = policy.local_model_deployments()[0]
    for _ in range(policy.routing.cooldown.after_failures):
        runtime.health.failed(edge.name, UpstreamError("timeout", "timed out"), policy.routing.cooldown)
    assert edge.name in runtime.health.cooling()

    runtime.extra["local_model"].exited.set()
    await wait_for_state(runtime, "restarting")
    await wait_for_state(runtime, "ready")
    await runtime.stop()

    assert runtime.health.cooling() == {}


async def test_retry_after_follows_restart_delay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router.local_model, "LOCAL_MODEL_RESTART_DELAYS_S", (30.0,))
    runtime, _ = start_local_model(tmp_path, monkeypatch)
    await wait_for_state(runtime, "ready")
    assert runtime.local_model_retry_after_s() is None

    runtime.extra["local_model"].exited.set()
    # Exited but not yet noticed: the first restart delay plus the measured start.
    assert runtime.local_model_retry_after_s() == 32.5
    await wait_for_state(runtime, "restarting")
    wait = runtime.local_model_retry_after_s()
    await runtime.stop()

    # The 30 s delay plus the 2.5 s that the last start took, less the time since the exit.
    assert wait is not None
    assert 1.0 <= wait <= 32.5


def test_retry_after_by_state(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml", local_model=True)
    runtime = Runtime.build(make_settings(tmp_path, policy), StubScorer())

    for state in ("not_started", "disabled", "not_installed", "failed", "ready"):
        runtime.local_model_state = state
        assert runtime.local_model_retry_after_s() is None, state
    runtime.local_model_state = "starting"
    assert runtime.local_model_retry_after_s() == router.local_model.LOCAL_MODEL_EXPECTED_START_S
    # A start that takes longer than expected gets a wait of 1 s.
    runtime.local_model_serving_at = 0.0
    assert runtime.local_model_retry_after_s() == 1.0
    assert not runtime.local_model_stopped()  # no server was started


async def test_wait_for_exit_wakes_without_polling(tmp_path: Path) -> None:
    server = EdgeModelServer(model_dir=tmp_path)
    command = [sys.executable, "-c", "import time; time.sleep(3600)"]
    server._process = subprocess.Popen(command)  # noqa: ASYNC220 - the server holds a Popen
    # With an hour between polls, only the pidfd can end this wait.
    waiting = asyncio.create_task(server.wait_for_exit(poll_s=3600))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    server.kill()
    async with asyncio.timeout(30):
        reason = await waiting

    assert reason == "the llama.cpp server was killed by SIGKILL (exit code -9)"
    assert server.running is False


async def test_wait_for_exit_cancel_keeps_process(tmp_path: Path) -> None:
    server = EdgeModelServer(model_dir=tmp_path)
    command = [sys.executable, "-c", "import time; time.sleep(3600)"]
    server._process = subprocess.Popen(command)  # noqa: ASYNC220 - the server holds a Popen
    waiting = asyncio.create_task(server.wait_for_exit(poll_s=3600))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert server.running is True
    server.kill()
    assert await server.wait_for_exit() == "the llama.cpp server was killed by SIGKILL (exit code -9)"


async def test_probe_fails_for_stopped_process(tmp_path: Path, unused_tcp_port: int) -> None:
    # http.server replaces the llama.cpp server, and it also returns 404 for GET /health at once.
    command = [sys.executable, "-m", "http.server", str(unused_tcp_port), "--bind", "127.0.0.1"]
    server = EdgeModelServer(model_dir=tmp_path)
    server._process = subprocess.Popen(  # noqa: ASYNC220 - the server holds a Popen
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server._port = unused_tcp_port
    try:
        async with asyncio.timeout(30):
            while not await server.responds(1.0):
                await asyncio.sleep(0.05)
        server._process.send_signal(signal.SIGSTOP)
        stopped = await server.responds(0.5)
        server._process.send_signal(signal.SIGCONT)
        continued = await server.responds(5.0)
        server._process.send_signal(signal.SIGSTOP)
        server.kill()  # SIGKILL ends a stopped process too
        reason = await server.wait_for_exit()
    finally:
        await server.stop()

    assert stopped is False
    assert continued is True
    assert reason == "the llama.cpp server was killed by SIGKILL (exit code -9)"


def test_spawn_names_folder_after_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router.edge.tempfile, "tempdir", str(tmp_path))
    server = EdgeModelServer(model_dir=tmp_path)
    monkeypatch.setattr(
        server, "_server_command", lambda model_path, port: [sys.executable, "-c", "pass"]
    )
    server._spawn(tmp_path / "model.gguf", 8123)
    assert server._process is not None
    server._process.wait()

    assert server._workdir is not None
    assert server._workdir.parent == tmp_path
    assert server._workdir.name.startswith(f"tierwise-edge-{os.getpid()}-")
    assert router.edge.remove_orphaned_workdirs(tmp_path) == 0
    assert server._workdir.is_dir()


def pid_of_finished_process() -> int:
    """Return the pid of a process that has exited and been reaped."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    return int(finished.stdout)


def test_orphaned_workdirs_are_removed(tmp_path: Path) -> None:
    gone_pid = pid_of_finished_process()
    orphaned = tmp_path / f"tierwise-edge-{gone_pid}-ab12_x9"
    orphaned.mkdir()
    (orphaned / "server.log").write_text("output of a server whose gateway was killed\n")
    live = tmp_path / f"tierwise-edge-{os.getpid()}-cd34"
    live.mkdir()
    unowned = tmp_path / "tierwise-edge-qc59su4e"  # named by an earlier version: no pid
    unowned.mkdir()
    not_a_folder = tmp_path / f"tierwise-edge-{gone_pid}-ef56"
    not_a_folder.write_text("")
    other = tmp_path / f"other-{gone_pid}-gh78"
    other.mkdir()

    with capture_logs() as logs:
        removed = router.edge.remove_orphaned_workdirs(tmp_path)

    assert removed == 1
    assert not orphaned.exists()
    assert live.is_dir()
    assert unowned.is_dir()
    assert not_a_folder.is_file()
    assert other.is_dir()
    [entry] = events(logs, "edge_model.orphaned_workdirs_removed")
    assert entry["count"] == 1
    assert entry["folder"] == str(tmp_path)


def test_workdir_with_impossible_pid_is_kept(tmp_path: Path) -> None:
    # Any user can create such a folder in a shared temporary folder. os.kill raises
    # OverflowError for a pid beyond a C long, which must not stop the local model's start.
    foreign = tmp_path / f"tierwise-edge-{'9' * 30}-ab12"
    foreign.mkdir()
    orphaned = tmp_path / f"tierwise-edge-{pid_of_finished_process()}-cd34"
    orphaned.mkdir()

    removed = router.edge.remove_orphaned_workdirs(tmp_path)

    assert removed == 1
    assert foreign.is_dir()
    assert not orphaned.exists()


async def test_supervisor_starts_beside_impossible_pid_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router.edge.tempfile, "tempdir", str(tmp_path))
    (tmp_path / f"tierwise-edge-{'9' * 30}-ab12").mkdir()

    runtime, _ = start_local_model(tmp_path, monkeypatch)
    try:
        await wait_for_state(runtime, "ready")
    finally:
        await runtime.stop()

    assert runtime.local_model_state == "ready"


async def test_supervisor_removes_orphaned_workdirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router.edge.tempfile, "tempdir", str(tmp_path))
    orphaned = tmp_path / f"tierwise-edge-{pid_of_finished_process()}-ab12"
    orphaned.mkdir()

    with capture_logs() as logs:
        runtime, _ = start_local_model(tmp_path, monkeypatch)
        await wait_for_state(runtime, "ready")
    await runtime.stop()

    assert not orphaned.exists()
    assert [entry["count"] for entry in events(logs, "edge_model.orphaned_workdirs_removed")] == [1]


async def test_stop_continues_after_failed_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, _ = start_local_model(tmp_path, monkeypatch)
    await wait_for_state(runtime, "ready")

    async def broken_supervisor() -> None:
        raise OverflowError("signed integer is greater than maximum")

    async def broken_stop() -> None:
        raise OSError("no such process")

    runtime.extra["local_model_task"].cancel()
    runtime.extra["local_model_task"] = asyncio.create_task(broken_supervisor())
    await asyncio.sleep(0)  # the task fails before stop() cancels it
    runtime.extra["local_model"].stop = broken_stop
    flushed: list[bool] = []
    original_stop = runtime.outcomes.stop

    async def recorded_stop() -> None:
        flushed.append(True)
        await original_stop()

    monkeypatch.setattr(runtime.outcomes, "stop", recorded_stop)
    with capture_logs() as logs:
        await runtime.stop()

    assert flushed == [True]
    failed = events(logs, "shutdown_step_failed")
    assert [line["step"] for line in failed] == ["local_model_task", "local_model"]
    assert failed[0]["error"] == "OverflowError"
    assert failed[1]["error"] == "OSError"


async def test_edge_server_stop_ends_stopped_process(tmp_path: Path) -> None:
    server = EdgeModelServer(model_dir=tmp_path)
    server.stop_grace_s = 30.0
    # Like uvicorn in the llama.cpp server, the child handles SIGTERM itself, so a stopped
    # child would act on it only after SIGCONT.
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)  # noqa: ASYNC220
    server._process = process
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    process.send_signal(signal.SIGSTOP)

    with capture_logs() as logs:
        await asyncio.wait_for(server.stop(), timeout=10)

    # SIGTERM took effect without the SIGKILL that follows the grace period.
    assert process.returncode == 0
    assert events(logs, "edge_model.kill") == []
    process.stdout.close()
