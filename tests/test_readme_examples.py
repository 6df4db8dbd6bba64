"""Outputs quoted in README.md match what the commands print for the bundled policy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
DEFAULT_POLICY = REPO_ROOT / "policies" / "default.yaml"


def tierwise(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=cwd, capture_output=True,
                          text=True, check=False, timeout=120)


def test_check_example_quotes_real_line(tmp_path: Path) -> None:
    # The README's bad.yaml: the default policy with the edge context_window set to "lots".
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    (tmp_path / "bad.yaml").write_text(
        text.replace("context_window: 2048", "context_window: lots", 1), encoding="utf-8"
    )
    result = tierwise("policy", "check", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2
    error_line = next(line.strip() for line in result.stderr.splitlines() if "lots" in line)
    assert error_line in README


def test_diff_example_quotes_real_threshold(tmp_path: Path) -> None:
    proposed = re.sub(r"(?m)^    edge: 0\.\d+", "    edge: 0.70", DEFAULT_POLICY.read_text())
    (tmp_path / "proposed.yaml").write_text(proposed, encoding="utf-8")
    result = tierwise("policy", "diff", str(DEFAULT_POLICY), "proposed.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sentence = result.stdout.strip()
    assert sentence.startswith("- The edge threshold changes from ")
    assert f"\n{sentence}\n" in README
