"""Schema-driven fuzzing of the HTTP API: generated requests never get a 5xx.

schemathesis builds requests from the gateway's own OpenAPI document, including bodies
that break the schema, and sends them in process.  The upstreams are fake servers that
always answer, so a 5xx here can only be the gateway's own fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is in the test extra: pip install -e '.[test]'"
)
from hypothesis import HealthCheck, given, settings

from router.app import create_app
from router.settings import Settings
from tests.gateway.conftest import StubScorer, policy_document, write_yaml
from tests.support.fake_upstream import FakeUpstream


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    upstreams = {tier: FakeUpstream(f"fake-{tier}").start() for tier in ("edge", "mid", "frontier")}
    try:
        policy = write_yaml(
            folder / "policy.yaml",
            policy_document({tier: fake.base_url for tier, fake in upstreams.items()}, timeout_s=5.0),
        )
        settings_ = Settings(
            policy=policy, data_dir=folder / "var", local_model=False, policy_reload_interval_s=0
        )
        yield create_app(settings_, StubScorer())
    finally:
        for fake in upstreams.values():
            fake.stop()


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app: object) -> object:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [
        ("POST", "/v1/chat/completions", "positive"),
        ("POST", "/v1/chat/completions", "negative"),
        ("POST", "/v1/responses", "positive"),
        ("POST", "/v1/responses", "negative"),
        ("POST", "/v1/feedback", "positive"),
        ("POST", "/v1/feedback", "negative"),
        ("GET", "/v1/models", "positive"),
        ("GET", "/readyz", "positive"),
    ],
)
def test_generated_requests_never_get_5xx(
    fuzz_schema: object, method: str, path: str, mode: str
) -> None:
    operation = fuzz_schema[path][method]  # type: ignore[index]
    generation_mode = schemathesis.GenerationMode(mode)

    @given(case=operation.as_strategy(generation_mode=generation_mode))
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: object) -> None:
        response = case.call()  # type: ignore[attr-defined]
        assert response.status_code < 500, (method, path, response.text[:300])
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}

    check()
