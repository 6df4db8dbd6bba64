"""Load a policy YAML file into a validated ``Policy``, with line-numbered errors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from router.policy.problems import describe_error, line_of
from router.policy.schema import Policy


class PolicyError(Exception):
    """Raised when a policy file cannot be read, parsed or validated.

    ``problems`` holds one line per problem, each naming the file, line, key, what was
    expected and what was found.
    """

    def __init__(self, path: Path, problems: list[str], message: str | None = None) -> None:
        self.path = path
        self.problems = problems
        if message is None:
            message = f"invalid policy {path}:\n" + "\n".join(f"  {p}" for p in problems)
        super().__init__(message)


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    path: Path
    version: str
    """Content hash of the file, so that two replicas with the same file agree."""
    routing_version: str
    """Hash of the settings that decide which deployment serves a request (``routing_version``)."""


def load_policy(path: Path) -> LoadedPolicy:
    """Read, parse and validate the policy at ``path``.

    Raises ``PolicyError`` for a missing file, text that is not UTF-8, invalid YAML or a schema
    violation.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        # The file's content is not at fault, so the message does not call the policy invalid.
        raise PolicyError(
            path,
            [f"{path}: cannot read the file: {exc.strerror}"],
            f"cannot read the policy file {path}: {exc.strerror}",
        ) from None
    except UnicodeDecodeError:
        raise PolicyError(path, [_invalid_utf8_problem(path)]) from None
    return parse_policy(text, path)


def _invalid_utf8_problem(path: Path) -> str:
    """Describe where ``path`` stops being UTF-8, by line, never with the bytes themselves,
    which can be part of a pasted secret."""
    try:
        raw = path.read_bytes()
        raw.decode("utf-8")
    except OSError as exc:
        return f"{path}: cannot read the file: {exc.strerror}"
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return f"{path}:{line}: invalid UTF-8 at byte {exc.start}; save the file as UTF-8"
    # The file changed between the two reads and is UTF-8 now.
    return f"{path}: the file was not valid UTF-8 when read; save it again"


def parse_policy(text: str, path: Path) -> LoadedPolicy:
    """Parse and validate the policy ``text`` read from ``path``; raise PolicyError if invalid."""
    try:
        return _parse_policy(text, path)
    except RecursionError:
        # PyYAML, the duplicate-key walk and pydantic all recurse per nesting level, and a
        # self-referring alias (``a: &x [*x]``) never ends.
        problem = (
            f"{path}: invalid YAML: nested too deeply, or an alias refers to itself. "
            "Remove the deep nesting or the recursive alias"
        )
        raise PolicyError(path, [problem]) from None


