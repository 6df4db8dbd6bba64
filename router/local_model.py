"""Supervision of the bundled local model server: liveness probes, restarts, retry waits.

`supervise` starts the server, then watches it until the gateway stops. A server that
exits (a crash, the OOM killer) or stops responding (SIGSTOP, a hung process) is started
again after ``LOCAL_MODEL_RESTART_DELAYS_S``. Routing, ``/readyz`` and error messages read
the model's state from the runtime's ``local_model_state``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from router.runtime import Runtime

log = structlog.get_logger("tierwise.runtime")

LOCAL_MODEL_DOWN = "the local edge model is not running"
LOCAL_MODEL_CLIENT_REASONS: dict[str, str] = {
    "not_started": f"{LOCAL_MODEL_DOWN} (it starts with `tierwise serve`)",
    "disabled": f"{LOCAL_MODEL_DOWN} (disabled by --no-local-model or TIERWISE_LOCAL_MODEL=false)",
    "not_installed": f"{LOCAL_MODEL_DOWN} (the edge extra is not installed)",
    "starting": "the local edge model is still starting",
    "failed": f"{LOCAL_MODEL_DOWN} (it failed to start, and the gateway log has the cause)",
    "restarting": f"{LOCAL_MODEL_DOWN} (it exited and is restarting; the gateway log has the cause)",
    "unresponsive": f"{LOCAL_MODEL_DOWN} (it stopped responding, was killed and is restarting; "
    "the gateway log has the cause)",
}
LOCAL_MODEL_RETRYABLE_STATES = frozenset({"starting", "restarting", "unresponsive"})
"""States that end by themselves, so a client's retry of a 503 can succeed."""
# Waits before each restart of a local model server that exited; the last one repeats.
LOCAL_MODEL_RESTART_DELAYS_S: tuple[float, ...] = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0)
# A server that ran this long before it exited is restarted after the first delay again.
LOCAL_MODEL_STABLE_S = 300.0
# The liveness probe's interval, timeout and failures in a row come from the policy's
# ``local_model`` section (router.policy.schema.LocalModelPolicy). With the defaults (5 s, 3 s,
# 3 failures) a server is killed and restarted 13 to 18 s after it stopped responding. A server
# busy with a completion still responds within milliseconds (see router/edge.py), so the
# timeout only has to cover a slow event loop on a loaded machine.
# How long a start is expected to take before the server has been timed once: the model
# load and the one-token test completion took 4.8 s on 2 busy cores.
LOCAL_MODEL_EXPECTED_START_S = 5.0


def _restart_delay(restarts: int) -> float:
    return LOCAL_MODEL_RESTART_DELAYS_S[min(restarts, len(LOCAL_MODEL_RESTART_DELAYS_S) - 1)]


def _expected_start_s(server: Any) -> float:
    measured = getattr(server, "load_time_s", None)
    return measured if isinstance(measured, float | int) else LOCAL_MODEL_EXPECTED_START_S


def retry_after_s(runtime: Runtime) -> float | None:
    """Return the seconds until the local model should serve again, or None when no wait helps.

    A server that has exited while the state is still "ready" (its restart is about to be
    scheduled) gets the first restart delay plus a start.
    """
    server = runtime.extra.get("local_model")
    state = runtime.local_model_state
    if state == "ready" and server is not None and not server.running:
        return LOCAL_MODEL_RESTART_DELAYS_S[0] + _expected_start_s(server)
    if state not in LOCAL_MODEL_RETRYABLE_STATES:
        return None
    serving_at = runtime.local_model_serving_at
    if serving_at is None:
        return LOCAL_MODEL_EXPECTED_START_S
    # A start that takes longer than expected still gets a wait of 1 s.
    return max(1.0, serving_at - time.monotonic())


async def supervise(runtime: Runtime, server: Any) -> None:
    """Start the local model server, and start it again whenever it exits or hangs.

    A failed first start is final, because the extra, the model file or the port needs
    an operator. A server that ran and then exited, or stopped responding to the liveness
    probe and was killed, is started again after ``LOCAL_MODEL_RESTART_DELAYS_S``, so the
    edge tier comes back without a gateway restart. The delay grows while restarts fail or
    the server exits again within ``LOCAL_MODEL_STABLE_S`` of its start.
    """
    from router.edge import EdgeModelError, remove_orphaned_workdirs

    await asyncio.to_thread(remove_orphaned_workdirs)
    started = time.monotonic()
    runtime.local_model_serving_at = started + _expected_start_s(server)
    try:
        await server.start()
    except EdgeModelError as exc:
        runtime.local_model_status = f"failed to start: {exc}"
        runtime.local_model_state = "failed"
        runtime.local_model_serving_at = None
        log.warning("local_model_unavailable", reason=str(exc))
        return
    _mark_ready(runtime, server, started)
    restarts = 0
    while True:
        ran_from = time.monotonic()
        reason, killed = await _watch(runtime, server)
        if time.monotonic() - ran_from >= LOCAL_MODEL_STABLE_S:
            restarts = 0
        delay = _restart_delay(restarts)
        runtime.local_model_serving_at = time.monotonic() + delay + _expected_start_s(server)
        if killed:
            # The state is "unresponsive" already, and local_model_unresponsive was logged.
            runtime.local_model_status = f"killed, restarting in {delay:g} s: {reason}"
        else:
            # A server that crashes after its start (a signal, a fault in llama.cpp) would
            # otherwise stay "ready" while every edge request fails to connect.
            runtime.local_model_state = "restarting"
            runtime.local_model_status = f"exited, restarting in {delay:g} s: {reason}"
            log.error("local_model_exited", reason=reason, restart_in_s=delay)
        while True:
            await asyncio.sleep(delay)
            restarts += 1
            started = time.monotonic()
            try:
                await server.start()
                break
            except EdgeModelError as exc:
                delay = _restart_delay(restarts)
                runtime.local_model_serving_at = time.monotonic() + delay + _expected_start_s(server)
                runtime.local_model_status = f"restart failed, trying again in {delay:g} s: {exc}"
                log.error("local_model_restart_failed", reason=str(exc), restarts=restarts,
                          restart_in_s=delay)
        _mark_ready(runtime, server, started, restarts=restarts)


async def _watch(runtime: Runtime, server: Any) -> tuple[str, bool]:
    """Wait until the server exits, probing it meanwhile, and kill it when it stops responding.

    The probe settings are read from the current policy at each probe, so a policy reload
    changes them for the running server without restarting it. A new interval applies from
    the end of the wait under way.

    Returns the reason the server ended and whether this function killed it.
    """
    exit_task = asyncio.create_task(server.wait_for_exit())
    failures = 0
    silent_since = 0.0
    probe = runtime.policies.current.policy.local_model
    next_probe = time.monotonic() + probe.probe_interval_s
    try:
        while True:
            wait_s = max(0.0, next_probe - time.monotonic())
            done, _ = await asyncio.wait({exit_task}, timeout=wait_s)
            if done:
                return exit_task.result(), False
            probe = runtime.policies.current.policy.local_model
            probe_started = time.monotonic()
            next_probe = probe_started + probe.probe_interval_s
            if await server.responds(probe.probe_timeout_s):
                failures = 0
                continue
            if exit_task.done():
                return exit_task.result(), False  # a refused probe of a server that just exited
            if failures == 0:
                silent_since = probe_started
            failures += 1
            if failures < probe.probe_failures:
                continue
            silent_s = round(time.monotonic() - silent_since, 1)
            runtime.local_model_state = "unresponsive"
            runtime.local_model_status = f"stopped responding for {silent_s:g} s, killing it"
            log.error(
                "local_model_unresponsive",
                pid=server.pid,
                silent_s=silent_s,
                failed_probes=failures,
                probe_timeout_s=probe.probe_timeout_s,
            )
            server.kill()
            await exit_task
            return f"no response to {failures} liveness probes in {silent_s:g} s", True
    finally:
        exit_task.cancel()


def _mark_ready(runtime: Runtime, server: Any, started: float, *, restarts: int = 0) -> None:
    runtime.local_model_status = runtime.local_model_state = "ready"
    runtime.local_model_serving_at = None
    local = runtime.policies.current.policy.local_model_deployments()
    # A new server process owes nothing to the failures of the one before it.
    for deployment in local:
        runtime.health.succeeded(deployment.name)
    log.info(
        "local_model_ready",
        deployments=[d.name for d in local],
        port=server.port,
        seconds=round(time.monotonic() - started, 1),
        **({"restarts": restarts} if restarts else {}),
    )
