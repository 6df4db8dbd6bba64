"""Typed models of the policy YAML.

Unknown keys are rejected (``extra="forbid"``) so that a typo in a policy fails the check
instead of silently turning a setting off.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from router.routing.category import CATEGORIES
from router.upstream.http1 import MAX_BODY_BYTES

TIER_ORDER: tuple[str, ...] = ("edge", "mid", "frontier")
# The address the local edge model server listens on (router.edge.HOST).
LOCAL_MODEL_HOST = "127.0.0.1"

# The direct path renames max_tokens to max_completion_tokens for this host
# (Deployment.sent_output_limit_param).
OPENAI_API_HOST = "api.openai.com"
# litellm model prefixes whose upstreams speak the OpenAI protocol, so the direct path can
# forward requests without translation.
OPENAI_COMPATIBLE_PREFIXES = ("openai/", "hosted_vllm/", "openai_like/", "llamafile/", "lm_studio/")


# Upper bound of the token counts in the routing settings, the largest signed 64-bit integer.
# orjson, which hashes these settings into the routing version, raises above 2**64 - 1.
MAX_TOKEN_COUNT = 2**63 - 1

# Upper bound of requests_per_minute. Redis counts a tenant's requests with INCR, whose counter
# is a signed 64-bit integer, so no count can exceed a larger limit.
MAX_REQUESTS_PER_MINUTE = 2**63 - 1
# Upper bound of tokens_per_minute. Token counts are doubles (Python floats, and INCRBYFLOAT in
# Redis), which hold whole numbers exactly only up to 2**53.
MAX_TOKENS_PER_MINUTE = 2**53
# Upper bound of budgets in USD. Spend is summed in doubles (Python floats, and INCRBYFLOAT in
# Redis), which add amounts of a cent exactly only below 2**53 cents, about 9e13 USD.
MAX_BUDGET_USD = 10**12
# Upper bound of prices in USD per million tokens: 1 USD per token, over 1,000 times the
# dearest price in litellm 1.110.2's cost map (600 for o1-pro output). A cost is tokens times
# price, so with at most MAX_TOKEN_COUNT tokens it stays finite. An infinite cost (from a price
# of 1.7e308) made Redis reject the spend write, and that tenant's spend was lost without a log
# line.
MAX_PRICE_PER_MILLION = 10**6
# Upper bound of timeouts and cooldowns in seconds: one day, as router.errors.MAX_RETRY_AFTER_S.
# asyncio accepts any finite timeout, so this bound catches typos such as milliseconds written
# as seconds. A request that still waits after a day keeps its client, its max_in_flight slot
# and its upstream socket busy for nothing.
MAX_DURATION_S = 86_400
# Upper bound of requests under way at once (max_in_flight, shadow concurrency). On the direct
# path (HTTP/1.1) each uses its own upstream socket, and Linux limits a process to fs.nr_open
# open files, 1,048,576 by default, so a larger limit is never reached.
MAX_IN_FLIGHT = 2**20
# Upper bound of a deployment's weight. Weights are relative, so weights up to a million give
# any share down to one request in a million. The draw divides by the largest weight, so no
# finite weight overflows it, and the bound only catches typos.
MAX_WEIGHT = 10**6


class StrictModel(BaseModel):
    # No .inf or .nan: an infinite price, timeout or budget would reach cost sums, asyncio
    # timeouts and Redis as a value that none of them treats as "no limit".
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Price(StrictModel):
    """Prices in USD per million tokens."""

    input_per_million: float = Field(ge=0, le=MAX_PRICE_PER_MILLION)
    output_per_million: float = Field(ge=0, le=MAX_PRICE_PER_MILLION)
    cached_input_per_million: float | None = Field(
        default=None,
        ge=0,
        le=MAX_PRICE_PER_MILLION,
        description="Price of input tokens that the provider read from its prompt cache "
        "(usage.prompt_tokens_details.cached_tokens); without it they cost input_per_million.",
    )

    @model_validator(mode="after")
    def _cached_input_not_dearer(self) -> Price:
        cached = self.cached_input_per_million
        if cached is not None and cached > self.input_per_million:
            raise nested_value_error(
                f"{cached:g} is above input_per_million ({self.input_per_million:g}); providers "
                "charge less for input read from their prompt cache, so one of the two prices "
                "is probably mistyped",
                ("cached_input_per_million",),
            )
        return self


class Capabilities(StrictModel):
    # Strict, so that a value such as "no" or 0 is an error rather than read as a flag.
    model_config = ConfigDict(strict=True)

    tools: bool = True
    json_schema: bool = True
    n: bool = True
    vision: bool = False
    audio: bool = False
    """Whether the deployment accepts ``input_audio`` content parts."""
    files: bool = False
    """Whether the deployment accepts ``file`` content parts (PDFs and other documents)."""


def _check_api_base_url(url: str) -> None:
    """Raise ValueError unless ``url`` is an http or https URL with a host and a usable port.

    Both upstream paths append the endpoint path (``/chat/completions``) to api_base, so a
    query or fragment would end up before it and is rejected too.
    """
    if any(char.isspace() or not char.isprintable() for char in url):
        raise ValueError(
            "api_base contains whitespace or a control character; write the URL without "
            "them, e.g. https://api.openai.com/v1"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(
            f"api_base is not a valid URL ({exc}); give the server's address, "
            "e.g. https://api.openai.com/v1"
        ) from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            "api_base must start with http:// or https://, e.g. https://api.openai.com/v1"
        )
    if not parts.hostname:
        raise ValueError(
            "api_base has no host; give the server's address, e.g. http://10.0.0.5:8000/v1"
        )
    if not _is_host_name(parts.hostname):
        raise ValueError(
            f"api_base host {parts.hostname!r} is not a valid host name or IP address"
        )
    # Port 0 would let the local model server bind a random port, but the gateway sends
    # requests to exactly the port written here, so they could never arrive.
    if port == 0:
        raise ValueError(
            "port 0 is invalid in api_base because the gateway sends requests to exactly "
            "this port; give the port the model server listens on, e.g. "
            f"http://{LOCAL_MODEL_HOST}:8081/v1"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(
            "api_base must not contain a query (?) or fragment (#) because the gateway appends "
            "the endpoint path, such as /chat/completions, to it"
        )


# One dot-separated part of a host name: letters, digits, hyphens and underscores (some
# container and service names contain underscores).  \w also matches non-ASCII letters, so
# internationalized domain names pass.
_HOST_LABEL = re.compile(r"[\w-]+")


def _is_host_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    return all(_HOST_LABEL.fullmatch(label) for label in labels)


_FOUND_IN_MESSAGE = object()


def nested_value_error(
    message: str, location: tuple[str | int, ...], found: object = _FOUND_IN_MESSAGE
) -> PydanticCustomError:
    """Return a validation error about the value at ``location`` inside the validated object.

    A field or model validator's error is reported at the field or model itself, with the
    whole mapping as its input. The policy loader reads ``policy_location`` and
    ``policy_found`` from the error's context, so it names the nested key and its line and
    shows ``found``, not the mapping. Leave out ``found`` when ``message`` quotes the value.
    A location that ends in ``"[key]"`` names a mapping key, whose own line is reported.
    """
    context: dict[str, object] = {"policy_location": location}
    if found is not _FOUND_IN_MESSAGE:
        context["policy_found"] = found
    return PydanticCustomError("value_error", message, context)


def nested_missing_error(message: str, location: tuple[str | int, ...]) -> PydanticCustomError:
    """Return a validation error about a key missing at ``location`` inside the validated object."""
    return PydanticCustomError("missing", message, {"policy_location": location})


def _checked_api_base(value: str | None) -> str | None:
    if value is not None:
        _check_api_base_url(value)
    return value


def _check_local_model_api_base(local_model: bool, api_base: str | None) -> None:
    """Raise a validation error at ``api_base`` unless a local_model deployment has a usable one."""
    if not local_model:
        return
    needs = (
        f"a local_model deployment needs api_base http://{LOCAL_MODEL_HOST}:PORT/v1 with an "
        "explicit port, because `tierwise serve` starts the local edge model on "
        f"{LOCAL_MODEL_HOST} at that port"
    )
    if api_base is None:
        raise nested_missing_error(needs, ("api_base",))
    address = urlsplit(api_base)
    if address.hostname != LOCAL_MODEL_HOST or address.port is None:
        raise nested_value_error(needs, ("api_base",), api_base)


class UpstreamAccess:
    """Upstream access of a chat or embedding deployment: model name, key and transport.

    A mixin for the pydantic models that declare the fields named under TYPE_CHECKING.
    """

    if TYPE_CHECKING:
        name: str
        model: str
        api_base: str | None
        api_key_env: str | None
        transport: Literal["auto", "direct", "litellm"]
        local_model: bool
        timeout_s: float
        connect_timeout_s: float

    @property
    def uses_direct_path(self) -> bool:
        """Whether requests skip litellm and go straight to an OpenAI-compatible api_base."""
        if self.transport != "auto":
            return self.transport == "direct"
        return self.api_base is not None and self.model.startswith(OPENAI_COMPATIBLE_PREFIXES)

    @property
    def upstream_model(self) -> str:
        """The model name sent upstream on the direct path (the litellm prefix removed)."""
        provider, _, rest = self.model.partition("/")
        return rest if rest and f"{provider}/" in OPENAI_COMPATIBLE_PREFIXES else self.model

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def unavailable_reason(self) -> str | None:
        """Why this deployment cannot be used now, or None when it can."""
        if self.api_key_env and not os.environ.get(self.api_key_env):
            return f"environment variable {self.api_key_env} is not set"
        return None

    @cached_property
    def loaded_unavailable_reason(self) -> str | None:
        """The result of ``unavailable_reason()`` at its first read for this loaded policy.

        The gateway reads this per request, so that it does not look up the key's environment
        variable for every deployment of every request.  A policy reload builds new
        deployments and so reads the environment again.
        """
        return self.unavailable_reason()


class Deployment(UpstreamAccess, StrictModel):
    """One model endpoint of a tier."""

    name: str = Field(min_length=1, description="Public name; clients may request it directly.")
    model: str = Field(min_length=1, description="litellm model string, e.g. openai/gpt-4o-mini.")
    api_base: str | None = None
    api_key_env: str | None = Field(
        default=None, description="Environment variable that holds the provider key."
    )
    transport: Literal["auto", "direct", "litellm"] = "auto"
    price: Price
    context_window: int = Field(gt=0, le=MAX_TOKEN_COUNT)
    capabilities: Capabilities = Capabilities()
    local_model: bool = Field(
        default=False,
        description="Served by the local edge model that `tierwise serve` starts (the edge extra).",
    )
    default_max_tokens: int | None = Field(
        default=None,
        gt=0,
        le=MAX_TOKEN_COUNT,
        description="max_tokens sent when the request sets none; base models otherwise "
        "generate until their context is full.",
    )
    output_limit_param: Literal["auto", "max_tokens", "max_completion_tokens"] = Field(
        default="auto",
        description="The name under which the request's output-token limit is sent. auto: "
        "max_completion_tokens on the direct path to api.openai.com, whose reasoning models "
        "reject max_tokens; max_tokens for the local model, whose server reads only that; "
        "otherwise the name the client used.",
    )
    developer_role: Literal["auto", "developer", "system"] = Field(
        default="auto",
        description="The role under which messages of role developer are sent. auto: system "
        "for the local model, whose server (llama-cpp-python 0.3.36) answers a developer "
        "message with a 500; otherwise developer, as the client sent it. Set system for "
        "servers that reject the developer role.",
    )
    timeout_s: float = Field(default=60.0, gt=0, le=MAX_DURATION_S)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=MAX_DURATION_S)
    max_in_flight: int | None = Field(
        default=None, gt=0, le=MAX_IN_FLIGHT, strict=True,
        description="Requests this gateway process sends the deployment at once before it "
        "tries the deployment only after every other candidate, as for a cooldown.",
    )
    weight: float = Field(
        default=1.0, gt=0, le=MAX_WEIGHT,
        description="In a tier with `balance: weighted`, this deployment's share of the "
        "requests that try it first, relative to the tier's other weights.",
    )

    @field_validator("api_base")
    @classmethod
    def _check_api_base(cls, value: str | None) -> str | None:
        return _checked_api_base(value)

    @model_validator(mode="after")
    def _check_local_model_address(self) -> Deployment:
        # A model validator, so that the error names api_base, the value to change.
        _check_local_model_api_base(self.local_model, self.api_base)
        return self

    @field_validator("output_limit_param")
    @classmethod
    def _check_local_model_limit(cls, value: str, info: ValidationInfo) -> str:
        # local_model is declared first, so info.data has it unless it was invalid and reported.
        if value == "max_completion_tokens" and info.data.get("local_model"):
            raise ValueError(
                "the local model's server (llama-cpp-python 0.3.36) reads only max_tokens, so "
                "with max_completion_tokens its completions would have no output-token limit; "
                "remove output_limit_param or set it to max_tokens"
            )
        return value

    @cached_property
    def sent_output_limit_param(self) -> str | None:
        """Upstream name of the output-token limit, or None to send the client's name unchanged."""
        if self.output_limit_param != "auto":
            return self.output_limit_param
        if self.local_model:
            return "max_tokens"
        if self.uses_direct_path and urlsplit(self.api_base or "").hostname == OPENAI_API_HOST:
            return "max_completion_tokens"
        return None

    @cached_property
    def developer_as_system(self) -> bool:
        """Whether messages of role developer go upstream as role system."""
        if self.developer_role == "auto":
            return self.local_model
        return self.developer_role == "system"

    def cost_usd(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float:
        """Return the USD cost of a call; ``tokens_cached`` of the ``tokens_in`` were cache reads."""
        price = self.price
        cached_price = price.cached_input_per_million
        if cached_price is None or tokens_cached <= 0:
            return (tokens_in * price.input_per_million + tokens_out * price.output_per_million
                    ) / 1_000_000
        cached = min(tokens_cached, tokens_in)
        return (
            (tokens_in - cached) * price.input_per_million
            + cached * cached_price
            + tokens_out * price.output_per_million
        ) / 1_000_000


class Tier(StrictModel):
    deployments: list[Deployment] = Field(min_length=1)
    balance: Literal["ordered", "weighted"] = Field(
        default="ordered",
        description="ordered: requests try the deployments in the listed order. weighted: each "
        "request tries first a deployment drawn by weight, then the others in the listed order.",
    )


TierName = Literal["edge", "mid", "frontier"]


# The validators below run per key and per value, so an error's location names the entry and
# the policy loader reports that entry's line.
def _check_tier_name(tier: str) -> str:
    if tier not in TIER_ORDER:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIER_ORDER)}")
    return tier


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError("threshold must be between 0 and 1")
    return threshold


