"""The systems under test: the mock upstream, Tierwise, and LiteLLM's proxy.

Each ``start_*`` function returns a started ``ManagedProcess`` and the URLs to use.
Tierwise and LiteLLM get configurations of the same size: three deployments that all
point at the mock, reached through one public model name, ``auto``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.harness import CLIENT_CPU, REPO_ROOT, SERVER_CPU, ManagedProcess, free_port

LITELLM_VERSION = "1.108.7"
LITELLM_VENV = REPO_ROOT / "bench" / ".venv-litellm"
TIERS = ("edge", "mid", "frontier")
PUBLIC_MODEL = "auto"


@dataclass
class Target:
    """A running server and the URLs a client uses."""

    name: str
    process: ManagedProcess | None
    chat_url: str
    ready_url: str
    startup_s: float | None = None
    api_key: str | None = None


def start_mock(workdir: Path, chunks: int = 20, delay_ms: float = 0.0) -> Target:
    """Start the mock upstream on the client core and wait until it is ready."""
    port = free_port()
    process = ManagedProcess(
        "mock",
        [sys.executable, "-m", "bench.mock_upstream", "--port", str(port), "--chunks", str(chunks),
         "--delay-ms", str(delay_ms)],
        workdir / "mock.log",
        cpu=CLIENT_CPU,
    ).start()
    base = f"http://127.0.0.1:{port}"
    target = Target("direct", process, f"{base}/v1/chat/completions", f"{base}/health")
    target.startup_s = process.wait_ready(target.ready_url, timeout_s=30)
    return target


def write_tierwise_policy(path: Path, mock_base: str, cache: bool = False) -> Path:
    """Write a three-tier policy whose deployments all point at the mock.

    The ``auto`` alias makes the classifier score every request.  Windows are large, so
    the context check takes the cheap byte-count path as it would for most real prompts.
    """
    tiers = {
        tier: {"deployments": [{
            "name": f"mock-{tier}",
            "model": f"openai/mock-{tier}",
            "api_base": f"{mock_base}/v1",
            "price": {"input_per_million": 0.1 * (index + 1), "output_per_million": 0.4 * (index + 1)},
            "context_window": 128000,
            "timeout_s": 30,
        }]}
        for index, tier in enumerate(TIERS)
    }
    policy = {
        "version": 1,
        "name": "bench",
        "aliases": {PUBLIC_MODEL: {"description": "Routed by the classifier."}},
        "tiers": tiers,
        "routing": {"thresholds": {"edge": 0.8, "mid": 0.65}},
        "cache": {"enabled": cache, "ttl_s": 3600, "max_entries": 10000},
    }
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def start_tierwise(
    workdir: Path,
    mock_base: str,
    cache: bool = False,
    redis_url: str | None = None,
    checkout: Path = REPO_ROOT,
    extra_env: dict[str, str] | None = None,
) -> Target:
    """Start ``python -m router serve`` on the server core with the bench policy.

    ``checkout`` is the source tree to run, so that two versions can be compared;
    ``extra_env`` adds settings (``TIERWISE_*`` variables).
    """
    port = free_port()
    policy = write_tierwise_policy(workdir / "tierwise-policy.yaml", mock_base, cache)
    argv = [sys.executable, "-m", "router", "serve", "--policy", str(policy), "--port", str(port),
            "--no-local-model", "--log-format", "json"]
    env = {"TIERWISE_DATA_DIR": str(workdir / "tierwise-data")}
    if redis_url:
        env["TIERWISE_REDIS_URL"] = redis_url
    env.update(extra_env or {})
    process = ManagedProcess(
        "tierwise", argv, workdir / "tierwise.log", SERVER_CPU, env, cwd=checkout
    ).start()
    base = f"http://127.0.0.1:{port}"
    target = Target("tierwise", process, f"{base}/v1/chat/completions", f"{base}/readyz")
    target.startup_s = process.wait_ready(target.ready_url)
    return target


def start_floor(workdir: Path, mock_base: str) -> Target:
    """Start the bare pass-through of ``bench.floor_proxy`` on the server core."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.floor_proxy", "--port", str(port), "--upstream", mock_base]
    process = ManagedProcess("floor", argv, workdir / "floor.log", SERVER_CPU, cwd=REPO_ROOT).start()
    base = f"http://127.0.0.1:{port}"
    target = Target("floor", process, f"{base}/v1/chat/completions", f"{base}/ready")
    target.startup_s = process.wait_ready(target.ready_url)
    return target


def ensure_litellm_venv() -> Path:
    """Create bench/.venv-litellm with ``litellm[proxy]`` once; return its ``litellm`` command.

    Raises RuntimeError when pip fails (its output is in bench/results/litellm-install.log).
    """
    command = LITELLM_VENV / "bin" / "litellm"
    marker = LITELLM_VENV / f"installed-{LITELLM_VERSION}"
    if command.exists() and marker.exists():
        return command
    pip = LITELLM_VENV / "bin" / "pip"
    log_path = REPO_ROOT / "bench" / "results" / "litellm-install.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        steps = [[sys.executable, "-m", "venv", str(LITELLM_VENV)],
                 [str(pip), "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"]]
        for step in steps:
            if subprocess.run(step, stdout=log_file, stderr=subprocess.STDOUT, check=False).returncode:
                raise RuntimeError(f"{' '.join(step)} failed; see {log_path}")
    marker.touch()
    return command


def write_litellm_config(path: Path, mock_base: str) -> Path:
    """Write a proxy config with three deployments of the public model, all at the mock."""
    model_list = [
        {"model_name": PUBLIC_MODEL,
         "litellm_params": {"model": f"openai/mock-{tier}", "api_base": f"{mock_base}/v1",
                            "api_key": "not-needed"}}
        for tier in TIERS
    ]
    path.write_text(yaml.safe_dump({"model_list": model_list}, sort_keys=False))
    return path


def start_litellm(workdir: Path, mock_base: str) -> Target:
    """Start LiteLLM's proxy (one uvicorn worker, default settings) on the server core."""
    command = ensure_litellm_venv()
    port = free_port()
    config = write_litellm_config(workdir / "litellm-config.yaml", mock_base)
    argv = [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1"]
    # There is no internet here: the bundled cost map replaces the download at start-up.
    # The proxy refuses to start without a master key, and clients must then send it.
    master_key = f"sk-{secrets.token_hex(32)}"
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MASTER_KEY": master_key,
        "PATH": f"{command.parent}:{os.environ['PATH']}",
    }
    process = ManagedProcess("litellm", argv, workdir / "litellm.log", SERVER_CPU, env).start()
    base = f"http://127.0.0.1:{port}"
    target = Target("litellm", process, f"{base}/v1/chat/completions", f"{base}/health/readiness",
                    api_key=master_key)
    target.startup_s = process.wait_ready(target.ready_url, timeout_s=180)
    return target
