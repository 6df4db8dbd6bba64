"""The labelled-outcomes format that training and evaluation read.

One JSON object per line::

    {"id": "mmlu-anatomy-12",
     "messages": [{"role": "user", "content": "..."}],     # or "prompt": "text"
     "outcomes": {"mistralai/mixtral-8x7b-chat": {"quality": 1.0, "cost_usd": 0.00025,
                                                  "tokens_in": 120, "tokens_out": 4}},
     "split": "train",                                     # optional: "train" | "test"
     "source": "routellm-mmlu"}                            # optional

``outcomes`` keys are model names or tier names.  A tier map (``edge=model-a``) turns
model names into tiers.  A tier absent from a record is unlabelled for that record, so
data sets with only two models still train the two tiers they cover.

Adequacy: a tier's answer is adequate when its ``quality`` is at least a fixed
threshold (0.5 by default).  The threshold is absolute rather than relative to the
frontier's quality, so a prompt that every tier fails counts as failed by every tier.

The gateway's outcome log can also feed training: see ``read_gateway_log``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_THRESHOLD = 0.5


class OutcomesError(ValueError):
    """Raised when a labelled-outcomes file or a tier map is malformed."""


@dataclass(slots=True)
class LabelledPrompt:
    """One conversation with per-tier quality and (optional) cost."""

    id: str
    messages: list[dict[str, Any]]
    quality: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    split: str | None = None
    source: str | None = None


def parse_tier_map(entries: Sequence[str] | None) -> dict[str, str]:
    """Parse ``["edge=model-a", "mid=model-b"]`` into a model -> tier mapping.

    Raises OutcomesError on an entry without ``=``.
    """
    mapping: dict[str, str] = {}
    for entry in entries or ():
        for item in entry.split(","):
            tier, sep, model = item.strip().partition("=")
            if not sep or not tier.strip() or not model.strip():
                raise OutcomesError(f"invalid tier map entry {item!r}; expected TIER=MODEL")
            mapping[model.strip()] = tier.strip()
    return mapping


def parse_implied_tiers(entries: Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    """Parse ``["edge=mid+frontier"]`` into ``{"edge": ("mid", "frontier")}``.

    Raises OutcomesError on an entry without ``=`` or without source tiers.
    """
    rules: dict[str, tuple[str, ...]] = {}
    for entry in entries or ():
        tier, sep, sources = entry.strip().partition("=")
        names = tuple(name.strip() for name in sources.split("+") if name.strip())
        if not sep or not tier.strip() or not names:
            raise OutcomesError(f"invalid implied tier {entry!r}; expected TIER=TIER+TIER, "
                                "e.g. edge=mid+frontier")
        rules[tier.strip()] = names
    return rules


def imply_tiers(records: Iterable[LabelledPrompt],
                rules: Mapping[str, Sequence[str]]) -> list[LabelledPrompt]:
    """Label each rule's tier, where a record lacks it, with the minimum of its source tiers.

    The rule ``edge=mid+frontier`` assumes a weaker model answers adequately only prompts
    that both stronger models answer adequately.  That is a proxy, not a measurement: it
    counts every prompt the stronger models share as easy enough.  A record missing any
    source tier is left unlabelled for the rule's tier.  Records are changed in place.
    """
    result = list(records)
    for record in result:
        for tier, sources in rules.items():
            if tier not in record.quality and all(s in record.quality for s in sources):
                record.quality[tier] = min(record.quality[s] for s in sources)
    return result


def read_outcomes(
    paths: Iterable[str | Path], tier_map: Mapping[str, str] | None = None
) -> list[LabelledPrompt]:
    """Read labelled-outcomes JSONL files, mapping outcome keys to tiers.

    Without a tier map, outcome keys are tier names.  With one, a model name maps
    through it, a key that is already one of its tier names stays, and any other key
    is dropped.  Raises OutcomesError
    naming the file and line of a malformed record.
    """
    records: list[LabelledPrompt] = []
    for path in paths:
        for line_no, raw in _numbered_lines(Path(path)):
            try:
                records.append(_parse_record(raw, tier_map))
            except (ValueError, TypeError, KeyError) as exc:
                raise OutcomesError(f"{path}:{line_no}: {exc}") from None
    return records


def write_outcomes(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write plain-dict records as JSONL, creating parent folders; return the count."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def conversation_key(record: LabelledPrompt) -> str:
    """Return a string that is equal for records with the same conversation."""
    return json.dumps(record.messages, sort_keys=True, ensure_ascii=False)


def source_group(record: LabelledPrompt) -> str:
    """Return the data set part of a source such as ``routellm-mmlu/anatomy``."""
    return (record.source or "unknown").split("/")[0]


def adequate(quality: float, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """Return whether a quality in [0, 1] counts as an adequate answer."""
    return quality >= threshold


def read_gateway_log(paths: Iterable[str | Path]) -> list[LabelledPrompt]:
    """Build labelled prompts from the gateway's outcome log and feedback records.

    Outcome records carry ``request_id``, ``tier``, ``model`` and ``cache_hit``; feedback
    records are ``{"type": "feedback", "request_id": ..., "score": 0..1}``.  A request
    becomes a labelled prompt when it has feedback, was not a cache hit, and its record
    includes the conversation (``messages`` or ``prompt``, present only when the policy
    logs prompts).  The last feedback for a request wins.
    """
    requests: dict[str, dict[str, Any]] = {}
    feedback: dict[str, float] = {}
    for path in paths:
        for _, raw in _numbered_lines(Path(path)):
            record = json.loads(raw)
            if record.get("type") == "feedback":
                feedback[str(record["request_id"])] = float(record["score"])
            elif "request_id" in record and not record.get("cache_hit"):
                requests[str(record["request_id"])] = record
    return [_from_gateway(requests[rid], score) for rid, score in feedback.items()
            if rid in requests and _conversation(requests[rid])]


def _from_gateway(record: dict[str, Any], score: float) -> LabelledPrompt:
    tier = str(record.get("tier"))
    cost = record.get("cost_usd")
    return LabelledPrompt(
        id=str(record["request_id"]),
        messages=_conversation(record),
        quality={tier: score},
        cost={tier: float(cost)} if isinstance(cost, int | float) else {},
        source="gateway-log",
    )


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise OutcomesError(f"{path}: cannot open ({exc.strerror})") from None
    with handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                yield line_no, line


def _parse_record(raw: str, tier_map: Mapping[str, str] | None) -> LabelledPrompt:
    record = json.loads(raw)
    if not isinstance(record, dict):
        raise TypeError("record is not a JSON object")
    messages = _conversation(record)
    if not messages:
        raise ValueError("record has neither 'messages' nor 'prompt'")
    outcomes = record.get("outcomes")
    if not isinstance(outcomes, dict):
        raise TypeError("field 'outcomes' must be an object of model -> {quality, ...}")
    prompt = LabelledPrompt(id=str(record.get("id", "")), messages=messages,
                            split=record.get("split"), source=record.get("source"))
    for key, outcome in outcomes.items():
        tier = _tier_of(key, tier_map)
        if tier is None:
            continue
        prompt.quality[tier] = float(outcome["quality"])
        if outcome.get("cost_usd") is not None:
            prompt.cost[tier] = float(outcome["cost_usd"])
    return prompt


def _tier_of(key: str, tier_map: Mapping[str, str] | None) -> str | None:
    if not tier_map:
        return key
    if key in tier_map:
        return tier_map[key]
    return key if key in tier_map.values() else None


def _conversation(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = record.get("messages")
    if isinstance(messages, list) and messages:
        return messages
    prompt = record.get("prompt")
    if isinstance(prompt, str) and prompt:
        return [{"role": "user", "content": prompt}]
    return []
