"""Replay of 600 real prompts through a live gateway with the bundled classifier.

The prompts come from the public data folder: 420 from the traffic mix (records whose
license is non-commercial, CC BY-NC, are left out) and 180 from RouterBench's test split.
Each tier is a replay upstream that answers with what a real model answered to the prompt.
The test checks that every request succeeds and that the outcome log holds exactly one
record per request.
"""

from __future__ import annotations

import ast
import csv
import json
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from classifiers import ArtifactError
from router.app import create_app
from router.settings import Settings
from tests.gateway.conftest import LiveGateway, parse_sse, read_file_records

pytestmark = pytest.mark.shared_data

TRAFFIC_PROMPTS = 420
ROUTERBENCH_PROMPTS = 180
SEED = 20241204
CONCURRENCY = 16
ROUTERBENCH_TEST_FILES = ("arc_challenge_test.csv", "mbpp_test.csv", "winograde_test.csv")


@dataclass(frozen=True)
class ReplayPrompt:
    source: str
    record_id: str
    text: str


@dataclass(frozen=True)
class ReplayResult:
    request_id: str
    status: int
    ok: bool
    detail: str


def is_non_commercial(license_text: str) -> bool:
    return "NC" in license_text.replace("-", " ").upper().split()


def traffic_prompts(shared_data: Path, count: int, rng: random.Random) -> list[ReplayPrompt]:
    """Sample ``count`` traffic-mix prompts, leaving out CC BY-NC records."""
    allowed = []
    for path in sorted((shared_data / "traffic-mix" / "tidy").glob("traffic-*.jsonl")):
        # Not splitlines(): prompts contain U+2028, which it treats as a line break.
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line:
                continue
            record = json.loads(line)
            if not is_non_commercial(record["license"]):
                allowed.append(ReplayPrompt(record["source"], record["id"], record["prompt"]))
    return rng.sample(allowed, count)


def routerbench_test_prompts(
    shared_data: Path, count: int, rng: random.Random
) -> list[ReplayPrompt]:
    """Sample ``count`` whole prompts (few-shot examples included) from RouterBench's test split."""
    csv.field_size_limit(1 << 30)
    folder = shared_data / "routerbench-subset" / "datasets" / "routerbench_zs"
    prompts = []
    for name in ROUTERBENCH_TEST_FILES:
        with (folder / name).open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                text = "\n\n".join(str(part) for part in ast.literal_eval(row["prompt"]))
                prompts.append(ReplayPrompt("routerbench-test", row["sample_id"], text))
    return rng.sample(prompts, count)


def request_body(number: int, prompt: ReplayPrompt) -> dict[str, Any]:
    """Vary the request style by number: every fourth streams, every other is deterministic."""
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": prompt.text}]}
    if number % 2 == 0:
        body["temperature"] = 0
    if number % 4 == 1:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def send(client: httpx.Client, number: int, prompt: ReplayPrompt) -> ReplayResult:
    request_id = f"replay-{number:04d}"
    body = request_body(number, prompt)
    response = client.post("/chat/completions", json=body, headers={"x-request-id": request_id})
    if response.status_code != 200:
        return ReplayResult(request_id, response.status_code, False, response.text[:300])
    if body.get("stream"):
        sse = parse_sse(response.content)
        ok = sse.done and not sse.errors and bool(sse.finish_reasons())
        return ReplayResult(request_id, 200, ok, f"stream done={sse.done} errors={sse.errors}")
    choice = response.json()["choices"][0]
    ok = isinstance(choice["message"]["content"], str) and choice["finish_reason"] in (
        "stop",
        "length",
    )
    return ReplayResult(request_id, 200, ok, f"finish_reason={choice['finish_reason']}")


@pytest.fixture(scope="module")
def replay_prompts(shared_data: Path) -> list[ReplayPrompt]:
    rng = random.Random(SEED)
    prompts = traffic_prompts(shared_data, TRAFFIC_PROMPTS, rng)
    prompts += routerbench_test_prompts(shared_data, ROUTERBENCH_PROMPTS, rng)
    rng.shuffle(prompts)
    return prompts


def test_prompt_sample_is_licensed_for_use(replay_prompts: list[ReplayPrompt]) -> None:
    sources = Counter(prompt.source for prompt in replay_prompts)

    assert len(replay_prompts) == TRAFFIC_PROMPTS + ROUTERBENCH_PROMPTS >= 500
    assert sources["routerbench-test"] == ROUTERBENCH_PROMPTS
    assert "wizardlm_testset" not in sources
    assert "alpaca_eval" not in sources


def test_replay_prompts_through_live_gateway(
    replay_prompts: list[ReplayPrompt], replay_policy: Path, tmp_path: Path
) -> None:
    settings = Settings(
        policy=replay_policy,
        redis_url=None,
        data_dir=tmp_path / "var",
        policy_reload_interval_s=0.0,
        local_model=False,
    )
    try:
        app = create_app(settings)  # no scorer: the bundled classifier in classifiers/default
    except ArtifactError as exc:
        pytest.fail(f"the bundled classifier does not load: {exc}")
    classifier_version = app.state.runtime.scorer.version

    with LiveGateway(app) as live:
        outcome_path = live.runtime.outcomes.path
        limits = httpx.Limits(max_connections=CONCURRENCY)
        with (
            httpx.Client(base_url=live.base_url, timeout=60, limits=limits) as client,
            ThreadPoolExecutor(max_workers=CONCURRENCY) as pool,
        ):
            results = list(pool.map(lambda item: send(client, *item), enumerate(replay_prompts)))

    failures = [result for result in results if not result.ok]
    assert failures == [], failures[:5]
    records = read_file_records(outcome_path)
    counts = Counter(record["request_id"] for record in records)
    assert len(records) == len(replay_prompts)
    assert set(counts) == {result.request_id for result in results}
    assert set(counts.values()) == {1}
    assert all(record["status"] == 200 for record in records)
    assert all(record["error"] is None for record in records)
    assert all(record["classifier_version"] == classifier_version for record in records)
    # A cache hit is found before routing, so only answered requests carry scores.
    assert all(set(record["scores"]) == {"edge", "mid", "frontier"}
               for record in records if not record["cache_hit"])
    assert all(record["scores"] is None for record in records if record["cache_hit"])
    assert all(record["tier"] in ("edge", "mid", "frontier") for record in records)
    answered = [record for record in records if not record["cache_hit"]]
    assert all(record["tokens_in"] > 0 and record["tokens_out"] >= 0 for record in answered)
