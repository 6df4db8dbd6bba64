"""Prove that three gateway replicas sharing one Redis scale out without losing work.

The run starts three replay upstreams (in this process), three ``tierwise serve`` processes
on one Redis database, and ``tierwise outcomes export --follow``.  It sends replay traffic
round-robin, every third request streamed, and while requests are in flight it:

1. publishes a new classifier and a new policy, and times until every replica reports
   both in /readyz (new requests wait for that, so later requests test the new versions);
2. publishes a corrupt classifier, which every replica must reject and report (it stays
   current, so the replica started in step 4 must fall back to the good one);
3. kills the exporter with SIGKILL and starts it again;
4. sends SIGTERM to one replica and SIGKILL to another, and starts a new process on the
   killed replica's data folder (as Kubernetes restarts a container on the same emptyDir
   volume), which delivers the killed process's spool and joins the rotation.

The driver acts like a load balancer: a replica that refuses a connection, or closes one
without a response, is taken out of the rotation and the request is sent to the next one
under a new request id.  Then the run checks that:

- every request that a replica answered succeeded, except those cut by the SIGKILL;
- the outcome stream holds exactly one record per accepted request (any response from a
  replica that was not SIGKILLed, and every complete response from the SIGKILLed one), and
  none for a request that no replica answered; a response cut by the SIGKILL may have one;
- no spool segment is left in any replica's data folder;
- requests sent after the versions converged carry the new versions in their records;
- the exporter's files hold every stream entry of the run exactly once.

Example (from the repository root; needs the public data folder and a Redis):

    python bench/replicas.py --requests 600 --redis-url redis://127.0.0.1:6379/14

The run clears and then uses the ``{tw}`` keys of that database, under a lock that the
scale-out tests also take; gateways of other deployments must not share the database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    # Run as a script, only bench/ is on the path, and the helpers live in the repository.
    sys.path.insert(0, str(REPO_ROOT))

from bench.replica_checks import (
    STREAM_KEY,
    Attempt,
    ProofReport,
    Replica,
    Versions,
    check_attempts,
    check_convergence_limit,
    check_export,
    check_records,
    check_spools,
    check_versions,
    print_report,
    run_records,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
REQUEST_TIMEOUT_S = 60.0
CONVERGENCE_WAIT_S = 30.0
# Fractions of the requests sent when each step starts.
PUBLISH_AT, BAD_PUBLISH_AT, EXPORTER_KILL_AT, SIGTERM_AT, SIGKILL_AT = 0.2, 0.4, 0.5, 0.6, 0.75


@dataclass(frozen=True)
class ProofConfig:
    """Size and targets of one run; ``convergence_limit_s`` is the allowed rollout time."""

    workdir: Path
    requests: int = 600
    concurrency: int = 8
    redis_url: str = DEFAULT_REDIS_URL
    classifier: Path | None = None
    """Artifact the replicas start with; the bundled model when None."""
    convergence_limit_s: float = 5.0
    seed: int = 0


# Processes -----------------------------------------------------------------------------------


def launch_replica(
    name: str, data_dir: Path, policy: Path, classifier: Path, redis_url: str, workdir: Path
) -> Replica:
    """Start one gateway process whose data folder (and so spool folder) is ``data_dir``."""
    from tests.support.stack import free_port

    port = free_port()
    log_path = workdir / f"{name}.log"
    command = [
        sys.executable, "-m", "router", "serve", "--policy", str(policy), "--port", str(port),
        "--redis-url", redis_url, "--classifier", str(classifier), "--no-local-model",
        "--log-format", "json",
    ]  # fmt: skip
    env = {**os.environ, "TIERWISE_DATA_DIR": str(data_dir)}
    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env, text=True
        )
    return Replica(name, process, f"http://127.0.0.1:{port}", log_path)


def start_replicas(
    count: int, policy: Path, classifier: Path, redis_url: str, workdir: Path
) -> list[Replica]:
    """Start ``count`` gateway processes at once and wait until each is ready (/readyz)."""
    from tests.support.stack import wait_ready

    replicas = [
        launch_replica(
            f"replica-{n}", workdir / f"replica-{n}", policy, classifier, redis_url, workdir
        )
        for n in range(count)
    ]
    for replica in replicas:
        wait_ready(replica.base, replica.process, replica.log_path)
    return replicas


def start_exporter(
    config: ProofConfig, group: str, start_id: str, follow: bool
) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "router", "outcomes", "export", "--redis-url", config.redis_url,
        "--out", str(config.workdir / "export"), "--group", group, "--start-id", start_id,
        "--batch", "50", "--log-format", "json", *(["--follow"] if follow else []),
    ]  # fmt: skip
    with (config.workdir / "exporter.log").open("a", encoding="utf-8") as log_file:
        return subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_file, stderr=log_file, text=True)


def signal_replica(replica: Replica, signum: signal.Signals) -> None:
    replica.process.send_signal(signum)
    replica.signal_sent, replica.signal_at = signum.name, time.monotonic()


# Artifacts and policies ----------------------------------------------------------------------


def copy_artifact(source: Path, target: Path, version: str, corrupt: bool = False) -> Path:
    """Copy an artifact folder under a new model version; ``corrupt`` damages the weights."""
    shutil.copytree(source, target)
    metadata = json.loads((target / "model.json").read_text(encoding="utf-8"))
    metadata["version"] = version
    (target / "model.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    if corrupt:
        weights = target / metadata["weights_file"]
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    return target


def publish_new_versions(redis_client: Any, classifier: Path, policy: Path) -> Versions:
    """Verify and publish ``classifier`` and ``policy`` as the CLI does; return their versions."""
    from router.distribution import (
        classifier_bundle,
        policy_bundle,
        publish_bundle,
        verify_classifier,
        verify_policy,
    )  # fmt: skip
    from router.distribution.verify import threshold_tiers
    from router.policy.loader import load_policy

    policy_version = load_policy(policy).version
    policy_files = policy_bundle(policy, policy_version)
    classifier_files = classifier_bundle(classifier)
    scorer = verify_classifier(classifier_files, threshold_tiers(verify_policy(policy_files)))
    verify_policy(policy_files, scorer.tiers)
    publish_bundle(redis_client, classifier_files)
    publish_bundle(redis_client, policy_files)
    return Versions(classifier_files.version, policy_version)


def publish_unverified(redis_client: Any, classifier: Path) -> str:
    """Store and announce ``classifier`` without checking it, as a damaged copy would arrive."""
    from router.distribution import classifier_bundle, publish_bundle

    bundle = classifier_bundle(classifier)
    publish_bundle(redis_client, bundle)
    return bundle.version


# Traffic -------------------------------------------------------------------------------------


class Driver:
    """Sends logical requests round-robin over the replicas still in rotation."""

    def __init__(self, replicas: list[Replica], prompts: Sequence[str], run_id: str) -> None:
        self.replicas = replicas
        self.prompts = prompts
        self.run_id = run_id
        self.attempts: list[Attempt] = []
        self._turn = 0
        self.client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S)

    def _next_replica(self) -> Replica | None:
        live = [replica for replica in self.replicas if replica.in_rotation]
        if not live:
            return None
        self._turn += 1
        return live[self._turn % len(live)]

    async def send(self, number: int) -> None:
        """Send logical request ``number``; retry on the next replica when no response arrived."""
        stream = number % 3 == 0
        for retry in range(len(self.replicas)):
            replica = self._next_replica()
            if replica is None:
                return
            suffix = f"-r{retry}" if retry else ""
            attempt = Attempt(
                f"rep-{self.run_id}-{number}{suffix}", replica.name, stream, time.monotonic()
            )
            self.attempts.append(attempt)
            await self._send_once(replica, attempt, self.prompts[number % len(self.prompts)])
            if attempt.status is not None:
                return
            replica.in_rotation = False

    async def _send_once(self, replica: Replica, attempt: Attempt, prompt: str) -> None:
        body = {"model": "auto", "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": 256, "stream": attempt.stream}  # fmt: skip
        headers = {"x-request-id": attempt.request_id, "authorization": "Bearer replicas-proof"}
        url = f"{replica.base}/v1/chat/completions"
        try:
            async with self.client.stream("POST", url, json=body, headers=headers) as response:
                attempt.status = response.status_code
                text = (await response.aread()).decode("utf-8", "replace")
            attempt.completed = response.status_code == 200 and (
                not attempt.stream or text.rstrip().endswith("data: [DONE]")
            )
        except httpx.HTTPError as exc:
            attempt.error = type(exc).__name__

    async def close(self) -> None:
        await self.client.aclose()


async def readyz(client: httpx.AsyncClient, replica: Replica) -> dict[str, Any] | None:
    try:
        response = await client.get(f"{replica.base}/readyz", timeout=2.0)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


async def wait_for_all(
    replicas: list[Replica], condition: Any, limit_s: float = CONVERGENCE_WAIT_S
) -> float | None:
    """Poll /readyz of the replicas in rotation until ``condition(body)`` holds for all.

    Returns the seconds that took, or None after ``limit_s``.
    """
    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        while time.monotonic() - started < limit_s:
            live = [replica for replica in replicas if replica.in_rotation]
            bodies = await asyncio.gather(*(readyz(client, replica) for replica in live))
            if all(body is not None and condition(body) for body in bodies):
                return time.monotonic() - started
            await asyncio.sleep(0.05)
    return None


# The run -------------------------------------------------------------------------------------


@dataclass
class RunState:
    config: ProofConfig
    replicas: list[Replica]
    redis_client: Any
    run_id: str
    stream_start: str
    classifier: Path
    policy_v1: Path
    policy_v2: Path
    report: ProofReport = field(default_factory=ProofReport)
    versions: Versions = field(default_factory=Versions)
    exporter: subprocess.Popen[str] | None = None


async def drive(state: RunState, prompts: Sequence[str]) -> None:
    """Send the traffic and run each step when its share of requests has been sent."""
    config = state.config
    driver = Driver(state.replicas, prompts, state.run_id)
    limit = asyncio.Semaphore(config.concurrency)
    steps = sorted(_steps(state).items())
    tasks: list[asyncio.Task[None]] = []

    async def send(number: int) -> None:
        try:
            await driver.send(number)
        finally:
            limit.release()

    try:
        for number in range(config.requests):
            while steps and number >= steps[0][0] * config.requests:
                await steps.pop(0)[1]()
            # Taking the slot here, not in the task, makes ``number`` count requests sent.
            await limit.acquire()
            tasks.append(asyncio.create_task(send(number)))
        await asyncio.gather(*tasks)
    finally:
        await driver.close()
    state.report.attempts = driver.attempts


def _steps(state: RunState) -> dict[float, Any]:
    async def publish() -> None:
        new_classifier = copy_artifact(
            state.classifier, state.config.workdir / "classifier-v2", _new_version(state, "v2")
        )
        state.versions = await asyncio.to_thread(
            publish_new_versions, state.redis_client, new_classifier, state.policy_v2
        )
        await _measure_convergence(state)

    async def publish_bad() -> None:
        bad = copy_artifact(state.classifier, state.config.workdir / "classifier-bad",
                            _new_version(state, "bad"), corrupt=True)  # fmt: skip
        state.versions.bad_classifier = await asyncio.to_thread(
            publish_unverified, state.redis_client, bad
        )
        await _check_rejection(state)

    async def restart_exporter() -> None:
        assert state.exporter is not None
        state.exporter.kill()
        state.exporter.wait(timeout=30)
        state.exporter = start_exporter(
            state.config, _group(state), state.stream_start, follow=True
        )

    async def terminate() -> None:
        signal_replica(state.replicas[1], signal.SIGTERM)

    async def kill() -> None:
        await kill_and_restart(state, state.replicas[2])

    return {PUBLISH_AT: publish, BAD_PUBLISH_AT: publish_bad, EXPORTER_KILL_AT: restart_exporter,
            SIGTERM_AT: terminate, SIGKILL_AT: kill}  # fmt: skip


async def kill_and_restart(state: RunState, victim: Replica) -> None:
    """SIGKILL ``victim``, then start a new process on its data folder, as Kubernetes restarts
    a killed container in the same pod with the same emptyDir volume.

    The new process delivers the spool segment the killed one left, and joins the rotation
    once it is ready.
    """
    from tests.support.stack import wait_ready

    signal_replica(victim, signal.SIGKILL)
    await asyncio.to_thread(victim.process.wait, 30)
    config = state.config
    restarted = launch_replica(
        f"{victim.name}-restarted", config.workdir / victim.name, state.policy_v1,
        state.classifier, config.redis_url, config.workdir,
    )  # fmt: skip
    await asyncio.to_thread(wait_ready, restarted.base, restarted.process, restarted.log_path)
    state.replicas.append(restarted)
    state.report.restarted = restarted.name


def _new_version(state: RunState, label: str) -> str:
    current = json.loads((state.classifier / "model.json").read_text(encoding="utf-8"))["version"]
    return f"{current}+{label}-{state.run_id}"


def _group(state: RunState) -> str:
    return f"replicas-{state.run_id}"


async def _measure_convergence(state: RunState) -> None:
    versions = state.versions
    for kind, version in (("classifier", versions.classifier), ("policy", versions.policy)):
        elapsed = await wait_for_all(
            state.replicas,
            lambda body, kind=kind, version=version: body[kind]["version"] == version,
        )
        state.report.convergence_s[kind] = elapsed
    state.report.converged_at = time.monotonic()


async def _check_rejection(state: RunState) -> None:
    bad = state.versions.bad_classifier

    def rejected(body: dict[str, Any]) -> bool:
        published = body.get("published") or {}
        return bool(published.get("classifier", {}).get("rejected") == bad)

    elapsed = await wait_for_all(state.replicas, rejected)
    if elapsed is not None:
        state.report.rejected_by = [r.name for r in state.replicas if r.in_rotation]


# Running -------------------------------------------------------------------------------------


def finish_processes(state: RunState) -> None:
    """Stop the survivors gracefully, stop the exporter, and export what is left."""
    from tests.scaleout.support import logged_events
    from tests.support.stack import stop_process

    for replica in state.replicas:
        if replica.signal_sent is None:
            signal_replica(replica, signal.SIGTERM)
    for replica in state.replicas:
        status = replica.process.wait(timeout=60)
        graceful = "gateway_stopped" in logged_events(replica.log_path)
        if replica.signal_sent == "SIGTERM" and not (graceful and status in (0, -signal.SIGTERM)):
            state.report.failures.append(
                f"{replica.name} did not shut down cleanly (status {status})"
            )
    if state.exporter is not None:
        stop_process(state.exporter, "exporter")
    drain = start_exporter(state.config, _group(state), state.stream_start, follow=False)
    if drain.wait(timeout=300) != 0:
        state.report.failures.append("the final export run failed; see exporter.log")


def evaluate(state: RunState) -> None:
    replicas = {replica.name: replica for replica in state.replicas}
    records = run_records(state.redis_client, state.stream_start, state.run_id)
    report = state.report
    check_attempts(report, replicas)
    check_records(report, replicas, records)
    check_versions(report, state.versions, records)
    check_convergence_limit(report, state.config.convergence_limit_s)
    check_spools(report, state.config.workdir)
    check_export(report, state.redis_client, state.config.workdir, state.stream_start)


def load_prompt_texts(config: ProofConfig) -> list[str]:
    """Return traffic-mix prompts (at most 4,000 characters), as many as requests or fewer."""
    from bench.replay import load_prompts
    from tests.support.correctness import load_correctness
    from tests.support.recorded import shared_data_dir

    data_dir = shared_data_dir()
    prompts = load_prompts(
        data_dir,
        load_correctness(data_dir),
        count=config.requests,
        seed=config.seed,
        max_chars=4000,
    )
    return [prompt.text for prompt in prompts]


def run_proof(config: ProofConfig) -> ProofReport:
    """Run the whole proof (see the module docstring) and return its report.

    Raises what starting the stack raises (missing public data, a replica that does not
    start, TimeoutError when another run holds the Redis lock).
    """
    import redis

    from classifiers.artifact import DEFAULT_DIR
    from tests.scaleout.support import exclusive_default_namespace
    from tests.support.fixtures import start_replay_stack, write_policy
    from tests.support.recorded import BENCH_SOURCES
    from tests.support.replay_upstream import ReplayOptions
    from tests.support.stack import stop_process

    config.workdir.mkdir(parents=True, exist_ok=True)
    prompts = load_prompt_texts(config)
    client = redis.Redis.from_url(config.redis_url, socket_timeout=10)
    options = ReplayOptions(chunk_delay_s=0.01)
    with (
        exclusive_default_namespace(client),
        start_replay_stack(options=options, sources=BENCH_SOURCES) as upstreams,
    ):
        policy_v1 = write_policy(config.workdir / "policy-v1.yaml", upstreams.values())
        policy_v2 = write_policy(config.workdir / "policy-v2.yaml", upstreams.values(),
                                 thresholds={"edge": 0.75, "mid": 0.65})  # fmt: skip
        classifier = config.classifier or DEFAULT_DIR
        newest: Any = client.xrevrange(STREAM_KEY, count=1)
        stream_start = newest[0][0].decode() if newest else "0-0"
        replicas = start_replicas(3, policy_v1, classifier, config.redis_url, config.workdir)
        state = RunState(config, replicas, client, uuid.uuid4().hex[:8], stream_start,
                         classifier, policy_v1, policy_v2)  # fmt: skip
        try:
            state.exporter = start_exporter(config, _group(state), stream_start, follow=True)
            asyncio.run(drive(state, prompts))
            finish_processes(state)
            evaluate(state)
        finally:
            for replica in replicas:
                stop_process(replica.process, replica.name)
            if state.exporter is not None:
                stop_process(state.exporter, "exporter")
    client.close()
    return state.report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=600, help="logical requests to send")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                        help="Redis database of the replicas; its {tw} keys are cleared")  # fmt: skip
    parser.add_argument("--classifier", type=Path, default=None,
                        help="artifact the replicas start with (default: the bundled model)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for logs, policies and the export (default: a new temporary one)")  # fmt: skip
    parser.add_argument("--convergence-limit", type=float, default=5.0,
                        help="seconds within which every replica must serve a new version")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="prompt shuffle seed")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proof and print its report; return 0 on success, 1 when a check failed."""
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tierwise-replicas-"))
    config = ProofConfig(workdir, args.requests, args.concurrency, args.redis_url,
                         args.classifier, args.convergence_limit, args.seed)  # fmt: skip
    print(f"logs, policies and the export go to {workdir}", flush=True)
    report = run_proof(config)
    print_report(report, config.convergence_limit_s)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
