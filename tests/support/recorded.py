"""Answers that real models gave to real prompts, indexed by prompt for the replay upstream.

Sources, all read from the public data folder (see :func:`shared_data_dir`):

- ``routerbench``: RouterBench 0-shot CSVs (ARC-Challenge, MBPP, Winogrande) with one
  ``<model>|model_response`` column for each of 11 models. A prompt is indexed in full and by its
  final question (the last blank-line-separated block, the form the traffic mix uses).
- ``gsm8k``: RouteLLM's GSM8K test responses from Mixtral-8x7B-Instruct and GPT-4 Turbo.
- ``chatterbot``: the ChatterBot small-talk corpus. Each user turn maps to the reply after it.
  The corpus is written by people, so its pseudo-model is named ``chatterbot``.
- ``alpacaeval``: AlpacaEval 2.0 annotation files. ``output_1`` is GPT-4 Turbo's answer and
  ``output_2`` is the answer of the model named in ``generator_2``. The instructions' dataset
  card is CC BY-NC 4.0, so benchmarks leave this source out and only tests load it.

:func:`scripted_answers` builds a one-answer stand-in that needs no data, for the fake upstream.

Two model names from different sources are merged into one recorded model because both name
the same weights: RouterBench's ``mistralai/mixtral-8x7b-chat`` and RouteLLM's
``mistralai/Mixtral-8x7B-Instruct-v0.1`` (Mixtral 8x7B Instruct v0.1), and ``gpt4_1106_preview``
(AlpacaEval) with ``gpt-4-1106-preview``.

Prompts match after whitespace is collapsed (``" ".join(text.split())``). When a prompt has
several recorded answers from one model, the first in load order wins.
"""

from __future__ import annotations

import ast
import csv
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

SHARED_DATA_ENV = "TIERWISE_SHARED_DATA"
ALL_SOURCES: frozenset[str] = frozenset({"routerbench", "gsm8k", "chatterbot", "alpacaeval"})
# AlpacaEval's instructions are CC BY-NC 4.0, so anything beyond tests leaves them out.
BENCH_SOURCES: frozenset[str] = frozenset({"routerbench", "gsm8k", "chatterbot"})

MatchKind = Literal["exact", "fallback"]

_ROUTERBENCH_DIR = ("routerbench-subset", "datasets", "routerbench_zs")
_GSM8K_CSV = ("routellm-evals", "routellm", "evals", "gsm8k", "gsm8k_responses.csv")
_CHATTERBOT_DIR = ("prompts-chatterbot", "chatterbot_corpus", "data", "english")
_ALPACAEVAL_DIR = ("alpacaeval2-annotations", "results")
_RESPONSE_SUFFIX = "|model_response"

# Source-specific names mapped to the recorded model they are merged into.
_MERGED_NAMES = {
    "mistralai/mixtral-8x7b-instruct-v0.1": "mistralai/mixtral-8x7b-chat",
    "gpt4_1106_preview": "gpt-4-1106-preview",
}


class SharedDataMissingError(FileNotFoundError):
    """Raised when the public data folder (or one file the replay needs from it) is missing."""


class UnknownModelError(KeyError):
    """Raised when a model name matches no recorded model."""


