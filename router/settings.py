"""Process settings, read from arguments, then environment variables, then defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The checkout's policies/ folder; container images copy it and set TIERWISE_POLICY.
_CHECKOUT_POLICY = Path(__file__).resolve().parent.parent / "policies" / "default.yaml"
# The copy that setup.py writes into every wheel, for installs without a checkout.
_PACKAGED_POLICY = Path(__file__).resolve().parent / "bundled_policies" / "default.yaml"
BUNDLED_POLICY = _CHECKOUT_POLICY if _CHECKOUT_POLICY.is_file() else _PACKAGED_POLICY
# Braces would change the Redis Cluster hash tag of every key, and ':' separates key parts.
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


class Settings(BaseSettings):
    """Settings of one gateway process.

    Explicit constructor arguments win over ``TIERWISE_*`` environment variables, which win
    over the defaults below.  ``REDIS_URL`` is also read without the prefix because that is
    the name deployment platforms use.
    """

    model_config = SettingsConfigDict(env_prefix="TIERWISE_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, ge=1, le=65535, description="TCP port to listen on.")
    policy: Path = Field(
        default=BUNDLED_POLICY,
        description="Policy YAML file; the bundled default policy when unset (policies/default.yaml "
        "in a checkout, a copy inside the package when installed from a wheel).",
    )
    classifier: Path | None = Field(
        default=None, description="Classifier artifact folder; the bundled model when unset."
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TIERWISE_REDIS_URL", "REDIS_URL", "redis_url"),
        description="Redis for the shared cache, budgets, outcome stream and published versions; "
        "an in-process cache and a local outcome file when unset.",
    )
    redis_cluster: bool = Field(
        default=False,
        description="Treat the Redis URL as one node of a Redis Cluster and use a cluster client.",
    )
    redis_key_prefix: str = Field(
        default="tw",
        description="Namespace of every Redis key, stream and channel, so that gateways of "
        "two deployments (staging, production) can share one Redis.",
    )
    ready_requires_redis: bool = Field(
        default=False,
        description="Return 503 from /readyz until the configured Redis has replied to a ping "
        "once. Later Redis outages only mark readiness degraded (200). No effect without a "
        "Redis URL.",
    )
    data_dir: Path = Field(
        default=Path("var"),
        description="Folder of the gateway's local state: the outcome log without Redis, the "
        "outcome spool and the feedback secret file.",
    )
    outcomes_path: Path | None = Field(
        default=None, description="Local outcome log (JSONL); <data_dir>/outcomes.jsonl when unset."
    )
    outcome_spool_dir: Path | None = Field(
        default=None,
        description="Folder where outcome records wait until the Redis stream has them; "
        "<data_dir>/spool when unset. Keep it across container restarts (an emptyDir volume).",
    )
    policy_reload_interval_s: float = Field(
        default=2.0, description="Seconds between checks of the policy file for changes."
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, description="Largest request body accepted; larger ones get 413."
    )
    body_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds that a request body may take to arrive after the request's "
        "headers; a slower one gets 408.",
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins (such as https://app.example.com) whose browser "
        "pages may call the API, or * for any origin; empty sends no CORS headers.",
    )
    redis_timeout_s: float = Field(
        default=0.25,
        description="Timeout of one Redis call on the request path; a slower Redis counts as a "
        "miss, and repeated failures open the circuit breaker.",
    )
    cache_near_entries: int = Field(
        default=1000,
        ge=0,
        description="With Redis, how many recently used cache entries each replica also keeps "
        "in process, for at most 60 s and never past the entry's Redis expiry, so that a "
        "repeated hit skips the Redis round trip; 0 turns the copies off.",
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="json, console, or auto (console on a terminal)."
    )
    log_level: str = Field(default="info", description="Lowest level logged.")
    keepalive_interval_s: float = Field(
        default=10.0,
        description="Seconds of upstream silence after which a stream gets an SSE comment line.",
    )
    http_idle_timeout_s: float = Field(
        default=75.0,
        gt=0,
        description="How long an idle client connection stays open; keep it above the load "
        "balancer's idle timeout (60 s on AWS ALB), or the balancer may reuse a connection the "
        "gateway is closing.",
    )
    local_model: bool = Field(
        default=True, description="Start the local edge model when the edge extra is installed."
    )
    model_dir: Path | None = Field(
        default=None,
        description="Folder where the local edge model's GGUF file (94 MB) is copied once "
        "and reused; ~/.cache/tierwise/models when unset.",
    )
    feedback_secret: SecretStr | None = Field(
        default=None,
        description="Key of the MAC that binds each issued request id to its tenant, so that "
        "feedback is accepted only from that tenant. Give every replica the same value; when "
        "unset, the first replica stores a random one in Redis, or in <data_dir> without Redis.",
    )
    keep_client_request_ids: bool = Field(
        default=True,
        description="Use a client's own x-request-id as the request id. Feedback is accepted only "
        "for ids the gateway issued, so set false behind a proxy that adds x-request-id to every "
        "request; the client's id is then kept in the outcome record as client_request_id.",
    )
    tracing: bool = Field(
        default=False,
        description="Export OpenTelemetry spans of the chat and embeddings endpoints over "
        "OTLP/HTTP, configured by the standard OTEL_* environment variables. Needs the otel "
        "extra (pip install 'tierwise[otel]').",
    )
    evaluation_report: Path | None = Field(
        default=None,
        description="JSON report of `tierwise evaluate --json` whose cost-quality curve the "
        "dashboard shows.",
    )

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value:
            from router.redis_link import check_redis_url

            check_redis_url(value)
        return value

    @field_validator("redis_key_prefix")
    @classmethod
    def _check_key_prefix(cls, value: str) -> str:
        if not _KEY_PREFIX.match(value):
            raise ValueError(
                f"invalid Redis key prefix {value!r}: use 1 to 32 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
        return value

    @property
    def resolved_spool_dir(self) -> Path:
        return self.outcome_spool_dir or self.data_dir / "spool"

    @property
    def resolved_outcomes_path(self) -> Path:
        return self.outcomes_path or self.data_dir / "outcomes.jsonl"
