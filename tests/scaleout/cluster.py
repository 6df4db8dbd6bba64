"""Start a throwaway three-master Redis Cluster on 127.0.0.1 for the cluster tests."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from tests.support.stack import free_port

MASTERS = 3
START_WAIT_S = 20.0


def missing_tools() -> list[str]:
    """Return the names of the Redis programs that are not on PATH."""
    return [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]


@contextlib.contextmanager
def running_cluster(base: Path) -> Iterator[list[int]]:
    """Start three cluster-enabled redis-servers, join them as masters, and yield their ports.

    Each node has its own folder under ``base`` and a cluster bus port of its own (set with
    ``cluster-port``, because ``port + 10000`` may be taken or above 65535).  Raises
    RuntimeError when a node does not start or the cluster does not reach ``cluster_state:ok``.
    """
    ports = [free_port() for _ in range(MASTERS)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            processes.append(_start_node(base / f"node-{port}", port))
        for port in ports:
            _wait_for_ping(port)
        addresses = [f"127.0.0.1:{port}" for port in ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        for port in ports:
            _wait_for_cluster_ok(port)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _start_node(folder: Path, port: int) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True)
    command = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
        "--cluster-config-file", str(folder / "nodes.conf"), "--dir", str(folder),
        "--save", "", "--appendonly", "no", "--logfile", str(folder / "redis.log"),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_ping(port: int) -> None:
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + START_WAIT_S
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    return
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"redis-server on 127.0.0.1:{port} did not start within {START_WAIT_S} s")


def _wait_for_cluster_ok(port: int) -> None:
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + START_WAIT_S
    try:
        while time.monotonic() < deadline:
            info: Any = client.cluster("info")
            if info.get("cluster_state") == "ok":
                return
            time.sleep(0.1)
    finally:
        client.close()
    raise RuntimeError(f"the cluster node on port {port} did not reach cluster_state:ok")