def _check_category(category: str) -> str:
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
    return category


# Upper bound of cooldown.after_failures. A deployment that fails 1,000 requests in a row is
# down, and a larger count only delays the cooldown that exists to skip it. 0 turns cooldowns off.
MAX_COOLDOWN_FAILURES = 1_000


class Cooldown(StrictModel):
    """Settings of the cooldown that moves a failing deployment behind the others (``router/upstream/health.py``)."""

    after_failures: int = Field(
        default=3, ge=0, le=MAX_COOLDOWN_FAILURES,
        description="Failures in a row (timeouts, refused connections, 5xx, 429, 401, 403, 404, "
        "413, broken streams) that start a cooldown; 0 turns cooldowns off.",
    )
    # Finite, because /readyz reports the seconds left as JSON, which has no infinity.
    seconds: float = Field(
        default=30.0, gt=0, le=MAX_DURATION_S,
        description="How long requests try the deployment only after every other candidate.",
    )


class Alias(StrictModel):
    """A router name that clients request as ``model``, with its own bounds on the tiers."""

    description: str = "Routed to the cheapest tier the classifier expects to answer well."
    min_tier: TierName | None = None
    max_tier: TierName | None = Field(
        default=None,
        description="The highest tier this alias uses, also as the fallback when a cheaper "
        "tier fails.",
    )
    thresholds: dict[
        Annotated[str, AfterValidator(_check_tier_name)],
        Annotated[float, AfterValidator(_check_threshold)],
    ] = Field(
        default_factory=dict,
        description="Tier -> threshold for this alias, in place of routing.thresholds for that "
        "tier: lower values send more of its traffic to cheaper tiers.",
    )

    @model_validator(mode="after")
    def _check_tier_bounds(self) -> Alias:
        if (
            self.min_tier is not None
            and self.max_tier is not None
            and TIER_ORDER.index(self.min_tier) > TIER_ORDER.index(self.max_tier)
        ):
            raise nested_value_error(
                f"{self.min_tier!r} is above max_tier {self.max_tier!r}, so no tier is left "
                "for this alias",
                ("min_tier",),
            )
        return self


