"""Fixtures for the classifier tests: the public data folder and small trained models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifiers.datasets import ROUTERBENCH_FILES, shared_data_dir
from classifiers.outcomes import LabelledPrompt


@pytest.fixture(scope="session")
def routerbench_dir() -> Path:
    """The RouterBench subset folder; tests that need it skip when it is absent."""
    folder = shared_data_dir() / "routerbench-subset"
    published = all((folder / name).is_file() for name in ROUTERBENCH_FILES)
    if not (published or (folder / "tidy" / "routerbench.csv").is_file()):
        pytest.skip(f"public data not found at {folder}; set TIERWISE_SHARED_DATA")
    return folder


def make_records(count: int = 60) -> list[LabelledPrompt]:
    """Return synthetic labelled prompts: math-like prompts defeat the cheap tier."""
    records = []
    for i in range(count):
        hard = i % 2 == 0
        text = (f"Prove that the integral of x^{i} dx equals x^{i + 1}/{i + 1} step by step"
                if hard else f"Say hello to my friend number {i}")
        records.append(LabelledPrompt(
            id=f"r{i}",
            messages=[{"role": "user", "content": text}],
            quality={"edge": 0.0 if hard else 1.0, "frontier": 1.0 if i % 7 else 0.0},
            cost={"edge": 0.001, "frontier": 0.01},
        ))
    return records


def assert_scorer_matches_model(model: Any, conversations: list[Any], version: str = "unsaved") -> None:
    """Assert that the exported fast scorer gives the scikit-learn model's probabilities."""
    scorer = model.to_scorer(version)
    expected = model.predict_proba(conversations)
    actual = np.array([[scorer.probabilities(c)[t] for t in scorer.tiers] for c in conversations])
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9)
