"""Shared pytest configuration: the upstream fixtures live in tests/support/fixtures.py."""

from tests.support.fixtures import (  # noqa: F401 (imported so pytest registers the fixtures)
    fake_upstream,
    fakes,
    replay_policy,
    replay_stack,
    replay_upstream_factory,
    replay_upstreams,
    shared_data,
)
