"""Artifact files: round trip, and a clear ArtifactError for every kind of damage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from classifiers import ArtifactError, load_artifact
from classifiers.artifact import DEFAULT_DIR, METADATA_FILE, WEIGHTS_FILE, save_artifact
from classifiers.training import TrainConfig, fit_tier_model
from tests.classifiers.conftest import make_records

PROMPTS = [[{"role": "user", "content": "Prove that x^3 has no rational root"}],
           [{"role": "user", "content": "Say hello"}]]


@pytest.fixture()
def artifact_dir(tmp_path: Path) -> Path:
    """A freshly saved artifact of a small synthetic model."""
    model = fit_tier_model(make_records(), ("edge", "frontier"), TrainConfig(n_features=2**10))
    save_artifact(tmp_path / "model", version="2026.01.02-3", tiers=list(model.tiers),
                  weights=model.export(), ngram_max=2, extra={"note": "synthetic"})
    return tmp_path / "model"


def test_round_trip_keeps_scores(artifact_dir: Path) -> None:
    model = fit_tier_model(make_records(), ("edge", "frontier"), TrainConfig(n_features=2**10))
    expected = model.to_scorer()
    loaded = load_artifact(artifact_dir)
    assert loaded.version == "2026.01.02-3"
    assert loaded.tiers == ("edge", "frontier")
    assert loaded.metadata["note"] == "synthetic"
    for messages in PROMPTS:
        assert loaded.score(messages) == pytest.approx(expected.score(messages), abs=1e-12)


def test_load_accepts_metadata_path(artifact_dir: Path) -> None:
    assert load_artifact(artifact_dir / METADATA_FILE).tiers == ("edge", "frontier")


def test_bundled_default_is_small() -> None:
    size = sum(p.stat().st_size for p in DEFAULT_DIR.iterdir())
    assert size < 2 * 1024 * 1024
    assert (DEFAULT_DIR / "MODEL_CARD.md").is_file()


def test_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="file not found"):
        load_artifact(tmp_path / "nowhere")


def test_corrupt_weights_fail_checksum(artifact_dir: Path) -> None:
    weights = artifact_dir / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match"):
        load_artifact(artifact_dir)


def test_truncated_metadata_raises(artifact_dir: Path) -> None:
    path = artifact_dir / METADATA_FILE
    path.write_text(path.read_text()[:40])
    with pytest.raises(ArtifactError, match="not a readable JSON file"):
        load_artifact(artifact_dir)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("format", "pickle", "format is 'pickle'"),
    ("format_version", 99, "format_version 99 is not supported"),
    ("tiers", "edge", "field 'tiers' is missing or not a list"),
    ("weights_file", "../elsewhere.npz", "weights_file must be a file name"),
])
def test_bad_metadata_field_raises(artifact_dir: Path, key: str, value: object,
                                   message: str) -> None:
    path = artifact_dir / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata[key] = value
    path.write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match=message):
        load_artifact(artifact_dir)


def test_changed_features_raise(artifact_dir: Path) -> None:
    path = artifact_dir / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata["features"]["structural"] = ["something_else"]
    path.write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match="features.structural"):
        load_artifact(artifact_dir)


def test_wrong_shape_raises_even_with_valid_checksum(artifact_dir: Path) -> None:
    weights = artifact_dir / WEIGHTS_FILE
    with np.load(weights) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["intercept"] = np.zeros(5)
    np.savez_compressed(weights, **arrays)
    _rewrite_checksum(artifact_dir)
    with pytest.raises(ArtifactError, match="array intercept has shape"):
        load_artifact(artifact_dir)


def test_pickled_array_is_rejected(artifact_dir: Path) -> None:
    weights = artifact_dir / WEIGHTS_FILE
    with np.load(weights) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["intercept"] = np.array([{"evil": 1}, None], dtype=object)
    np.savez_compressed(weights, **arrays)
    _rewrite_checksum(artifact_dir)
    with pytest.raises(ArtifactError, match="not a valid weights archive"):
        load_artifact(artifact_dir)


def test_non_finite_weights_raise(artifact_dir: Path) -> None:
    weights = artifact_dir / WEIGHTS_FILE
    with np.load(weights) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["struct_coef"][0, 0] = np.nan
    np.savez_compressed(weights, **arrays)
    _rewrite_checksum(artifact_dir)
    with pytest.raises(ArtifactError, match="NaN or infinite"):
        load_artifact(artifact_dir)


def test_copy_of_default_loads(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_DIR, tmp_path / "copy")
    assert load_artifact(tmp_path / "copy").tiers == ("edge", "mid", "frontier")


def _rewrite_checksum(directory: Path) -> None:
    import hashlib

    path = directory / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata["weights_sha256"] = hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()
    path.write_text(json.dumps(metadata))
