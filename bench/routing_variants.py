"""Compare routing-score variants on held-out rows (APGR, mid against frontier).

Each variant turns models fitted on training rows into one score per held-out prompt; a
higher score keeps the prompt on the mid tier.  APGR is RouteLLM's (``classifiers.metrics``).
The runs are those of the classifiers README:

- ``mmlu-in``, ``gsm8k-in``: k folds of RouteLLM MMLU or GSM8K, the other permissive sets
  (GSM8K or MMLU, and RouterArena) joining every training fold, as the model card's
  in-domain ``evaluate`` commands do;
- ``mmlu-lodo``, ``gsm8k-lodo``, ``ra-lodo``: one set scored, trained on the other two;
- ``rb-pair``: all RouterBench rows, trained on the three permissive sets.

OpenAI's GSM8K results are not read: they repeat RouteLLM's GSM8K prompts with the same
Mixtral and GPT-4 labels, and add only GPT-3 systems.  The shipped score's figures equal the
card's without them.

Variants:

- ``shipped``: P(mid) + c(1 - P(frontier)), capped at 1, with the gateway's c;
- ``c=1``: the same with c = 1, ranking by P(frontier) - P(mid);
- ``gain``: 1 - P(gain), from one head whose label is "frontier adequate and mid not",
  fitted on rows labelled for both tiers;
- ``shipped-gain``: the shipped score minus P(gain);
- ``net-gain``: P(loss) - P(gain), where a second head's label is "mid adequate and
  frontier not";
- ``net-gain-si``: the same heads fitted with one intercept per source group;
- ``gated``: gain and loss heads fitted on each source group alone, mixed by a
  multinomial logistic regression that predicts the source group from the features;
- ``subject-prior`` (mmlu-in only): the mean frontier-minus-mid quality of the prompt's
  MMLU subject on the training folds.  The subject is not a feature the gateway has, so
  this is a reference for how much of the ranking is topic.

Run from the repository root after ``python -m classifiers import-data`` of routellm-mmlu,
routellm-gsm8k, routerarena and routerbench:

    python -m bench.routing_variants --seed 0 --json var/eval/routing-variants.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from classifiers.config import DEFAULT_C
from classifiers.metrics import routellm_metrics
from classifiers.outcomes import (
    LabelledPrompt,
    conversation_key,
    parse_tier_map,
    read_outcomes,
    source_group,
)
from classifiers.scorer import FRONTIER_FAILURE_CREDIT
from classifiers.trainer import merge_duplicates
from classifiers.training import ConversationFeaturizer, label_matrix, source_weights
from classifiers.transfer import fit_with_source_intercepts

TIER_MAP = parse_tier_map([
    "mid=mistralai/mixtral-8x7b-chat,mid=mistralai/Mixtral-8x7B-Instruct-v0.1",
    "mid=claude-3-haiku-20240307",
    "frontier=gpt-4-1106-preview,frontier=gemini-2.0-flash-001",
])
TIERS = ("mid", "frontier")
FILES = {"mmlu": "routellm-mmlu.jsonl", "gsm8k": "routellm-gsm8k.jsonl",
         "ra": "routerarena.jsonl", "rb": "routerbench.jsonl"}
# Run name -> (scored set, training sets); k folds of the scored set when it is also trained on.
RUNS = {
    "mmlu-in": ("mmlu", ("mmlu", "gsm8k", "ra")),
    "gsm8k-in": ("gsm8k", ("gsm8k", "mmlu", "ra")),
    "mmlu-lodo": ("mmlu", ("gsm8k", "ra")),
    "gsm8k-lodo": ("gsm8k", ("mmlu", "ra")),
    "ra-lodo": ("ra", ("mmlu", "gsm8k")),
    "rb-pair": ("rb", ("mmlu", "gsm8k", "ra")),
}
SOURCE_POWER = 0.5  # the bundled model's --source-power


def main(argv: Sequence[str] | None = None) -> int:
    """Print a Markdown table of APGR per variant and run, and optionally write it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var/data"),
                        help="Folder of the files written by `import-data`.")
    parser.add_argument("--folds", type=int, default=5, help="Folds of the in-domain runs.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the fold assignment.")
    parser.add_argument("--c", type=float, default=DEFAULT_C,
                        help="Inverse L2 regularisation strength of every head.")
    parser.add_argument("--runs", default=",".join(RUNS), help="Comma-separated run names.")
    parser.add_argument("--json", type=Path, help="Write the APGR table as JSON here.")
    args = parser.parse_args(argv)

    sets = {name: merge_duplicates(read_outcomes([args.data_dir / file], TIER_MAP))
            for name, file in FILES.items()}
    results: dict[str, dict[str, float]] = {}
    for run in args.runs.split(","):
        if run not in RUNS:
            parser.error(f"unknown run {run!r}; choose from {', '.join(RUNS)}")
        scored, trained = RUNS[run]
        results[run] = evaluate_run(sets, scored, trained, args.folds, args.seed, args.c)
        print(f"{run}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[run].items()),
              file=sys.stderr, flush=True)
    print(markdown_table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"seed": args.seed, "folds": args.folds, "c": args.c,
                                         "apgr": results}, indent=2) + "\n")
    return 0


