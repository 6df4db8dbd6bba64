"""Policy diffs read as sentences."""

from __future__ import annotations

from pathlib import Path

from router.policy.diff import describe_changes
from router.policy.schema import Policy

BASE = {
    "tiers": {
        "edge": {
            "deployments": [
                {
                    "name": "small",
                    "model": "openai/small",
                    "price": {"input_per_million": 0.1, "output_per_million": 0.2},
                    "context_window": 4096,
                }
            ]
        }
    },
    "routing": {"thresholds": {"edge": 0.7}},
}


def test_identical_policies_have_no_changes() -> None:
    assert describe_changes(Policy.model_validate(BASE), Policy.model_validate(BASE)) == []


def test_threshold_and_price_changes_are_described() -> None:
    changed = {
        "tiers": {"edge": {"deployments": [{**BASE["tiers"]["edge"]["deployments"][0], "price": {"input_per_million": 0.3, "output_per_million": 0.2}}]}},  # type: ignore[index]
        "routing": {"thresholds": {"edge": 0.5}},
    }
    assert describe_changes(Policy.model_validate(BASE), Policy.model_validate(changed)) == [
        "Deployment 'small': price.input_per_million changes from 0.1 to 0.3.",
        "The edge threshold changes from 0.700 to 0.500, so the edge tier accepts more of the requests that reach it.",
    ]


def test_diff_tenants_shadow_without_digests() -> None:
    digest_a, digest_b = "a" * 64, "b" * 64
    old = {**BASE, "tenants": {"entries": {"team": {"key_sha256": [digest_a]}, "gone": {}}}}
    new = {
        **BASE,
        "tenants": {
            "require_key": True,
            "entries": {"team": {"key_sha256": [digest_b], "min_tier": "edge"}, "fresh": {}},
        },
        "shadow": {"sample_rate": 0.1},
    }
    changes = describe_changes(Policy.model_validate(old), Policy.model_validate(new))
    assert changes == [
        "Setting 'shadow': sample_rate changes from 0.02 to 0.1.",
        "Setting 'tenants': require_key changes from False to True.",
        "Tenant 'fresh' is added.",
        "Tenant 'gone' is removed.",
        "Tenant 'team': 1 API key(s) added, 1 removed.",
        "Tenant 'team': min_tier changes from None to 'edge'.",
    ]
    assert not any(digest_a in change or digest_b in change for change in changes)


def test_category_floor_changes_read_as_sentences() -> None:
    old = Policy.model_validate(
        {**BASE, "routing": {"thresholds": {"edge": 0.7}, "category_floors": {"math": "mid", "code": "mid"}}}
    )
    new = Policy.model_validate(
        {**BASE, "routing": {"thresholds": {"edge": 0.7},
                             "category_floors": {"math": "frontier", "legal": "mid"}}}
    )
    assert describe_changes(old, new) == [
        "Code prompts lose their floor (mid), so the scores alone choose their tier.",
        "Legal prompts now start at the mid tier.",
        "Math prompts start at the frontier tier instead of mid.",
    ]


def test_alias_bounds_and_thresholds_are_described() -> None:
    old = {**BASE, "aliases": {"auto": {}, "cheap": {"thresholds": {"edge": 0.5}}}}
    new = {**BASE, "aliases": {"auto": {"max_tier": "edge"},
                               "cheap": {"min_tier": "edge", "thresholds": {"edge": 0.4}}}}
    assert describe_changes(Policy.model_validate(old), Policy.model_validate(new)) == [
        "Router alias 'auto' maximum tier changes from none to edge.",
        "Router alias 'cheap' edge threshold changes from 0.500 to 0.400.",
        "Router alias 'cheap' minimum tier changes from none to edge.",
    ]


def test_alias_threshold_removal_names_policy_value() -> None:
    # The policy has an edge threshold of 0.7 and none for mid and frontier.
    old = {**BASE, "aliases": {"cheap": {"thresholds": {"edge": 0.5, "frontier": 0.9}}}}
    new = {**BASE, "aliases": {"cheap": {"thresholds": {"mid": 0.3}}}}
    assert describe_changes(Policy.model_validate(old), Policy.model_validate(new)) == [
        "Router alias 'cheap' edge threshold changes from 0.500 to the policy's 0.700.",
        "Router alias 'cheap' frontier threshold changes from 0.900 to no threshold.",
        "Router alias 'cheap' mid threshold changes from no threshold to 0.300.",
    ]


def test_embedding_changes_are_described() -> None:
    def embedding(name: str, price: float) -> dict[str, object]:
        return {"name": name, "model": f"openai/{name}", "api_base": "http://127.0.0.1:9/v1",
                "price": {"input_per_million": price}}

    first = {**BASE, "embeddings": {"deployments": [embedding("e1", 0.02)],
                                    "aliases": {"embed": ["e1"]}}}
    second = {**BASE, "embeddings": {"deployments": [embedding("e1", 0.05), embedding("e2", 0.1)],
                                     "aliases": {"embed": ["e2", "e1"]}}}
    none, one, two = (Policy.model_validate(document) for document in (BASE, first, second))

    assert describe_changes(none, one) == [
        "An embeddings section is added, so POST /v1/embeddings serves models."]
    assert describe_changes(one, none) == [
        "The embeddings section is removed, so POST /v1/embeddings serves no model."]
    assert describe_changes(one, two) == [
        "Embedding deployment 'e2' (openai/e2) is added.",
        "Embedding deployment 'e1': price.input_per_million changes from 0.02 to 0.05.",
        "Embeddings alias 'embed' changes from e1 to e2, e1.",
    ]


def test_local_model_probe_changes_are_described() -> None:
    changed = {**BASE, "local_model": {"probe_interval_s": 2, "probe_failures": 5}}
    assert describe_changes(Policy.model_validate(BASE), Policy.model_validate(changed)) == [
        "Setting 'local_model': probe_failures changes from 3 to 5.",
        "Setting 'local_model': probe_interval_s changes from 5.0 to 2.0.",
    ]


def test_diff_command_invalid_policy_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from router.cli.main import app
    from router.settings import BUNDLED_POLICY

    broken = tmp_path / "broken.yaml"
    broken.write_text("tiers: 5\n", encoding="utf-8")

    result = CliRunner().invoke(app, ["policy", "diff", str(BUNDLED_POLICY), str(broken)])

    assert result.exit_code == 2
    assert result.output.startswith(f"invalid policy {broken}:")
