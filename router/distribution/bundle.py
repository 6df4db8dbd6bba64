"""A bundle: the files of one classifier artifact or policy, with their SHA-256 digests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.distribution.keys import Kind, check_version

MANIFEST_FIELD = "manifest"
FILE_FIELD_PREFIX = "file:"
POLICY_FILE = "policy.yaml"
MODEL_FILE = "model.json"
MODEL_CARD_FILE = "MODEL_CARD.md"


class BundleError(Exception):
    """Raised when a bundle's files cannot be read, or do not match its manifest."""


@dataclass(frozen=True)
class Bundle:
    """The files of one published version, by file name (no folders)."""

    kind: Kind
    version: str
    files: dict[str, bytes]
    origin: str = ""
    """The file or folder name it was published from, for people reading the manifest."""

    @property
    def digests(self) -> dict[str, str]:
        """SHA-256 (hex) of each file, by name."""
        return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(self.files.items())}

    @property
    def digest(self) -> str:
        """SHA-256 over the sorted ``name digest`` lines: one value for the whole bundle."""
        lines = "".join(f"{name} {digest}\n" for name, digest in self.digests.items())
        return hashlib.sha256(lines.encode()).hexdigest()

    def manifest(self, published_at: str) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "files": self.digests,
            "digest": self.digest,
            "published_at": published_at,
            "origin": self.origin,
        }

    def hash_fields(self, published_at: str) -> dict[str, bytes]:
        """Return the Redis hash fields that store this bundle."""
        fields = {MANIFEST_FIELD: json.dumps(self.manifest(published_at)).encode()}
        fields |= {FILE_FIELD_PREFIX + name: data for name, data in self.files.items()}
        return fields

    @classmethod
    def from_hash(cls, kind: Kind, version: str, fields: dict[bytes, bytes]) -> Bundle:
        """Rebuild a stored bundle and check every file against the manifest.

        Raises BundleError when the manifest is missing or names another kind or version, a
        file is missing or not listed, or a digest differs.
        """
        manifest = _parse_manifest(fields.get(MANIFEST_FIELD.encode()))
        if manifest.get("kind") != kind or manifest.get("version") != version:
            raise BundleError(
                f"the manifest is for {manifest.get('kind')} {manifest.get('version')}, "
                f"expected {kind} {version}"
            )
        files = {
            key.decode()[len(FILE_FIELD_PREFIX) :]: value
            for key, value in fields.items()
            if key.decode().startswith(FILE_FIELD_PREFIX)
        }
        bundle = cls(kind, version, files, str(manifest.get("origin", "")))
        _check_file_names(bundle)
        _check_digests(bundle, manifest)
        return bundle


def _parse_manifest(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise BundleError("the manifest is missing")
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"the manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleError("the manifest is not an object with a 'files' object")
    return manifest


def _check_file_names(bundle: Bundle) -> None:
    # Verification writes the files into a folder, so a name must not reach outside it.
    for name in bundle.files:
        if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            raise BundleError(f"invalid file name {name!r} in the bundle")


def _check_digests(bundle: Bundle, manifest: dict[str, Any]) -> None:
    expected: dict[str, str] = manifest["files"]
    if set(expected) != set(bundle.files):
        raise BundleError(
            f"the stored files {sorted(bundle.files)} differ from the manifest's {sorted(expected)}"
        )
    for name, digest in bundle.digests.items():
        if digest != expected[name]:
            raise BundleError(
                f"SHA-256 of {name} is {digest}, but the manifest says {expected[name]}"
            )
    if bundle.digest != manifest.get("digest"):
        raise BundleError("the bundle digest differs from the manifest's")


def classifier_bundle(directory: Path) -> Bundle:
    """Read an artifact folder: model.json, its weights file, and MODEL_CARD.md when present.

    Raises BundleError when a file is missing or model.json lacks a valid version or weights
    file name.  The artifact's content is checked later, by ``verify_classifier``.
    """
    model_path = directory / MODEL_FILE
    model_bytes = _read(model_path)
    try:
        metadata = json.loads(model_bytes)
        version, weights_file = metadata["version"], metadata["weights_file"]
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as exc:
        raise BundleError(f"{model_path}: not an artifact's model.json ({exc!r})") from None
    if not isinstance(weights_file, str) or Path(weights_file).name != weights_file:
        raise BundleError(f"{model_path}: weights_file must be a file name beside model.json")
    files = {MODEL_FILE: model_bytes, weights_file: _read(directory / weights_file)}
    if (directory / MODEL_CARD_FILE).is_file():
        files[MODEL_CARD_FILE] = _read(directory / MODEL_CARD_FILE)
    return Bundle("classifier", _valid_version(str(version), model_path), files, directory.name)


def policy_bundle(path: Path, version: str) -> Bundle:
    """Read a policy file into a bundle stored as ``policy.yaml``.

    ``version`` is the loader's content hash of the file (``LoadedPolicy.version``).
    Raises BundleError when the file cannot be read.
    """
    return Bundle("policy", _valid_version(version, path), {POLICY_FILE: _read(path)}, path.name)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the file ({exc.strerror})") from None


def _valid_version(version: str, path: Path) -> str:
    try:
        return check_version(version)
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from None
