"""The fast scorer: contract, odd inputs, and agreement with the scikit-learn model."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from classifiers import Scorer, load_default
from classifiers.conversation import STRUCTURAL_FEATURES, structural_vector, view_conversation
from classifiers.datasets import routerbench_records
from classifiers.hashing import hash_index, word_ngrams
from classifiers.outcomes import LabelledPrompt
from classifiers.scorer import (
    FRONTIER_FAILURE_CREDIT,
    LinearWeights,
    _count_norm,
    _sigmoid,
    routing_score_matrix,
    routing_scores,
)
from classifiers.training import TrainConfig, fit_tier_model
from tests.classifiers.conftest import make_records

HAND_WRITTEN: list[Any] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Prove that there are infinitely many primes."}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Write a Rust lock-free queue with tests."},
     {"role": "assistant", "content": "Shall I use crossbeam's epoch GC?"},
     {"role": "user", "content": "yes, go ahead"}],
    [{"role": "user", "content": [{"type": "text", "text": "Describe this chart"},
                                  {"type": "image_url", "image_url": {"url": "data:x"}}]}],
    [{"role": "user", "content": "```python\ndef f(x):\n    return x ** 2\n```\nWhy slow?"}],
    [{"role": "user", "content": "東京の天気は？ 请用中文回答。 x² + y² = z²"}],
]

ODD_INPUTS: list[Any] = [
    [],
    None,
    "a bare string",
    [{"role": "user", "content": None}],
    [{"role": "user", "content": ""}],
    [{"role": "user"}],
    [{"content": "no role"}],
    [{"role": "assistant", "content": None,
      "tool_calls": [{"id": "1", "type": "function",
                      "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]}],
    [{"role": "tool", "tool_call_id": "1", "content": "12 degrees"}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}],
    [{"role": "user", "content": [{"type": "input_audio"}, 42, None, {"text": 3}]}],
    [{"role": "user", "content": {"unexpected": "dict"}}],
    {"content": [{"role": None, "type": []}]},
    [{"role": "user", "content": "x" * 200_000}],
    [{"role": "user", "content": "word " * 40_000}],
    [{"role": "user", "content": "界" * 50_000}],
    [{"role": "user", "content": "\ud800 lone surrogate \udfff"}],
    [{"role": "system", "content": "only a system prompt"}],
    [42, "text", None, {"role": "user", "content": "fine"}],
    [{"role": "user", "content": "earlier question about matrices"},
     {"role": "assistant", "content": "an answer"}, {"role": "user", "content": None}],
]


@pytest.fixture(scope="module")
def trained() -> tuple[Any, Scorer]:
    """A small model trained on synthetic rows, and its fast scorer."""
    model = fit_tier_model(make_records(), ("edge", "frontier"), TrainConfig(n_features=2**12))
    return model, model.to_scorer("test-1")


def test_default_model_loads_with_contract_fields() -> None:
    scorer = load_default()
    assert isinstance(scorer.version, str) and scorer.version
    assert scorer.tiers == ("edge", "mid", "frontier")


def test_default_scores_are_probabilities_per_tier() -> None:
    scores = load_default().score(HAND_WRITTEN[0])
    assert set(scores) == {"edge", "mid", "frontier"}
    for value in scores.values():
        assert isinstance(value, float)
        assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("messages", ODD_INPUTS, ids=range(len(ODD_INPUTS)))
def test_score_accepts_odd_input(messages: Any) -> None:
    with capture_logs() as logs:
        scores = load_default().score(messages)
    assert set(scores) == {"edge", "mid", "frontier"}
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in scores.values())
    # The fallback must not be what kept score() from raising.
    assert logs == []


_JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
_JSON = st.recursive(_JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.sampled_from(["role", "content", "type", "text",
                                                        "tool_calls", "function", "name",
                                                        "arguments", "image_url"]),
                                       inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(_JSON, max_size=5) | _JSON)
def test_score_never_falls_back_on_random_json(messages: Any) -> None:
    with capture_logs() as logs:
        scores = load_default().score(messages)
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert logs == []


def test_score_failure_returns_base_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = load_default()

    def broken(messages: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("classifiers.scorer.view_conversation", broken)
    with capture_logs() as logs:
        scores = scorer.probabilities([{"role": "user", "content": "hi"}])
    expected = [1.0 / (1.0 + math.exp(-z)) for z in scorer._weights.intercept]
    assert list(scores.values()) == pytest.approx(expected)
    assert [entry["event"] for entry in logs] == ["classifier_score_failed"]
    assert "hi" not in str(logs)


@pytest.mark.parametrize("messages", ODD_INPUTS, ids=range(len(ODD_INPUTS)))
def test_features_accept_odd_input(messages: Any) -> None:
    features = load_default().features(messages)
    assert tuple(features) == STRUCTURAL_FEATURES
    assert all(math.isfinite(v) for v in features.values())


def test_long_input_is_truncated_and_counted() -> None:
    features = load_default().features([{"role": "user", "content": "x " * 100_000}])
    assert features["truncated"] == 1.0
    assert features["log_last_chars"] == pytest.approx(math.log1p(200_000))


def test_image_and_tool_parts_are_counted() -> None:
    features = load_default().features(ODD_INPUTS[7] + ODD_INPUTS[9])
    assert features["images"] == 1.0
    assert features["tool_calls"] == 1.0


def test_short_followup_inherits_context() -> None:
    scorer = load_default()
    alone = scorer.score([{"role": "user", "content": "yes, go ahead"}])
    followup = scorer.score(HAND_WRITTEN[2])
    assert scorer.features(HAND_WRITTEN[2])["short_followup"] == 1.0
    assert alone != followup


@pytest.mark.parametrize("messages", HAND_WRITTEN + ODD_INPUTS, ids=range(len(HAND_WRITTEN) + len(ODD_INPUTS)))
def test_fast_scorer_matches_sklearn_on_written_strings(trained: Any, messages: Any) -> None:
    model, scorer = trained
    expected = model.predict_proba([messages])[0]
    actual = np.array([scorer.probabilities(messages)[t] for t in scorer.tiers])
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9)


def random_weights(n_features: int, seed: int) -> LinearWeights:
    rng = np.random.default_rng(seed)
    n_struct = len(STRUCTURAL_FEATURES)
    return LinearWeights(
        word_coef=rng.normal(size=(n_features, 3)),
        struct_coef=rng.normal(size=(n_struct, 3)),
        intercept=rng.normal(size=3),
        struct_mean=rng.normal(size=n_struct),
        struct_scale=rng.uniform(0.5, 2.0, size=n_struct),
        struct_weight=0.7,
    )


def dense_probabilities(weights: LinearWeights, ngram_max: int, messages: Any) -> list[float]:
    """Compute the scorer's formula directly: a dense word row, normalised, plus scaled structure."""
    view = view_conversation(messages)
    n_features = weights.word_coef.shape[0]
    row = np.zeros(n_features)
    for text, weight in view.segments:
        for term in word_ngrams(text, ngram_max):
            row[hash_index(term, n_features)] += weight
    norm = np.linalg.norm(row) or 1.0
    struct = (np.array(structural_vector(view)) - weights.struct_mean) / weights.struct_scale
    logits = (row / norm) @ weights.word_coef + (struct * weights.struct_weight) @ weights.struct_coef
    return [_sigmoid(z) for z in (logits + weights.intercept).tolist()]


