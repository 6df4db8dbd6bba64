"""Process plumbing shared by the benchmarks: start, pin, probe and measure servers.

Linux only: CPU time and memory come from ``/proc/PID/stat`` and ``/proc/PID/status``.
CPU time of a server is summed over the process and every descendant, because some
servers run their workers as child processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The two cores of the reference machine: servers under test on one, clients on the other.
SERVER_CPU = 0
CLIENT_CPU = 1


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pin_self(cpu: int) -> None:
    """Restrict this process to ``cpu`` when the machine has it; otherwise leave it alone."""
    if cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.extend(int(child) for child in text.split())
    return found


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and all its live descendants."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(_children(current))
    return tree


def cpu_seconds(pid: int) -> float:
    """Return user plus system CPU seconds used so far by ``pid`` and its descendants.

    The kernel counts in clock ticks (usually 10 ms), so a delta is only meaningful over
    hundreds of requests.  Time of descendants that already exited is not included.
    """
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # Fields 14 and 15 of stat(5) are utime and stime; the split above starts at field 3.
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def memory_kb(pid: int) -> dict[str, int]:
    """Return ``rss_kb`` (VmRSS) and ``peak_rss_kb`` (VmHWM) summed over the process tree."""
    totals = {"rss_kb": 0, "peak_rss_kb": 0}
    names = {"VmRSS:": "rss_kb", "VmHWM:": "peak_rss_kb"}
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in lines:
            parts = line.split()
            if parts and parts[0] in names:
                totals[names[parts[0]]] += int(parts[1])
    return totals


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """Return whether a GET of ``url`` returns status 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@dataclass
class ManagedProcess:
    """A server started by a benchmark, pinned to one CPU, with its output in a log file."""

    name: str
    argv: list[str]
    log_path: Path
    cpu: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO_ROOT
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self.process.pid

    def start(self) -> ManagedProcess:
        argv = list(self.argv)
        if self.cpu is not None and self.cpu < (os.cpu_count() or 1):
            argv = ["taskset", "-c", str(self.cpu), *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("wb")
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,
        )
        log_file.close()
        return self

    def wait_ready(self, url: str, timeout_s: float = 120.0) -> float:
        """Poll ``url`` until it returns status 200; return the seconds since start.

        Raises RuntimeError (with the log's tail) when the process exits or the time runs out.
        """
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            if http_ok(url, timeout_s=0.5):
                return time.perf_counter() - self.started_at
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready at {url}; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> None:
        """Send SIGINT (a graceful shutdown), then SIGKILL to the process group if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
