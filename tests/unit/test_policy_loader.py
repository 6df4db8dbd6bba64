"""Policy validation: errors name the file, the line, the key, what was expected and found."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from typer.testing import CliRunner

from router.api.auth import identify
from router.cli import main
from router.policy.loader import PolicyError, load_policy
from router.policy.schema import Policy, Tenants
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
        f"{path}:9: tiers.edge.deployments.0.context_window: expected a whole number (found 'lots')"
    ]


def test_misspelled_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("context_window: 4096", "context_window: 4096\n        timout_s: 3"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        (
            f"{path}:10: tiers.edge.deployments.0.timout_s: unknown key; did you mean "
            "'timeout_s'? Expected one of name, "
            "model, api_base, api_key_env, transport, price, context_window, capabilities, "
            "local_model, default_max_tokens, output_limit_param, developer_role, timeout_s, connect_timeout_s, max_in_flight, weight (found 3)"
        )
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            "tenant:\n  require_key: true\n",
            (
                "tenant: unknown key; did you mean 'tenants'? Expected one of version, name, "
                "aliases, tiers, routing, cache, outcomes, tenants, shadow, local_model, "
                "embeddings (found a mapping with keys require_key)"
            ),
        ),
        (
            "tenants:\n  entries:\n    team-a:\n      budget: {usd_per_dya: 5}\n",
            (
                "tenants.entries.team-a.budget.usd_per_dya: unknown key; did you mean "
                "'usd_per_day'? Expected one of "
                "usd_per_day, usd_per_month (found 5)"
            ),
        ),
        (
            "shadow:\n  judge: {deployment: big, max_token: 3}\n",
            ("shadow.judge.max_token: unknown key; did you mean 'max_tokens'? Expected one of "
             "deployment, max_tokens (found 3)"),
        ),
    ],
    ids=["top-level", "in-dict-of-models", "in-optional-model"],
)
def test_unknown_key_lists_known_keys(tmp_path: Path, edit: str, expected: str) -> None:
    path = write(tmp_path, VALID + edit)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].split(": ", 1)[1] == expected


def test_unknown_tier_name_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("  frontier:", "  premium:"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        f"{path}:10: tiers.premium: unknown tier 'premium'; expected one of edge, mid, frontier"
    ]


def test_threshold_out_of_range_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "routing:\n  thresholds: {edge: 1.5}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        f"{path}:18: routing.thresholds.edge: threshold must be between 0 and 1 (found 1.5)"
    ]


def test_threshold_error_names_its_own_line(tmp_path: Path) -> None:
    # In a block mapping the second entry is on a later line than the mapping's start.
    text = VALID + "routing:\n  thresholds:\n    edge: 0.8\n    mid: 5\n    premium: 0.5\n"
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        f"{path}:20: routing.thresholds.mid: threshold must be between 0 and 1 (found 5)",
        (f"{path}:21: routing.thresholds.premium: unknown tier 'premium'; expected one of edge, "
         "mid, frontier"),
    ]


def test_category_floor_error_names_its_own_line(tmp_path: Path) -> None:
    text = VALID + "routing:\n  category_floors:\n    code: mid\n    maths: mid\n"
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(
        f"{path}:20: routing.category_floors.maths: unknown category 'maths'; expected one of "
    )


@pytest.mark.parametrize(
    "entries", ["[sk-live-0123456789abcdef]", "sk-live-0123456789abcdef"], ids=["in-list", "bare"]
)
def test_pasted_key_is_not_echoed(tmp_path: Path, entries: str) -> None:
    text = VALID + f"tenants:\n  entries:\n    team-a:\n      key_sha256: {entries}\n"
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert len(caught.value.problems) == 1
    assert "sk-live" not in caught.value.problems[0]
    assert caught.value.problems[0].endswith(
        "(found a value not shown, because it may be the API key itself)"
    )


def test_key_digest_error_names_its_own_line(tmp_path: Path) -> None:
    text = VALID + (
        "tenants:\n  entries:\n    team-a:\n      key_sha256:\n"
        f"        - {'a' * 64}\n        - {'A' * 64}\n"
    )
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(
        f"{path}:22: tenants.entries.team-a.key_sha256.1: each key_sha256 entry must be 64 "
        "lowercase hex characters (printf %s KEY | sha256sum) (found 'AAAA"
    )


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


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("version: 1\ntiers:\n  edge:\n    a: 1\n   b: 2\n", 5),
        ("version: 1\ntiers:\n  edge:\n    a: 1\n      b: 2\n", 5),
    ],
)
def test_bad_indentation_gets_a_hint(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}:{line}: invalid YAML: ")
    assert problem.endswith("(check the indentation of this line and the lines above it)")


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
            f"{path}:7: tiers.edge.deployments.0.api_base: a local_model deployment needs "
            "api_base http://127.0.0.1:PORT/v1 with an explicit port, because `tierwise serve` "
            f"starts the local edge model on 127.0.0.1 at that port (found '{api_base}')"
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


def test_repeated_deployment_name_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("name: big", "name: small"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        (
            f"{path}:12: tiers.frontier.deployments.0.name: deployment name 'small' is used "
            "twice (first at line 5); give each deployment its own name"
        )
    ]


def test_shared_key_digest_is_rejected(tmp_path: Path) -> None:
    digest = "a" * 64
    tenants = (
        "tenants:\n  entries:\n"
        f"    team-a:\n      key_sha256: [{'b' * 64}, {digest}]\n"
        f"    team-b:\n      key_sha256: [{digest}]\n"
    )
    path = write(tmp_path, VALID + tenants)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        (
            f"{path}:22: tenants.entries.team-b.key_sha256.0: key digest '{digest}' is also "
            "listed under tenant 'team-a' (line 20); an API key belongs to one tenant, so "
            "remove it from one of them"
        )
    ]


def test_shared_key_digest_fails_schema() -> None:
    digest = "a" * 64
    entries = {"team-a": {"key_sha256": [digest]}, "team-b": {"key_sha256": [digest]}}
    with pytest.raises(ValidationError, match="listed under tenants 'team-a' and 'team-b'") as caught:
        Tenants.model_validate({"entries": entries})

    [error] = caught.value.errors()
    assert error["ctx"]["policy_location"] == ("entries", "team-b", "key_sha256", 0)


def policy_data(**sections: object) -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load(VALID)
    data.update(sections)
    return data


EMBEDDING = {"model": "openai/embed", "api_base": "http://127.0.0.1:9/v1", "price": {"input_per_million": 0}}


# The loader finds these with their YAML lines before the schema runs, so they are checked
# here on the schema alone. Each error names the key at fault, not the whole mapping.
@pytest.mark.parametrize(
    ("data", "location", "message"),
    [
        (
            policy_data(aliases={"auto": {}, "big": {}}),
            ("tiers", "frontier", "deployments", 0, "name"),
            ("deployment name 'big' is also a router alias; GET /v1/models lists every name once, "
            "so give the deployment another name"),
        ),
        (
            policy_data(embeddings={"deployments": [{"name": "big", **EMBEDDING}]}),
            ("embeddings", "deployments", 0, "name"),
            ("embeddings name 'big' is also a chat deployment or router alias; GET /v1/models "
            "lists every name once, so give it another name"),
        ),
        (
            policy_data(embeddings={
                "deployments": [{"name": "vec", **EMBEDDING}], "aliases": {"auto": ["vec"]},
            }),
            ("embeddings", "aliases", "auto", "[key]"),
            ("embeddings name 'auto' is also a chat deployment or router alias; GET /v1/models "
            "lists every name once, so give it another name"),
        ),
        (
            policy_data(embeddings={
                "deployments": [{"name": "vec", **EMBEDDING}, {"name": "vec", **EMBEDDING}],
            }),
            ("embeddings", "deployments", 1, "name"),
            "embedding deployment name 'vec' is used twice; give each deployment its own name",
        ),
        (
            policy_data(embeddings={
                "deployments": [{"name": "vec", **EMBEDDING}], "aliases": {"vec": ["vec"]},
            }),
            ("embeddings", "aliases", "vec", "[key]"),
            "alias 'vec' is also the name of an embedding deployment; give the alias another name",
        ),
        (
            policy_data(embeddings={
                "deployments": [{"name": "vec", **EMBEDDING}], "aliases": {"v": ["vec", "nope"]},
            }),
            ("embeddings", "aliases", "v", 1),
            "'nope' is not an embedding deployment; expected one of vec",
        ),
    ],
    ids=["deployment-is-alias", "embedding-is-deployment", "embedding-alias-is-alias",
         "embedding-twice", "embedding-alias-is-embedding", "embedding-alias-unknown-target"],
)
def test_schema_errors_name_the_key(
    data: dict[str, object], location: tuple[object, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Policy.model_validate(data)

    [error] = caught.value.errors()
    assert error["msg"] == message
    assert (*error["loc"], *error["ctx"]["policy_location"]) == location


SHADOW_JUDGE_BIG = "  judge: {deployment: big}\n"


# Each problem names the key at fault and its line, never a Python repr of the mapping
# around it. The command prints every problem on its own line after the file's header.
@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            "aliases:\n  auto: {}\n  cheap: {min_tier: frontier, max_tier: edge}\n" + VALID,
            ("3: aliases.cheap.min_tier: 'frontier' is above max_tier 'edge', so no tier is left "
            "for this alias"),
        ),
        (
            "aliases:\n  auto: {}\n  big: {}\n" + VALID,
            ("15: tiers.frontier.deployments.0.name: deployment name 'big' is also a router alias; "
            "GET /v1/models lists every name once, so give the deployment another name"),
        ),
        (
            VALID.replace("output_per_million: 15}", "output_per_million: 15, "
                          "cached_input_per_million: 6}"),
            ("15: tiers.frontier.deployments.0.price.cached_input_per_million: 6 is above "
            "input_per_million (5); providers charge less for input read from their prompt "
            "cache, so one of the two prices is probably mistyped"),
        ),
        (
            VALID + "shadow:\n  judge: {deployment: nobody}\n",
            ("18: shadow.judge.deployment: 'nobody' is not a deployment of this policy; expected "
            "one of small, big"),
        ),
        (
            VALID + "shadow:\n  enabled: true\n",
            ("18: shadow.judge: an enabled shadow section needs a judge; set judge.deployment to "
            "a deployment of this policy (found nothing)"),
        ),
        (
            VALID + "shadow:\n  enabled: true\n  tiers: [edge]\n  reference_tier: mid\n"
            + SHADOW_JUDGE_BIG,
            ("20: shadow.reference_tier: 'mid' has no deployments in this policy; expected one "
            "of edge, frontier"),
        ),
        (
            VALID + "shadow:\n  tiers: [edge, frontier]\n",
            ("18: shadow.reference_tier: 'frontier' is also in tiers (edge, frontier); the "
            "reference must be a tier that the shadowed requests were not served by"),
        ),
        (
            VALID + "routing:\n  cooldown: [1]\n",
            "18: routing.cooldown: expected a mapping of keys and values (found [1])",
        ),
        (
            VALID + "shadow:\n  tiers: {edge: 1}\n",
            "18: shadow.tiers: expected a list (found a mapping with keys edge)",
        ),
        (
            VALID + "tiers_extra:\n  edge: {deployments: []}\n",
            ("17: tiers_extra: unknown key; did you mean 'tiers'? Expected one of version, "
            "name, aliases, tiers, routing, cache, outcomes, tenants, shadow, local_model, "
            "embeddings (found a mapping with keys edge)"),
        ),
    ],
    ids=["alias-bounds", "deployment-is-alias", "cached-price", "judge-unknown",
         "judge-missing", "reference-tier-absent", "reference-tier-shadowed",
         "cooldown-list", "shadow-tiers-mapping", "unknown-key-mapping"],
)
def test_policy_check_names_key_not_mapping(tmp_path: Path, edit: str, problem: str) -> None:
    path = write(tmp_path, edit)
    result = CliRunner().invoke(main.app, ["policy", "check", str(path)])

    assert result.exit_code == 2
    assert result.output.splitlines() == [f"invalid policy {path}:", f"  {path}:{problem}"]


def test_policy_check_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    result = CliRunner().invoke(main.app, ["policy", "check", str(path)])

    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"cannot read the policy file {path}: No such file or directory"
    ]


@pytest.mark.parametrize(
    ("edit", "same_routing"),
    [
        ("\n# a comment\n", True),
        ("cache: {ttl_s: 60}\noutcomes: {store_prompts: true}\n", True),
        ("routing: {thresholds: {edge: 0.9}}\n", False),
        ("aliases: {auto: {}, auto-quality: {min_tier: frontier}}\n", False),
        ("routing: {cooldown: {after_failures: 5, seconds: 10}}\n", True),
    ],
    ids=["comment", "cache-and-outcomes", "threshold", "alias", "cooldown"],
)
def test_routing_version_ignores_answer_neutral_edits(
    tmp_path: Path, edit: str, same_routing: bool
) -> None:
    base = load_policy(write(tmp_path, VALID))
    edited = load_policy(write(tmp_path, VALID + edit))
    assert edited.version != base.version
    assert (edited.routing_version == base.routing_version) is same_routing


def test_routing_version_ignores_local_model_port(tmp_path: Path) -> None:
    first = load_policy(write(tmp_path, LOCAL_EDGE.replace("API_BASE", "http://127.0.0.1:8081/v1")))
    second = load_policy(write(tmp_path, LOCAL_EDGE.replace("API_BASE", "http://127.0.0.1:8082/v1")))
    hosted = load_policy(write(tmp_path, VALID))
    moved = load_policy(write(tmp_path, VALID.replace("http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1", 1)))
    assert first.version != second.version
    assert first.routing_version == second.routing_version
    assert moved.routing_version != hosted.routing_version


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


RATE_FIELDS = ["requests_per_minute", "tokens_per_minute"]


@pytest.mark.parametrize("field", RATE_FIELDS)
def test_routing_version_ignores_rate_limits(tmp_path: Path, field: str) -> None:
    tenant = "tenants:\n  entries:\n    team-a: {key_sha256: [" + "a" * 64 + "]%s}\n"
    unlimited = load_policy(write(tmp_path, VALID + tenant % ""))
    limited = load_policy(write(tmp_path, VALID + tenant % f", {field}: 60"))
    plain = load_policy(write(tmp_path, VALID))
    defaulted = load_policy(write(tmp_path, VALID + f"tenants:\n  default_{field}: 60\n"))
    assert limited.routing_version == unlimited.routing_version
    assert defaulted.routing_version == plain.routing_version
    assert limited.version != unlimited.version


def with_request_rate(value: str, field: str = "requests_per_minute") -> str:
    return VALID + (
        "tenants:\n  entries:\n    team-a:\n      budget: {usd_per_day: 5}\n"
        f"      {field}: {value}\n"
    )


@pytest.mark.parametrize("field", RATE_FIELDS)
def test_rate_limit_loads(tmp_path: Path, field: str) -> None:
    loaded = load_policy(write(tmp_path, with_request_rate("120", field)))
    unset = load_policy(write(tmp_path, with_tenant("team-a")))
    assert getattr(loaded.policy.tenants.entries["team-a"], field) == 120
    assert getattr(unset.policy.tenants.entries["team-a"], field) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be greater than 0 (found 0)"),
        ("-5", "must be greater than 0 (found -5)"),
        # YAML reads these as a bool, a float and strings, none of which is a count.
        ("true", "expected a whole number (found true)"),
        ("1.5", "expected a whole number (found 1.5)"),
        ("60.0", "expected a whole number (found 60.0)"),
        ("'60'", "expected a whole number without quotes (found '60')"),
        ("lots", "expected a whole number (found 'lots')"),
    ],
)
@pytest.mark.parametrize("field", RATE_FIELDS)
def test_invalid_rate_limit_names_line(
    tmp_path: Path, value: str, message: str, field: str
) -> None:
    path = write(tmp_path, with_request_rate(value, field))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [f"{path}:21: tenants.entries.team-a.{field}: {message}"]


RESERVED_ADVICE = (
    "is reserved because the gateway uses it for callers that match no policy tenant, and "
    "those callers would share this tenant's cache entries, spend and outcome records. "
    "Reserved names are 'anonymous', 'unidentified' and 'key-' followed by 16 lowercase hex "
    "digits, so choose another name"
)


def with_tenant(name: str) -> str:
    return VALID + f"tenants:\n  entries:\n    {name}:\n      min_tier: frontier\n"


@pytest.mark.parametrize("name", ["anonymous", "unidentified", "key-8a197f6f60e55bf2"])
def test_reserved_tenant_name_is_rejected(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, with_tenant(name))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        f"{path}:19: tenants.entries.{name}: tenant name '{name}' {RESERVED_ADVICE}"
    ]


def request_with_headers(headers: list[tuple[bytes, bytes]]) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})


def test_names_gateway_generates_are_reserved(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, VALID)).policy
    keyless = identify(request_with_headers([]), policy).name
    unlisted = identify(request_with_headers([(b"authorization", b"Bearer sk-unlisted")]), policy).name

    for name in (keyless, unlisted):
        path = write(tmp_path, with_tenant(name))
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        assert "is reserved" in caught.value.problems[0], name


@pytest.mark.parametrize(
    "name",
    ["key-8A197F6F60E55BF2", "key-8a197f6f60e55bf", "key-8a197f6f60e55bf2a", "anonymous-team", "key-team"],
)
def test_tenant_name_like_reserved_loads(tmp_path: Path, name: str) -> None:
    loaded = load_policy(write(tmp_path, with_tenant(name)))
    assert list(loaded.policy.tenants.entries) == [name]


EDGE_API_BASE = "        api_base: http://127.0.0.1:9/v1\n        price: {input_per_million: 0.1"


def with_edge_api_base(api_base: str) -> str:
    return VALID.replace(
        EDGE_API_BASE, EDGE_API_BASE.replace("http://127.0.0.1:9/v1", api_base), 1
    )


@pytest.mark.parametrize(
    ("api_base", "message"),
    [
        ("not a url", "api_base contains whitespace or a control character; write the URL"),
        ('"http://host\\t/v1"', "api_base contains whitespace or a control character; write the URL"),
        ("api.openai.com/v1", "api_base must start with http:// or https://"),
        ("ftp://10.0.0.5/v1", "api_base must start with http:// or https://"),
        ("'http:///v1'", "api_base has no host"),
        ("'http://:8000/v1'", "api_base has no host"),
        ("http://host:99999/v1", "api_base is not a valid URL (Port out of range 0-65535)"),
        ("http://host:port/v1", "api_base is not a valid URL (Port could not be cast"),
        ("'http://[zz]/v1'", "api_base is not a valid URL ("),
        ("http://ho<st/v1", "api_base host 'ho<st' is not a valid host name or IP address"),
        ("http://a..b/v1", "api_base host 'a..b' is not a valid host name or IP address"),
        ("http://host/v1?key=1", "api_base must not contain a query (?) or fragment (#)"),
        ("'http://host/v1#top'", "api_base must not contain a query (?) or fragment (#)"),
    ],
    ids=[
        "words", "tab", "no-scheme", "ftp", "no-host", "port-only", "port-range", "port-text",
        "bad-ipv6", "bad-host-char", "empty-label", "query", "fragment",
    ],
)
def test_invalid_api_base_is_rejected(tmp_path: Path, api_base: str, message: str) -> None:
    path = write(tmp_path, with_edge_api_base(api_base))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{path}:7: tiers.edge.deployments.0.api_base: ")
    assert message in caught.value.problems[0]


@pytest.mark.parametrize(
    "api_base",
    [
        "https://api.openai.com/v1",
        "HTTP://10.0.0.5:8000/v1",
        "'http://[::1]:8000/v1'",
        "http://vllm_server:8000/v1",
        "http://localhost:8000",
        "https://api.example.com./v1/",
    ],
)
def test_valid_api_base_loads(tmp_path: Path, api_base: str) -> None:
    loaded = load_policy(write(tmp_path, with_edge_api_base(api_base)))
    assert loaded.policy.tiers["edge"].deployments[0].api_base == api_base.strip("'")


def test_routing_version_ignores_weights_and_balance(tmp_path: Path) -> None:
    base = load_policy(write(tmp_path, VALID))
    weighted = load_policy(write(tmp_path, VALID.replace(
        "  edge:\n    deployments:", "  edge:\n    balance: weighted\n    deployments:"
    ).replace("context_window: 4096", "context_window: 4096\n        weight: 3")))

    assert weighted.policy.tiers["edge"].balance == "weighted"
    assert weighted.policy.tiers["edge"].deployments[0].weight == 3
    assert weighted.routing_version == base.routing_version


def test_invalid_weight_and_balance_name_the_line(tmp_path: Path) -> None:
    text = VALID.replace("  edge:\n    deployments:", "  edge:\n    balance: random\n    deployments:")
    path = write(tmp_path, text.replace("context_window: 4096", "context_window: 4096\n        weight: 0"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert caught.value.problems == [
        f"{path}:11: tiers.edge.deployments.0.weight: must be greater than 0 (found 0)",
        f"{path}:4: tiers.edge.balance: expected one of ordered, weighted (found 'random')",
    ]


def test_negative_cooldown_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "routing:\n  cooldown: {after_failures: -1, seconds: 0}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert caught.value.problems == [
        f"{path}:18: routing.cooldown.after_failures: must be at least 0 (found -1)",
        f"{path}:18: routing.cooldown.seconds: must be greater than 0 (found 0)",
    ]


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("routing:\n  cooldown: {seconds: .inf}\n", "routing.cooldown.seconds"),
        ("routing:\n  cooldown: {seconds: .nan}\n", "routing.cooldown.seconds"),
    ],
)
def test_non_finite_cooldown_rejected(tmp_path: Path, setting: str, key: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(write(tmp_path, VALID + setting))

    assert len(caught.value.problems) == 1
    assert f": {key}: " in caught.value.problems[0]


def test_infinite_weight_rejected(tmp_path: Path) -> None:
    text = VALID.replace("context_window: 4096", "context_window: 4096\n        weight: .inf")
    with pytest.raises(PolicyError) as caught:
        load_policy(write(tmp_path, text))

    assert len(caught.value.problems) == 1
    assert ": tiers.edge.deployments.0.weight: " in caught.value.problems[0]


def test_cache_ttl_above_limit_rejected(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(write(tmp_path, VALID + "cache:\n  ttl_s: 100000000000000000\n"))

    assert len(caught.value.problems) == 1
    assert ": cache.ttl_s: must be at most 3155760000" in caught.value.problems[0]


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("input_per_million: 0.1,", "input_per_million: .inf,", "tiers.edge.deployments.0.price.input_per_million"),
        ("context_window: 4096", "context_window: 4096\n        timeout_s: .nan", "tiers.edge.deployments.0.timeout_s"),
    ],
    ids=["price", "timeout"],
)
def test_non_finite_number_rejected(tmp_path: Path, old: str, new: str, key: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(write(tmp_path, VALID.replace(old, new, 1)))

    assert len(caught.value.problems) == 1
    assert f": {key}: expected a finite number" in caught.value.problems[0]


@pytest.mark.parametrize("field", RATE_FIELDS)
def test_default_rate_limit_names_the_line(tmp_path: Path, field: str) -> None:
    path = write(tmp_path, VALID + f"tenants:\n  default_{field}: true\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert caught.value.problems == [
        f"{path}:18: tenants.default_{field}: expected a whole number (found true)"
    ]


def test_problem_lines_for_readyz(tmp_path: Path) -> None:
    from router.policy.store import problem_lines

    path = write(tmp_path, with_request_rate("0") + "      tokens_per_minute: -1\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert len(caught.value.problems) == 2
    assert problem_lines(caught.value) == [21, 22]


def test_alias_bounds_and_thresholds_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "aliases:\n  auto: {}\n  cheap: {min_tier: mid, max_tier: edge}\n"
                 "  loose:\n    thresholds: {edge: 1.5, top: 0.2}\n" + VALID)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert [problem.split(" (found")[0] for problem in caught.value.problems] == [
        (f"{path}:3: aliases.cheap.min_tier: 'mid' is above max_tier 'edge', so no tier is left "
         "for this alias"),
        f"{path}:5: aliases.loose.thresholds.edge: threshold must be between 0 and 1",
        (f"{path}:5: aliases.loose.thresholds.top: unknown tier 'top'; expected one of edge, mid, "
         "frontier"),
    ]


def test_alias_bounds_without_policy_tier(tmp_path: Path) -> None:
    # The policy has only the edge and frontier tiers.
    path = write(tmp_path, "aliases:\n  auto: {}\n  only-mid: {min_tier: mid, max_tier: mid}\n"
                 "  above-all:\n    min_tier: frontier\n  below-mid: {max_tier: mid}\n" + VALID)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert caught.value.problems == [
        (f"{path}:3: aliases.only-mid: min_tier 'mid' and max_tier 'mid' leave none of this "
         "policy's tiers (edge, frontier), so every request for 'only-mid' would fail; change "
         "the bound or add a tier within it"),
    ]


def test_local_model_rejects_max_completion_tokens(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace(
        "        api_base: http://127.0.0.1:9/v1\n        price: {input_per_million: 0.1",
        "        api_base: http://127.0.0.1:9/v1\n        local_model: true\n"
        "        output_limit_param: max_completion_tokens\n"
        "        price: {input_per_million: 0.1"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    [problem] = caught.value.problems
    assert problem.startswith(
        f"{path}:9: tiers.edge.deployments.0.output_limit_param: the local model's server "
        "(llama-cpp-python 0.3.36) reads only max_tokens, so with max_completion_tokens its "
        "completions would have no output-token limit; remove output_limit_param or set it to "
        "max_tokens"
    )


def test_cached_price_above_input_price_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace(
        "{input_per_million: 5, output_per_million: 15}",
        "{input_per_million: 5, output_per_million: 15, cached_input_per_million: 50}"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert caught.value.problems == [
        (f"{path}:15: tiers.frontier.deployments.0.price.cached_input_per_million: 50 is above "
        "input_per_million (5); providers charge less for input read from their prompt cache, "
        "so one of the two prices is probably mistyped")
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"api_base": "https://api.openai.com/v1"}, "max_completion_tokens"),
        ({"api_base": "https://api.openai.com/v1", "transport": "litellm"}, None),
        ({"api_base": "https://api.openai.com/v1", "output_limit_param": "max_tokens"},
         "max_tokens"),
        ({"api_base": "http://127.0.0.1:9/v1"}, None),
        ({"api_base": "http://127.0.0.1:9/v1", "local_model": True}, "max_tokens"),
        ({"model": "anthropic/claude", "api_base": None}, None),
    ],
)
def test_output_limit_param_by_upstream(fields: dict[str, object], expected: str | None) -> None:
    from router.policy.schema import Deployment

    deployment = Deployment.model_validate({
        "name": "d", "model": "openai/m", "price": {"input_per_million": 1, "output_per_million": 2},
        "context_window": 8192, **fields,
    })
    assert deployment.sent_output_limit_param == expected


def test_cached_input_price_changes_cost(tmp_path: Path) -> None:
    from router.policy.schema import Deployment

    plain = Deployment.model_validate({
        "name": "d", "model": "openai/m", "api_base": "http://127.0.0.1:9/v1",
        "price": {"input_per_million": 2.0, "output_per_million": 8.0}, "context_window": 8192,
    })
    cached = plain.model_copy(update={"price": plain.price.model_copy(
        update={"cached_input_per_million": 0.5})})

    assert plain.cost_usd(1000, 100, 600) == pytest.approx((1000 * 2.0 + 100 * 8.0) / 1e6)
    assert cached.cost_usd(1000, 100, 600) == pytest.approx(
        (400 * 2.0 + 600 * 0.5 + 100 * 8.0) / 1e6
    )
    # More cached tokens than input tokens are priced as if all input tokens were cached.
    assert cached.cost_usd(1000, 0, 5000) == pytest.approx(1000 * 0.5 / 1e6)


@pytest.mark.parametrize(
    "text",
    ["version: 1\ntiers: " + "[" * 3000 + "]" * 3000 + "\n", "version: 1\ntiers: &loop [*loop]\n"],
    ids=["deep-nesting", "self-referring-alias"],
)
def test_unbounded_nesting_is_policy_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(PolicyError) as raised:
        load_policy(path)

    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith(f"{path}: ")


def required_keys(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """Return ``Model.field`` for every required field of ``model`` and the models it contains."""
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    found: set[str] = set()
    for name, field in model.model_fields.items():
        if field.is_required():
            found.add(f"{model.__name__}.{name}")
        for nested in nested_models(field.annotation):
            found |= required_keys(nested, seen)
    return found


def nested_models(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in nested_models(arg)]


EMBEDDING_ITEM = "embeddings:\n  deployments:\n    - name: vec\n      model: openai/embed\n" \
    "      price: {input_per_million: 0}\n"

# Each row removes one required key: the schema field, the policy text, and the problem
# after the file name. VALID's edge deployment starts at line 5 and its price is at line 8.
MISSING_KEYS = [
    ("Policy.tiers", "version: 1\nname: x\n", "1: missing required top-level key 'tiers'"),
    (
        "Tier.deployments",
        VALID.replace("  frontier:\n", "  mid:\n    balance: ordered\n  frontier:\n"),
        "10: tiers.mid: missing required key 'deployments'",
    ),
    (
        "Deployment.name",
        VALID.replace("      - name: small\n        model:", "      - model:"),
        "5: tiers.edge.deployments.0: missing required key 'name'",
    ),
    (
        "Deployment.model",
        VALID.replace("        model: openai/small\n", ""),
        "5: tiers.edge.deployments.0: missing required key 'model'",
    ),
    (
        "Deployment.price",
        VALID.replace("        price: {input_per_million: 0.1, output_per_million: 0.2}\n", ""),
        "5: tiers.edge.deployments.0: missing required key 'price'",
    ),
    (
        "Deployment.context_window",
        VALID.replace("        context_window: 4096\n", ""),
        "5: tiers.edge.deployments.0: missing required key 'context_window'",
    ),
    (
        "Price.input_per_million",
        VALID.replace("{input_per_million: 0.1, output_per_million: 0.2}", "{output_per_million: 0.2}"),
        "8: tiers.edge.deployments.0.price: missing required key 'input_per_million'",
    ),
    (
        "Price.output_per_million",
        # A block mapping: the problem names the line of its key, not of its first entry.
        VALID.replace("price: {input_per_million: 0.1, output_per_million: 0.2}",
                      "price:\n          input_per_million: 0.1"),
        "8: tiers.edge.deployments.0.price: missing required key 'output_per_million'",
    ),
    (
        "ShadowJudge.deployment",
        VALID + "shadow:\n  judge:\n    max_tokens: 5\n",
        "18: shadow.judge: missing required key 'deployment'",
    ),
    (
        "Embeddings.deployments",
        VALID + "embeddings:\n  aliases: {}\n",
        "17: embeddings: missing required key 'deployments'",
    ),
    (
        "EmbeddingDeployment.name",
        VALID + EMBEDDING_ITEM.replace("    - name: vec\n      model:", "    - model:"),
        "19: embeddings.deployments.0: missing required key 'name'",
    ),
    (
        "EmbeddingDeployment.model",
        VALID + EMBEDDING_ITEM.replace("      model: openai/embed\n", ""),
        "19: embeddings.deployments.0: missing required key 'model'",
    ),
    (
        "EmbeddingDeployment.price",
        VALID + EMBEDDING_ITEM.replace("      price: {input_per_million: 0}\n", ""),
        "19: embeddings.deployments.0: missing required key 'price'",
    ),
    (
        "EmbeddingPrice.input_per_million",
        VALID + EMBEDDING_ITEM.replace("{input_per_million: 0}", "{}"),
        "21: embeddings.deployments.0.price: missing required key 'input_per_million'",
    ),
]


@pytest.mark.parametrize(("field", "text", "problem"), MISSING_KEYS, ids=[row[0] for row in MISSING_KEYS])
def test_missing_required_key_names_section(
    tmp_path: Path, field: str, text: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert caught.value.problems == [f"{path}:{problem}"]


def test_missing_key_table_covers_schema() -> None:
    assert {row[0] for row in MISSING_KEYS} == required_keys(Policy)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            VALID + "routing:\n  cooldwn:\n    seconds: 3\n",
            ("18: routing.cooldwn: unknown key; did you mean 'cooldown'? Expected one of "
             "thresholds, escalate_on_error, cooldown, category_floors (found a mapping with "
             "keys seconds)"),
        ),
        (
            VALID + "cache:\n  enabled: true\n  layers:\n    - memory\n",
            ("19: cache.layers: unknown key; expected one of enabled, ttl_s, max_entries, "
             "cache_nonzero_temperature (found ['memory'])"),
        ),
        (
            VALID.replace("  frontier:", "  fronteir:"),
            ("10: tiers.fronteir: unknown tier 'fronteir'; did you mean 'frontier'? Expected "
             "one of edge, mid, frontier"),
        ),
    ],
    ids=["block-mapping-close-match", "block-list-no-match", "tier-close-match"],
)
def test_unknown_key_names_its_own_line(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert caught.value.problems == [f"{path}:{problem}"]


LOCAL_MODEL_ADVICE = (
    "a local_model deployment needs api_base http://127.0.0.1:PORT/v1 with an explicit port, "
    "because `tierwise serve` starts the local edge model on 127.0.0.1 at that port"
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            LOCAL_EDGE.replace("        api_base: API_BASE\n", ""),
            f"5: tiers.edge.deployments.0.api_base: {LOCAL_MODEL_ADVICE} (found nothing)",
        ),
        (
            VALID + EMBEDDING_ITEM.replace(
                "      price:", "      api_base: http://10.0.0.5:8081/v1\n      local_model: true\n"
                "      price:"
            ),
            (f"21: embeddings.deployments.0.api_base: {LOCAL_MODEL_ADVICE} "
             "(found 'http://10.0.0.5:8081/v1')"),
        ),
    ],
    ids=["chat-without-api-base", "embedding-remote-api-base"],
)
def test_local_model_address_names_api_base(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert caught.value.problems == [f"{path}:{problem}"]


# One bad policy per pydantic error type that a policy can cause, each with the plain message
# that replaces pydantic's.
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (VALID + "cache:\n  enabled: maybe\n", "18: cache.enabled: expected true or false (found 'maybe')"),
        (VALID + "cache:\n  ttl_s: 1.5\n", "18: cache.ttl_s: expected a whole number (found 1.5)"),
        (
            VALID.replace("input_per_million: 0.1", "input_per_million: cheap"),
            "8: tiers.edge.deployments.0.price.input_per_million: expected a number (found 'cheap')",
        ),
        (
            VALID.replace("input_per_million: 0.1", "input_per_million: -1"),
            "8: tiers.edge.deployments.0.price.input_per_million: must be at least 0 (found -1)",
        ),
        (VALID + "shadow:\n  sample_rate: 2\n", "18: shadow.sample_rate: must be at most 1 (found 2)"),
        (
            VALID + "routing:\n  cooldown: {seconds: .inf}\n",
            "18: routing.cooldown.seconds: expected a finite number, not .inf or .nan (found .inf)",
        ),
        (
            VALID.replace("name: small", "name: 5"),
            ("5: tiers.edge.deployments.0.name: expected a string; YAML reads this value as a "
             "number or boolean, so put it in quotes (found 5)"),
        ),
        (
            VALID.replace("name: small", "name: [a]"),
            "5: tiers.edge.deployments.0.name: expected a string (found ['a'])",
        ),
        (
            VALID.replace("name: small", "name: ''"),
            "5: tiers.edge.deployments.0.name: must not be empty (found '')",
        ),
        ("version: 1\ntiers: {}\n", "2: tiers: must not be empty (found an empty mapping)"),
        (
            VALID.replace("        context_window: 4096", "        context_window: 4096\n"
                          "        transport: fast"),
            "10: tiers.edge.deployments.0.transport: expected one of auto, direct, litellm (found 'fast')",
        ),
        (VALID.replace("version: 1", "version: 2"), "1: version: expected 1 (found 2)"),
        (
            VALID.replace("version: 1", "version: 100000000000000000000000000000"),
            "1: version: expected 1 (found 100000000000000000000000000000)",
        ),
        (
            VALID + "aliases:\n  cheap: {max_tier: low}\n",
            "18: aliases.cheap.max_tier: unknown tier 'low'; expected one of edge, mid, frontier",
        ),
        (
            VALID.replace("context_window: 4096", "context_window: 10000000000000000000000"),
            ("9: tiers.edge.deployments.0.context_window: must be at most 9223372036854775807 "
             "(found 10000000000000000000000)"),
        ),
    ],
    ids=["bool", "int-from-float", "float", "ge", "le", "finite", "string-from-number",
         "string-from-list", "empty-string", "empty-mapping", "literal", "literal-number",
         "literal-huge-number", "literal-tier", "huge-token-count"],
)
def test_schema_errors_in_plain_words(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert caught.value.problems == [f"{path}:{problem}"]
