"""Prompt categories, ``tierwise_routed_requests_total{tier, category}`` and the dashboard's
tier mix per category."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.app import create_app
from router.metrics import GatewayMetrics
from router.routing.category import CATEGORIES, SCAN_CHARS, categorize_text, prompt_category
from tests.gateway.conftest import TIERS, GatewayKit, LiveGateway, chat_body

ROUTED_METRIC = "tierwise_routed_requests_total"

# Prompt, expected category, and the tier the scorer below sends it to.
TRAFFIC: tuple[tuple[str, str, str], ...] = (
    ("Solve the equation 3x + 5 = 20 and show each step.", "math", "frontier"),
    ("What is the integral of x^2 from 0 to 3?", "math", "frontier"),
    ("Write a Python function that reverses a linked list.", "code", "mid"),
    ("Why does my SQL query raise a syntax error near GROUP BY?", "code", "frontier"),
    ("Why does photosynthesis need light energy?", "science", "mid"),
    ("Can my landlord keep the deposit if the contract says nothing?", "legal", "frontier"),
    ("What are the usual symptoms of diabetes in adults?", "medical", "mid"),
    ("Write a short poem about autumn leaves.", "writing", "edge"),
    ("Hi, how are you today?", "chat", "edge"),
    ("Hello there!", "chat", "edge"),
    (
        (
            "List ten names for a bakery in a small mountain village near the old railway "
            "station, with one reason for each name."
        ),
        "other",
        "edge",
    ),
)


class PromptTierScorer:
    """Scores each prompt of :data:`TRAFFIC` so that ``auto`` routes it to its listed tier."""

    version = "prompt-tier-1"
    tiers: tuple[str, ...] = TIERS

    def __init__(self) -> None:
        self.tier_of = {prompt: tier for prompt, _, tier in TRAFFIC}

    def score(self, messages: list[Any]) -> dict[str, float]:
        tier = self.tier_of[messages[-1]["content"]]
        # The test policy's thresholds are edge 0.7 and mid 0.6.
        return {
            "edge": 0.9 if tier == "edge" else 0.1,
            "mid": 0.9 if tier in ("edge", "mid") else 0.1,
            "frontier": 0.9,
        }


def routed_counts(metrics_text: str) -> dict[tuple[str, str], float]:
    """Return the ``tierwise_routed_requests_total`` samples keyed by (tier, category)."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == ROUTED_METRIC:
                counts[(sample.labels["tier"], sample.labels["category"])] = sample.value
    return counts


@pytest.mark.parametrize(("prompt", "category", "tier"), TRAFFIC)
def test_categorize_text_examples(prompt: str, category: str, tier: str) -> None:
    assert categorize_text(prompt) == category


def test_categorize_code_fence_wins() -> None:
    prompt = "Explain the derivative here:\n```\ny = x ** 2\n```"

    assert categorize_text(prompt) == "code"


def test_categorize_reads_only_message_start() -> None:
    prompt = "a " * SCAN_CHARS + "prove the theorem about prime numbers"

    assert categorize_text(prompt) == "other"


@pytest.mark.parametrize(
    ("prompt", "category"),
    [
        # The Kelvin sign lowercases to an ASCII "k".
        ("\u212aubernetes pods keep restarting", "code"),
        # Letters outside a-z split words, as the pattern [a-z]+ does.
        ("café equation: résumé", "math"),
        ("\u00e9crire un poème", "chat"),
        # A lone surrogate (valid in a Python str, not in UTF-8) must not raise.
        ("\ud800 hello there", "chat"),
        # Math notation after the first digit or symbol of the text.
        ("a 1 then x \\frac{1}{2} later", "math"),
        ("version 2 of the draft, then 3 - 4", "math"),
        ("version 2 of the plan and 3 items", "chat"),
        # ASCII text takes the byte checks, other text the patterns: both find the same.
        ("what is 12 /3 exactly", "math"),
        ("what is 12 / 3 exactly", "math"),
        ("what is 12  / 3 exactly", "chat"),
        ("dates like 2024-05 and x^y", "math"),
        ("a path like c:\\sqrtdir", "math"),
        ("a path like c:\\sqr", "chat"),
        ("what is 12 / 3 exactly, café", "math"),
        ("what is 12  / 3 exactly, café", "chat"),
        ("٣ + ٤ in arabic digits", "math"),
    ],
)
def test_categorize_non_ascii_and_notation(prompt: str, category: str) -> None:
    assert categorize_text(prompt) == category


