"""Fixtures for the gateway tests: fake tier upstreams, policies, Redis, running gateways.

Every gateway here talks only to upstreams on 127.0.0.1 that the tests start.  A test gets
three scriptable fake upstreams (``fakes``, one per tier), writes a policy pointing at them,
and runs the app in-process (``kit.running(...)``, httpx over ASGI, lifespan included) or
as a live uvicorn server (:class:`LiveGateway`) for the official ``openai`` client.

Redis tests use the server at ``$TIERWISE_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6399/15``); ``make test`` starts one.  Tests share that database with
other runs, so each gateway uses a fresh API key (its own tenant, hence its own cache keys)
and reads back only the outcome records of its tenant that were added after it started.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, cast

import httpx
import orjson
import pytest
import redis
import uvicorn
import yaml
from fastapi import FastAPI

from router.app import create_app
from router.http_protocol import GatewayHttpProtocol
from router.outcomes.log import STREAM_KEY
from router.runtime import Runtime, Scorer
from router.settings import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.redis_check import require_redis

REDIS_URL_ENV = "TIERWISE_TEST_REDIS_URL"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6399/15"
TIERS: tuple[str, ...] = ("edge", "mid", "frontier")

# Public deployment names and prices (USD per million tokens, input and output) of the test
# policy's tiers.  The prices are RouterBench's for Mistral-7B, Mixtral-8x7B and GPT-4 Turbo.
DEPLOYMENT_NAMES: dict[str, str] = {
    "edge": "edge-small",
    "mid": "mid-medium",
    "frontier": "frontier-large",
}
TIER_PRICES: dict[str, tuple[float, float]] = {
    "edge": (0.2, 0.2),
    "mid": (0.6, 0.6),
    "frontier": (10.0, 30.0),
}
ALL_CAPABILITIES: dict[str, bool] = {"tools": True, "json_schema": True, "n": True, "vision": True}

INTERNAL_ERROR_MESSAGE = (
    "The gateway failed to process the request. Retry, or report the request id."
)


# Scorers ------------------------------------------------------------------------------------


class StubScorer:
    """A classifier stand-in that returns fixed per-tier scores, for deterministic routing.

    The default scores (0.9 for every tier) meet the test policy's thresholds, so ``auto``
    goes to the edge tier; ``StubScorer(edge=0.1)`` sends it to mid.
    """

    tiers: tuple[str, ...] = TIERS

    def __init__(self, version: str = "stub-1", **scores: float) -> None:
        self.version = version
        self.scores = {tier: 0.9 for tier in TIERS} | scores
        self.calls = 0

    def score(self, messages: list[Any]) -> dict[str, float]:
        self.calls += 1
        return dict(self.scores)


class FailingScorer(StubScorer):
    """A scorer whose ``score`` raises an exception carrying a secret-looking text."""

    secret = "sk-live-123"

    def score(self, messages: list[Any]) -> dict[str, float]:
        raise RuntimeError(f"secret {self.secret}")


# Policies -----------------------------------------------------------------------------------


def deployment_entry(
    tier: str,
    base_url: str,
    *,
    timeout_s: float,
    context_window: int,
    capabilities: Mapping[str, bool],
) -> dict[str, Any]:
    """Return a policy deployment for ``tier`` served over the direct path at ``base_url``."""
    input_price, output_price = TIER_PRICES[tier]
    return {
        "name": DEPLOYMENT_NAMES[tier],
        "model": f"openai/fake-{tier}",
        "api_base": base_url,
        "transport": "direct",
        "price": {"input_per_million": input_price, "output_per_million": output_price},
        "context_window": context_window,
        "capabilities": dict(capabilities),
        "timeout_s": timeout_s,
    }


def policy_document(
    base_urls: Mapping[str, str],
    *,
    timeout_s: float = 10.0,
    context_windows: Mapping[str, int] | None = None,
    capabilities: Mapping[str, Mapping[str, bool]] | None = None,
    thresholds: Mapping[str, float] | None = None,
    escalate_on_error: bool = True,
    cache_enabled: bool = True,
    cache_nonzero_temperature: bool = False,
    aliases: Mapping[str, Any] | None = None,
    store_prompts: bool = False,
) -> dict[str, Any]:
    """Return a policy mapping with one deployment per tier of ``base_urls``.

    ``capabilities`` maps a tier to the capability flags that differ from
    :data:`ALL_CAPABILITIES`; context windows default to 32,768 tokens.
    """
    tiers = {
        tier: {
            "deployments": [
                deployment_entry(
                    tier,
                    url,
                    timeout_s=timeout_s,
                    context_window=(context_windows or {}).get(tier, 32768),
                    capabilities=ALL_CAPABILITIES | dict((capabilities or {}).get(tier, {})),
                )
            ]
        }
        for tier, url in base_urls.items()
    }
    return {
        "version": 1,
        "name": "gateway-tests",
        "aliases": dict(aliases or {"auto": {}, "auto-quality": {"min_tier": "mid"}}),
        "tiers": tiers,
        "routing": {
            "thresholds": dict(thresholds or {"edge": 0.7, "mid": 0.6}),
            "escalate_on_error": escalate_on_error,
        },
        "cache": {
            "enabled": cache_enabled,
            "ttl_s": 600,
            "cache_nonzero_temperature": cache_nonzero_temperature,
        },
        "outcomes": {"store_prompts": store_prompts},
    }


def write_yaml(path: Path, document: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False), encoding="utf-8")
    return path


# SSE ------------------------------------------------------------------------------------------


@dataclass
class SseBody:
    """A parsed ``text/event-stream`` body: ``data:`` payloads in order, and comment lines."""

    data: list[str]
    comments: list[str]

    @property
    def done(self) -> bool:
        """Whether the stream ended with ``data: [DONE]``."""
        return bool(self.data) and self.data[-1] == "[DONE]"

    @property
    def payloads(self) -> list[dict[str, Any]]:
        """Every JSON payload, error events included."""
        return [orjson.loads(item) for item in self.data if item != "[DONE]"]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` payloads."""
        return [p for p in self.payloads if "error" not in p]

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The error events, each ``{"error": {...}}``."""
        return [p for p in self.payloads if "error" in p]

    def text(self, index: int = 0, field_name: str = "content") -> str:
        """Join the ``delta[field_name]`` strings of choice ``index``."""
        parts = [
            choice["delta"].get(field_name) or ""
            for chunk in self.chunks
            for choice in chunk.get("choices") or ()
            if choice.get("index") == index
        ]
        return "".join(parts)

    def finish_reasons(self) -> dict[int, str]:
        """Each choice index mapped to its finish reason."""
        return {
            choice["index"]: choice["finish_reason"]
            for chunk in self.chunks
            for choice in chunk.get("choices") or ()
            if choice.get("finish_reason")
        }


def parse_sse(raw: bytes) -> SseBody:
    """Split an SSE body into ``data:`` payloads and ``:`` comments."""
    data: list[str] = []
    comments: list[str] = []
    for line in raw.decode("utf-8").split("\n"):
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif line.startswith(":"):
            comments.append(line[1:].strip())
    return SseBody(data, comments)


# Request helpers ----------------------------------------------------------------------------


def chat_body(prompt: str = "Say hello in one short sentence.", **extra: Any) -> dict[str, Any]:
    """Return a chat-completion body for ``model`` (default ``auto``) with one user message."""
    return {
        "model": extra.pop("model", "auto"),
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def tenant_of_key(api_key: str) -> str:
    """The tenant id the gateway derives from ``api_key`` (a hash, never the key itself)."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


