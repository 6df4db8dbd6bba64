"""Count the gateway's instructions per request under callgrind, for one checkout or several.

CPU time per request moves by 10% or more between runs on a shared machine, so a change of
a few percent does not show in ``bench.overhead``.  Instruction counts do not depend on
what else runs on the machine.  This script starts the mock upstream and the gateway as
``bench.overhead`` does (bench policy, ``auto`` alias, JSON log lines to a file, outcomes
to the local file), but the gateway runs under ``valgrind --tool=callgrind``.  For each
cell (mode and concurrency) it sends warm-up requests, resets the counters with
``callgrind_control --zero``, sends the measured requests, and writes the counters with
``callgrind_control --dump``.  The figure is the dump's instruction count (all threads of
the gateway, user space only) divided by the completed requests, after subtracting what
the idle gateway executes in the same wall time (measured once per gateway before the
cells).  ``PYTHONHASHSEED=0`` makes string hashing, and with it set and dict layouts, the
same in every run.

The idle work (uvicorn's 0.1 s tick, the outcome log's 0.2 s flush) follows the wall
clock, which under callgrind depends on the machine's load, so the subtraction is an
estimate.  On a shared 2-core VM it was 1% to 4% of a json request, and runs of the same
code differed by up to 1.6% while other jobs ran (0.6% when they did not).  Use
``--repetitions 3`` to judge a change of about 1%.  The counts cover user space only, so
work saved in the kernel (fewer system calls) does not show.

Run from the repository root (needs ``valgrind`` and ``callgrind_control``):

    python -m bench.instructions                                 # this checkout
    python -m bench.instructions --checkout /tmp/old --checkout .  # A/B, ratios to the first
    python -m bench.instructions --modes json --concurrency 16 --annotate 40
    python -m bench.instructions --floor      # and bench.floor_proxy, ratios to this checkout

With several checkouts, each checkout's gateway runs every cell in turn, and the checkouts
alternate for ``--repetitions`` rounds.  Figures are medians over the rounds.  The dumps
stay in ``bench/results/instructions-*/`` for ``callgrind_annotate --inclusive=yes FILE``.
Callgrind records C functions only, so Python code appears as the interpreter's frames. A
ranking can name the C functions of extensions (orjson, numpy, llhttp, uvloop) and of the
builtins that Python code calls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import (
    CLIENT_CPU,
    REPO_ROOT,
    RESULTS_DIR,
    SERVER_CPU,
    free_port,
    http_ok,
    pin_self,
)
from bench.loadgen import LoadConfig, build_bodies, run
from bench.prompts import load_prompts
from bench.targets import start_mock, write_tierwise_policy

STREAM_CHUNKS = 20
CLIENT_KEY = "sk-bench-client"
IDLE_SECONDS = 5.0
# Under callgrind the gateway runs about 50 times slower, so requests need long timeouts.
STARTUP_TIMEOUT_S = 600.0
PHASE_TIME_LIMIT_S = 1800.0


@dataclass
class Cell:
    """One measured phase: its mode, concurrency and the figures of every round."""

    mode: str
    concurrency: int
    per_request: list[float] = field(default_factory=list)
    idle_per_request: list[float] = field(default_factory=list)
    """The idle instructions subtracted from each round's figure."""
    dumps: list[Path] = field(default_factory=list)
    errors: int = 0