class Routing(StrictModel):
    """Thresholds: a tier is chosen when its adequacy score is at least its threshold.

    Tiers are tried cheapest first; the most capable available tier is the fallback.
    """

    thresholds: dict[
        Annotated[str, AfterValidator(_check_tier_name)],
        Annotated[float, AfterValidator(_check_threshold)],
    ] = Field(default_factory=lambda: {"edge": 0.7, "mid": 0.6})
    escalate_on_error: bool = True
    cooldown: Cooldown = Cooldown()
    category_floors: dict[Annotated[str, AfterValidator(_check_category)], TierName] = Field(
        default_factory=dict,
        description=(
            "Prompt category (math, code, science, legal, medical, writing, chat, other) -> the "
            "cheapest tier a router alias uses for it while that tier or a higher one is available."
        ),
    )


# 100 years: beyond any useful cache lifetime, and within what Redis's SET EX accepts and
# what a cache entry's expiry (milliseconds in 8 bytes) can store.
MAX_CACHE_TTL_S = 3_155_760_000
# Upper bound of the in-process cache's entries. An entry with a one-word completion takes about
# 630 bytes for its key, response and dict slot (tracemalloc on CPython 3.11). A billion entries
# need over 600 GB, so a larger value would set no limit at all.
MAX_CACHE_ENTRIES = 10**9


class CachePolicy(StrictModel):
    enabled: bool = True
    ttl_s: int = Field(default=3600, gt=0, le=MAX_CACHE_TTL_S)
    max_entries: int = Field(
        default=10_000, gt=0, le=MAX_CACHE_ENTRIES, description="In-process cache size."
    )
    cache_nonzero_temperature: bool = False


class OutcomePolicy(StrictModel):
    store_prompts: bool = False


class Budget(StrictModel):
    """Spending limits in USD; a tenant over either limit gets 429 until the period ends (UTC)."""

    usd_per_day: float | None = Field(default=None, gt=0, le=MAX_BUDGET_USD)
    usd_per_month: float | None = Field(default=None, gt=0, le=MAX_BUDGET_USD)


def _check_key_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(
            "each key_sha256 entry must be 64 lowercase hex characters "
            "(printf %s KEY | sha256sum)"
        )
    return digest


class Tenant(StrictModel):
    key_sha256: list[Annotated[str, AfterValidator(_check_key_digest)]] = Field(
        default_factory=list,
        description="Hex SHA-256 digests of the tenant's API keys; keys are never stored.",
    )
    min_tier: TierName | None = None
    blocked_tiers: list[TierName] = Field(default_factory=list)
    budget: Budget = Budget()
    # Strict, because YAML's `true` would otherwise load as a limit of 1, and 60.0 or '60' as 60.
    requests_per_minute: int | None = Field(
        default=None,
        gt=0,
        le=MAX_REQUESTS_PER_MINUTE,
        strict=True,
        description="Maximum requests per UTC minute, counted across the replicas that share "
        "Redis. Further requests get 429 until the minute ends.",
    )
    tokens_per_minute: int | None = Field(
        default=None,
        gt=0,
        le=MAX_TOKENS_PER_MINUTE,
        strict=True,
        description="Maximum prompt and completion tokens per UTC minute of the answers that "
        "deployments gave (cache hits count none), across the replicas that share Redis. Once "
        "reached, requests get 429 until the minute ends.",
    )


# Tenant names that the gateway generates for callers that match no policy tenant.  Callers
# without a key share "anonymous" and a key the policy does not list becomes "key-" plus the
# first 16 hex digits of its SHA-256 (router.api.auth).  The chat endpoint records
# "unidentified" for requests rejected before their tenant is known.  A policy tenant with one
# of these names would share cache entries and spend with those callers.
RESERVED_TENANT_NAMES: tuple[str, ...] = ("anonymous", "unidentified")
GENERATED_KEY_TENANT_NAME = re.compile(r"key-[0-9a-f]{16}")


