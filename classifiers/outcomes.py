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

The gateway's outcome log can also feed training: ``scan_gateway_log`` joins its feedback
and shadow labels to the request records and counts every record it cannot use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

DEFAULT_THRESHOLD = 0.5
GATEWAY_SOURCE = "gateway-log"
"""The ``source`` of rows built from the gateway's outcome log; the model card counts them."""
_LOG_SUFFIXES = (".jsonl", ".parquet")


class OutcomesError(ValueError):
    """Raised when a labelled-outcomes file or a tier map is malformed."""


@dataclass(slots=True)
class GatewayLogCounts:
    """Counts of one scan of the gateway's outcome log.

    Every request record lands in exactly one of ``labelled``, ``cache_hits``, ``failed``,
    ``unlabelled`` and ``prompt_not_stored``.
    """

    files: int = 0
    requests: int = 0
    labelled: int = 0
    """Requests that became labelled prompts."""
    cache_hits: int = 0
    failed: int = 0
    """Requests that were never routed (no tier) or ended with an error."""
    unlabelled: int = 0
    """Requests with neither client feedback nor a shadow score."""
    prompt_not_stored: int = 0
    """Labelled requests whose record does not contain the conversation."""
    unmatched_labels: int = 0
    """Labels whose request is not in the files read, or whose tenant differs from it."""
    unscored_shadow: int = 0
    """Shadow records without a score: the judge's verdict did not parse, or the job failed."""
    invalid_lines: int = 0
    """Lines that are not JSON objects, and labels without a request id or a score in [0, 1]."""
    embeddings: int = 0
    """Embeddings requests, which have no conversation to route."""
    averaged: int = 0
    """Labelled requests whose conversation and tier repeat an earlier labelled request's.

    Each is counted in ``labelled`` too, and its score is averaged into the earlier row.
    """

    def summary_lines(self) -> list[str]:
        """Return one line for the totals and one for each kind of record that was skipped."""
        requests = f"{self.requests} request{'' if self.requests == 1 else 's'}"
        files = f"{self.files} file{'' if self.files == 1 else 's'}"
        totals = f"outcome log: {requests} in {files}, {self.labelled} usable for training"
        not_stored = ("labelled requests skipped because their prompt was not stored (the "
                      "gateway stores prompts only when the policy sets outcomes.store_prompts: true)")
        unmatched = ("labels ignored: their request is not in these files, "
                     "or belongs to another tenant")
        averaged = ("labelled requests averaged into the row of an earlier request with the "
                    "same conversation and tier")
        skipped = (
            (self.cache_hits, "cache hits skipped without client feedback or a shadow score"),
            (self.failed, "failed or unrouted requests skipped"),
            (self.unlabelled, "requests skipped without client feedback or a shadow score"),
            (self.prompt_not_stored, not_stored),
            (self.unmatched_labels, unmatched),
            (self.unscored_shadow, "shadow records ignored without a score"),
            (self.invalid_lines, "invalid lines or labels ignored"),
            (self.embeddings, "embeddings requests skipped"),
            (self.averaged, averaged),
        )
        # "skipped: 1" reads right for every count, where "1 requests skipped" does not.
        return [totals] + [f"  {text}: {count}" for count, text in skipped if count]


@dataclass(slots=True)
class GatewayLog:
    """Labelled prompts built from the gateway's outcome log, and the counts of the scan."""

    records: list[LabelledPrompt]
    counts: GatewayLogCounts


class NothingTrainableError(OutcomesError):
    """Raised when the gateway log yields fewer trainable rows than required.

    ``counts`` contains the reasons, and ``GatewayLogCounts.summary_lines`` renders them.
    """

    def __init__(self, message: str, counts: GatewayLogCounts) -> None:
        super().__init__(message)
        self.counts = counts


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
            except (ValueError, TypeError) as exc:
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


def conversation_key(record: LabelledPrompt) -> bytes:
    """Return a 16-byte digest that is equal for records with the same conversation.

    A digest instead of the serialised conversation keeps a set of a million keys
    small; two different conversations share a BLAKE2b-128 digest with negligible odds.
    """
    serialised = json.dumps(record.messages, sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(serialised.encode("utf-8"), digest_size=16).digest()


def source_group(record: LabelledPrompt) -> str:
    """Return the data set part of a source such as ``routellm-mmlu/anatomy``."""
    return (record.source or "unknown").split("/")[0]


def adequate(quality: float, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """Return whether a quality in [0, 1] counts as an adequate answer."""
    return quality >= threshold


def read_gateway_log(paths: Iterable[str | Path]) -> list[LabelledPrompt]:
    """Return the labelled prompts of the gateway's outcome log; see ``scan_gateway_log``."""
    return scan_gateway_log(paths).records


def scan_gateway_log(paths: Iterable[str | Path]) -> GatewayLog:
    """Build labelled prompts from the gateway's outcome log, and count what was skipped.

    ``paths`` are outcome log files (the gateway's local JSONL file, or files written by
    ``tierwise outcomes export``) or folders searched recursively for ``*.jsonl`` and
    ``*.parquet`` files.  A record whose ``type`` is absent or ``"request"`` is a request.
    Labels are joined to requests by ``request_id``: ``{"type": "feedback", "score": 0..1}``
    from the client (``POST /v1/feedback``) or from shadow evaluation (``"source":
    "shadow"``).  When a request has both, the client's label wins, because the client saw
    the answer in use.  Among several labels of one kind, the one with the latest ``ts``
    wins, and reading order breaks ties.  A ``"type": "shadow"`` record (a judge verdict
    that did not parse, or a failed job) carries no score and never replaces the request.
    A label whose ``tenant`` differs from the request's is ignored.

    A request becomes a labelled prompt, for the tier that served it, when it was routed and
    answered (a tier and no error status), has a label, and its record contains the
    conversation.  A cache hit names the tier whose answer was stored, so a label on a hit
    rates that tier; hits without a label are counted apart.  The gateway stores the conversation only when the
    policy sets ``outcomes.store_prompts: true``.  Labelled requests with the same
    conversation and tier become one row, whose quality is the mean of their scores.

    Raises OutcomesError for a path that does not exist or a file that cannot be opened.
    Lines that are not JSON objects are counted as invalid, not raised, so that one torn
    line (a crash mid-write) does not block every later training run.
    """
    scanner = _LogScanner()
    for path in gateway_log_files(paths):
        scanner.counts.files += 1
        for row in _log_rows(path):
            scanner.add(row)
    return scanner.result()


def gateway_log_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders into the ``.jsonl`` and ``.parquet`` files below them, sorted by path.

    Hidden files (an exporter's temporary files) are left out.  Raises OutcomesError for a
    path that does not exist.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.suffix in _LOG_SUFFIXES and p.is_file())
            files.extend(sorted(p for p in found if not p.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            raise OutcomesError(f"{path}: not found; expected an outcome log file or a folder "
                                "of files written by `tierwise outcomes export`")
    return files


def write_gateway_training_file(paths: Sequence[str | Path], folder: Path,
                                min_rows: int = 1) -> tuple[Path | None, GatewayLogCounts]:
    """Scan the gateway log and write its labelled prompts as a labelled-outcomes file.

    The file is ``folder/gateway-log.jsonl``, with outcome keys that are tier names.  It
    contains prompts, so ``folder`` should be temporary.  Returns the file (None when the
    log yields no rows) and the counts.  Raises NothingTrainableError when the log yields
    fewer than ``min_rows`` rows, and OutcomesError as ``scan_gateway_log`` does.

    NOTE: ``read_outcomes`` with a tier map keeps only tiers that the map names, so a
    ``--tier-map`` that leaves out a tier drops the gateway rows served by that tier.
    """
    log = scan_gateway_log(paths)
    if len(log.records) < min_rows:
        raise NothingTrainableError(
            f"the outcome log yielded {len(log.records)} trainable rows, fewer than the "
            f"{min_rows} required (--min-log-rows; pass --min-log-rows 0 to train on --data "
            "alone)", log.counts)
    if not log.records:
        return None, log.counts
    target = folder / "gateway-log.jsonl"
    write_outcomes(target, (_labelled_dict(record) for record in log.records))
    return target, log.counts


@dataclass(slots=True)
class _Label:
    score: float
    client: bool
    tenant: str | None
    rank: tuple[float, int]
    """(``ts``, reading order): the larger is the later label."""


class _LogScanner:
    """Collects request and label records, then joins them (see ``scan_gateway_log``)."""

    def __init__(self) -> None:
        self.counts = GatewayLogCounts()
        # Keyed by (tenant, request id): a client may send its own id, so two tenants can
        # log requests under one id.
        self.requests: dict[tuple[str | None, str], dict[str, Any]] = {}
        self.labels: dict[str, list[_Label]] = {}
        self.order = 0

    def add(self, row: object) -> None:
        self.order += 1
        if not isinstance(row, dict) or row.get("type") == "invalid":
            self.counts.invalid_lines += 1
            return
        kind = row.get("type")
        if kind == "feedback":
            self._add_label(row)
        elif kind == "shadow":
            self.counts.unscored_shadow += 1
        elif kind in (None, "request") and row.get("request_id") is not None:
            tenant = row.get("tenant")
            self.requests[(tenant if isinstance(tenant, str) else None, str(row["request_id"]))] = row

    def _add_label(self, row: dict[str, Any]) -> None:
        score = row.get("score")
        if row.get("request_id") is None or not _is_score(score):
            self.counts.invalid_lines += 1
            return
        tenant = row.get("tenant")
        label = _Label(float(score), row.get("source") != "shadow",
                       tenant if isinstance(tenant, str) else None,
                       (_timestamp(row), self.order))
        self.labels.setdefault(str(row["request_id"]), []).append(label)

    def result(self) -> GatewayLog:
        self.counts.requests = len(self.requests)
        labelled = [prompt for (_, rid), request in self.requests.items()
                    if (prompt := self._labelled(rid, request)) is not None]
        records = self._average_repeats(labelled)
        request_ids = {rid for _, rid in self.requests}
        self.counts.unmatched_labels += sum(
            not self._has_request(label.tenant, rid, request_ids)
            for rid, labels in self.labels.items() for label in labels
        )
        return GatewayLog(records, self.counts)

    def _labelled(self, rid: str, request: dict[str, Any]) -> LabelledPrompt | None:
        counts = self.counts
        if request.get("endpoint") == "embeddings":
            counts.embeddings += 1
            return None
        label = self._best_label(rid, request.get("tenant"))
        if request.get("cache_hit") and label is None:
            counts.cache_hits += 1
            return None
        if not isinstance(request.get("tier"), str) or _failed(request):
            counts.failed += 1
            return None
        if label is None:
            counts.unlabelled += 1
            return None
        if not _conversation(request):
            counts.prompt_not_stored += 1
            return None
        counts.labelled += 1
        return _from_gateway(request, label.score)

    def _average_repeats(self, prompts: list[LabelledPrompt]) -> list[LabelledPrompt]:
        """Merge rows of one conversation and tier into the first, with the mean score.

        A cache hit repeats the request whose answer it copied, and popular prompts recur,
        so several users can rate one tier's answer to the same conversation.  Training
        merges rows with the same conversation and keeps one label per tier, so without
        this step the last rating would replace the others.
        """
        rows: dict[tuple[bytes, str], LabelledPrompt] = {}
        scores: dict[tuple[bytes, str], list[float]] = {}
        for prompt in prompts:
            tier, score = next(iter(prompt.quality.items()))
            key = (conversation_key(prompt), tier)
            if key not in rows:
                rows[key] = prompt
                scores[key] = [score]
                continue
            self.counts.averaged += 1
            scores[key].append(score)
            if not rows[key].cost:
                rows[key].cost = prompt.cost
        for key, row in rows.items():
            row.quality = {key[1]: sum(scores[key]) / len(scores[key])}
        return list(rows.values())

    def _has_request(self, tenant: str | None, rid: str, request_ids: set[str]) -> bool:
        """Tell whether a label of ``tenant`` for ``rid`` has a request it can join."""
        if tenant is None:
            return rid in request_ids
        return (tenant, rid) in self.requests or (None, rid) in self.requests

    def _best_label(self, rid: str, tenant: object) -> _Label | None:
        labels = self.labels.get(rid, [])
        usable = [label for label in labels
                  if label.tenant is None or not isinstance(tenant, str) or label.tenant == tenant]
        client = [label for label in usable if label.client]
        ranked = client or usable
        return max(ranked, key=lambda label: label.rank) if ranked else None


def _log_rows(path: Path) -> Iterator[object]:
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    for _, raw in _numbered_lines(path, strict=False):
        try:
            yield json.loads(raw)
        except ValueError:
            yield None


def _parquet_rows(path: Path) -> Iterator[object]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise OutcomesError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow, "
                            "or export with --format jsonl") from None
    for row in pq.read_table(path).to_pylist():
        # The exporter writes nested values as JSON strings, so that every file has flat columns.
        if isinstance(row.get("messages"), str):
            row["messages"] = json.loads(row["messages"])
        yield row


def _is_score(value: object) -> TypeGuard[int | float]:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and 0.0 <= value <= 1.0)


def _timestamp(row: Mapping[str, Any]) -> float:
    ts = row.get("ts")
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else 0.0


def _failed(request: Mapping[str, Any]) -> bool:
    status = request.get("status")
    return bool(request.get("error")) or (isinstance(status, int) and status >= 400)


def _from_gateway(record: dict[str, Any], score: float) -> LabelledPrompt:
    tier = str(record.get("tier"))
    cost = record.get("cost_usd")
    # A cache hit's record has cost_usd 0, which is the cache's price, not the tier's.
    if record.get("cache_hit") or not isinstance(cost, int | float):
        cost = None
    return LabelledPrompt(
        id=str(record["request_id"]),
        messages=_conversation(record),
        quality={tier: score},
        cost={tier: float(cost)} if cost is not None else {},
        source=GATEWAY_SOURCE,
    )


def _labelled_dict(record: LabelledPrompt) -> dict[str, Any]:
    outcomes = {tier: {"quality": quality, "cost_usd": record.cost.get(tier)}
                for tier, quality in record.quality.items()}
    return {"id": record.id, "messages": record.messages, "outcomes": outcomes,
            "source": record.source}


def _numbered_lines(path: Path, strict: bool = True) -> Iterator[tuple[int, str]]:
    """Yield the number and text of each non-blank line of ``path``.

    A line that is not UTF-8 raises OutcomesError when ``strict``. Otherwise its invalid
    bytes become U+FFFD and the caller parses the rest.
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise OutcomesError(f"{path}: cannot open ({exc.strerror})") from None
    with handle:
        for line_no, line in enumerate(handle, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                if strict:
                    raise OutcomesError(f"{path}:{line_no}: the line is not UTF-8 text") from None
                text = line.decode("utf-8", "replace")
            if text.strip():
                yield line_no, text


def _parse_record(raw: str, tier_map: Mapping[str, str] | None) -> LabelledPrompt:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the line is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise TypeError(f"the line is a JSON {_json_type(record)}, not an object")
    messages = _conversation(record)
    if not messages:
        raise ValueError("the record lacks the field 'messages' (or 'prompt')")
    if "outcomes" not in record:
        raise ValueError("the record lacks the field 'outcomes' (an object of model -> "
                         "{quality, cost_usd})")
    outcomes = record["outcomes"]
    if not isinstance(outcomes, dict):
        raise TypeError("the field 'outcomes' must be an object of model -> {quality, cost_usd}, "
                        f"not a JSON {_json_type(outcomes)}")
    prompt = LabelledPrompt(id=str(record.get("id", "")), messages=messages,
                            split=record.get("split"), source=record.get("source"))
    for key, outcome in outcomes.items():
        tier = _tier_of(key, tier_map)
        if tier is None:
            continue
        if not isinstance(outcome, dict) or "quality" not in outcome:
            raise ValueError(f"the outcome {key!r} lacks the field 'quality'")
        prompt.quality[tier] = _number(outcome["quality"], f"outcomes.{key}.quality")
        if outcome.get("cost_usd") is not None:
            prompt.cost[tier] = _number(outcome["cost_usd"], f"outcomes.{key}.cost_usd")
    return prompt


def _number(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"the field {name!r} must be a number, got {json.dumps(value)[:40]}"
        ) from None


def _json_type(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


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