def _parse_policy(text: str, path: Path) -> LoadedPolicy:
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        if "<block end>" in problem or "mapping values are not allowed" in problem:
            # PyYAML's words for a line indented more or less than its neighbours.
            problem += " (check the indentation of this line and the lines above it)"
        raise PolicyError(path, [f"{where}: invalid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        found = type(data).__name__ if data is not None else "an empty file"
        raise PolicyError(path, [f"{path}:1: expected a mapping at the top level, found {found}"])
    duplicates = (
        _duplicate_keys(root, path)
        + _repeated_names_and_keys(root, path)
        + _embedding_name_problems(root, path)
    )
    if duplicates:
        raise PolicyError(path, duplicates)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(path, [describe_error(error, root, path) for error in exc.errors()]) from None
    empty_aliases = _aliases_without_tiers(policy, root, path)
    if empty_aliases:
        raise PolicyError(path, empty_aliases)
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    return LoadedPolicy(policy=policy, path=path, version=version,
                        routing_version=routing_version(policy))


# Settings left out of the routing version, so that an edit keeps the cached responses: prices
# (accounting only), tenant budgets and rate limits (checked before any lookup), key
# digests (the tenant a key maps to is part of every cache key already), and weights, balance,
# in-flight limits and cooldowns, which change only which deployment of a routing decision is
# tried first (a cached response names the deployment that gave it).
_ANSWER_NEUTRAL_SETTINGS: Any = {
    "tiers": {
        "__all__": {"deployments": {"__all__": {"price", "weight", "max_in_flight"}}, "balance": True}
    },
    "routing": {"cooldown"},
    "tenants": {
        "entries": {"__all__": {"budget", "requests_per_minute", "tokens_per_minute", "key_sha256"}},
        "show_upstream_rate_limits": True,
        "default_requests_per_minute": True,
        "default_tokens_per_minute": True,
    },
}


def routing_version(policy: Policy) -> str:
    """Hash the aliases, tiers, routing and tenant settings of ``policy``.

    Cache entries are keyed by this hash instead of the file's, so an edit to budgets,
    rate limits, prices, weights and balance, tenant keys, cooldowns, cache lifetime,
    outcome or shadow settings, or to comments keeps the cache warm. The ``api_base`` of a
    ``local_model`` deployment is left out too: it only gives the port on which each gateway
    starts the bundled model, so two gateways on one machine that differ only in that port
    share their cache entries.
    """
    material = policy.model_dump(
        mode="json",
        include={"aliases", "tiers", "routing", "tenants"},
        exclude=_ANSWER_NEUTRAL_SETTINGS,
    )
    for tier in material["tiers"].values():
        for deployment in tier["deployments"]:
            if deployment["local_model"]:
                del deployment["api_base"]
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def _duplicate_keys(node: yaml.Node | None, path: Path) -> list[str]:
    """List keys that appear twice in one mapping; YAML would silently keep the last."""
    problems: list[str] = []
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in first_line:
                problems.append(
                    f"{path}:{key_node.start_mark.line + 1}: duplicate key '{key}' (first at line "
                    f"{first_line[key]}); YAML would keep only the last one, so merge or remove one"
                )
            elif key is not None:
                first_line[key] = key_node.start_mark.line + 1
            problems += _duplicate_keys(value_node, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems += _duplicate_keys(item, path)
    return problems


def _repeated_names_and_keys(root: yaml.Node | None, path: Path) -> list[str]:
    """List deployment names used twice and key digests listed under two tenants.

    The schema rejects both as well, but only the YAML nodes carry the line of each copy.
    """
    problems: list[str] = []
    name_lines: dict[str, int] = {}
    for tier, tier_node in _mapping_items(_value_of(root, "tiers")):
        for index, deployment in enumerate(_sequence_items(_value_of(tier_node, "deployments"))):
            name = _value_of(deployment, "name")
            if not isinstance(name, yaml.ScalarNode):
                continue
            line = name.start_mark.line + 1
            if name.value in name_lines:
                problems.append(
                    f"{path}:{line}: tiers.{tier}.deployments.{index}.name: deployment name "
                    f"'{name.value}' is used twice (first at line {name_lines[name.value]}); "
                    "give each deployment its own name"
                )
            else:
                name_lines[name.value] = line
    key_owners: dict[str, tuple[str, int]] = {}
    entries = _value_of(_value_of(root, "tenants"), "entries")
    for tenant, tenant_node in _mapping_items(entries):
        for index, digest in enumerate(_sequence_items(_value_of(tenant_node, "key_sha256"))):
            if not isinstance(digest, yaml.ScalarNode):
                continue
            line = digest.start_mark.line + 1
            owner = key_owners.setdefault(digest.value, (tenant, line))
            if owner[0] != tenant:
                problems.append(
                    f"{path}:{line}: tenants.entries.{tenant}.key_sha256.{index}: key digest "
                    f"'{digest.value}' is also listed under tenant '{owner[0]}' (line {owner[1]}); "
                    "an API key belongs to one tenant, so remove it from one of them"
                )
    return problems


def _embedding_name_problems(root: yaml.Node | None, path: Path) -> list[str]:
    """List embedding names that clash with other names, and alias entries naming no deployment.

    The schema rejects these as well, but only the YAML nodes carry the line of each entry.
    """
    # Names that GET /v1/models already lists: router aliases ("auto" when the policy has no
    # aliases section) and chat deployments.
    aliases_node = _value_of(root, "aliases")
    names_in_use: dict[str, str] = (
        {name: "a router alias" for name, _ in _mapping_items(aliases_node)}
        if aliases_node is not None
        else {"auto": "the default router alias"}
    )
    for _, tier_node in _mapping_items(_value_of(root, "tiers")):
        for deployment in _sequence_items(_value_of(tier_node, "deployments")):
            name = _value_of(deployment, "name")
            if isinstance(name, yaml.ScalarNode):
                names_in_use.setdefault(
                    name.value, f"a chat deployment (line {name.start_mark.line + 1})"
                )
    section = _value_of(root, "embeddings")
    problems: list[str] = []
    deployments: set[str] = set()
    for index, deployment in enumerate(_sequence_items(_value_of(section, "deployments"))):
        name = _value_of(deployment, "name")
        if not isinstance(name, yaml.ScalarNode):
            continue
        line = name.start_mark.line + 1
        if name.value in names_in_use:
            problems.append(
                f"{path}:{line}: embeddings.deployments.{index}.name: '{name.value}' is already "
                f"{names_in_use[name.value]}; GET /v1/models lists every name once, so give it "
                "another name"
            )
        else:
            names_in_use[name.value] = f"an embedding deployment (line {line})"
        deployments.add(name.value)
    for alias_key, targets in _mapping_key_nodes(_value_of(section, "aliases")):
        line = alias_key.start_mark.line + 1
        if alias_key.value in names_in_use:
            problems.append(
                f"{path}:{line}: embeddings.aliases.{alias_key.value}: '{alias_key.value}' is "
                f"already {names_in_use[alias_key.value]}; give the alias another name"
            )
        else:
            names_in_use[alias_key.value] = f"an embeddings alias (line {line})"
        for index, target in enumerate(_sequence_items(targets)):
            if isinstance(target, yaml.ScalarNode) and deployments and target.value not in deployments:
                problems.append(
                    f"{path}:{target.start_mark.line + 1}: embeddings.aliases.{alias_key.value}."
                    f"{index}: '{target.value}' is not an embedding deployment; expected one of "
                    f"{', '.join(sorted(deployments))}"
                )
    return problems


def deployment_field_problem(loaded: LoadedPolicy, name: str, field: str, message: str) -> str:
    """Return ``message`` as a problem at the line of ``field`` of deployment ``name``.

    Reads ``loaded``'s file again, because a loaded policy keeps no YAML nodes. Falls back to
    line 1 when the file changed since and no longer has that deployment.
    """
    try:
        root = yaml.compose(loaded.path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        root = None
    lists = [
        (f"tiers.{tier}.deployments", _value_of(tier_node, "deployments"))
        for tier, tier_node in _mapping_items(_value_of(root, "tiers"))
    ]
    lists.append(("embeddings.deployments", _value_of(_value_of(root, "embeddings"), "deployments")))
    for prefix, node in lists:
        for index, deployment in enumerate(_sequence_items(node)):
            name_node = _value_of(deployment, "name")
            if isinstance(name_node, yaml.ScalarNode) and name_node.value == name:
                value = _value_of(deployment, field) or deployment
                return (f"{loaded.path}:{value.start_mark.line + 1}: {prefix}.{index}.{field}: "
                        f"{message}")
    return f"{loaded.path}:1: deployment '{name}': {message}"


def _mapping_key_nodes(node: yaml.Node | None) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        return []
    return [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]


def _aliases_without_tiers(policy: Policy, root: yaml.Node | None, path: Path) -> list[str]:
    """List the aliases whose min_tier and max_tier leave none of the policy's tiers.

    Every request for such an alias would fail with 503, so the policy is rejected instead.
    """
    problems: list[str] = []
    tiers = ", ".join(tier for tier, _ in policy.ordered_tiers())
    for name, alias in policy.aliases.items():
        if policy.alias_tiers(name):
            continue
        bounds = [f"{field} '{value}'" for field, value in
                  (("min_tier", alias.min_tier), ("max_tier", alias.max_tier)) if value is not None]
        verb = "leave" if len(bounds) == 2 else "leaves"
        line = line_of(root, ["aliases", name])
        problems.append(
            f"{path}:{line}: aliases.{name}: {' and '.join(bounds)} {verb} none of this "
            f"policy's tiers ({tiers}), so every request for '{name}' would fail; change the "
            "bound or add a tier within it"
        )
    return problems


def _value_of(node: yaml.Node | None, key: str) -> yaml.Node | None:
    for key_node, value_node in _mapping_items(node):
        if key_node == key:
            return value_node
    return None


def _mapping_items(node: yaml.Node | None) -> list[tuple[str, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        return []
    return [(k.value, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]


def _sequence_items(node: yaml.Node | None) -> list[yaml.Node]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []
