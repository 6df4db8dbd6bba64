"""Policy hot reload while a client keeps requests in flight against a live gateway.

The policy file goes through four versions while eight requests are always in flight: the
original, a half-written rewrite (valid YAML without ``tiers``), the original again, and a
change that points the edge tier at another model on another upstream.  The broken version
must be rejected and logged, every request must succeed on a model of a valid policy, and
requests sent after the change was swapped in must use the new model.

A second test changes the file without changing its size or modification time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from router.app import create_app
from tests.gateway.conftest import (
    TIERS,
    GatewayKit,
    LiveGateway,
    StubScorer,
    chat_body,
    policy_document,
    write_yaml,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.replay_upstream import ReplayOptions

RELOAD_INTERVAL_S = 0.1
IN_FLIGHT = 8
PHASE_REQUESTS = 40
"""Requests that each phase completes before the test moves on."""
AFTER_SWAP_REQUESTS = 20
"""``auto`` requests sent after the changed policy was swapped in that the test waits for."""
WAIT_LIMIT_S = 30.0
"""Bound on every wait, so that a gateway that never reloads fails the test instead of hanging it."""
# Each fake upstream sends its first byte after 10 ms, so requests overlap as in production.
UPSTREAM_OPTIONS = ReplayOptions(first_byte_delay_s=0.01, max_recorded_requests=100_000)
NEW_DEPLOYMENT = "edge-small-v2"
NEW_MODEL = "fake-edge-v2"
PHASES: tuple[str, ...] = ("original", "half-written", "fixed", "changed")
# Every second worker names the mid deployment instead of the "auto" alias, so a policy that
# dropped either would show up as a failed request.
REQUESTED_MODELS: tuple[str, ...] = ("auto", "mid-medium")


@dataclass(frozen=True, slots=True)
class SentRequest:
    """One request of the load: its phase, start and end times (monotonic seconds) and result."""

    phase: str
    requested: str
    started: float
    status: int | None
    deployment: str
    error: str | None
    finished: float = 0.0


@dataclass
class Load:
    """Keeps ``IN_FLIGHT`` requests in flight until stopped, labelling each with the phase."""

    client: httpx.AsyncClient
    phase: str = PHASES[0]
    sent: list[SentRequest] = field(default_factory=list)
    stopping: bool = False
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    async def worker(self, requested: str) -> None:
        while not self.stopping:
            self.sent.append(await self._send(requested))

    async def _send(self, requested: str) -> SentRequest:
        phase, started = self.phase, time.monotonic()
        body = chat_body(f"Reload load request {next(self._numbers)}.", model=requested)
        try:
            response = await self.client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            return SentRequest(phase, requested, started, None, "", type(exc).__name__,
                               time.monotonic())
        error = None if response.status_code == 200 else response.text
        deployment = response.headers.get("x-tierwise-model", "")
        return SentRequest(phase, requested, started, response.status_code, deployment, error,
                           time.monotonic())

    def completed_in(self, phase: str) -> int:
        return sum(1 for request in self.sent if request.phase == phase)

    def completed_since(self, moment: float, requested: str) -> int:
        """Count the completed requests for ``requested`` sent after ``moment`` (monotonic s)."""
        return sum(1 for r in self.sent if r.started > moment and r.requested == requested)


@contextlib.asynccontextmanager
async def running_load(base_url: str) -> AsyncIterator[Load]:
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    headers = {"Authorization": "Bearer sk-test-reload-under-load"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=30.0
    ) as client:
        load = Load(client)
        workers = [
            asyncio.create_task(load.worker(REQUESTED_MODELS[number % len(REQUESTED_MODELS)]))
            for number in range(IN_FLIGHT)
        ]
        try:
            yield load
        finally:
            load.stopping = True
            await asyncio.gather(*workers)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], limit_s: float = WAIT_LIMIT_S
) -> bool:
    """Poll ``condition`` every 10 ms for up to ``limit_s``; return whether it held."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        result = condition()
        if result if isinstance(result, bool) else await result:
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.fixture
def upstreams() -> Iterator[dict[str, FakeUpstream]]:
    """The three tier upstreams and the replacement edge upstream, each with a 10 ms delay."""
    servers = {tier: FakeUpstream(f"fake-{tier}", options=UPSTREAM_OPTIONS) for tier in TIERS}
    servers["replacement"] = FakeUpstream(NEW_MODEL, options=UPSTREAM_OPTIONS)
    for server in servers.values():
        server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def policy_versions(kit: GatewayKit, replacement_url: str) -> dict[str, dict[str, Any]]:
    original = policy_document(kit.base_urls, cache_enabled=False)
    half_written = {key: value for key, value in original.items() if key != "tiers"}
    changed = policy_document({**kit.base_urls, "edge": replacement_url}, cache_enabled=False)
    edge = changed["tiers"]["edge"]["deployments"][0]
    edge["name"], edge["model"] = NEW_DEPLOYMENT, f"openai/{NEW_MODEL}"
    return {
        "original": original,
        "half-written": half_written,
        "fixed": original,
        "changed": changed,
    }


async def test_reload_under_load_never_fails_a_request(
    tmp_path: Path, upstreams: dict[str, FakeUpstream]
) -> None:
    tiers = {tier: upstreams[tier] for tier in TIERS}
    kit = GatewayKit(tmp_path, tiers)
    versions = policy_versions(kit, upstreams["replacement"].base_url)
    write_yaml(kit.policy_path, versions["original"])
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    marks: dict[str, float] = {}

    with capture_logs() as logs, LiveGateway(create_app(settings, StubScorer())) as gateway:
        store = gateway.runtime.policies
        first_version = store.current.version
        async with running_load(f"http://127.0.0.1:{gateway.port}") as load:

            async def next_phase(phase: str, reached: Callable[[], bool]) -> None:
                assert await wait_until(lambda: load.completed_in(load.phase) >= PHASE_REQUESTS)
                load.phase = phase
                marks[f"{phase} written"] = time.monotonic()
                # Written beside the policy and renamed over it, because the watcher could
                # otherwise read the file between its truncation and the write, and report
                # an empty file in place of the half-written policy's error.
                staged = write_yaml(kit.policy_path.with_suffix(".staged"), versions[phase])
                staged.replace(kit.policy_path)
                assert await wait_until(reached), f"the gateway never reached the {phase} state"
                marks[f"{phase} applied"] = time.monotonic()

            await next_phase("half-written", lambda: store.last_error is not None)
            half_written_error = store.last_error
            await next_phase("fixed", lambda: store.last_error is None)
            await next_phase("changed", lambda: store.current.version != first_version)
            assert await wait_until(lambda: load.completed_in("changed") >= PHASE_REQUESTS)
            # The changed phase counts from the write, and on a fast machine its requests can
            # all finish before the reload swaps the policy in, so wait for later ones too.
            swapped_at = marks["changed applied"]
            assert await wait_until(
                lambda: load.completed_since(swapped_at, "auto") >= AFTER_SWAP_REQUESTS
            )
        serving_after = store.current.policy.find_deployment(NEW_DEPLOYMENT)

    sent = load.sent
    per_phase = Counter(request.phase for request in sent)
    after_swap = [r for r in sent if r.started > swapped_at and r.requested == "auto"]
    new_model_starts = [r.started for r in sent if r.deployment == NEW_DEPLOYMENT]
    upstream_models = {
        name: Counter(received.body["model"] for received in server.requests)
        for name, server in upstreams.items()
    }
    rejections = [entry for entry in logs if entry["event"] == "policy_reload_rejected"]
    reloads = [entry for entry in logs if entry["event"] == "policy_reloaded"]
    print(f"requests per phase: {dict(per_phase)}; upstream models: {upstream_models}")
    written_at = marks["changed written"]
    print(
        f"change written to swapped in: {swapped_at - written_at:.3f} s, to the first request "
        f"on the new model: {min(new_model_starts) - written_at:.3f} s "
        f"(reload interval {RELOAD_INTERVAL_S} s)"
    )

    assert [r for r in sent if r.status != 200] == []
    assert all(per_phase[phase] >= PHASE_REQUESTS for phase in PHASES), per_phase
    assert upstream_models["edge"].keys() == {"fake-edge"}
    assert upstream_models["mid"].keys() == {"fake-mid"}
    assert upstream_models["frontier"] == Counter()
    assert upstream_models["replacement"].keys() == {NEW_MODEL}
    assert upstream_models["replacement"][NEW_MODEL] == len(new_model_starts)
    assert sum(upstream_models["mid"].values()) == sum(r.requested == "mid-medium" for r in sent)
    # Every "auto" request answered before the change was written went to the original edge
    # deployment.  A request sent just before the write may be read by the gateway after the
    # reload, so the start time alone does not show which policy served it.
    written_change = marks["changed written"]
    assert {r.deployment for r in sent if r.finished < written_change and r.requested == "auto"} == {
        "edge-small"
    }
    assert after_swap
    assert {r.deployment for r in after_swap} == {NEW_DEPLOYMENT}
    assert serving_after is not None
    assert half_written_error is not None
    assert "missing required top-level key 'tiers'" in half_written_error
    assert rejections
    assert all(entry["path"] == str(kit.policy_path) for entry in rejections)
    assert any("tiers" in problem for entry in rejections for problem in entry["problems"])
    assert [entry["version"] for entry in reloads] == [store.current.version]


async def test_reload_sees_change_with_same_mtime_and_size(kit: GatewayKit) -> None:
    # Copies that keep timestamps (cp -p, rsync -t, tar) and two saves within one tick of the
    # file system's coarse clock leave the modification time unchanged.
    # Thresholds of equal length (0.75 and 0.95) keep the file's size unchanged.
    document = policy_document(kit.base_urls, thresholds={"edge": 0.75, "mid": 0.6})
    write_yaml(kit.policy_path, document)
    before = kit.policy_path.stat()
    settings = kit.settings(policy_reload_interval_s=RELOAD_INTERVAL_S)
    async with kit.running(settings=settings) as gateway:
        store = gateway.runtime.policies
        first_version = store.current.version
        # The stub scores every tier 0.9, so an edge threshold of 0.95 sends requests to mid.
        changed = policy_document(kit.base_urls, thresholds={"edge": 0.95, "mid": 0.6})
        write_yaml(kit.policy_path, changed)
        os.utime(kit.policy_path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = kit.policy_path.stat()
        # Twenty reload intervals: a detected change applies within one or two.
        reloaded = await wait_until(
            lambda: store.current.version != first_version, limit_s=20 * RELOAD_INTERVAL_S
        )
        response = await gateway.chat(chat_body())

    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert reloaded
    assert response.headers["x-tierwise-tier"] == "mid"
