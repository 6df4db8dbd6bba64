"""A gateway served over HTTP for a whole test module, with one fake upstream per tier.

The endpoints that translate another API (``/v1/messages``, ``/v1/responses``,
``/v1/completions``) are tested through their official clients against this stack.
``OpenAIStack`` adds the ``openai`` client; the Anthropic tests add their own ``client()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
import pytest

from router.app import create_app
from tests.gateway.conftest import TIERS, GatewayKit, LiveGateway, StubScorer, new_api_key
from tests.support.fake_upstream import FakeUpstream


@dataclass
class LiveStack:
    gateway: LiveGateway
    fakes: dict[str, FakeUpstream]

    @property
    def root_url(self) -> str:
        """The gateway's address without a path."""
        return f"http://127.0.0.1:{self.gateway.port}"


class OpenAIStack(LiveStack):
    """A live stack for an OpenAI endpoint, tested with the official ``openai`` client."""

    path = ""
    """The endpoint's path below the client's ``base_url``, such as ``/responses``."""

    def client(self, api_key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.gateway.base_url,
            api_key=api_key or new_api_key(),
            max_retries=0,
            timeout=15,
        )

    @property
    def url(self) -> str:
        return f"{self.gateway.base_url}{self.path}"


_Stack = TypeVar("_Stack", bound=LiveStack)


def run_live_stack(
    tmp_path_factory: pytest.TempPathFactory, name: str, stack_type: type[_Stack]
) -> Iterator[_Stack]:
    """Yield a ``stack_type`` whose gateway runs until the generator is closed."""
    fakes = {tier: FakeUpstream(f"fake-{tier}").start() for tier in TIERS}
    kit = GatewayKit(tmp_path_factory.mktemp(name), fakes)
    try:
        kit.write_policy(timeout_s=5.0)
        app = create_app(kit.settings(keepalive_interval_s=0.1), StubScorer())
        with LiveGateway(app) as gateway:
            yield stack_type(gateway, fakes)
    finally:
        for fake in fakes.values():
            fake.stop()


def reset_live_stack(request: pytest.FixtureRequest) -> None:
    """Reset the shared gateway's fakes and cooldowns, which earlier tests' failures start."""
    if "live" in request.fixturenames:
        live = request.getfixturevalue("live")
        for fake in live.fakes.values():
            fake.reset()
        live.gateway.runtime.health.keep_only(())


def sse_events(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Pair each ``event:`` line with the JSON of the ``data:`` line after it."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line[5:])))
    return events
