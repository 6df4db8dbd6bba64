"""Read and write classifier artifacts without pickle.

An artifact is a directory with two files:

- ``model.json``: format name and version, model version, tiers, feature settings,
  the SHA-256 of the weights file, and free-form training information and metrics.
- ``weights.npz``: numpy arrays only, loaded with ``allow_pickle=False``:
  ``word_columns`` (int32, the non-zero rows of the word coefficient matrix),
  ``word_values`` (float32, shape (len(word_columns), n_tiers)), ``struct_coef``
  (float32, shape (n_structural, n_tiers)), ``intercept``, ``struct_mean`` and
  ``struct_scale`` (float64).

The artifact stores numbers only: no prompt text and no vocabulary.

Errors: every problem with a file raises ``ArtifactError`` naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.conversation import STRUCTURAL_FEATURES
from classifiers.hashing import TOKEN_PATTERN
from classifiers.scorer import LinearWeights, Scorer

FORMAT_NAME = "tierwise-linear-classifier"
FORMAT_VERSION = 1
METADATA_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"
DEFAULT_DIR = Path(__file__).resolve().parent / "default"
_ARRAYS = ("word_columns", "word_values", "struct_coef", "intercept", "struct_mean", "struct_scale")


class ArtifactError(Exception):
    """Raised when an artifact is missing, corrupt, or was written for another format."""


def load_default() -> Scorer:
    """Load the model bundled in ``classifiers/default/``."""
    return load_artifact(DEFAULT_DIR)


def load_artifact(path: str | Path) -> Scorer:
    """Load an artifact directory (or its ``model.json``) into a ``Scorer``.

    Raises ArtifactError when a file is missing or unreadable, the checksum does not
    match, or the settings differ from what this version of the package computes.
    """
    directory = Path(path)
    if directory.name == METADATA_FILE:
        directory = directory.parent
    metadata = _read_metadata(directory / METADATA_FILE)
    weights_path = directory / metadata["weights_file"]
    arrays = _read_weights(weights_path, metadata["weights_sha256"])
    weights = _build_weights(arrays, metadata, weights_path)
    return Scorer(
        version=metadata["version"],
        tiers=metadata["tiers"],
        weights=weights,
        ngram_max=metadata["features"]["ngram_max"],
        metadata=metadata,
    )


def save_artifact(
    directory: str | Path,
    *,
    version: str,
    tiers: list[str],
    weights: LinearWeights,
    ngram_max: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``weights`` and metadata into ``directory`` and return the ``model.json`` path.

    Coefficients are stored as float32; callers that compare against a scikit-learn
    model should round that model's coefficients the same way (see ``round_weights``).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / WEIGHTS_FILE
    np.savez_compressed(weights_path, allow_pickle=False, **_weight_arrays(weights))
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "version": version,
        "tiers": list(tiers),
        "features": {
            "n_features": int(weights.word_coef.shape[0]),
            "ngram_max": ngram_max,
            "token_pattern": TOKEN_PATTERN,
            "lowercase": True,
            "alternate_sign": False,
            "structural": list(STRUCTURAL_FEATURES),
            "struct_weight": weights.struct_weight,
        },
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": _sha256(weights_path),
        **(extra or {}),
    }
    metadata_path = out / METADATA_FILE
    metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n")
    return metadata_path


def round_weights(weights: LinearWeights) -> LinearWeights:
    """Return ``weights`` with coefficients rounded to float32, as stored in an artifact."""
    return LinearWeights(
        word_coef=weights.word_coef.astype(np.float32).astype(np.float64),
        struct_coef=weights.struct_coef.astype(np.float32).astype(np.float64),
        intercept=np.asarray(weights.intercept, dtype=np.float64),
        struct_mean=np.asarray(weights.struct_mean, dtype=np.float64),
        struct_scale=np.asarray(weights.struct_scale, dtype=np.float64),
        struct_weight=float(weights.struct_weight),
    )


def _weight_arrays(weights: LinearWeights) -> dict[str, np.ndarray]:
    columns = np.flatnonzero(np.any(weights.word_coef != 0.0, axis=1)).astype(np.int32)
    return {
        "word_columns": columns,
        "word_values": weights.word_coef[columns].astype(np.float32),
        "struct_coef": weights.struct_coef.astype(np.float32),
        "intercept": np.asarray(weights.intercept, dtype=np.float64),
        "struct_mean": np.asarray(weights.struct_mean, dtype=np.float64),
        "struct_scale": np.asarray(weights.struct_scale, dtype=np.float64),
    }


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found; pass an artifact directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(metadata).__name__}")
    _check_metadata(metadata, path)
    return metadata


def _check_metadata(metadata: dict[str, Any], path: Path) -> None:
    if metadata.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{path}: format is {metadata.get('format')!r}, expected {FORMAT_NAME!r}")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {metadata.get('format_version')!r} is not supported "
            f"(this package reads {FORMAT_VERSION}); retrain or upgrade tierwise"
        )
    for key, kind in (("version", str), ("tiers", list), ("features", dict), ("weights_file", str),
                      ("weights_sha256", str)):
        if not isinstance(metadata.get(key), kind):
            raise ArtifactError(f"{path}: field {key!r} is missing or not a {kind.__name__}")
    _check_features(metadata["features"], path)
    if Path(metadata["weights_file"]).name != metadata["weights_file"]:
        raise ArtifactError(f"{path}: weights_file must be a file name beside model.json")


def _check_features(features: dict[str, Any], path: Path) -> None:
    expected = {"token_pattern": TOKEN_PATTERN, "lowercase": True, "alternate_sign": False,
                "structural": list(STRUCTURAL_FEATURES)}
    for key, value in expected.items():
        if features.get(key) != value:
            raise ArtifactError(
                f"{path}: features.{key} is {features.get(key)!r}, but this package computes "
                f"{value!r}; retrain the model with this version"
            )
    for key in ("n_features", "ngram_max"):
        if not isinstance(features.get(key), int) or features[key] < 1:
            raise ArtifactError(f"{path}: features.{key} must be a positive integer")
    if not isinstance(features.get("struct_weight"), int | float):
        raise ArtifactError(f"{path}: features.struct_weight must be a number")


def _read_weights(path: Path, expected_sha256: str) -> dict[str, np.ndarray]:
    try:
        actual = _sha256(path)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the weights file ({exc})") from None
    if actual != expected_sha256:
        raise ArtifactError(
            f"{path}: SHA-256 {actual} does not match {expected_sha256} in model.json; "
            "the file is corrupt or belongs to another model"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.array(data[name]) for name in _ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path}: not a valid weights archive ({exc})") from None


def _build_weights(arrays: dict[str, np.ndarray], metadata: dict[str, Any], path: Path) -> LinearWeights:
    n_features = metadata["features"]["n_features"]
    n_tiers = len(metadata["tiers"])
    columns = arrays["word_columns"]
    shapes = {
        "word_values": (len(columns), n_tiers),
        "struct_coef": (len(STRUCTURAL_FEATURES), n_tiers),
        "intercept": (n_tiers,),
        "struct_mean": (len(STRUCTURAL_FEATURES),),
        "struct_scale": (len(STRUCTURAL_FEATURES),),
    }
    for name, shape in shapes.items():
        if arrays[name].shape != shape:
            raise ArtifactError(f"{path}: array {name} has shape {arrays[name].shape}, expected {shape}")
        if not np.all(np.isfinite(arrays[name])):
            raise ArtifactError(f"{path}: array {name} contains NaN or infinite values")
    if columns.ndim != 1 or (len(columns) and (columns.min() < 0 or columns.max() >= n_features)):
        raise ArtifactError(f"{path}: word_columns must be 1-D indexes below {n_features}")
    if np.any(arrays["struct_scale"] <= 0.0):
        raise ArtifactError(f"{path}: struct_scale must be positive")
    word_coef = np.zeros((n_features, n_tiers), dtype=np.float64)
    word_coef[columns] = arrays["word_values"]
    return LinearWeights(
        word_coef=word_coef,
        struct_coef=arrays["struct_coef"].astype(np.float64),
        intercept=arrays["intercept"],
        struct_mean=arrays["struct_mean"],
        struct_scale=arrays["struct_scale"],
        struct_weight=float(metadata["features"]["struct_weight"]),
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
