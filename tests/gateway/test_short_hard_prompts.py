"""Short but hard prompts through a live gateway with the default thresholds and bundled model.

A short prompt is not an easy one: a one-line proof request or a two-line probability
question needs a strong model.  The 20 prompts are picked by a rule, not by hand, from two
public sets, each prompt shorter than 300 characters:

- MMLU (RouteLLM evals, Apache-2.0): the first two rows of each of abstract_algebra,
  college_chemistry, college_mathematics, college_physics and professional_law.  The
  bundled classifier was trained on MMLU, so these rows check what it learnt.
- Arena-Hard-Auto v2.0 (Apache-2.0), selected for difficulty: the first ten English
  (ASCII-only) prompts of subcategory ``math``.  The classifier never saw Arena-Hard.

The edge tier of the default policy is a 135M-parameter local model, so it should see
almost none of these.  The bound is at most 3 of 20 (15%).  The classifier is a noisy
estimate, and a few of the prompts (an order-of-magnitude estimate, for example) are
within a small model's reach.  A router that treats short as easy sends many of them to
edge: the previous bundled model sent 5 of the 10 MMLU rows there.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import httpx
import pytest

from router.app import create_app
from router.policy.loader import load_policy
from tests.gateway.conftest import GatewayKit, LiveGateway, chat_body

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
MMLU_RESPONSES = Path("routellm-evals") / "routellm" / "evals" / "mmlu" / "responses"
MMLU_SUBJECTS = ("abstract_algebra", "college_chemistry", "college_mathematics",
                 "college_physics", "professional_law")
MMLU_PER_SUBJECT = 2
ARENA_HARD = Path("prompts-arena-hard") / "data" / "arena-hard-v2.0" / "question.jsonl"
ARENA_HARD_COUNT = 10
MAX_PROMPT_CHARS = 300
MAX_EDGE_SHARE = 0.15


def _require(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} not found; the public MMLU and Arena-Hard files are needed")
    return path


def mmlu_prompts(shared_data: Path) -> list[str]:
    """Return the first two MMLU prompts under 300 characters of each hard subject."""
    prompts: list[str] = []
    for subject in MMLU_SUBJECTS:
        path = _require(shared_data / MMLU_RESPONSES / f"mmlu_{subject}.csv")
        with path.open(newline="", encoding="utf-8") as handle:
            short = [row["prompt"] for row in csv.DictReader(handle)
                     if len(row["prompt"]) < MAX_PROMPT_CHARS]
        prompts.extend(short[:MMLU_PER_SUBJECT])
    return prompts


def arena_hard_prompts(shared_data: Path) -> list[str]:
    """Return the first ten English Arena-Hard v2.0 math prompts under 300 characters."""
    path = _require(shared_data / ARENA_HARD)
    selected: list[str] = []
    # split("\n"), not splitlines(): prompts contain U+2028, which splitlines() breaks on.
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        row = json.loads(line)
        prompt = row["prompt"]
        if row.get("subcategory") == "math" and len(prompt) < MAX_PROMPT_CHARS and prompt.isascii():
            selected.append(prompt)
    return selected[:ARENA_HARD_COUNT]


def default_thresholds() -> dict[str, float]:
    return dict(load_policy(DEFAULT_POLICY).policy.routing.thresholds)


def test_short_hard_prompts_avoid_edge(
    kit: GatewayKit, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mmlu = mmlu_prompts(shared_data)
    arena = arena_hard_prompts(shared_data)
    kit.write_policy(thresholds=default_thresholds(), cache_enabled=False)
    app = create_app(kit.settings(), None)
    headers = {"Authorization": "Bearer sk-test-short-hard"}
    with (
        LiveGateway(app) as gateway,
        httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", headers=headers) as client,
    ):
        mmlu_tiers = [_served_tier(client, prompt) for prompt in mmlu]
        arena_tiers = [_served_tier(client, prompt) for prompt in arena]

    mix = Counter(mmlu_tiers + arena_tiers)
    with capsys.disabled():
        print(f"\nshort hard prompts, tier mix: {dict(sorted(mix.items()))} "
              f"(MMLU {dict(Counter(mmlu_tiers))}, Arena-Hard {dict(Counter(arena_tiers))})")

    assert len(mmlu) == len(MMLU_SUBJECTS) * MMLU_PER_SUBJECT
    assert len(arena) == ARENA_HARD_COUNT
    assert max(len(prompt) for prompt in mmlu + arena) < MAX_PROMPT_CHARS
    assert set(mix) <= {"edge", "mid", "frontier"}
    assert mix["edge"] <= MAX_EDGE_SHARE * (len(mmlu) + len(arena))


def _served_tier(client: httpx.Client, prompt: str) -> str:
    response = client.post("/v1/chat/completions", json=chat_body(prompt))
    assert response.status_code == 200, response.text
    return response.headers["x-tierwise-tier"]
