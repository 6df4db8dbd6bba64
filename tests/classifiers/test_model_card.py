"""The model card describes a model trained on a team's own data without public-set claims."""

from __future__ import annotations

import json
from typing import Any

from classifiers.artifact import DEFAULT_DIR
from classifiers.model_card import render_model_card


def _bundled_metadata() -> dict[str, Any]:
    return json.loads((DEFAULT_DIR / "model.json").read_text(encoding="utf-8"))


def test_card_of_public_sets_names_import() -> None:
    card = render_model_card(_bundled_metadata())
    assert "`python -m classifiers import-data NAME`" in card
    assert "benchmark questions" in card


def test_card_of_own_data_makes_no_public_claims() -> None:
    metadata = _bundled_metadata()
    metadata["training"]["rows"] = {"train": {"mine": 120}, "test": {}, "input": {"mine": 120}}
    card = render_model_card(metadata)
    assert "import-data" not in card
    assert "benchmark questions" not in card
    assert "| mine | mine | not a known public set; see its own terms |" in card