def new_api_key() -> str:
    return f"sk-test-{uuid.uuid4().hex}"


StreamEntry = tuple[bytes, dict[bytes, bytes]]


def stream_entries(client: redis.Redis, after: str = "0-0") -> list[StreamEntry]:
    """Entries of the outcome stream added after entry ``after``, oldest first."""
    return cast(list[StreamEntry], client.xrange(STREAM_KEY, min=f"({after}", max="+"))


def open_redis_client(url: str) -> redis.Redis:
    """A Redis client whose calls fail after 5 s, so a stalled server fails a test, never hangs it."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def redis_stream_tip(client: redis.Redis) -> str:
    """The id of the newest entry of the outcome stream, or ``0-0`` when it is empty."""
    newest = cast(list[StreamEntry], client.xrevrange(STREAM_KEY, count=1))
    return newest[0][0].decode() if newest else "0-0"


def read_stream_records(client: redis.Redis, after: str, tenants: set[str]) -> list[dict[str, Any]]:
    """Outcome records of ``tenants`` that were added to the stream after entry ``after``."""
    records = [orjson.loads(fields[b"record"]) for _, fields in stream_entries(client, after)]
    return [record for record in records if record.get("tenant") in tenants]


def read_file_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


# In-process gateway -------------------------------------------------------------------------


@dataclass
class Gateway:
    """A running app with an httpx client bound to it over ASGI.

    ``api_key`` is sent as the bearer token of every request made through :meth:`chat`
    unless the call passes its own ``Authorization`` header.
    """

    app: FastAPI
    client: httpx.AsyncClient
    api_key: str
    redis_client: redis.Redis | None
    stream_start: str
    tenants: set[str] = field(default_factory=set)

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime  # type: ignore[no-any-return]

    @property
    def tenant(self) -> str:
        return tenant_of_key(self.api_key)

    async def chat(
        self, body: Any, *, api_key: str | None = None, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """POST ``body`` (JSON-encoded unless it is bytes) to /v1/chat/completions."""
        key = api_key or self.api_key
        self.tenants.add(tenant_of_key(key))
        all_headers = {"Authorization": f"Bearer {key}", **(headers or {})}
        if isinstance(body, bytes):
            all_headers.setdefault("Content-Type", "application/json")
            return await self.client.post("/v1/chat/completions", content=body, headers=all_headers)
        return await self.client.post("/v1/chat/completions", json=body, headers=all_headers)

    async def records(self) -> list[dict[str, Any]]:
        """Flush the outcome log and return this gateway's records, oldest first."""
        await self.runtime.outcomes.flush()
        if self.redis_client is None:
            return read_file_records(self.runtime.outcomes.path)
        return read_stream_records(self.redis_client, self.stream_start, self.tenants)

    async def request_records(self) -> list[dict[str, Any]]:
        """Like :meth:`records`, without feedback records."""
        return [r for r in await self.records() if r["type"] == "request"]