def _check_tenant_name(name: str) -> str:
    if name in RESERVED_TENANT_NAMES or GENERATED_KEY_TENANT_NAME.fullmatch(name):
        raise ValueError(
            f"tenant name {name!r} is reserved because the gateway uses it for callers that match "
            "no policy tenant, and those callers would share this tenant's cache entries, spend "
            "and outcome records. "
            "Reserved names are 'anonymous', 'unidentified' and 'key-' followed by 16 lowercase "
            "hex digits, so choose another name"
        )
    return name


class Tenants(StrictModel):
    require_key: bool = Field(
        default=False,
        description="Reject requests whose API key matches no tenant (401).",
    )
    allow_min_tier_header: bool = Field(
        default=False,
        description="Honour the x-tierwise-min-tier request header.",
    )
    default_requests_per_minute: int | None = Field(
        default=None,
        gt=0,
        le=MAX_REQUESTS_PER_MINUTE,
        strict=True,
        description="requests_per_minute of every API key the policy does not list, each key "
        "counted on its own, and of requests without a key, counted together.",
    )
    default_tokens_per_minute: int | None = Field(
        default=None,
        gt=0,
        le=MAX_TOKENS_PER_MINUTE,
        strict=True,
        description="tokens_per_minute of every API key the policy does not list, counted as "
        "default_requests_per_minute is.",
    )
    show_upstream_rate_limits: bool = Field(
        default=True,
        description="Pass the responding deployment's x-ratelimit-* headers to clients. They "
        "describe the operator's provider account, which every tenant shares.",
    )
    entries: dict[Annotated[str, AfterValidator(_check_tenant_name)], Tenant] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _check_keys_unique(self) -> Tenants:
        owners: dict[str, str] = {}
        for name, tenant in self.entries.items():
            for digest in tenant.key_sha256:
                owner = owners.setdefault(digest, name)
                if owner != name:
                    raise nested_value_error(
                        f"key digest {digest!r} is listed under tenants {owner!r} and {name!r}; "
                        "an API key belongs to one tenant, so remove it from one of them",
                        ("entries", name, "key_sha256", tenant.key_sha256.index(digest)),
                    )
        return self

    def tenant_for_digest(self, digest: str) -> str | None:
        for name, tenant in self.entries.items():
            if digest in tenant.key_sha256:
                return name
        return None


_CHEAPER_TIERS: list[TierName] = ["edge", "mid"]


class ShadowJudge(StrictModel):
    """The deployment that grades a served answer against the reference answer."""

    deployment: str = Field(min_length=1, description="Name of a deployment of this policy.")
    max_tokens: int = Field(
        default=16, gt=0, le=MAX_TOKEN_COUNT, description="Output limit of the judge's verdict."
    )


class ShadowPolicy(StrictModel):
    """Shadow evaluation settings.

    A sample of requests answered by ``tiers`` is asked again of ``reference_tier`` in the
    background, and the judge grades the served answer against the reference answer.  The
    grades go to the outcome log as labels.  Only non-streamed, non-cached requests with a
    text answer are eligible.
    """

    enabled: bool = False
    sample_rate: float = Field(
        default=0.02, ge=0.0, le=1.0, description="Share of eligible requests."
    )
    tiers: list[TierName] = Field(default_factory=lambda: _CHEAPER_TIERS.copy(), min_length=1)
    reference_tier: TierName = "frontier"
    judge: ShadowJudge | None = None
    budget_usd_per_day: float = Field(
        default=5.0, ge=0, le=MAX_BUDGET_USD, description="Cap on reference and judge spend per UTC day, in USD."
    )
    concurrency: int = Field(
        default=2, gt=0, le=MAX_IN_FLIGHT, description="Shadow jobs in flight at most; more are dropped."
    )
    timeout_s: float = Field(
        default=120.0, gt=0, le=MAX_DURATION_S, description="Limit of one whole shadow job."
    )
    store_prompts: bool = Field(
        default=False,
        description="Keep the judge's messages (which contain the user's prompt) in the label record.",
    )

    @model_validator(mode="after")
    def _check_reference(self) -> ShadowPolicy:
        if self.reference_tier in self.tiers:
            raise nested_value_error(
                f"{self.reference_tier!r} is also in tiers ({', '.join(self.tiers)}); the "
                "reference must be a tier that the shadowed requests were not served by",
                ("reference_tier",),
            )
        return self


# Upper bound of an embedding deployment's dimensions. The direct path reads at most
# MAX_BODY_BYTES of an upstream response, and each number of a JSON vector takes at least 2
# bytes ("0,"), so longer vectors can never arrive. Cache keys hash this value with orjson,
# which raises above 2**64 - 1, and that failed every request of the deployment with a 500.
MAX_EMBEDDING_DIMENSIONS = MAX_BODY_BYTES // 2


# Bounds of the local model's liveness probe. The supervisor reads these settings before each
# probe, so a reload applies them after the wait under way, at most MAX_PROBE_INTERVAL_S later.
# Below 0.1 s, probes would run back to back. A busy server responded within 9 ms during a 22 s
# completion on 2 shared cores, so a timeout of 0.1 s still covers a loaded machine.
MIN_PROBE_S = 0.1
MAX_PROBE_INTERVAL_S = 60
MAX_PROBE_TIMEOUT_S = 60
# A probe starts at most every 60 s, so 100 failed probes find a hung server within 100 minutes,
# and more would leave the edge tier down for longer.
MAX_PROBE_FAILURES = 100