def evaluate_run(sets: dict[str, list[LabelledPrompt]], scored: str, trained: Sequence[str],
                 folds: int, seed: int, c: float) -> dict[str, float]:
    """Return APGR per variant for one run."""
    evaluated = sets[scored]
    seen = {conversation_key(r) for r in evaluated}
    extras = merge_duplicates([r for name in trained if name != scored for r in sets[name]])
    # An extra row with a scored conversation would leak its labels into training.
    extras = [r for r in extras if conversation_key(r) not in seen]
    records = [*evaluated, *extras]
    featurizer = ConversationFeaturizer()
    raw = featurizer.raw([r.messages for r in records])
    labels = label_matrix(records, TIERS)
    in_domain = scored in trained
    # As in `evaluate` (in-domain) and `train` (left-out runs): group sizes count the rows
    # that the weights are computed over, which excludes a left-out set.
    weights = (source_weights(records, SOURCE_POWER) if in_domain else
               np.concatenate([np.zeros(len(evaluated)), source_weights(extras, SOURCE_POWER)]))
    groups = np.array([source_group(r) for r in records])
    scores: dict[str, np.ndarray] = {}
    scored_rows = np.arange(len(evaluated))
    for train, test in _splits(len(evaluated), len(extras), in_domain, folds, seed):
        featurizer.fit_raw(type(raw)(raw.word[train], raw.struct[train]))
        rows = featurizer.assemble(raw)
        with threadpool_limits(limits=1):
            fold_scores = variant_scores(rows[train], labels[train], weights[train],
                                         groups[train], rows[test], c)
        if scored == "mmlu" and in_domain:
            fold_scores["subject-prior"] = _subject_prior(records, train, test)
        for name, values in fold_scores.items():
            scores.setdefault(name, np.full(len(evaluated), np.nan))[test] = values
    quality = np.array([[r.quality.get(t, np.nan) for t in TIERS] for r in evaluated])
    pair = scored_rows[~np.isnan(quality).any(axis=1)]
    return {name: routellm_metrics(values[pair], quality[pair, 0], quality[pair, 1])["apgr"]
            for name, values in scores.items()}