@asynccontextmanager
async def open_gateway(
    settings: Settings,
    scorer: Scorer | None,
    redis_client: redis.Redis | None,
    tracer_provider: Any = None,
) -> AsyncIterator[Gateway]:
    """Build the app, run its lifespan, and yield it with an ASGI httpx client.

    App exceptions are not re-raised into the test (``raise_app_exceptions=False``), so a
    test gets the HTTP response a real client would get. ``tracer_provider`` is passed to
    ``create_app``.
    """
    app = create_app(settings, scorer, tracer_provider)
    stream_start = redis_stream_tip(redis_client) if redis_client is not None else "0-0"
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        gateway = Gateway(app, client, new_api_key(), redis_client, stream_start)
        gateway.tenants.add(gateway.tenant)
        yield gateway


@dataclass
class GatewayKit:
    """Everything one test needs to start gateways: a folder, fake upstreams and Redis."""

    tmp_path: Path
    fakes: dict[str, FakeUpstream]
    redis_url: str | None = None

    @property
    def base_urls(self) -> dict[str, str]:
        return {tier: fake.base_url for tier, fake in self.fakes.items()}

    @property
    def policy_path(self) -> Path:
        return self.tmp_path / "policy.yaml"

    def write_policy(self, **options: Any) -> Path:
        """Write :func:`policy_document` for the fakes to ``policy_path``."""
        return write_yaml(self.policy_path, policy_document(self.base_urls, **options))

    def settings(self, *, use_redis: bool = False, **overrides: Any) -> Settings:
        """Settings for a gateway on ``policy_path``, with no Redis unless ``use_redis``."""
        if use_redis and self.redis_url is None:
            raise RuntimeError("request the redis_url fixture to run a gateway with Redis")
        values: dict[str, Any] = {
            "policy": self.policy_path,
            "redis_url": self.redis_url if use_redis else None,
            "data_dir": self.tmp_path / "var",
            "policy_reload_interval_s": 0.0,
            "local_model": False,
            "log_format": "json",
        }
        return Settings(**(values | overrides))

    @asynccontextmanager
    async def running(
        self,
        *,
        scorer: Scorer | None = None,
        bundled_classifier: bool = False,
        use_redis: bool = False,
        settings: Settings | None = None,
        **policy_options: Any,
    ) -> AsyncIterator[Gateway]:
        """Write the policy (unless ``settings`` is given) and run a gateway on it.

        The gateway scores with ``scorer``, a :class:`StubScorer` when that is None, or the
        classifier bundled in ``classifiers/default`` when ``bundled_classifier`` is set.
        """
        if not bundled_classifier:
            scorer = scorer or StubScorer()
        if settings is None:
            self.write_policy(**policy_options)
            settings = self.settings(use_redis=use_redis)
        redis_client = (
            open_redis_client(self.redis_url) if settings.redis_url and self.redis_url else None
        )
        try:
            async with open_gateway(settings, scorer, redis_client) as gateway:
                yield gateway
        finally:
            if redis_client is not None:
                redis_client.close()


