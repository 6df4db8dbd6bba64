"""pytest fixtures that start replay and fake upstreams, and a writer for policies that use them.

Fixtures:
    shared_data: the public data folder; skips the test when it is missing.
    replay_stack: three replay upstreams for one test session, keyed by tier (edge answers as
        Mistral-7B, mid as Mixtral-8x7B, frontier as GPT-4 Turbo, from RouterBench and RouteLLM).
        The servers are shared by every test of the session, so a test that reads
        ``upstream.requests`` calls ``clear_requests()`` first.
    replay_upstreams: the stack's base URLs, ``{"edge": "http://127.0.0.1:PORT/v1", ...}``.
    replay_policy: a policy YAML file (in the test's tmp_path) whose tiers point at the stack.
    replay_upstream_factory: a function that starts one more replay upstream for any recorded
        model, ``factory(model, options=None)``; the test's upstreams stop when it ends.
    fake_upstream: a :class:`FakeUpstream` for one test, answering with scripted text, so it
        needs no public data.

Outside pytest, :func:`start_replay_stack` and :func:`write_policy` do the same work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.fake_upstream import FakeUpstream
from tests.support.prices import ROUTERBENCH_PRICES
from tests.support.recorded import ALL_SOURCES, shared_data_dir
from tests.support.replay_upstream import ReplayOptions, ReplayUpstream


@dataclass(frozen=True, slots=True)
class TierModel:
    """A tier's deployment: public name, recorded model, USD per 1M tokens, context window."""

    tier: str
    deployment: str
    model: str
    input_per_million: float
    output_per_million: float
    context_window: int


# Context windows: Mistral-7B-Instruct v0.1 8k, Mixtral-8x7B-Instruct 32k, GPT-4 Turbo 128k.
REPLAY_STACK: tuple[TierModel, ...] = (
    TierModel(
        "edge",
        "mistral-7b",
        "mistralai/mistral-7b-chat",
        *ROUTERBENCH_PRICES["mistralai/mistral-7b-chat"],
        8192,
    ),
    TierModel(
        "mid",
        "mixtral-8x7b",
        "mistralai/mixtral-8x7b-chat",
        *ROUTERBENCH_PRICES["mistralai/mixtral-8x7b-chat"],
        32768,
    ),
    TierModel(
        "frontier",
        "gpt-4-turbo",
        "gpt-4-1106-preview",
        *ROUTERBENCH_PRICES["gpt-4-1106-preview"],
        128000,
    ),
)


@dataclass(frozen=True, slots=True)
class TierUpstream:
    """A tier's deployment, its base URL, and its server when this process runs it."""

    spec: TierModel
    base_url: str
    server: ReplayUpstream | None = None


def deployment_entry(upstream: TierUpstream, timeout_s: float = 30.0) -> dict[str, Any]:
    """Return the policy ``deployments`` entry for ``upstream`` (direct OpenAI-compatible path)."""
    spec = upstream.spec
    return {
        "name": spec.deployment,
        "model": f"openai/{spec.model}",
        "api_base": upstream.base_url,
        "api_key_env": None,
        "transport": "direct",
        "price": {
            "input_per_million": spec.input_per_million,
            "output_per_million": spec.output_per_million,
        },
        "context_window": spec.context_window,
        "capabilities": {"tools": True, "json_schema": True, "n": True, "vision": False},
        "timeout_s": timeout_s,
    }


def policy_dict(
    upstreams: Iterable[TierUpstream],
    *,
    thresholds: Mapping[str, float] | None = None,
    cache_enabled: bool = True,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Return a policy (as the YAML's mapping) with one deployment per tier of ``upstreams``."""
    tiers: dict[str, Any] = {}
    for upstream in upstreams:
        tiers.setdefault(upstream.spec.tier, {"deployments": []})["deployments"].append(
            deployment_entry(upstream, timeout_s)
        )
    return {
        "version": 1,
        "aliases": {"auto": {"description": "cheapest adequate tier"}},
        "tiers": tiers,
        "routing": {"thresholds": dict(thresholds or {"edge": 0.7, "mid": 0.6})},
        "cache": {"enabled": cache_enabled, "ttl_s": 3600, "cache_nonzero_temperature": False},
        "outcomes": {"store_prompts": False},
    }


def write_policy(path: Path, upstreams: Iterable[TierUpstream], **options: Any) -> Path:
    """Write :func:`policy_dict` of ``upstreams`` to ``path`` as YAML and return ``path``.

    ``options`` are the keyword arguments of :func:`policy_dict`.
    """
    path.write_text(
        yaml.safe_dump(policy_dict(upstreams, **options), sort_keys=False), encoding="utf-8"
    )
    return path


@contextlib.contextmanager
def start_replay_stack(
    stack: Sequence[TierModel] = REPLAY_STACK,
    *,
    options: ReplayOptions | None = None,
    sources: frozenset[str] = ALL_SOURCES,
) -> Iterator[dict[str, TierUpstream]]:
    """Start one replay upstream per entry of ``stack`` on free ports; stop them all on exit.

    Yields the upstreams keyed by tier. Raises what :class:`ReplayUpstream` raises.
    """
    with contextlib.ExitStack() as servers:
        started: dict[str, TierUpstream] = {}
        for spec in stack:
            upstream = servers.enter_context(
                ReplayUpstream(spec.model, options=options, sources=sources)
            )
            started[spec.tier] = TierUpstream(spec, upstream.base_url, upstream)
        yield started


def _skip_without_shared_data() -> Path:
    folder = shared_data_dir()
    if not folder.is_dir():
        pytest.skip(
            f"public data folder not found at {folder};"
            " set TIERWISE_SHARED_DATA to replay recorded answers"
        )
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public data folder; the test is skipped when it is missing."""
    return _skip_without_shared_data()


@pytest.fixture(scope="session")
def replay_stack(shared_data: Path) -> Iterator[dict[str, TierUpstream]]:
    """Three replay upstreams (edge, mid, frontier) shared by the whole test session."""
    with start_replay_stack() as stack:
        yield stack


@pytest.fixture
def replay_upstreams(replay_stack: dict[str, TierUpstream]) -> dict[str, str]:
    """Base URLs of the replay stack keyed by tier."""
    return {tier: upstream.base_url for tier, upstream in replay_stack.items()}


@pytest.fixture
def replay_policy(tmp_path: Path, replay_stack: dict[str, TierUpstream]) -> Path:
    """A policy YAML whose edge, mid and frontier tiers point at the replay stack."""
    return write_policy(tmp_path / "policy.yaml", replay_stack.values())


ReplayFactory = Callable[..., ReplayUpstream]


@pytest.fixture
def replay_upstream_factory(shared_data: Path) -> Iterator[ReplayFactory]:
    """A function that starts a replay upstream for a model; all stop after the test."""
    with contextlib.ExitStack() as servers:

        def start(model: str, options: ReplayOptions | None = None) -> ReplayUpstream:
            return servers.enter_context(ReplayUpstream(model, options=options))

        yield start


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """A scriptable fake upstream for one test (scripted answers, no public data needed)."""
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    """One scriptable fake upstream per tier (edge, mid, frontier), for one test."""
    upstreams = {tier: FakeUpstream(f"fake-{tier}") for tier in ("edge", "mid", "frontier")}
    with contextlib.ExitStack() as running:
        for upstream in upstreams.values():
            running.enter_context(upstream)
        yield upstreams