def repo_root() -> Path:
    """Return the root folder of this checkout."""
    return Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """Return the public data folder: ``$TIERWISE_SHARED_DATA``, else ``../shared/data``.

    The folder may be missing: callers check ``.is_dir()`` or let a loader raise
    :class:`SharedDataMissingError`.
    """
    configured = os.environ.get(SHARED_DATA_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return repo_root().parent / "shared" / "data"


def normalize_prompt(text: str) -> str:
    """Return the lookup key of a prompt: its words joined by single spaces."""
    return " ".join(text.split())


def final_question(text: str) -> str:
    """Return the last block of ``text`` between blank lines: the question, without examples."""
    blocks = [block for block in text.split("\n\n") if block.strip()]
    return blocks[-1] if blocks else text


def stable_index(text: str, size: int) -> int:
    """Return a process-independent index in ``range(size)`` derived from ``text``."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % size


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    """One answer a model gave, with where it came from (``source`` and the record's id there)."""

    text: str
    source: str
    record_id: str


@dataclass(slots=True)
class RecordedModel:
    """All recorded answers of one model, indexed by normalized prompt."""

    name: str
    by_prompt: dict[str, RecordedAnswer] = field(default_factory=dict)
    answers: list[RecordedAnswer] = field(default_factory=list)

    def add(self, prompts: Iterable[str], answer: RecordedAnswer) -> None:
        """Index ``answer`` under each of ``prompts``; an earlier answer to a prompt is kept."""
        self.answers.append(answer)
        for prompt in prompts:
            self.by_prompt.setdefault(normalize_prompt(prompt), answer)

    def lookup(self, prompt: str) -> tuple[RecordedAnswer, MatchKind]:
        """Return the recorded answer to ``prompt``, or a hash-chosen answer of this model.

        Raises:
            LookupError: the model has no answers at all.
        """
        key = normalize_prompt(prompt)
        exact = self.by_prompt.get(key)
        if exact is not None:
            return exact, "exact"
        if not self.answers:
            raise LookupError(f"recorded model {self.name!r} has no answers")
        return self.answers[stable_index(key, len(self.answers))], "fallback"


@dataclass(slots=True)
class RecordedAnswers:
    """Every loaded recorded model, with name resolution."""

    models: dict[str, RecordedModel] = field(default_factory=dict)

    def model(self, name: str) -> RecordedModel:
        """Return the recorded model for ``name``, creating it when missing (loaders use this)."""
        key = canonical_model_name(name)
        if key not in self.models:
            self.models[key] = RecordedModel(key)
        return self.models[key]

    def resolve(self, requested: str) -> RecordedModel:
        """Return the recorded model that ``requested`` names (see :func:`resolve_model_name`).

        Raises:
            UnknownModelError: no recorded model matches; the message lists the known names.
        """
        name = resolve_model_name(requested, self.models)
        if name is not None:
            return self.models[name]
        known = ", ".join(sorted(self.models))
        raise UnknownModelError(
            f"no recorded answers for model {requested!r}; known models: {known}"
        )


def canonical_model_name(name: str) -> str:
    """Return the lower-case recorded-model key of ``name``, with merged source names unified."""
    lowered = name.strip().lower()
    return _MERGED_NAMES.get(lowered, lowered)


def resolve_model_name(requested: str, known: Iterable[str]) -> str | None:
    """Return the key among ``known`` (canonical keys) that ``requested`` names, or None.

    Matching ignores case. It tries the full name first, then the name without each leading
    ``provider/`` segment, so ``openai/mistralai/mistral-7b-chat`` works. Last, it tries the
    final path segment alone when exactly one known key ends with it, so ``mistral-7b-chat`` works.
    """
    keys = set(known)
    segments = canonical_model_name(requested).split("/")
    for start in range(len(segments)):
        candidate = canonical_model_name("/".join(segments[start:]))
        if candidate in keys:
            return candidate
    tails = [key for key in keys if key.split("/")[-1] == segments[-1]]
    return tails[0] if len(tails) == 1 else None


def _require(path: Path) -> Path:
    if not path.exists():
        raise SharedDataMissingError(
            f"replay data not found at {path}; set {SHARED_DATA_ENV} to the public data folder"
        )
    return path


def _read_csv(path: Path) -> Iterator[dict[str, str]]:
    # RouterBench cells hold whole few-shot prompts, far above csv's 128 KiB default limit.
    csv.field_size_limit(1 << 30)
    with path.open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


def _python_list(cell: str) -> list[str]:
    """Parse a RouterBench cell that stores a Python list literal of strings."""
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        return [cell]
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    return [str(value)]


def _routerbench_prompt_keys(prompt_cell: str) -> list[str]:
    parts = _python_list(prompt_cell)
    keys = ["\n\n".join(parts)]
    for part in parts:
        keys.extend([part, final_question(part)])
    return keys


def load_routerbench(data_dir: Path, into: RecordedAnswers) -> None:
    """Add RouterBench answers (every ``<model>|model_response`` column) to ``into``."""
    folder = _require(data_dir.joinpath(*_ROUTERBENCH_DIR))
    for path in sorted(folder.glob("*.csv")):
        for row in _read_csv(path):
            keys = _routerbench_prompt_keys(row["prompt"])
            for column, cell in row.items():
                if not column.endswith(_RESPONSE_SUFFIX) or not cell:
                    continue
                text = "\n\n".join(_python_list(cell))
                answer = RecordedAnswer(text, "routerbench", row["sample_id"])
                into.model(column[: -len(_RESPONSE_SUFFIX)]).add(keys, answer)


def load_gsm8k(data_dir: Path, into: RecordedAnswers) -> None:
    """Add RouteLLM's GSM8K test answers (``<model>_response`` columns) to ``into``."""
    path = _require(data_dir.joinpath(*_GSM8K_CSV))
    for index, row in enumerate(_read_csv(path)):
        for column, cell in row.items():
            if column.endswith("_response") and cell:
                answer = RecordedAnswer(cell, "gsm8k", f"gsm8k/test/{index}")
                into.model(column[: -len("_response")]).add([row["prompt"]], answer)


def load_chatterbot(data_dir: Path, into: RecordedAnswers) -> None:
    """Add each ChatterBot user turn and the reply after it, as pseudo-model ``chatterbot``."""
    folder = _require(data_dir.joinpath(*_CHATTERBOT_DIR))
    model = into.model("chatterbot")
    for path in sorted(folder.glob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for number, dialogue in enumerate(document.get("conversations") or []):
            # One trivia.yml entry is a bare string, not a dialogue; it has no reply to replay.
            if not isinstance(dialogue, list):
                continue
            turns = [str(turn) for turn in dialogue]
            for turn in range(0, len(turns) - 1, 2):
                answer = RecordedAnswer(turns[turn + 1], "chatterbot", f"{path.stem}/{number}")
                model.add([turns[turn]], answer)


def load_alpacaeval(data_dir: Path, into: RecordedAnswers) -> None:
    """Add AlpacaEval 2.0 outputs (``output_1``/``output_2`` with their generator names)."""
    folder = _require(data_dir.joinpath(*_ALPACAEVAL_DIR))
    seen: set[tuple[str, int]] = set()
    for path in sorted(folder.glob("*/weighted_alpaca_eval_gpt4_turbo/annotations.json")):
        records = json.loads(path.read_text(encoding="utf-8"))
        for index, record in enumerate(records):
            for side in ("1", "2"):
                text = record.get(f"output_{side}")
                generator = record.get(f"generator_{side}")
                # Every file repeats the same GPT-4 Turbo baseline as output_1: keep one copy.
                if not text or not generator or (generator, index) in seen:
                    continue
                seen.add((generator, index))
                answer = RecordedAnswer(text, "alpacaeval", f"alpaca_eval/{index}")
                into.model(generator).add([record["instruction"]], answer)


SCRIPTED_ANSWER = (
    "This answer comes from the scripted fake upstream. It is long enough to stream in several "
    "chunks, so a test can cut, pause or fail the stream in the middle of it."
)


def scripted_answers(model: str, text: str = SCRIPTED_ANSWER) -> RecordedAnswers:
    """Return answers for ``model`` made of one fixed ``text``, for tests that need no public data.

    Every prompt gets ``text`` with match kind ``fallback``, since no prompt was recorded.
    """
    answers = RecordedAnswers()
    answers.model(model).add([], RecordedAnswer(text, "scripted", "scripted/0"))
    return answers


_LOADERS = {
    "routerbench": load_routerbench,
    "gsm8k": load_gsm8k,
    "chatterbot": load_chatterbot,
    "alpacaeval": load_alpacaeval,
}


@functools.lru_cache(maxsize=4)
def load_recorded(data_dir: Path, sources: frozenset[str] = ALL_SOURCES) -> RecordedAnswers:
    """Load the recorded answers of ``sources`` from ``data_dir``, once per process and arguments.

    Sources load in a fixed order (routerbench, gsm8k, chatterbot, alpacaeval), so a fallback
    answer chosen by hash is the same on every run. Takes about 1-2 s for all sources.

    Raises:
        ValueError: ``sources`` names an unknown source.
        SharedDataMissingError: a file or folder of a requested source is missing.
    """
    unknown = sorted(set(sources) - ALL_SOURCES)
    if unknown:
        raise ValueError(f"unknown replay sources {unknown}; choose from {sorted(ALL_SOURCES)}")
    recorded = RecordedAnswers()
    for name, loader in _LOADERS.items():
        if name in sources:
            loader(data_dir, recorded)
    return recorded