# The last message has more than 1,024 n-grams with n-grams up to 5.
MANY_NGRAMS = [{"role": "user", "content": "ab " * 300}]
# Three segments, none with a word of two or more characters.
NO_WORDS = [{"role": "user", "content": "b"}, {"role": "assistant", "content": "x y"},
            {"role": "user", "content": "a"}]
# Repeated words within and across segments of different weights.
REPEATS = [{"role": "user", "content": "tea or coffee, tea please"},
           {"role": "assistant", "content": "Tea it is. More tea?"},
           {"role": "user", "content": "tea tea tea"}]


@pytest.mark.parametrize("n_features", [1000, 2**10])
@pytest.mark.parametrize("ngram_max", [1, 2, 5])
def test_scorer_matches_dense_formula(n_features: int, ngram_max: int) -> None:
    weights = random_weights(n_features, seed=ngram_max)
    scorer = Scorer(version="dense", tiers=("a", "b", "c"), weights=weights, ngram_max=ngram_max)
    for index, messages in enumerate(HAND_WRITTEN + ODD_INPUTS + [MANY_NGRAMS, NO_WORDS, REPEATS]):
        expected = dense_probabilities(weights, ngram_max, messages)
        actual = list(scorer.probabilities(messages).values())
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12, err_msg=f"input {index}")


