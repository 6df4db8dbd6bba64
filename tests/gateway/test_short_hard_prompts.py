"""Short but hard prompts through a live gateway with the default thresholds and bundled model.

A short prompt is not an easy one: a one-line proof request or a two-line probability
question needs a strong model.  The prompts are picked by a rule, not by hand, from
Arena-Hard-Auto v2.0 (Apache-2.0), whose prompts were selected for difficulty: the first
20 English (ASCII-only) prompts of subcategory ``math`` shorter than 300 characters.  The
bundled classifier was not trained on Arena-Hard.

The edge tier of the default policy is a 270M-parameter local model, so it should see
almost none of these.  The bound is at most 3 of 20 (15%).  The classifier is a noisy
estimate, and a few of the prompts (an order-of-magnitude estimate, for example) are
within a small model's reach.  A router that treats short as easy sends most of them to
edge.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest

from router.app import create_app
from router.policy.loader import load_policy
from tests.gateway.conftest import GatewayKit, LiveGateway, chat_body

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
QUESTIONS = Path("prompts-arena-hard") / "data" / "arena-hard-v2.0" / "question.jsonl"
PROMPT_COUNT = 20
MAX_PROMPT_CHARS = 300
MAX_EDGE_SHARE = 0.15


def short_hard_prompts(shared_data: Path) -> list[str]:
    """Return the first 20 English Arena-Hard v2.0 math prompts under 300 characters."""
    path = shared_data / QUESTIONS
    if not path.is_file():
        pytest.skip(f"{path} not found; the public Arena-Hard prompts are needed")
    selected: list[str] = []
    # split("\n"), not splitlines(): prompts contain U+2028, which splitlines() breaks on.
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        row = json.loads(line)
        prompt = row["prompt"]
        if row.get("subcategory") == "math" and len(prompt) < MAX_PROMPT_CHARS and prompt.isascii():
            selected.append(prompt)
    return selected[:PROMPT_COUNT]


def default_thresholds() -> dict[str, float]:
    return dict(load_policy(DEFAULT_POLICY).policy.routing.thresholds)


def test_short_hard_prompts_avoid_edge(
    kit: GatewayKit, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = short_hard_prompts(shared_data)
    kit.write_policy(thresholds=default_thresholds(), cache_enabled=False)
    app = create_app(kit.settings(), None)
    headers = {"Authorization": "Bearer sk-test-short-hard"}
    with (
        LiveGateway(app) as gateway,
        httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", headers=headers) as client,
    ):
        tiers = [_served_tier(client, prompt) for prompt in prompts]

    mix = Counter(tiers)
    with capsys.disabled():
        print(f"\nshort hard prompts, tier mix: {dict(sorted(mix.items()))}")

    assert len(prompts) == PROMPT_COUNT
    assert max(len(prompt) for prompt in prompts) < MAX_PROMPT_CHARS
    assert set(mix) <= {"edge", "mid", "frontier"}
    assert mix["edge"] <= MAX_EDGE_SHARE * PROMPT_COUNT


def _served_tier(client: httpx.Client, prompt: str) -> str:
    response = client.post("/v1/chat/completions", json=chat_body(prompt))
    assert response.status_code == 200, response.text
    return response.headers["x-tierwise-tier"]
