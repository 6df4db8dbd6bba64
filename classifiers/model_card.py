"""Render MODEL_CARD.md beside an artifact from its ``model.json`` metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classifiers import conversation

MODEL_CARD_FILE = "MODEL_CARD.md"

# Public names and licenses of the source groups the converters in
# classifiers.datasets produce; a group missing here is listed as not a known public set.
KNOWN_SOURCES: dict[str, tuple[str, str]] = {
    "routerbench": ("RouterBench 0-shot subset (ARC-Challenge, MBPP, Winogrande; RouterDC split)",
                    "none stated for the data (RouterBench's code repository is MIT)"),
    "routellm-mmlu": ("RouteLLM evals: MMLU responses of Mixtral-8x7B-Instruct and GPT-4-1106",
                      "Apache-2.0"),
    "routellm-gsm8k": ("RouteLLM evals: GSM8K responses of Mixtral-8x7B-Instruct and GPT-4-1106",
                       "Apache-2.0"),
    "gsm8k-openai": (("GSM8K test set with correctness of four GPT-3 systems (6B and 175B, "
                      "fine-tuned or verifier-ranked; openai/grade-school-math) and of "
                      "Mixtral-8x7B-Instruct and GPT-4-1106 (RouteLLM evals)"),
                     "MIT (openai/grade-school-math); Apache-2.0 (RouteLLM's results)"),
    "routerarena": (("RouterArena cached results, sub_10 split: 809 prompts from 78 benchmarks "
                     "with scores of Claude 3 Haiku and Gemini 2.0 Flash (RouteWorks/RouterArena)"),
                    "Apache-2.0 (repository; the prompts come from the benchmarks it samples)"),
    "gateway-log": ("Tierwise outcome log with user feedback", "your own data"),
}


def write_model_card(directory: str | Path, metadata: dict[str, Any]) -> Path:
    """Write MODEL_CARD.md into ``directory`` and return its path."""
    path = Path(directory) / MODEL_CARD_FILE
    path.write_text(render_model_card(metadata))
    return path


def render_model_card(metadata: dict[str, Any]) -> str:
    """Return the model card text for artifact ``metadata``."""
    training = metadata.get("training", {})
    sections = [
        f"# Tierwise prompt classifier {metadata['version']}\n",
        _summary(metadata),
        _data_section(training),
        _metrics_section(metadata.get("heldout_metrics", {})),
        _comparison_section(metadata.get("comparison")),
        _evaluations_section(metadata.get("evaluations", [])),
        _features_section(metadata),
        _reproduce_section(training),
        _notes_section(metadata),
    ]
    return "\n".join(sections)


def _summary(metadata: dict[str, Any]) -> str:
    tiers = ", ".join(metadata["tiers"])
    return (
        "One L2-regularised logistic regression per tier estimates P(the tier's answer is "
        f"adequate) for a chat conversation. Tiers: {tiers}. The artifact stores numbers only "
        "(hashed-feature coefficients, intercepts, structural-feature scaling), no prompt text "
        "or vocabulary. It is loaded without pickle; `weights.npz` is checked against the "
        f"SHA-256 in `model.json` (`{metadata['weights_sha256'][:16]}...`).\n"
    )


def _data_section(training: dict[str, Any]) -> str:
    rows = training.get("rows", {})
    train, test, inputs = rows.get("train", {}), rows.get("test", {}), rows.get("input", {})
    lines = ["## Training data\n",
             "| source | public name | license | input rows | train rows | held-out rows |",
             "|---|---|---|---|---|---|"]
    for group in sorted(set(train) | set(test) | set(inputs)):
        name, license_name = KNOWN_SOURCES.get(group, (group, "not a known public set; see its own terms"))
        lines.append(f"| {group} | {name} | {license_name} | {inputs.get(group, 0)} | "
                     f"{train.get(group, 0)} | {test.get(group, 0)} |")
    lines.append("\nRecords with the same conversation are merged across files and counted "
                 "under the source of the first; their labels are united.")
    tier_map = training.get("tier_map") or {}
    if tier_map:
        mapping = ", ".join(f"{model} -> {tier}" for model, tier in tier_map.items())
        lines.append(f"\nModels mapped to tiers: {mapping}.")
    implied = training.get("implied_tiers") or {}
    for tier, sources in implied.items():
        lines.append(f"\nWhere no {tier} model was recorded, {tier} is labelled with the lowest "
                     f"quality of {' and '.join(sources)}: a proxy that assumes the weaker model "
                     "answers adequately only what the stronger ones both answer adequately.")
    threshold = training.get("config", {}).get("threshold")
    lines.append(f"\nA tier's answer counts as adequate when its quality is >= {threshold}. "
                 "Tiers missing from a record are unlabelled for it (masked), not failures.\n")
    return "\n".join(lines)


def _metrics_section(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "## Held-out metrics\n\nNo rows were held out.\n"
    lines = ["## Held-out metrics\n", "| source | tier | rows | adequate rate | ROC AUC | Brier |",
             "|---|---|---|---|---|---|"]
    for group, tiers in metrics.items():
        if group == "all" and len(metrics) == 2:
            continue  # one source: its rows are all the rows
        for tier, values in tiers.items():
            auc = "n/a" if values.get("auc") is None else f"{values['auc']:.3f}"
            lines.append(f"| {group} | {tier} | {int(values['n'])} | {values['positive_rate']:.3f} | "
                         f"{auc} | {values['brier']:.3f} |")
    lines.append("")
    return "\n".join(lines)


def _comparison_section(comparison: dict[str, Any] | None) -> str:
    if not comparison:
        return ""
    result = comparison["result"]
    compared_with = comparison["compared_with"]
    source = "the bundled model" if compared_with == "bundled" else f"`{compared_with}`"
    lines = ["## Comparison with the previous model\n",
             (f"Before it was written, this model ({comparison['new_router']}) and model "
              f"{comparison['compared_version']} from {source} ({comparison['compared_router']}) "
              f"scored the same {result['rows_scored']} held-out rows. The prompt-length "
              "baseline is cross-fitted on those rows. The compared model may have been "
              "trained on some of them, which favours it.\n")]
    if "routellm" in result:
        weak, strong = result["routellm_tiers"]
        lines.append(f"RouteLLM metrics, weak={weak} strong={strong}, "
                     f"{result['routellm']['rows']} rows labelled for both:\n")
        lines += _routellm_lines({k: v for k, v in result["routellm"].items() if isinstance(v, dict)})
    if "cost_quality" in result:
        lines += _cost_lines({k: v for k, v in result["cost_quality"].items() if isinstance(v, dict)})
    difference = comparison["new"] - comparison["compared"]
    line = (f"Held-out {comparison['metric']}: {comparison['new']:.3f} against "
            f"{comparison['compared']:.3f} ({difference:+.3f}).")
    if comparison.get("tolerance") is not None:
        line += (f" The run required this model's value to be at most "
                 f"{comparison['tolerance']:g} below the compared model's, and it was.")
    lines.append(line + "\n")
    return "\n".join(lines)


def _evaluations_section(evaluations: list[dict[str, Any]]) -> str:
    if not evaluations:
        return ""
    lines = ["## Routing evaluation (held-out rows, `evaluate`)\n",
             ("Each evaluation trains new models on its training rows only (the command shows "
              "the files and options) and scores rows that those models never saw. Files "
              "given with `--train-extra` join every training fold and are never scored. An "
              "evaluation whose mode names a fixed model scores with that artifact instead, "
              "on data it was not trained on; its prompt-length baseline is cross-fitted on "
              "the scored file itself. Every router is scored as the gateway routes: each "
              "tier's routing score against a threshold (for three tiers, every pair of "
              "edge and mid thresholds on a 0.01 grid), with routing scores as described in "
              "the classifiers README.\n")]
    for summary in evaluations:
        lines.append(f"### {summary['name']}: {summary['mode']}, seed {summary['seed']}, "
                     f"{summary['rows_scored']} rows\n")
        lines.append(f"```\n{summary.get('command') or '(command not recorded)'}\n```\n")
        if "routellm" in summary:
            lines += _routellm_lines(summary["routellm"])
        if "cost_quality" in summary:
            lines += _cost_lines(summary["cost_quality"])
    return "\n".join(lines)


def _routellm_lines(table: dict[str, Any]) -> list[str]:
    lines = ["| router | APGR | CPT(50%) | CPT(80%) |", "|---|---|---|---|"]
    for router, values in table.items():
        lines.append(f"| {router} | {values['apgr']:.3f} | {values['cpt50']:.1%} | "
                     f"{values['cpt80']:.1%} |")
    return lines + [""]


def _cost_lines(table: dict[str, Any]) -> list[str]:
    lines = ["| router | AIQ | cost for 90% | cost for 95% | cost for 100% | fixed cost | quality |",
             "|---|---|---|---|---|---|---|"]
    for router, values in table.items():
        if "aiq" in values:
            shares = [_share(values.get(f"cost_share_{t}")) for t in (90, 95, 100)]
            aiq = "-" if values["aiq"] is None else f"{values['aiq']:.3f}"
            lines.append(f"| {router} | {aiq} | {' | '.join(shares)} | | |")
        else:
            lines.append(f"| {router} | | | | | {values['cost_share']:.1%} | "
                         f"{values['quality']:.3f} |")
    lines.append("\nCosts are shares of always-frontier cost; \"cost for 90%\" is the least cost "
                 "at which the router reaches 90% of the frontier tier's mean quality.\n")
    return lines


def _share(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1%}"


def _features_section(metadata: dict[str, Any]) -> str:
    features = metadata["features"]
    structural = ", ".join(features["structural"])
    return (
        "## Features\n\n"
        f"- Word 1-{features['ngram_max']}-grams (token pattern `{features['token_pattern']}`, "
        f"lowercased), hashed with MurmurHash3 into {features['n_features']} columns as scikit-learn's "
        "HashingVectorizer does. The last user message counts with weight 1 (capped to its "
        f"first {conversation.LAST_HEAD_CHARS} and last {conversation.LAST_TAIL_CHARS} "
        f"characters); earlier user turns with weights {conversation.EARLIER_USER_WEIGHTS} "
        f"and the assistant turn just before it with {conversation.ASSISTANT_WEIGHT} "
        f"({conversation.CONTEXT_CHARS} characters each). The row is L2-normalised.\n"
        f"- Structural features, standardised and multiplied by {features['struct_weight']}: "
        f"{structural}.\n"
    )


def _source_groups(training: dict[str, Any]) -> set[str]:
    rows = training.get("rows", {})
    return {group for counts in rows.values() if isinstance(counts, dict) for group in counts}


def _public_benchmarks(training: dict[str, Any]) -> set[str]:
    """Return the source groups that are public benchmark sets (not the gateway's own log)."""
    return (_source_groups(training) & set(KNOWN_SOURCES)) - {"gateway-log"}


def _reproduce_section(training: dict[str, Any]) -> str:
    libraries = ", ".join(f"{k} {v}" for k, v in training.get("libraries", {}).items())
    config = training.get("config", {})
    public = sorted(_public_benchmarks(training))
    origin = (
        f"The files of the public sets ({', '.join(public)}) were written by "
        "`python -m classifiers import-data NAME` from the public data folder.\n\n"
        if public else ""
    )
    return (
        "## How it was built\n\n"
        f"```\n{training.get('command') or '(command not recorded)'}\n```\n\n"
        f"{origin}"
        f"Hyperparameters: {config}. Seed {training.get('seed')}. Trained at "
        f"{training.get('trained_at')} with {libraries}.\n"
    )


def _notes_section(metadata: dict[str, Any]) -> str:
    training = metadata.get("training", {})
    groups = _source_groups(training)
    benchmark_note = (
        "- The training prompts are benchmark questions (multiple choice, grade-school math, "
        "short coding tasks). Scores on chat traffic far from those are less reliable; "
        "retrain on your own outcome log when you have one.\n"
        if groups and groups <= set(KNOWN_SOURCES) - {"gateway-log"} else
        "- Scores are only as representative as the training prompts: traffic unlike them "
        "is scored less reliably.\n"
    )
    return (
        "## Limits\n\n"
        f"{benchmark_note}"
        "- Probabilities are those of the logistic regressions, not recalibrated.\n"
        "- Most routing evaluations are in-domain: folds or splits of the same benchmark, never "
        "the same prompt. A fixed-model evaluation on a benchmark outside the training data "
        "shows what to expect on other prompt distributions.\n"
    )