class LocalModelPolicy(StrictModel):
    """Liveness probe of the local edge model server that `tierwise serve` starts.

    The deployments served by that server set ``local_model: true``. A server that fails
    ``probe_failures`` probes in a row is killed and started again.
    """

    probe_interval_s: float = Field(
        default=5.0, ge=MIN_PROBE_S, le=MAX_PROBE_INTERVAL_S,
        description="Seconds from the start of one liveness probe (GET /health) to the next.",
    )
    probe_timeout_s: float = Field(
        default=3.0, ge=MIN_PROBE_S, le=MAX_PROBE_TIMEOUT_S,
        description="Seconds a probe waits for the server's response before it counts as failed.",
    )
    # Strict, because YAML's `true` would otherwise load as 1 failure.
    probe_failures: int = Field(
        default=3, ge=1, le=MAX_PROBE_FAILURES, strict=True,
        description="Failed probes in a row after which the server is killed and restarted.",
    )


class EmbeddingPrice(StrictModel):
    """Price in USD per million input tokens; embedding models produce no output tokens."""

    input_per_million: float = Field(ge=0, le=MAX_PRICE_PER_MILLION)


class EmbeddingDeployment(UpstreamAccess, StrictModel):
    """One embedding model endpoint, requested by its name or through an embeddings alias."""

    name: str = Field(min_length=1, description="Public name; clients may request it directly.")
    model: str = Field(
        min_length=1, description="litellm model string, e.g. openai/text-embedding-3-small."
    )
    api_base: str | None = None
    api_key_env: str | None = Field(
        default=None, description="Environment variable that contains the provider key."
    )
    transport: Literal["auto", "direct", "litellm"] = "auto"
    price: EmbeddingPrice
    local_model: bool = Field(
        default=False,
        description="Served by the local edge model that `tierwise serve` starts (the edge extra).",
    )
    dimensions: int | None = Field(
        default=None, gt=0, le=MAX_EMBEDDING_DIMENSIONS, strict=True,
        description="Length of the vectors the model returns for a request without dimensions.",
    )
    accepts_dimensions: bool = Field(
        default=False,
        description="Whether the model shortens its vectors to a request's dimensions, as "
        "OpenAI's text-embedding-3 models do. Without it, only requests without dimensions or "
        "with dimensions equal to `dimensions` reach the deployment.",
    )
    accepts_token_ids: bool | None = Field(
        default=None,
        description="Whether the model takes token arrays (lists of token ids) as input, as "
        "OpenAI's embedding models do. Unset means true, except on local_model deployments, "
        "because the server of llama-cpp-python 0.3.36 takes only strings. Requests with "
        "token arrays reach only the deployments that take them.",
    )
    timeout_s: float = Field(default=60.0, gt=0, le=MAX_DURATION_S)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=MAX_DURATION_S)

    @field_validator("api_base")
    @classmethod
    def _check_api_base(cls, value: str | None) -> str | None:
        return _checked_api_base(value)

    @model_validator(mode="after")
    def _check_local_model_address(self) -> EmbeddingDeployment:
        # A model validator, so that the error names api_base, the value to change.
        _check_local_model_api_base(self.local_model, self.api_base)
        return self

    @property
    def takes_token_ids(self) -> bool:
        """Whether requests whose input is token arrays may reach this deployment."""
        if self.accepts_token_ids is not None:
            return self.accepts_token_ids
        return not self.local_model

    def cost_usd(self, tokens_in: int, tokens_out: int = 0, tokens_cached: int = 0) -> float:
        """Return the USD cost of embedding ``tokens_in`` tokens; the other counts are unused."""
        return tokens_in * self.price.input_per_million / 1_000_000

    def takes_dimensions(self, dimensions: int | None) -> bool:
        """Return whether the deployment can return vectors of length ``dimensions``.

        A ``dimensions`` of None requests the model's own length, which every deployment returns.
        """
        return dimensions is None or self.accepts_dimensions or dimensions == self.dimensions