class CallgrindGateway:
    """A gateway running under callgrind, with its counters reset and dumped on request.

    The gateway is Tierwise from ``checkout``, or with ``floor`` the bare pass-through of
    ``bench.floor_proxy`` from this checkout.
    """

    def __init__(self, checkout: Path, workdir: Path, mock_base: str, floor: bool = False) -> None:
        self.checkout = checkout
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        if floor:
            server = ["bench.floor_proxy", "--port", str(self.port), "--upstream", mock_base]
            self.ready_url = f"http://127.0.0.1:{self.port}/ready"
        else:
            policy = write_tierwise_policy(workdir / "policy.yaml", mock_base)
            server = [
                "router",
                "serve",
                "--policy",
                str(policy),
                "--port",
                str(self.port),
                "--no-local-model",
                "--log-format",
                "json",
            ]
            self.ready_url = f"http://127.0.0.1:{self.port}/readyz"
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={workdir}/callgrind.out.%p",
            sys.executable,
            "-m",
            *server,
        ]
        if SERVER_CPU < (os.cpu_count() or 1):
            argv = ["taskset", "-c", str(SERVER_CPU), *argv]
        env = {
            **os.environ,
            "TIERWISE_DATA_DIR": str(workdir / "data"),
            "PYTHONPATH": str(checkout),
            "PYTHONHASHSEED": "0",
        }
        with (workdir / "gateway.log").open("wb") as log_file:
            self.process = subprocess.Popen(
                argv,
                cwd=checkout,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        self._dumps_seen: set[Path] = set()

    def wait_ready(self) -> None:
        """Poll the ready URL until it returns 200. Raises RuntimeError when the gateway exits first."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if http_ok(self.ready_url, timeout_s=5.0):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"the gateway under callgrind did not become ready; see {self.workdir}/gateway.log"
        )

    def _control(self, option: str) -> None:
        subprocess.run(
            ["callgrind_control", option, str(self.process.pid)],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def zero(self) -> None:
        self._control("--zero")

    def dump(self) -> tuple[Path, int]:
        """Write the counters to a new dump file, and return its path and instruction count."""
        self._control("--dump")
        # callgrind names the dumps callgrind.out.PID.1, .2, ... in dump order.
        pattern = f"callgrind.out.{self.process.pid}.*"
        new = sorted(
            set(self.workdir.glob(pattern)) - self._dumps_seen,
            key=lambda path: int(path.suffix[1:]),
        )
        if not new:
            raise RuntimeError(f"callgrind wrote no dump in {self.workdir}")
        path = new[-1]
        self._dumps_seen.update(new)
        return path, dump_instructions(path)

    def stop(self) -> None:
        """Send SIGINT and wait for the gateway, and kill its process group if it lingers."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(2)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=10)


def dump_instructions(path: Path) -> int:
    """Return the instruction count (``Ir``) of a callgrind dump, from its totals line."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals line in {path}")


def measure_idle(gateway: CallgrindGateway) -> float:
    """Return the instructions per second that the gateway executes with no request."""
    gateway.zero()
    started = time.perf_counter()
    time.sleep(IDLE_SECONDS)
    _, count = gateway.dump()
    return count / (time.perf_counter() - started)


def measure_cell(
    gateway: CallgrindGateway,
    cell: Cell,
    prompts: list[str],
    requests: int,
    warmup: int,
    idle_rate: float,
) -> None:
    """Run one cell against ``gateway`` and append its instructions per request to ``cell``."""
    marks: dict[str, float] = {}
    dump: list[tuple[Path, int]] = []

    def before() -> None:
        gateway.zero()
        marks["start"] = time.perf_counter()

    def after() -> None:
        marks["end"] = time.perf_counter()
        dump.append(gateway.dump())

    config = LoadConfig(
        url=gateway.url,
        stream=cell.mode == "stream",
        concurrency=cell.concurrency,
        requests=requests,
        warmup=warmup,
        time_limit_s=PHASE_TIME_LIMIT_S,
        api_key=CLIENT_KEY,
    )
    result = run(config, build_bodies(prompts, config), "tierwise", before, after)
    path, count = dump[0]
    idle = idle_rate * (marks["end"] - marks["start"])
    cell.per_request.append((count - idle) / max(result.completed, 1))
    cell.idle_per_request.append(idle / max(result.completed, 1))
    cell.dumps.append(path)
    cell.errors += result.errors


def annotate(path: Path, top: int) -> str:
    """Return the ``top`` functions of a dump by inclusive instructions, outside the interpreter.

    The interpreter's own functions are left out, because every Python call nests in them, so
    the list names the extension modules and libraries that Python code calls.
    """
    output = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("file:function")) + 2
    rows = [line for line in lines[start:] if line.strip() and "(" in line]
    rows = [line for line in rows if "/Python-3." not in line and "???" not in line]
    return "\n".join(rows[:top])


def self_cost_by_object(path: Path) -> dict[str, int]:
    """Return the own instructions of a dump per object file (the interpreter, numpy, uvloop ...).

    Parses callgrind's format (``ob=``, ``fn=`` and cost lines, with name compression). The
    cost line after each ``calls=`` line is the called function's inclusive cost, so it is
    skipped.
    """
    names: dict[str, str] = {}
    totals: dict[str, int] = {}
    current = "?"
    skip_next = False
    with path.open(errors="replace") as dump:
        for line in dump:
            if line.startswith("ob="):
                current = _compressed_name(line[3:].strip(), names)
            elif line.startswith("cob="):
                _compressed_name(line[4:].strip(), names)  # may define a name used later
            elif line.startswith("calls="):
                skip_next = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                fields = line.split()
                if len(fields) >= 2:
                    totals[current] = totals.get(current, 0) + int(fields[1])
    return totals


def _compressed_name(text: str, names: dict[str, str]) -> str:
    # "(3) /path" defines id 3, and a later "(3)" refers to it.
    if text.startswith("("):
        key, _, name = text.partition(")")
        name = name.strip()
        if name:
            names[key] = name
        return Path(names.get(key, name)).name
    return Path(text).name


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkout",
        type=Path,
        action="append",
        default=[],
        help="Tierwise source tree to measure; repeat for an A/B (ratios are to the first). "
        "Default: this checkout.",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="Measure bench.floor_proxy (a bare pass-through on the same HTTP stack) as well.",
    )
    parser.add_argument("--modes", default="json,stream", help="Comma-separated: json, stream.")
    parser.add_argument("--concurrency", default="1,16", help="Comma-separated levels.")
    parser.add_argument("--requests", type=int, default=300, help="Measured requests per cell.")
    parser.add_argument(
        "--warmup", type=int, default=100, help="Requests before each measured phase."
    )
    parser.add_argument(
        "--repetitions",
        type=int,
        default=1,
        help="Rounds; each round starts every checkout's gateway afresh.",
    )
    parser.add_argument(
        "--by-object",
        action="store_true",
        help="Print each cell's own instructions per request by object file (libpython, numpy ...).",
    )
    parser.add_argument(
        "--annotate",
        type=int,
        default=0,
        metavar="N",
        help="Print the N functions with the most inclusive instructions of each cell.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit(
            "error: valgrind and callgrind_control are needed (Debian package valgrind)"
        )
    pin_self(CLIENT_CPU)
    checkouts = [path.resolve() for path in args.checkout] or [Path.cwd().resolve()]
    # (label, source tree, whether it is the floor proxy)
    targets = [(str(path), path, False) for path in checkouts]
    if args.floor:
        targets.append(("floor", REPO_ROOT, True))
    modes = [mode for mode in ("json", "stream") if mode in args.modes.split(",")]
    levels = [int(level) for level in args.concurrency.split(",")]
    workdir = RESULTS_DIR / f"instructions-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir.mkdir(parents=True, exist_ok=True)
    prompts, origin = load_prompts()
    print(
        f"prompts: {origin}; {args.requests} measured requests per cell after {args.warmup}",
        flush=True,
    )

    cells = {
        (index, mode, level): Cell(mode, level)
        for index in range(len(targets))
        for mode in modes
        for level in levels
    }
    mock = start_mock(workdir, chunks=STREAM_CHUNKS)
    mock_base = mock.chat_url.removesuffix("/v1/chat/completions")
    try:
        for round_index in range(args.repetitions):
            for index, (label, checkout, floor) in enumerate(targets):
                gateway = CallgrindGateway(
                    checkout, workdir / f"round{round_index + 1}-target{index + 1}", mock_base, floor
                )
                try:
                    gateway.wait_ready()
                    idle_rate = measure_idle(gateway)
                    for mode in modes:
                        for level in levels:
                            cell = cells[(index, mode, level)]
                            measure_cell(
                                gateway, cell, prompts, args.requests, args.warmup, idle_rate
                            )
                            print(
                                f"  round {round_index + 1} {label} {mode} c={level}: "
                                f"{cell.per_request[-1]:,.0f} instructions/request "
                                f"({cell.idle_per_request[-1]:,.0f} idle ones subtracted)",
                                flush=True,
                            )
                finally:
                    gateway.stop()
    finally:
        assert mock.process is not None
        mock.process.stop()

    print("\n| checkout | mode | conc | instructions per request | idle estimate subtracted "
          "| ratio to first | errors |")
    print("|---|---|---|---|---|---|---|")
    for (index, mode, level), cell in cells.items():
        median = statistics.median(cell.per_request)
        first = statistics.median(cells[(0, mode, level)].per_request)
        print(
            f"| {targets[index][0]} | {mode} | {level} | {median:,.0f} "
            f"| {statistics.median(cell.idle_per_request):,.0f} | {median / first:.3f} "
            f"| {cell.errors} |"
        )
    if args.by_object:
        for (index, mode, level), cell in cells.items():
            requests = args.requests
            costs = sorted(self_cost_by_object(cell.dumps[-1]).items(), key=lambda item: -item[1])
            print(f"\n{targets[index][0]} {mode} c={level}, own instructions per request by object:")
            for name, count in costs[:12]:
                print(f"  {count / requests:>12,.0f}  {name}")
    if args.annotate:
        for (index, mode, level), cell in cells.items():
            print(f"\n{targets[index][0]} {mode} c={level}, whole phase ({cell.dumps[-1]}):")
            print(annotate(cell.dumps[-1], args.annotate))
    print(f"\ndumps: {workdir}")


if __name__ == "__main__":
    main()
