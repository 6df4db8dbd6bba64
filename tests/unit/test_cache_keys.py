"""Cache keys: every answer-changing field and the tenant separate entries."""

from __future__ import annotations

import pytest

from router.cache.entries import decode_entry, encode_entry
from router.cache.keys import cache_key, embedding_scope, is_cacheable, routing_scope
from router.policy.schema import EmbeddingDeployment, Policy

BASE = {
    "model": "auto",
    "temperature": 0,
    "messages": [{"role": "user", "content": "What is 2 + 2?"}],
}


def key(body: dict[str, object], tenant: str = "t1", scope: str = "small") -> str:
    return cache_key(tenant, scope, body)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"seed": 7},
        {"top_p": 0.9},
        {"stop": ["\n"]},
        {"logprobs": True},
        {"n": 2},
        {"max_tokens": 10},
        {"tool_choice": "none"},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"reasoning_effort": "high"},
        {"response_format": {"type": "json_object"}},
        {"some_future_parameter": 1},
    ],
)
def test_answer_changing_field_changes_key(change: dict[str, object]) -> None:
    assert key({**BASE, **change}) != key(BASE)


def test_image_bytes_change_key() -> None:
    def with_image(data: str) -> dict[str, object]:
        part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}
        return {**BASE, "messages": [{"role": "user", "content": [part]}]}

    assert key(with_image("AAAA")) != key(with_image("AAAB"))


def test_tenant_and_scope_change_key() -> None:
    assert key(BASE, tenant="t2") != key(BASE)
    assert key(BASE, scope="large") != key(BASE)


def test_delivery_fields_and_order_do_not_change_key() -> None:
    reordered = dict(reversed(list(BASE.items())))
    assert key(reordered) == key(BASE)
    assert key({**BASE, "stream": True, "stream_options": {"include_usage": True}}) == key(BASE)
    assert key({**BASE, "model": "other-alias", "user": "u1"}) == key(BASE)


def test_missing_temperature_means_one_and_is_not_cacheable() -> None:
    body = {k: v for k, v in BASE.items() if k != "temperature"}
    assert is_cacheable(body, cache_nonzero_temperature=False) is False
    assert is_cacheable(body, cache_nonzero_temperature=True) is True
    assert is_cacheable(BASE, cache_nonzero_temperature=False) is True
    assert is_cacheable({**BASE, "temperature": 0.2}, cache_nonzero_temperature=False) is False


def test_routing_scope_separates_entries() -> None:
    base = routing_scope("auto", "routing-1", "clf-1", None)
    others = [
        routing_scope("auto-quality", "routing-1", "clf-1", None),
        routing_scope("auto", "routing-2", "clf-1", None),
        routing_scope("auto", "routing-1", "clf-2", None),
        routing_scope("auto", "routing-1", "clf-1", "frontier"),
    ]
    keys = {cache_key("t1", scope, BASE) for scope in [base, *others]}
    assert len(keys) == 5


def test_entry_round_trip_and_unusable_entries() -> None:
    policy = Policy.model_validate({
        "version": 1,
        "aliases": {"auto": {}},
        "tiers": {"edge": {"deployments": [{
            "name": "small", "model": "openai/small", "api_base": "http://127.0.0.1:9/v1",
            "price": {"input_per_million": 1, "output_per_million": 2}, "context_window": 8192,
        }]}},
    })
    completion = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3}}

    tier, deployment, restored = decode_entry(policy, encode_entry("small", completion))  # type: ignore[misc]

    assert (tier, deployment.name, restored) == ("edge", "small", completion)
    assert decode_entry(policy, encode_entry("gone", completion)) is None
    assert decode_entry(policy, b'{"id": "old-format", "choices": []}') is None
    assert decode_entry(policy, b"not json") is None


EMBEDDER = {
    "name": "embedder", "model": "openai/text-embedding-3-small",
    "api_base": "http://127.0.0.1:9/v1", "price": {"input_per_million": 0.02},
}


def embedder_scope(model: str = "embed", **changes: object) -> str:
    return embedding_scope(model, (EmbeddingDeployment.model_validate({**EMBEDDER, **changes}),))


@pytest.mark.parametrize(
    "change",
    [
        {"model": "openai/text-embedding-3-large"},
        {"api_base": "http://127.0.0.1:10/v1"},
        {"transport": "litellm"},
        {"dimensions": 512},
        {"accepts_dimensions": True},
    ],
)
def test_embedding_scope_vector_settings(change: dict[str, object]) -> None:
    assert embedder_scope(**change) != embedder_scope()


def test_embedding_scope_keeps_prices_and_timeouts() -> None:
    assert embedder_scope(price={"input_per_million": 1}) == embedder_scope()
    assert embedder_scope(timeout_s=5) == embedder_scope()


def test_embedding_scope_per_requested_name() -> None:
    assert embedder_scope("embed") != embedder_scope("embedder")