def test_count_norm_matches_counter() -> None:
    rng = np.random.default_rng(0)
    cases = [np.array([], np.int64), np.array([7]), np.array([3, 3, 3]), np.array([5, 1, 5, 2, 1, 5])]
    cases += [rng.integers(0, high, size) for size in (2, 75, 600) for high in (2, 40, 2**17)]
    for values in cases:
        counts = Counter(values.tolist()).values()
        expected = math.hypot(*counts) or 1.0
        assert _count_norm(values.copy()) == pytest.approx(expected, rel=1e-15, abs=0), values


@pytest.mark.shared_data
def test_fast_scorer_matches_sklearn_on_routerbench(routerbench_dir: Path) -> None:
    rows = [r for r in routerbench_records(routerbench_dir)
            if {"mistralai/mistral-7b-chat", "gpt-4-1106-preview"} <= set(r["outcomes"])]
    records = [_record(row, [{"role": "user", "content": row["prompt"]}]) for row in rows[::4]]
    # Real multi-turn shapes: an earlier prompt, an assistant reply, and a short follow-up.
    for first, second in zip(rows[1::40], rows[2::40]):
        turns = [{"role": "user", "content": first["prompt"]},
                 {"role": "assistant", "content": second["prompt"]},
                 {"role": "user", "content": "ok, and the next one?"}]
        records.append(_record(first, turns))
    model = fit_tier_model(records, ("edge", "frontier"), TrainConfig(n_features=2**16))
    scorer = model.to_scorer()
    conversations = [r.messages for r in records]
    expected = model.predict_proba(conversations)
    actual = np.array([[scorer.probabilities(c)[t] for t in scorer.tiers] for c in conversations])
    assert len(conversations) > 700
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9)


def _record(row: dict[str, Any], messages: list[dict[str, Any]]) -> LabelledPrompt:
    outcomes = row["outcomes"]
    return LabelledPrompt(id=row["id"], messages=messages,
                          quality={"edge": outcomes["mistralai/mistral-7b-chat"]["quality"],
                                   "frontier": outcomes["gpt-4-1106-preview"]["quality"]})


def test_routing_scores_credit_frontier_failures() -> None:
    credit = FRONTIER_FAILURE_CREDIT
    # frontier fails 10% of the time, so cheaper tiers gain credit * 0.1; frontier keeps 0.9.
    assert routing_scores([0.6, 0.85, 0.9]) == pytest.approx([0.6 + credit * 0.1, 0.85 + credit * 0.1, 0.9])
    # A prompt every tier is likely to fail gains the most.
    assert routing_scores([0.1, 0.15]) == pytest.approx([0.1 + credit * 0.85, 0.15])
    # Scores are capped at 1.
    assert routing_scores([1.0, 0.2]) == pytest.approx([1.0, 0.2])
    assert routing_scores([0.4]) == [0.4]
    assert routing_scores([]) == []


def test_routing_scores_keep_order_of_cheap_tier() -> None:
    # With the same frontier probability, a higher P(tier adequate) never scores lower.
    low = routing_scores([0.3, 0.7])
    high = routing_scores([0.5, 0.7])
    assert high[0] > low[0]
    assert 0.0 < FRONTIER_FAILURE_CREDIT <= 1.0


def test_routing_score_matrix_matches_rows() -> None:
    probabilities = np.random.default_rng(0).random((20, 3))
    expected = np.array([routing_scores(list(row)) for row in probabilities])
    np.testing.assert_allclose(routing_score_matrix(probabilities), expected, rtol=0, atol=1e-15)


def test_score_is_routing_scores_of_probabilities() -> None:
    scorer = load_default()
    for messages in HAND_WRITTEN:
        probabilities = scorer.probabilities(messages)
        expected = dict(zip(scorer.tiers, routing_scores(list(probabilities.values()))))
        assert scorer.score(messages) == pytest.approx(expected, abs=1e-15)