def test_prompt_category_uses_last_user_message() -> None:
    messages = [
        {"role": "system", "content": "You write legal contracts."},
        {"role": "user", "content": "Write a poem about the sea."},
        {"role": "assistant", "content": "The court of waves..."},
        {"role": "user", "content": [{"type": "text", "text": "Now solve 2 + 2 = ?"}]},
    ]

    assert prompt_category(messages) == "math"


@pytest.mark.parametrize("part_chars", [1, 7, SCAN_CHARS - 1, SCAN_CHARS, SCAN_CHARS + 1])
def test_prompt_category_parts_match_joined_text(part_chars: int) -> None:
    words = "solve the integral of x, then " * 200
    texts = [words[start:start + part_chars] for start in range(0, 3 * SCAN_CHARS, part_chars)]
    texts.append("def main(): pass")
    parts: list[Any] = [{"type": "text", "text": text} for text in texts]
    parts.insert(1, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})

    joined = " ".join(part.get("text", "") for part in parts)

    assert prompt_category([{"role": "user", "content": parts}]) == categorize_text(joined)


def test_prompt_category_without_user_text() -> None:
    image_only = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]

    assert prompt_category([{"role": "system", "content": "Be brief."}]) == "other"
    assert prompt_category([{"role": "user", "content": image_only}]) == "other"
    assert prompt_category([]) == "other"


def test_routed_metric_label_is_bounded() -> None:
    metrics = GatewayMetrics()
    record = {
        "tier": "edge", "model": "edge-small", "status": 200, "cache_hit": False,
        "requested_model": "", "error": None, "latency_ms": 1.0, "first_byte_ms": None,
        "tokens_in": 1, "tokens_out": 1, "cost_usd": 0.0, "baseline_cost_usd": 0.0,
        "scores": None, "attempts": [],
    }  # fmt: skip

    metrics.observe(record, policy=None, category="made-up-by-a-client")  # type: ignore[arg-type]
    metrics.observe(record, policy=None, category=None)  # type: ignore[arg-type]
    metrics.observe({**record, "tier": None}, policy=None, category="math")  # type: ignore[arg-type]
    text = _exposition(metrics)

    assert routed_counts(text) == {("edge", "other"): 2.0}


def test_live_gateway_counts_tier_per_category(kit: GatewayKit) -> None:
    kit.write_policy(cache_enabled=False)
    app = create_app(kit.settings(), PromptTierScorer())
    headers = {"Authorization": "Bearer sk-test-category-metrics"}
    with (
        LiveGateway(app) as gateway,
        httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", headers=headers) as client,
    ):
        served_tiers = [_send(client, prompt) for prompt, _, _ in TRAFFIC]
        # A request that fails before routing has no tier, so it is not counted.
        rejected = client.post("/v1/chat/completions", json=chat_body(model="no-such-model"))
        metrics_text = client.get("/metrics").text
        dashboard = client.get("/dashboard/data").json()

    expected = Counter((tier, category) for _, category, tier in TRAFFIC)
    counts = routed_counts(metrics_text)

    assert served_tiers == [tier for _, _, tier in TRAFFIC]
    assert rejected.status_code == 404
    assert counts == {key: float(count) for key, count in expected.items()}
    assert {category for _, category in counts} <= set(CATEGORIES)
    assert sum(counts.values()) == len(TRAFFIC)
    assert dashboard["categories"] == {
        category: {tier: count for (tier, name), count in expected.items() if name == category}
        for category in {category for _, category, _ in TRAFFIC}
    }


def _send(client: httpx.Client, prompt: str) -> str:
    response = client.post("/v1/chat/completions", json=chat_body(prompt))
    assert response.status_code == 200, response.text
    return response.headers["x-tierwise-tier"]


def _exposition(metrics: GatewayMetrics) -> str:
    from prometheus_client.exposition import generate_latest

    return generate_latest(metrics.registry).decode()
