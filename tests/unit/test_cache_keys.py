"""Cache keys: every answer-changing field and the tenant separate entries."""

from __future__ import annotations

import pytest

from router.cache.keys import cache_key, is_cacheable

BASE = {
    "model": "auto",
    "temperature": 0,
    "messages": [{"role": "user", "content": "What is 2 + 2?"}],
}


def key(body: dict[str, object], tenant: str = "t1", deployment: str = "small") -> str:
    return cache_key(tenant, deployment, body)


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


def test_tenant_and_deployment_change_key() -> None:
    assert key(BASE, tenant="t2") != key(BASE)
    assert key(BASE, deployment="large") != key(BASE)


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
