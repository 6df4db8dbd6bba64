"""Shared pytest configuration: the upstream fixtures live in tests/support/fixtures.py."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.support.fixtures import (  # noqa: F401 (imported so pytest registers the fixtures)
    fake_upstream,
    fakes,
    replay_policy,
    replay_stack,
    replay_upstream_factory,
    replay_upstreams,
    shared_data,
)

# Subprocesses that the tests start (`python -m router`, the `tierwise` script) import this
# checkout, also where the editable install points at another one, as from a git worktree.
_CHECKOUT = str(Path(__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join(
    path for path in (_CHECKOUT, os.environ.get("PYTHONPATH")) if path
)


@pytest.fixture(autouse=True, scope="session")
def uncached_loggers() -> Iterator[None]:
    """Keep structlog from caching loggers when a test runs the CLI's logging set-up.

    A logger cached on first use keeps the processors of that moment, so ``capture_logs`` in
    a later test would not see its events, and whether a test passed would depend on which
    tests ran before it.
    """
    original = structlog.configure

    def configure(*args: Any, **kwargs: Any) -> None:
        kwargs["cache_logger_on_first_use"] = False
        original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(structlog, "configure", configure)
        yield