class Embeddings(StrictModel):
    """The ``/v1/embeddings`` endpoint: embedding deployments, and names for lists of them.

    Embedding requests are not classified or tiered: the request's ``model`` names a
    deployment, or an alias whose deployments are tried in the listed order.
    """

    deployments: list[EmbeddingDeployment] = Field(min_length=1)
    aliases: dict[str, Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="Name -> embedding deployment names, tried in order. A deployment that "
        "fails (a timeout, a refused connection, 401, 403, 404, 413, 429 or 5xx, invalid JSON, "
        "or vectors that are missing, misnumbered or not numbers) hands the request to the "
        "next, while an upstream 400 or 422 goes back to the client. List only deployments of "
        "one model, because vectors of different models cannot be compared.",
    )

    @field_validator("aliases")
    @classmethod
    def _check_aliases(
        cls, value: dict[str, list[str]], info: ValidationInfo
    ) -> dict[str, list[str]]:
        # Runs after ``deployments`` (fields are validated in order).
        deployments: list[EmbeddingDeployment] = info.data.get("deployments") or []
        by_name = {d.name: d for d in deployments}
        for alias, targets in value.items():
            if alias in by_name:
                raise nested_value_error(
                    f"alias {alias!r} is also the name of an embedding deployment; give the "
                    "alias another name",
                    (alias, "[key]"),
                )
            for index, target in enumerate(targets):
                if target not in by_name and by_name:
                    raise nested_value_error(
                        f"{target!r} is not an embedding deployment; expected one of "
                        f"{', '.join(by_name)}",
                        (alias, index),
                    )
            sizes = {by_name[n].dimensions for n in targets if n in by_name} - {None}
            if len(sizes) > 1:
                raise nested_value_error(
                    f"alias {alias!r} lists deployments with different dimensions "
                    f"({', '.join(map(str, sorted(s for s in sizes if s is not None)))}); "
                    "vectors of different models cannot be compared, so list one model only",
                    (alias, "[key]"),
                )
        return value

    @model_validator(mode="after")
    def _check_names(self) -> Embeddings:
        seen: set[str] = set()
        for index, deployment in enumerate(self.deployments):
            if deployment.name in seen:
                raise nested_value_error(
                    f"embedding deployment name {deployment.name!r} is used twice; give each "
                    "deployment its own name",
                    ("deployments", index, "name"),
                )
            seen.add(deployment.name)
        return self

    def candidates(self, name: str) -> tuple[EmbeddingDeployment, ...] | None:
        """Return the deployments that serve requests for ``name``, in order, or None."""
        return self._candidates.get(name)

    @property
    def candidate_names(self) -> list[str]:
        """The names that requests may use: deployments, then aliases."""
        return list(self._candidates)

    @cached_property
    def _candidates(self) -> dict[str, tuple[EmbeddingDeployment, ...]]:
        by_name = {d.name: d for d in self.deployments}
        result: dict[str, tuple[EmbeddingDeployment, ...]] = {
            name: (deployment,) for name, deployment in by_name.items()
        }
        for alias, targets in self.aliases.items():
            result[alias] = tuple(by_name[name] for name in targets)
        return result


@dataclass(frozen=True)
class Candidate:
    """A deployment that may serve a request, with the tier it belongs to."""

    tier: str
    deployment: Deployment


