"""The embeddings section of a policy, and the parsing and encoding of embeddings requests."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest

from router.api.embeddings import (
    MAX_INPUTS,
    _candidates,
    convert_vectors,
    parse_embedding_request,
)
from router.errors import InvalidRequest, UnsupportedParameter
from router.policy.loader import PolicyError, load_policy
from router.settings import BUNDLED_POLICY

CHAT_TIERS = """\
version: 1
tiers:
  edge:
    deployments:
      - name: small
        model: openai/small
        api_base: http://127.0.0.1:8081/v1
        local_model: true
        price: {input_per_million: 0.1, output_per_million: 0.2}
        context_window: 4096
"""

EMBEDDINGS = """\
embeddings:
  deployments:
    - name: embed-a
      model: openai/text-embedding-3-small
      api_base: https://api.openai.com/v1
      api_key_env: OPENAI_API_KEY
      price: {input_per_million: 0.02}
      dimensions: 1536
      accepts_dimensions: true
    - name: embed-b
      model: azure/text-embedding-3-small
      transport: litellm
      price: {input_per_million: 0.02}
      dimensions: 1536
  aliases:
    embed: [embed-a, embed-b]
"""


def load(tmp_path: Path, text: str) -> PolicyError:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    return raised.value


def test_embeddings_section_loads(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(CHAT_TIERS + EMBEDDINGS)
    policy = load_policy(path).policy
    assert policy.embeddings is not None
    candidates = policy.embedding_candidates("embed")
    assert candidates is not None
    assert [d.name for d in candidates] == ["embed-a", "embed-b"]
    assert [d.name for d in policy.embedding_candidates("embed-b") or ()] == ["embed-b"]
    assert policy.embedding_candidates("small") is None
    assert not policy.has_model("embed-a")
    embed_a, embed_b = candidates
    assert embed_a.uses_direct_path
    assert not embed_b.uses_direct_path
    assert embed_a.cost_usd(1_000_000) == pytest.approx(0.02)
    assert embed_a.takes_dimensions(256)
    assert not embed_b.takes_dimensions(256)
    assert embed_b.takes_dimensions(1536)
    assert embed_b.takes_dimensions(None)


def test_bundled_policy_embeds_with_local_model() -> None:
    policy = load_policy(BUNDLED_POLICY).policy
    assert policy.embeddings is not None
    local = [d for d in policy.embeddings.deployments if d.local_model]
    chat_local = [d for d in policy.all_deployments() if d.local_model]
    assert local
    assert local[0].api_base == chat_local[0].api_base
    assert policy.local_model_deployments() == [*chat_local, *local]


def test_token_ids_default_by_local_model(tmp_path: Path) -> None:
    local = """\
    - name: local-embed
      model: openai/local
      api_base: http://127.0.0.1:8081/v1
      local_model: true
      price: {input_per_million: 0}
    - name: local-tokens
      model: openai/local
      api_base: http://127.0.0.1:8081/v1
      local_model: true
      accepts_token_ids: true
      price: {input_per_million: 0}
  aliases:"""
    path = tmp_path / "policy.yaml"
    path.write_text(CHAT_TIERS + EMBEDDINGS.replace("  aliases:", local, 1))
    policy = load_policy(path).policy
    assert policy.embeddings is not None
    takes = {d.name: d.takes_token_ids for d in policy.embeddings.deployments}
    assert takes == {"embed-a": True, "embed-b": True, "local-embed": False, "local-tokens": True}


def test_bundled_policy_rejects_token_arrays() -> None:
    policy = load_policy(BUNDLED_POLICY).policy
    for token_input in ([[1, 2, 3]], [1, 2, 3]):
        parsed = parse_embedding_request({"model": "smollm2-135m-embed-local", "input": token_input})
        with pytest.raises(UnsupportedParameter) as raised:
            _candidates(policy, parsed)
        assert raised.value.status == 400
        assert raised.value.param == "input"
        assert raised.value.code == "unsupported_parameter"
        assert raised.value.message == (
            "The model 'smollm2-135m-embed-local' takes only strings as input, not token "
            "arrays, because none of its deployments accepts token ids. Send the text as a "
            "string or a list of strings."
        )
    strings = parse_embedding_request({"model": "smollm2-135m-embed-local", "input": ["x"]})
    assert [d.name for d in _candidates(policy, strings)] == ["smollm2-135m-embed-local"]


def test_policy_without_embeddings_has_none(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(CHAT_TIERS)
    policy = load_policy(path).policy
    assert policy.embeddings is None
    assert policy.embedding_candidates("anything") is None


def test_wrong_values_name_their_lines(tmp_path: Path) -> None:
    text = CHAT_TIERS + EMBEDDINGS.replace("dimensions: 1536\n      accepts", "dimensions: 0\n      accepts")
    text = text.replace("{input_per_million: 0.02}\n      dimensions: 1536\n  aliases",
                        "{input_per_million: lots}\n      dimensions: 1536\n  aliases")
    problems = load(tmp_path, text.replace("transport: litellm", "transport: carrier-pigeon")).problems
    assert len(problems) == 3
    assert problems[0].startswith(f"{tmp_path / 'policy.yaml'}:18: embeddings.deployments.0.dimensions:")
    assert ":22: embeddings.deployments.1.transport:" in problems[1]
    assert ":23: embeddings.deployments.1.price.input_per_million:" in problems[2]
    assert "found 'lots'" in problems[2]


def test_unknown_key_lists_known_ones(tmp_path: Path) -> None:
    text = CHAT_TIERS + EMBEDDINGS.replace("      accepts_dimensions: true\n",
                                           "      accepts_dimensions: true\n      colour: red\n")
    [problem] = load(tmp_path, text).problems
    assert ":20: embeddings.deployments.0.colour: unknown key; expected one of name, model," in problem


def test_alias_naming_no_deployment(tmp_path: Path) -> None:
    text = CHAT_TIERS + EMBEDDINGS.replace("[embed-a, embed-b]", "[embed-a, embed-c]")
    [problem] = load(tmp_path, text).problems
    assert ":26: embeddings.aliases.embed.1: 'embed-c' is not an embedding deployment" in problem
    assert "expected one of embed-a, embed-b" in problem


def test_names_clashing_with_chat_names(tmp_path: Path) -> None:
    text = CHAT_TIERS + EMBEDDINGS.replace("name: embed-b", "name: small").replace(
        "[embed-a, embed-b]", "[embed-a]\n    auto: [embed-a]"
    )
    problems = load(tmp_path, text).problems
    assert len(problems) == 2
    assert ":20: embeddings.deployments.1.name: 'small' is already a chat deployment (line 5)" in (
        problems[0]
    )
    assert ":27: embeddings.aliases.auto: 'auto' is already the default router alias" in problems[1]


def test_repeated_embedding_name(tmp_path: Path) -> None:
    text = CHAT_TIERS + EMBEDDINGS.replace("name: embed-b", "name: embed-a").replace(
        "[embed-a, embed-b]", "[embed-a]"
    )
    [problem] = load(tmp_path, text).problems
    assert ":20: embeddings.deployments.1.name: 'embed-a' is already an embedding deployment " \
        "(line 13)" in problem


def test_empty_alias_and_empty_deployments(tmp_path: Path) -> None:
    empty_alias = load(tmp_path, CHAT_TIERS + EMBEDDINGS.replace("[embed-a, embed-b]", "[]"))
    [problem] = empty_alias.problems
    assert problem.endswith(":26: embeddings.aliases.embed: must not be empty (found [])")
    no_deployments = load(tmp_path, CHAT_TIERS + "embeddings:\n  deployments: []\n")
    [problem] = no_deployments.problems
    assert problem.endswith(":12: embeddings.deployments: must not be empty (found [])")


def test_alias_of_different_dimensions(tmp_path: Path) -> None:
    text = CHAT_TIERS + EMBEDDINGS.replace("dimensions: 1536\n  aliases", "dimensions: 768\n  aliases")
    [problem] = load(tmp_path, text).problems
    assert problem.endswith(
        ":26: embeddings.aliases.embed: alias 'embed' lists deployments with different "
        "dimensions (768, 1536); vectors of different models cannot be compared, so list one "
        "model only"
    )


def test_local_embedding_on_another_port(tmp_path: Path) -> None:
    local = """\
