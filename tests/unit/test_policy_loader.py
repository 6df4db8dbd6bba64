"""Policy validation: errors name the file, the line, the key, what was expected and found."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.policy.loader import PolicyError, load_policy
from router.settings import BUNDLED_POLICY

REPO = Path(__file__).resolve().parents[2]

VALID = """\
version: 1
tiers:
  edge:
    deployments:
      - name: small
        model: openai/small
        api_base: http://127.0.0.1:9/v1
        price: {input_per_million: 0.1, output_per_million: 0.2}
        context_window: 4096
  frontier:
    deployments:
      - name: big
        model: openai/big
        api_base: http://127.0.0.1:9/v1
        price: {input_per_million: 5, output_per_million: 15}
        context_window: 128000
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_bundled_and_example_policies_are_valid() -> None:
    paths = [BUNDLED_POLICY, *sorted((REPO / "policies" / "examples").glob("*.yaml"))]
    assert len(paths) >= 2
    for path in paths:
        loaded = load_policy(path)
        assert loaded.policy.tiers


def test_valid_policy_loads_with_defaults(tmp_path: Path) -> None:
    loaded = load_policy(write(tmp_path, VALID))
    assert [name for name, _ in loaded.policy.ordered_tiers()] == ["edge", "frontier"]
    assert loaded.policy.aliases["auto"].min_tier is None
    assert loaded.policy.cache.cache_nonzero_temperature is False
    assert len(loaded.version) == 12


def test_wrong_type_names_line_key_and_found_value(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("context_window: 4096", "context_window: lots"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        f"{path}:9: tiers.edge.deployments.0.context_window: Input should be a valid integer, "
        "unable to parse string as an integer (found 'lots')"
    ]


def test_misspelled_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("context_window: 4096", "context_window: 4096\n        timout_s: 3"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        f"{path}:10: tiers.edge.deployments.0.timout_s: Extra inputs are not permitted (found 3)"
    ]


def test_missing_key_says_found_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("        context_window: 4096\n", ""))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        f"{path}:5: tiers.edge.deployments.0.context_window: Field required (found nothing)"
    ]


def test_unknown_tier_name_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("  frontier:", "  premium:"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        f"{path}:10: tiers.premium: Input should be 'edge', 'mid' or 'frontier' (found 'premium')"
    ]


def test_threshold_out_of_range_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "routing:\n  thresholds: {edge: 1.5}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        f"{path}:18: routing.thresholds: threshold for 'edge' must be between 0 and 1, got 1.5 "
        "(found {'edge': 1.5})"
    ]


def test_duplicate_deployment_name_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("name: big", "name: small"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert "deployment name 'small' is used twice" in caught.value.problems[0]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\ntiers: [1, 2\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        f"{path}:3: invalid YAML: expected ',' or ']', but got '<stream end>'"
    ]


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [f"{path}:1: expected a mapping at the top level, found an empty file"]


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [f"{path}: cannot read the file: No such file or directory"]


LOCAL_EDGE = VALID.replace(
    "        api_base: http://127.0.0.1:9/v1\n        price: {input_per_million: 0.1",
    "        api_base: API_BASE\n        local_model: true\n        price: {input_per_million: 0.1",
)


def test_api_base_port_zero_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, LOCAL_EDGE.replace("API_BASE", "http://127.0.0.1:0/v1"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        (
            f"{path}:7: tiers.edge.deployments.0.api_base: port 0 is invalid in api_base because "
            "the gateway sends requests to exactly this port; give the port the model server "
            "listens on, e.g. http://127.0.0.1:8081/v1 (found 'http://127.0.0.1:0/v1')"
        )
    ]


@pytest.mark.parametrize(
    "api_base", ["http://127.0.0.1/v1", "http://localhost:8081/v1", "http://10.0.0.5:8081/v1"]
)
def test_local_model_needs_loopback_port(tmp_path: Path, api_base: str) -> None:
    path = write(tmp_path, LOCAL_EDGE.replace("API_BASE", api_base))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        (
            f"{path}:8: tiers.edge.deployments.0.local_model: a local_model deployment needs "
            "api_base http://127.0.0.1:PORT/v1 with an explicit port, because `tierwise serve` "
            f"starts the local edge model on 127.0.0.1 at that port, but api_base is '{api_base}' "
            "(found True)"
        )
    ]


def test_local_model_with_port_loads(tmp_path: Path) -> None:
    path = write(tmp_path, LOCAL_EDGE.replace("API_BASE", "http://127.0.0.1:8081/v1"))
    deployment = load_policy(path).policy.tiers["edge"].deployments[0]
    assert deployment.local_model
    assert deployment.api_base == "http://127.0.0.1:8081/v1"


def test_duplicate_keys_are_rejected_with_both_lines(tmp_path: Path) -> None:
    text = VALID + "routing:\n  thresholds: {edge: 0.8}\nrouting:\n  thresholds: {edge: 0.1}\n"
    text = text.replace("        context_window: 4096\n", "        context_window: 4096\n        context_window: 8192\n")
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    advice = "YAML would keep only the last one, so merge or remove one"
    assert caught.value.problems == [
        f"{path}:10: duplicate key 'context_window' (first at line 9); {advice}",
        f"{path}:20: duplicate key 'routing' (first at line 18); {advice}",
    ]


@pytest.mark.parametrize(
    ("edit", "same_routing"),
    [
        ("\n# a comment\n", True),
        ("cache: {ttl_s: 60}\noutcomes: {store_prompts: true}\n", True),
        ("routing: {thresholds: {edge: 0.9}}\n", False),
        ("aliases: {auto: {}, auto-quality: {min_tier: frontier}}\n", False),
    ],
    ids=["comment", "cache-and-outcomes", "threshold", "alias"],
)
def test_routing_version_ignores_answer_neutral_edits(
    tmp_path: Path, edit: str, same_routing: bool
) -> None:
    base = load_policy(write(tmp_path, VALID))
    edited = load_policy(write(tmp_path, VALID + edit))
    assert edited.version != base.version
    assert (edited.routing_version == base.routing_version) is same_routing


def test_routing_version_ignores_prices_budgets_and_keys(tmp_path: Path) -> None:
    tenant = "tenants:\n  entries:\n    team-a: {key_sha256: [%s]%s}\n"
    with_tenant = load_policy(write(tmp_path, VALID + tenant % ("a" * 64, "")))
    with_budget = load_policy(write(tmp_path, VALID + tenant % ("a" * 64, ", budget: {usd_per_day: 5}")))
    new_key = load_policy(write(tmp_path, VALID + tenant % ("a" * 64 + ", " + "b" * 64, "")))
    with_min_tier = load_policy(write(tmp_path, VALID + tenant % ("a" * 64, ", min_tier: frontier")))
    repriced = load_policy(write(tmp_path, VALID.replace("output_per_million: 15",
                                                         "output_per_million: 12")))
    base = load_policy(write(tmp_path, VALID))
    assert with_budget.routing_version == with_tenant.routing_version
    assert new_key.routing_version == with_tenant.routing_version
    assert with_min_tier.routing_version != with_tenant.routing_version
    assert repriced.routing_version == base.routing_version