# Live gateway -------------------------------------------------------------------------------


class LiveGateway:
    """The app served by uvicorn on a free 127.0.0.1 port, on a background thread."""

    def __init__(self, app: FastAPI, http: type[asyncio.Protocol] | str = GatewayHttpProtocol) -> None:
        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        # By default the protocol that `tierwise serve` uses, so these tests cover it.
        config = uvicorn.Config(
            app, http=http, log_config=None, access_log=False, lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self._socket]},
            name=f"gateway-{self.port}",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of the gateway, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime  # type: ignore[no-any-return]

    def start(self) -> LiveGateway:
        """Start serving; raise RuntimeError when uvicorn has not started within 30 s."""
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            self.stop()
            raise RuntimeError(f"the gateway on port {self.port} did not start")
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit, which runs the app's shutdown (flushing the outcome log)."""
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# Policy reload ------------------------------------------------------------------------------

RELOAD_INTERVAL_S = 0.05
"""Policy reload interval of the reload tests' gateways, in seconds."""


async def eventually(condition: Callable[[], Awaitable[bool]], attempts: int = 100) -> bool:
    """Poll ``condition`` every reload interval; return whether it became true."""
    for _ in range(attempts):
        if await condition():
            return True
        await asyncio.sleep(RELOAD_INTERVAL_S)
    return False


# Fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis URL; the test is skipped (failed under CI) when Redis does not answer."""
    url = os.environ.get(REDIS_URL_ENV, DEFAULT_TEST_REDIS_URL)
    return require_redis(url, f"start redis-server (make test starts one) or set {REDIS_URL_ENV}")


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = open_redis_client(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def kit(tmp_path: Path, fakes: dict[str, FakeUpstream]) -> GatewayKit:
    """A gateway kit without Redis."""
    return GatewayKit(tmp_path, fakes)


@pytest.fixture
def redis_kit(tmp_path: Path, fakes: dict[str, FakeUpstream], redis_url: str) -> GatewayKit:
    """A gateway kit whose gateways may use the test Redis (``use_redis=True``)."""
    return GatewayKit(tmp_path, fakes, redis_url)