def _splits(n_scored: int, n_extra: int, in_domain: bool, folds: int,
            seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    extra = np.arange(n_scored, n_scored + n_extra)
    if not in_domain:
        yield extra, np.arange(n_scored)
        return
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(np.zeros(n_scored)):
        yield np.concatenate([train, extra]), test


def variant_scores(rows: sp.csr_matrix, labels: np.ndarray, weights: np.ndarray,
                   groups: np.ndarray, test_rows: sp.csr_matrix, c: float) -> dict[str, np.ndarray]:
    """Fit every variant's heads on the training rows and score ``test_rows``."""
    def predict(mask: np.ndarray, target: np.ndarray) -> np.ndarray:
        head = _head(c).fit(rows[mask], target, sample_weight=weights[mask])
        return head.predict_proba(test_rows)[:, 1]

    has_mid, has_frontier = ~np.isnan(labels[:, 0]), ~np.isnan(labels[:, 1])
    p_mid = predict(has_mid, labels[has_mid, 0])
    p_frontier = predict(has_frontier, labels[has_frontier, 1])
    both = has_mid & has_frontier
    gain = (labels[both, 1] == 1) & (labels[both, 0] == 0)
    loss = (labels[both, 1] == 0) & (labels[both, 0] == 1)
    p_gain = predict(both, gain)
    p_loss = predict(both, loss)
    shipped = np.minimum(1.0, p_mid + FRONTIER_FAILURE_CREDIT * (1.0 - p_frontier))

    intercept_heads = [fit_with_source_intercepts(_head(c), rows[both], target, weights[both],
                                                  groups[both]) for target in (gain, loss)]
    p_gain_si, p_loss_si = (h.predict_proba(test_rows)[:, 1] for h in intercept_heads)
    return {
        "shipped": shipped,
        "c=1": np.minimum(1.0, p_mid + 1.0 - p_frontier),
        "gain": 1.0 - p_gain,
        "shipped-gain": shipped - p_gain,
        "net-gain": p_loss - p_gain,
        "net-gain-si": p_loss_si - p_gain_si,
        "gated": _gated_net_gain(rows[both], labels[both], groups[both], test_rows, c),
    }


def _gated_net_gain(rows: sp.csr_matrix, labels: np.ndarray, groups: np.ndarray,
                    test_rows: sp.csr_matrix, c: float) -> np.ndarray:
    """Return sum over source groups of P(group | x) * (P(loss) - P(gain)) of that group's heads.

    The heads are fitted without row weights, because each is fitted on one group's rows only.
    """
    gate = LogisticRegression(C=1.0, max_iter=2000).fit(rows, groups)
    group_probability = gate.predict_proba(test_rows)
    result = np.zeros(test_rows.shape[0])
    for index, group in enumerate(gate.classes_):
        mine = groups == group
        gain = (labels[mine, 1] == 1) & (labels[mine, 0] == 0)
        loss = (labels[mine, 1] == 0) & (labels[mine, 0] == 1)
        p_gain = _head(c).fit(rows[mine], gain).predict_proba(test_rows)[:, 1]
        p_loss = _head(c).fit(rows[mine], loss).predict_proba(test_rows)[:, 1]
        result += group_probability[:, index] * (p_loss - p_gain)
    return result


def _subject_prior(records: Sequence[LabelledPrompt], train: np.ndarray,
                   test: np.ndarray) -> np.ndarray:
    """Return minus the training-fold mean frontier-minus-mid quality of each test row's subject."""
    gaps: dict[str, list[float]] = {}
    for i in train:
        record = records[i]
        if record.source and record.source.startswith("routellm-mmlu/"):
            gaps.setdefault(record.source, []).append(
                record.quality["frontier"] - record.quality["mid"])
    means = {subject: float(np.mean(values)) for subject, values in gaps.items()}
    every_gap = [gap for values in gaps.values() for gap in values]
    # A subject missing from the training folds gets the mean over all subjects.
    overall = float(np.mean(every_gap)) if every_gap else 0.0
    return np.array([-means.get(records[i].source or "", overall) for i in test])


def _head(c: float) -> LogisticRegression:
    # liblinear, as classifiers.training fits heads of this size.
    return LogisticRegression(C=c, solver="liblinear", max_iter=2000, random_state=0)


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """Return variants as rows and runs as columns, with the mean APGR of the left-out runs."""
    runs = list(results)
    variants = list(dict.fromkeys(name for row in results.values() for name in row))
    left_out = [run for run in runs if run.endswith("-lodo") or run == "rb-pair"]
    lines = ["| variant | " + " | ".join(runs) + " | mean left out |",
             "|---" * (len(runs) + 2) + "|"]
    for name in variants:
        cells = [f"{results[run][name]:.3f}" if name in results[run] else "" for run in runs]
        left_out_apgr = [results[run][name] for run in left_out if name in results[run]]
        complete = left_out_apgr and len(left_out_apgr) == len(left_out)
        mean = f"{np.mean(left_out_apgr):.3f}" if complete else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