class Policy(StrictModel):
    version: Literal[1] = 1
    name: str = "default"
    aliases: dict[str, Alias] = Field(default_factory=lambda: {"auto": Alias()})
    tiers: dict[Literal["edge", "mid", "frontier"], Tier] = Field(min_length=1)
    routing: Routing = Routing()
    cache: CachePolicy = CachePolicy()
    outcomes: OutcomePolicy = OutcomePolicy()
    tenants: Tenants = Tenants()
    shadow: ShadowPolicy = ShadowPolicy()
    local_model: LocalModelPolicy = LocalModelPolicy()
    embeddings: Embeddings | None = Field(
        default=None,
        description="Deployments of POST /v1/embeddings; without this section that endpoint "
        "returns 404 for every model.",
    )

    @field_validator("shadow")
    @classmethod
    def _check_shadow(cls, value: ShadowPolicy, info: ValidationInfo) -> ShadowPolicy:
        # Runs after ``tiers`` (fields are validated in order), so the tiers are known here
        # unless they are invalid, which is reported already.
        if "tiers" not in info.data:
            return value
        tiers: dict[str, Tier] = info.data["tiers"]
        names = [d.name for tier in tiers.values() for d in tier.deployments]
        if value.judge is not None and value.judge.deployment not in names:
            raise nested_value_error(
                f"{value.judge.deployment!r} is not a deployment of this policy; expected one "
                f"of {', '.join(names)}",
                ("judge", "deployment"),
            )
        if value.enabled and value.judge is None:
            raise nested_missing_error(
                "an enabled shadow section needs a judge; set judge.deployment to a deployment "
                "of this policy",
                ("judge",),
            )
        if value.enabled and value.reference_tier not in tiers:
            raise nested_value_error(
                f"{value.reference_tier!r} has no deployments in this policy; expected one of "
                f"{', '.join(tiers)}",
                ("reference_tier",),
            )
        return value

    @field_validator("embeddings")
    @classmethod
    def _check_local_embeddings(
        cls, value: Embeddings | None, info: ValidationInfo
    ) -> Embeddings | None:
        # `tierwise serve` starts one local model server, on the port of the first local_model
        # deployment, chat deployments first. Fields are validated in order, so ``tiers`` is
        # known here.
        tiers: dict[str, Tier] = info.data.get("tiers") or {}
        local = [d for tier in tiers.values() for d in tier.deployments if d.local_model]
        if value is None or not local:
            return value
        expected = local[0].api_base
        for index, deployment in enumerate(value.deployments):
            if deployment.local_model and deployment.api_base != expected:
                raise nested_value_error(
                    f"local_model embedding deployment {deployment.name!r} must use the api_base "
                    f"of the local model, {expected!r}, which chat deployment {local[0].name!r} "
                    "sets, because `tierwise serve` starts one local model server",
                    ("deployments", index, "api_base"),
                    deployment.api_base,
                )
        return value

    @model_validator(mode="after")
    def _check_names(self) -> Policy:
        seen: set[str] = set()
        for tier, config in self.ordered_tiers():
            for index, deployment in enumerate(config.deployments):
                location: tuple[str | int, ...] = ("tiers", tier, "deployments", index, "name")
                if deployment.name in seen:
                    raise nested_value_error(
                        f"deployment name {deployment.name!r} is used twice; give each "
                        "deployment its own name",
                        location,
                    )
                if deployment.name in self.aliases:
                    raise nested_value_error(
                        f"deployment name {deployment.name!r} is also a router alias; GET "
                        "/v1/models lists every name once, so give the deployment another name",
                        location,
                    )
                seen.add(deployment.name)
        if self.embeddings is not None:
            embedding_names: list[tuple[str, tuple[str | int, ...]]] = [
                (d.name, ("embeddings", "deployments", index, "name"))
                for index, d in enumerate(self.embeddings.deployments)
            ]
            embedding_names += [
                (alias, ("embeddings", "aliases", alias, "[key]")) for alias in self.embeddings.aliases
            ]
            for name, location in embedding_names:
                if name in seen or name in self.aliases:
                    raise nested_value_error(
                        f"embeddings name {name!r} is also a chat deployment or router alias; "
                        "GET /v1/models lists every name once, so give it another name",
                        location,
                    )
        return self

    def ordered_tiers(self) -> tuple[tuple[str, Tier], ...]:
        """Tiers from cheapest to most capable, built once per loaded policy."""
        return self._ordered_tiers

    @cached_property
    def _ordered_tiers(self) -> tuple[tuple[str, Tier], ...]:
        return tuple((name, self.tiers[name]) for name in TIER_ORDER if name in self.tiers)

    def tier_candidates(self, tier: str) -> tuple[Candidate, ...]:
        """Return the deployments of ``tier`` as routing candidates, built once per loaded policy."""
        return self._tier_candidates[tier]

    @cached_property
    def _tier_candidates(self) -> dict[str, tuple[Candidate, ...]]:
        return {
            name: tuple(Candidate(name, deployment) for deployment in tier.deployments)
            for name, tier in self.tiers.items()
        }

    def all_deployments(self) -> list[Deployment]:
        return [d for _, tier in self.ordered_tiers() for d in tier.deployments]

    @cached_property
    def limits_in_flight(self) -> bool:
        """Whether any deployment sets ``max_in_flight``."""
        return any(d.max_in_flight is not None for d in self.all_deployments())

    @cached_property
    def weighted_tiers(self) -> frozenset[str]:
        """Names of the tiers with ``balance: weighted`` and more than one deployment."""
        return frozenset(
            name for name, tier in self.ordered_tiers()
            if tier.balance == "weighted" and len(tier.deployments) > 1
        )

    @cached_property
    def smallest_context_window(self) -> int:
        """The smallest context window of any deployment, computed once per loaded policy."""
        return min(d.context_window for d in self.all_deployments())

    def thresholds_for(self, alias: str) -> Mapping[str, float]:
        """Return the routing thresholds of the router alias ``alias``.

        They are the policy's ``routing.thresholds``, replaced by the alias's own for the
        tiers that it sets.
        """
        return self._alias_thresholds.get(alias, self.routing.thresholds)

    @cached_property
    def _alias_thresholds(self) -> dict[str, dict[str, float]]:
        return {
            name: {**self.routing.thresholds, **alias.thresholds}
            for name, alias in self.aliases.items()
            if alias.thresholds
        }

    def alias_tiers(self, alias: str) -> list[str]:
        """Return the policy's tiers from the alias's ``min_tier`` to its ``max_tier``, cheapest first."""
        bounds = self.aliases[alias]
        low = TIER_ORDER.index(bounds.min_tier) if bounds.min_tier is not None else 0
        high = TIER_ORDER.index(bounds.max_tier) if bounds.max_tier is not None else len(TIER_ORDER) - 1
        return [tier for tier, _ in self.ordered_tiers() if low <= TIER_ORDER.index(tier) <= high]

    def has_model(self, name: str) -> bool:
        """Whether ``name`` is a router alias or a deployment name of this policy."""
        return name in self.aliases or name in self._deployments_by_name

    def embedding_candidates(self, name: str) -> tuple[EmbeddingDeployment, ...] | None:
        """Return the embedding deployments that serve ``name``, in order, or None."""
        return self.embeddings.candidates(name) if self.embeddings is not None else None

    def local_model_deployments(self) -> list[Deployment | EmbeddingDeployment]:
        """Chat and embedding deployments served by the local model, chat ones first."""
        deployments: list[Deployment | EmbeddingDeployment] = [*self.all_deployments()]
        if self.embeddings is not None:
            deployments.extend(self.embeddings.deployments)
        return [d for d in deployments if d.local_model]

    def find_deployment(self, name: str) -> tuple[str, Deployment] | None:
        """Return the tier and deployment named ``name``, or None."""
        return self._deployments_by_name.get(name)

    @cached_property
    def _deployments_by_name(self) -> dict[str, tuple[str, Deployment]]:
        # Names are unique (checked by _check_names), so no entry overwrites another.
        return {d.name: (tier, d) for tier, config in self.ordered_tiers() for d in config.deployments}