embeddings:
  deployments:
    - name: local-embed
      model: openai/local
      api_base: http://127.0.0.1:8082/v1
      local_model: true
      price: {input_per_million: 0}
"""
    [problem] = load(tmp_path, CHAT_TIERS + local).problems
    assert problem.endswith(
        ":15: embeddings.deployments.0.api_base: local_model embedding deployment "
        "'local-embed' must use the api_base of the local model, 'http://127.0.0.1:8081/v1', "
        "which chat deployment 'small' sets, because `tierwise serve` starts one local model "
        "server (found 'http://127.0.0.1:8082/v1')"
    )


def test_invalid_api_base(tmp_path: Path) -> None:
    text = CHAT_TIERS + EMBEDDINGS.replace("https://api.openai.com/v1", "ftp://example")
    [problem] = load(tmp_path, text).problems
    assert ":15: embeddings.deployments.0.api_base: api_base must start with http://" in problem


# Requests.


def test_parse_counts_inputs() -> None:
    single = parse_embedding_request({"model": "m", "input": "hello"})
    assert (single.inputs, single.texts, single.token_ids) == (1, ["hello"], 0)
    assert single.encoding_format == "float"
    many = parse_embedding_request({"model": "m", "input": ["a", "b"], "encoding_format": "base64"})
    assert (many.inputs, many.texts, many.encoding_format) == (2, ["a", "b"], "base64")
    tokens = parse_embedding_request({"model": "m", "input": [1, 2, 3], "dimensions": 8})
    assert (tokens.inputs, tokens.texts, tokens.token_ids, tokens.dimensions) == (1, [], 3, 8)
    arrays = parse_embedding_request({"model": "m", "input": [[1, 2], [3]]})
    assert (arrays.inputs, arrays.token_ids) == (2, 3)


def test_parse_accepts_max_inputs() -> None:
    assert parse_embedding_request({"model": "m", "input": ["x"] * MAX_INPUTS}).inputs == 2048
    with pytest.raises(InvalidRequest) as raised:
        parse_embedding_request({"model": "m", "input": ["x"] * (MAX_INPUTS + 1)})
    assert raised.value.param == "input"
    assert "at most 2048 inputs, got 2049" in raised.value.message


def test_parse_missing_input() -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_embedding_request({"model": "m"})
    assert raised.value.param == "input"
    assert raised.value.code == "missing_required_parameter"


def float32_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def test_convert_vectors_both_ways() -> None:
    floats = {"object": "list", "data": [{"index": 0, "embedding": [0.5, -1.25, 3.0]}]}
    encoded = convert_vectors(floats, "base64")
    assert encoded["data"][0]["embedding"] == float32_base64([0.5, -1.25, 3.0])
    assert encoded["object"] == "list"
    assert convert_vectors(encoded, "float")["data"][0]["embedding"] == [0.5, -1.25, 3.0]
    assert convert_vectors(floats, "float") is floats


def test_convert_vectors_rejects_invalid_vectors() -> None:
    with pytest.raises(ValueError, match="not a number"):
        convert_vectors({"data": [{"embedding": [0.5, "x"]}]}, "base64")
    with pytest.raises(ValueError, match="not a float32 value"):
        convert_vectors({"data": [{"embedding": [0.5, 10**400]}]}, "base64")
    with pytest.raises(ValueError, match="whole number of float32"):
        convert_vectors({"data": [{"embedding": base64.b64encode(b"abc").decode()}]}, "float")
    with pytest.raises(ValueError):
        convert_vectors({"data": [{"embedding": "not base64!"}]}, "float")


@pytest.mark.parametrize(
    ("vector", "valid"),
    [
        ([0.5, -1, 2.0e-3], True),
        ("AAAAPw==", True),
        ([0.5, "x", None], False),
        ([0.5, True], False),
        ([[0.1, 0.2], [0.3, 0.4]], False),
        ([], False),
    ],
)
def test_embedding_response_vectors_are_checked(vector: object, valid: bool) -> None:
    from router.upstream.dispatch import _embedding_response_problem

    problem = _embedding_response_problem({"data": [{"embedding": vector}]}, 1)
    assert (problem is None) is valid


@pytest.mark.parametrize("repeat", [1, 20_000], ids=["short", "long-in-thread"])
async def test_missing_usage_is_estimated(repeat: int) -> None:
    from router.api.embeddings import (
        THREADED_COUNT_CHARS,
        _record_usage,
        parse_embedding_request,
    )
    from router.outcomes.record import Outcome
    from router.routing.tokens import count_text_tokens

    texts = ["The quick brown fox jumps over the lazy dog. " * repeat, "a dog"]
    parsed = parse_embedding_request({"model": "m", "input": texts})
    outcome = Outcome("req-1", "tenant", "m", "v1", None, False)
    await _record_usage(outcome, {"data": []}, parsed)

    assert (sum(map(len, texts)) > THREADED_COUNT_CHARS) is (repeat > 1)
    assert outcome.tokens_in == count_text_tokens(texts)
