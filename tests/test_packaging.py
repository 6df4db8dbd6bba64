"""A wheel built from the checkout contains the default policy and the bundled classifier.

The test builds the wheel with pip, which needs setuptools and wheel: from the running
environment when they are new enough, otherwise from the package index in an isolated build.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRED_FILES = (
    "router/bundled_policies/default.yaml",
    "classifiers/default/model.json",
    "classifiers/default/weights.npz",
)
# pip output that means the build requirements could not be downloaded, not that the
# project's build configuration is broken.
INDEX_FAILURES = (
    "Could not find a version that satisfies the requirement",
    "No matching distribution found",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


def local_build_backend_usable() -> bool:
    """Tell whether setuptools 69 or newer and wheel are importable here (no download needed)."""
    if importlib.util.find_spec("wheel") is None:
        return False
    try:
        import setuptools
    except ImportError:
        return False
    major = int(setuptools.__version__.split(".", 1)[0])
    return major >= 69


def copy_source(target: Path) -> Path:
    """Copy the checkout without build output, so that a stale build/lib cannot supply files."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "var", "*.egg-info", "__pycache__", ".*_cache"
    )
    shutil.copytree(REPO_ROOT, target, ignore=ignore)
    return target


def build_wheel(source: Path, out_dir: Path) -> Path:
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed in this environment, so no wheel can be built")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir)]
    if local_build_backend_usable():
        command.append("--no-build-isolation")
    result = subprocess.run(
        [*command, str(source)], capture_output=True, text=True, timeout=600, check=False
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and any(failure in output for failure in INDEX_FAILURES):
        pytest.skip(
            "pip could not download setuptools and wheel for an isolated build; install "
            f"setuptools>=69 and wheel to build offline. pip output: {output[-500:]}"
        )
    assert result.returncode == 0, f"pip wheel failed: {output[-2000:]}"
    wheels = sorted(out_dir.glob("tierwise-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out_dir}, found {wheels}"
    return wheels[0]


def test_wheel_contains_policy_and_classifier(tmp_path: Path) -> None:
    wheel = build_wheel(copy_source(tmp_path / "source"), tmp_path / "wheels")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged_policy = archive.read("router/bundled_policies/default.yaml")

    for name in REQUIRED_FILES:
        assert name in names, f"{name} is missing from {wheel.name}"
    assert packaged_policy == (REPO_ROOT / "policies" / "default.yaml").read_bytes()
