"""Start a whole replay stack as processes: three replay upstreams, a policy, and the gateway.

Each replay upstream runs as ``python -m tests.support.replay_upstream`` and the gateway as
``python -m router serve``, all on 127.0.0.1 and in separate processes, so a benchmark driver
in this process competes with neither for the GIL. :func:`run_replay_stack` stops every process
it started on exit, also when the body raises.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import structlog

from tests.support.fixtures import TierModel, TierUpstream, write_policy
from tests.support.recorded import BENCH_SOURCES, repo_root
from tests.support.replay_upstream import bind_socket

STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
log = structlog.get_logger(__name__)


class StackStartError(RuntimeError):
    """Raised when a replay upstream or the gateway does not come up; the message names its log."""


@dataclass(frozen=True, slots=True)
class ReplayStack:
    """A running stack: the gateway's OpenAI base URL, the policy it serves, and the upstreams."""

    gateway_url: str
    policy_path: Path
    upstreams: dict[str, TierUpstream]
    workdir: Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (another process may take it)."""
    with bind_socket(0) as sock:
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[str], name: str) -> None:
    """Terminate ``process``, and kill it when it has not exited within 15 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("process did not stop, killing it", process=name, pid=process.pid)
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    log.info("process stopped", process=name, pid=process.pid, returncode=process.returncode)


def _read_line(stream: IO[str], timeout_s: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return ""
    return stream.readline()


def start_replay_process(
    spec: TierModel, log_path: Path, sources: frozenset[str], extra_args: Sequence[str] = ()
) -> tuple[subprocess.Popen[str], str]:
    """Start one replay upstream process for ``spec.model`` and return it with its base URL.

    Raises:
        StackStartError: the process exited or printed no URL within 120 s (see ``log_path``).
    """
    command = [
        sys.executable, "-m", "tests.support.replay_upstream",
        "--model", spec.model, "--sources", ",".join(sorted(sources)), *extra_args,
    ]  # fmt: skip
    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            command, cwd=repo_root(), stdout=subprocess.PIPE, stderr=log_file, text=True
        )
    assert process.stdout is not None
    banner = _read_line(process.stdout, STARTUP_TIMEOUT_S)
    if not banner.strip().startswith("replay upstream"):
        stop_process(process, f"replay {spec.model}")
        raise StackStartError(f"replay upstream for {spec.model} did not start; see {log_path}")
    return process, banner.rsplit(" ", 1)[-1].strip()


def wait_ready(base: str, process: subprocess.Popen[str], log_path: Path) -> None:
    """Poll ``base``/readyz until it returns HTTP 200.

    Raises:
        StackStartError: the gateway exited or was not ready within 120 s (see ``log_path``).
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackStartError(
                f"gateway exited with status {process.returncode}; see {log_path}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise StackStartError(f"gateway not ready after {STARTUP_TIMEOUT_S:.0f} s; see {log_path}")


def start_gateway(
    policy_path: Path, workdir: Path, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m router serve`` on a free port and return it with its OpenAI base URL.

    The local edge model stays off (``--no-local-model``) because the policy's edge tier is a
    replay upstream. Outcome records go to ``workdir`` and the log to ``workdir/gateway.log``.

    Raises:
        StackStartError: the gateway did not become ready.
    """
    port = free_port()
    log_path = workdir / "gateway.log"
    command = [
        sys.executable, "-m", "router", "serve", "--policy", str(policy_path), "--port", str(port),
        "--no-local-model", "--log-format", "json",
    ]  # fmt: skip
    process_env = {**os.environ, "TIERWISE_DATA_DIR": str(workdir), **(env or {})}
    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            command,
            cwd=repo_root(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=process_env,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, log_path)
    except StackStartError:
        stop_process(process, "gateway")
        raise
    return process, f"{base}/v1"


@contextlib.contextmanager
def run_replay_stack(
    stack: Sequence[TierModel],
    workdir: Path,
    *,
    thresholds: Mapping[str, float] | None = None,
    sources: frozenset[str] = BENCH_SOURCES,
    replay_args: Sequence[str] = (),
    gateway_env: Mapping[str, str] | None = None,
) -> Iterator[ReplayStack]:
    """Start replay upstreams for ``stack``, write a policy to ``workdir`` and start the gateway.

    ``replay_args`` go to every replay upstream's command line (for example delays).
    Every started process is stopped on exit. Raises :class:`StackStartError`.
    """
    processes: list[tuple[str, subprocess.Popen[str]]] = []
    try:
        upstreams: dict[str, TierUpstream] = {}
        for spec in stack:
            process, url = start_replay_process(
                spec, workdir / f"replay-{spec.tier}.log", sources, replay_args
            )
            processes.append((f"replay {spec.model}", process))
            upstreams[spec.tier] = TierUpstream(spec, url)
        policy_path = write_policy(
            workdir / "policy.yaml", upstreams.values(), thresholds=thresholds
        )
        gateway, gateway_url = start_gateway(policy_path, workdir, gateway_env)
        processes.append(("gateway", gateway))
        log.info("replay stack ready", gateway=gateway_url, workdir=str(workdir))
        yield ReplayStack(gateway_url, policy_path, upstreams, workdir)
    finally:
        for name, process in reversed(processes):
            stop_process(process, name)
