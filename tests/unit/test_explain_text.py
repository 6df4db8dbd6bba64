"""The text of ``tierwise policy explain`` for tiers that met a threshold but were not used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

import classifiers
from router.cli.explain import explain_routing
from router.routing.tokens import TOKENS_PER_PDF_PAGE
from tests.support.pdf import pdf_data_url

UNSET_KEY = "TIERWISE_TEST_EXPLAIN_UNSET_KEY"


class FixedScorer:
    version = "fixed-1"
    tiers: tuple[str, ...] = ("edge", "mid", "frontier")

    def score(self, messages: list[Any]) -> dict[str, float]:
        return {"edge": 0.2, "mid": 0.816, "frontier": 0.9}


def write_policy(path: Path) -> Path:
    def deployment(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "model": f"openai/{name}",
            "api_base": "http://127.0.0.1:9/v1",
            "price": {"input_per_million": 1, "output_per_million": 2},
            "context_window": 32000,
            **extra,
        }

    document = {
        "version": 1,
        "aliases": {"auto": {}},
        "tiers": {
            "edge": {"deployments": [deployment("small")]},
            "mid": {"deployments": [deployment("medium", api_key_env=UNSET_KEY)]},
            "frontier": {"deployments": [deployment("large")]},
        },
        "routing": {"thresholds": {"edge": 0.7, "mid": 0.68}},
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_explain_names_unused_tier_that_met_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(UNSET_KEY, raising=False)
    monkeypatch.setattr(classifiers, "load_default", FixedScorer)
    text = explain_routing("Prove it.", write_policy(tmp_path / "policy.yaml"), None, "auto", 100, None)
    lines = text.splitlines()

    assert "score       mid        0.816   (>= 0.680 to choose)" in lines
    assert (
        "decision    frontier -> large (mid met its threshold with 0.816 >= 0.680 but medium is "
        f"unavailable because environment variable {UNSET_KEY} is not set; frontier has no "
        "threshold, so it takes what cheaper tiers did not)"
    ) in lines
    assert f"skipped     medium: environment variable {UNSET_KEY} is not set" in lines
    assert "no tier met its threshold" not in text


def test_explain_names_tier_above_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET_KEY, raising=False)
    monkeypatch.setattr(classifiers, "load_default", FixedScorer)
    policy = write_policy(tmp_path / "policy.yaml")
    document = yaml.safe_load(policy.read_text(encoding="utf-8"))
    document["tiers"]["frontier"]["deployments"][0]["api_key_env"] = UNSET_KEY
    policy.write_text(yaml.safe_dump(document), encoding="utf-8")
    text = explain_routing("Prove it.", policy, None, "auto", 100, None)

    assert (
        "decision    edge -> small (mid met its threshold with 0.816 >= 0.680 but medium is "
        f"unavailable because environment variable {UNSET_KEY} is not set; frontier is the fallback "
        f"tier but large is unavailable because environment variable {UNSET_KEY} is not set; no "
        "usable tier met its threshold, so edge is used as the most capable usable tier)"
    ) in text.splitlines()


def test_explain_rejects_unknown_model(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    with pytest.raises(typer.BadParameter, match="'gpt-5' does not exist") as raised:
        explain_routing("hi", policy, None, "gpt-5", 100, None)
    assert "auto, small, medium, large" in str(raised.value)


def test_explain_accepts_deployment_name(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    text = explain_routing("hi", policy, None, "large", 100, None)
    assert "decision    frontier -> large" in text


class TwoTierScorer:
    version = "two-1"
    tiers: tuple[str, ...] = ("mid", "frontier")

    def score(self, messages: list[Any]) -> dict[str, float]:
        return {"mid": 0.9, "frontier": 0.9}


def test_explain_notes_tier_classifier_cannot_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(classifiers, "load_default", TwoTierScorer)
    text = explain_routing("Hello", write_policy(tmp_path / "policy.yaml"), None, "auto", 100, None)
    lines = text.splitlines()

    assert "score       edge           -   (>= 0.700 to choose)" in lines
    notes = [line for line in lines if line.startswith("note")]
    assert len(notes) == 1
    assert "scores only mid, frontier" in notes[0]
    assert "never picks edge" in notes[0]


def test_explain_has_no_note_for_three_tier_classifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(UNSET_KEY, raising=False)
    monkeypatch.setattr(classifiers, "load_default", FixedScorer)
    text = explain_routing("Hello", write_policy(tmp_path / "policy.yaml"), None, "auto", 100, None)

    assert not [line for line in text.splitlines() if line.startswith("note")]


def test_explain_applies_tenant_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UNSET_KEY, "sk-test")
    monkeypatch.setattr(classifiers, "load_default", FixedScorer)
    path = write_policy(tmp_path / "policy.yaml")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["tenants"] = {"entries": {"team-a": {"key_sha256": ["a" * 64], "blocked_tiers": ["mid"]}}}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")

    plain = explain_routing("Prove it.", path, None, "auto", 100, None).splitlines()
    limited = explain_routing("Prove it.", path, None, "auto", 100, None, "team-a").splitlines()

    assert any(line.startswith("decision    mid -> medium") for line in plain)
    assert "tenant      team-a (minimum tier none, blocked tiers mid)" in limited
    assert any(line.startswith("decision    frontier -> large") for line in limited)


def test_explain_rejects_unknown_tenant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classifiers, "load_default", FixedScorer)

    with pytest.raises(typer.BadParameter, match="no tenant 'team-z'"):
        explain_routing("hi", write_policy(tmp_path / "policy.yaml"), None, "auto", 100, None, "team-z")


class EdgeScorer:
    version = "edge-1"
    tiers: tuple[str, ...] = ("edge", "mid", "frontier")

    def score(self, messages: list[Any]) -> dict[str, float]:
        return {"edge": 0.9, "mid": 0.9, "frontier": 0.9}


def test_explain_tool_history_skips_toolless(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(UNSET_KEY, "sk-test")
    monkeypatch.setattr(classifiers, "load_default", EdgeScorer)
    path = write_policy(tmp_path / "policy.yaml")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["tiers"]["edge"]["deployments"][0]["capabilities"] = {"tools": False}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_time", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    ]
    messages_file = tmp_path / "messages.json"
    messages_file.write_text(json.dumps(messages), encoding="utf-8")

    plain = explain_routing("What time is it?", path, None, "auto", 100, None).splitlines()
    with_tools = explain_routing(None, path, messages_file, "auto", 100, None).splitlines()

    assert any(line.startswith("decision    edge -> small") for line in plain)
    assert any(line.startswith("decision    mid -> medium") for line in with_tools)
    assert any(line.startswith("skipped     small:") for line in with_tools)


def test_explain_applies_alias_bounds_and_thresholds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(UNSET_KEY, "set")
    monkeypatch.setattr(classifiers, "load_default", FixedScorer)
    path = write_policy(tmp_path / "policy.yaml")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["aliases"]["cheap"] = {"max_tier": "mid", "thresholds": {"mid": 0.9}}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    lines = explain_routing("Prove it.", path, None, "cheap", 100, None).splitlines()

    assert "score       mid        0.816   (fallback tier of cheap)" in lines
    assert "score       frontier   0.900   (above cheap's maximum tier mid)" in lines
    [decision] = [line for line in lines if line.startswith("decision")]
    assert decision.startswith("decision    mid -> medium (frontier is the fallback tier but it is "
                               "above the alias's maximum tier mid;")


def test_explain_counts_pdf_and_skips_edge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UNSET_KEY, "sk-test")
    monkeypatch.setattr(classifiers, "load_default", FixedScorer)
    path = write_policy(tmp_path / "policy.yaml")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["tiers"]["mid"]["deployments"][0]["capabilities"] = {"files": True}
    document["tiers"]["frontier"]["deployments"][0]["capabilities"] = {"files": True}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    content = [
        {"type": "text", "text": "Summarize the file."},
        {"type": "file", "file": {"filename": "plan.pdf", "file_data": pdf_data_url(2)}},
    ]
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps([{"role": "user", "content": content}]), encoding="utf-8")

    lines = explain_routing(None, path, messages, "auto", 100, None).splitlines()

    [tokens] = [line for line in lines if line.startswith("tokens")]
    assert tokens.endswith("prompt tokens (cl100k count, with estimates for images and files)")
    assert int(tokens.split()[1]) > 2 * TOKENS_PER_PDF_PAGE
    assert "skipped     small: capability:messages:file" in lines
    [decision] = [line for line in lines if line.startswith("decision")]
    assert decision.startswith("decision    mid -> medium")


@pytest.mark.parametrize(
    ("part", "reported"),
    [
        ({"type": "input_file", "file_data": "JVBERi0xLjQK"}, "unknown content part type 'input_file'"),
        ({"type": "document", "source": {"type": "text", "data": "x"}}, "unknown content part type 'document'"),
        ({"type": "file", "file": {"file_id": "https://example.com/a.pdf"}}, "a URL is not a file id"),
    ],
    ids=["responses-input-file", "anthropic-document", "url-file-id"],
)
def test_explain_rejects_invalid_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, part: dict[str, Any], reported: str
) -> None:
    monkeypatch.setattr(classifiers, "load_default", FixedScorer)
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps([{"role": "user", "content": [part]}]), encoding="utf-8")

    with pytest.raises(typer.BadParameter) as raised:
        explain_routing(None, write_policy(tmp_path / "policy.yaml"), messages, "auto", 100, None)

    assert reported in str(raised.value)
    assert "messages[0].content[0]" in str(raised.value)
