"""Typer apps for the classifier commands.

``app`` is mounted by the gateway CLI as ``tierwise classifier`` (train, import-data);
``evaluate_app`` is mounted as ``tierwise evaluate`` and ``calibrate_app`` as
``tierwise calibrate``.  User mistakes (missing files,
malformed records, unknown data sets) end with a one-line error and exit code 2.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from classifiers.calibrate import calibrate as calibrate_command
from classifiers.comparison import DEFAULT_TOLERANCE
from classifiers.config import DEFAULT_C, SGD_MIN_ROWS, TrainConfig, TrainingError
from classifiers.datasets import CONVERTERS, DEFAULT_OUT_DIR, DatasetError, convert
from classifiers.outcomes import (
    GatewayLogCounts,
    NothingTrainableError,
    OutcomesError,
    parse_implied_tiers,
    parse_tier_map,
    write_gateway_training_file,
    write_outcomes,
)
from classifiers.progress import progress_bar

# Training options that train and evaluate share.
COption = Annotated[float, typer.Option(help="Inverse L2 regularisation strength.")]
StructWeightOption = Annotated[float, typer.Option(help="Scale of the structural features.")]
SourcePowerOption = Annotated[float, typer.Option(
    help="Row weight (rows in its source group)^-POWER: 0 equal rows, 1 equal groups.")]
MinSourcesOption = Annotated[int, typer.Option(
    help="Keep only hashed word columns that occur in at least this many source groups; "
         "1 keeps all.")]
LengthPriorOption = Annotated[float, typer.Option(
    help="Weight in [0, 1] of a prompt-length-only model mixed into each tier's logit.")]
SolverOption = Annotated[str, typer.Option(
    help=f"liblinear, sgd, or auto: sgd for a tier with more than {SGD_MIN_ROWS:,} labelled rows.")]
SourceInterceptsOption = Annotated[bool, typer.Option(
    help="Fit one intercept per source group, so the other columns learn differences "
         "within a data set; the artifact stores their weighted mean.")]

app = typer.Typer(help="Train the prompt classifier, convert public routing data, and publish "
                  "artifacts to gateways through Redis.",
                  no_args_is_help=True)
# soft_wrap keeps each error on one line, whatever the terminal width.
_console = Console(stderr=True, soft_wrap=True)

if TYPE_CHECKING:
    from classifiers.scorer import Scorer
    from classifiers.trainer import TrainReport

DEFAULT_TIERS = "edge,mid,frontier"


def _fail(message: str) -> typer.Exit:
    _console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=2)


@app.command("import-data")
def import_data(
    name: Annotated[str, typer.Argument(help=f"Data set: {', '.join(CONVERTERS)}.")],
    source: Annotated[Path | None, typer.Option(
        help="Source folder (default: its folder under TIERWISE_SHARED_DATA).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output JSONL file (default: var/data/NAME.jsonl in the current folder).")] = None,
) -> None:
    """Convert a public data set into labelled-outcomes JSONL.

    Example: tierwise classifier import-data routerbench --out var/data/routerbench.jsonl
    """
    target = out or DEFAULT_OUT_DIR / f"{name}.jsonl"
    try:
        count = write_outcomes(target, convert(name, source))
    except DatasetError as exc:
        raise _fail(str(exc)) from None
    _console.print(f"wrote {count} records to {target}")
    warning = CONVERTERS[name].license_warning
    if warning is not None:
        _console.print(f"[yellow]warning:[/yellow] {escape(name)}: {escape(warning)}")


@app.command("train")
def train(
    out: Annotated[Path, typer.Option(help="Artifact directory to write.")],
    data: Annotated[list[Path] | None, typer.Option(
        help="Labelled-outcomes JSONL file; repeat for more.")] = None,
    outcomes: Annotated[list[Path] | None, typer.Option(
        help="Gateway outcome log: a JSONL file, or a folder of exported files searched "
             "recursively; repeatable. Feedback is joined to requests by request id.")] = None,
    min_log_rows: Annotated[int, typer.Option(
        help="With --outcomes, exit with code 3 unless the log yields at least this many "
             "trainable rows; 0 allows training on --data alone.")] = 1,
    tier_map: Annotated[list[str] | None, typer.Option(
        help="TIER=MODEL, repeatable or comma-separated; without it outcome keys are tiers.")] = None,
    tiers: Annotated[str, typer.Option(help="Tier names, cheapest first.")] = DEFAULT_TIERS,
    implied_tier: Annotated[list[str] | None, typer.Option(
        help="TIER=A+B: where TIER is unlabelled, label it with the minimum quality of tiers "
             "A and B; repeatable.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed for the hold-out draw and solver.")] = 0,
    holdout: Annotated[float, typer.Option(
        help="Fraction of rows without a split to hold out for metrics (0 to 1).")] = 0.0,
    c: COption = DEFAULT_C,
    n_features: Annotated[int, typer.Option(help="Hashed word columns (a power of two).")] = 2**17,
    struct_weight: StructWeightOption = 1.0,
    threshold: Annotated[float, typer.Option(help="Quality at or above which an answer is adequate.")] = 0.5,
    version: Annotated[str | None, typer.Option(help="Model version (default: the UTC date and time, 2026.12.04-013005).")] = None,
    source_power: SourcePowerOption = 0.0,
    min_sources: MinSourcesOption = 1,
    length_prior: LengthPriorOption = 0.0,
    solver: SolverOption = "auto",
    source_intercepts: SourceInterceptsOption = False,
    evaluation: Annotated[list[Path] | None, typer.Option(
        help="JSON written by `evaluate --json`, summarised in the model card; repeatable.")] = None,
    compare_with: Annotated[str | None, typer.Option(
        help="Artifact folder, or 'bundled' for the model shipped in the package, to score "
             "beside the new model on the held-out rows; the comparison goes into the model "
             "card.")] = None,
    require_no_worse: Annotated[bool, typer.Option(
        "--require-no-worse",
        help="With --compare-with, exit with code 4 and write no artifact when the new "
             "model's held-out APGR (two tiers) or AIQ (three tiers; without costs, APGR of "
             "mid against frontier) is lower than the compared model's by more than "
             "--tolerance.")] = False,
    tolerance: Annotated[float, typer.Option(
        help="Largest drop of the held-out metric that --require-no-worse accepts.")
    ] = DEFAULT_TOLERANCE,
) -> None:
    """Train per-tier classifiers, print held-out metrics (of --holdout or test rows), write an artifact.

    Exits with code 2 on invalid input, with code 3 when --outcomes yields fewer
    trainable rows than --min-log-rows (the counts printed say why), and with code 4
    when --require-no-worse rejects the new model (nothing is written then).

    Example: tierwise classifier train --data var/data/gsm8k-openai.jsonl --out var/model
    --tier-map edge=gpt3-175b-verifier --tier-map mid=mixtral-8x7b-instruct
    --tier-map frontier=gpt-4-1106-preview

    Example: tierwise classifier train --outcomes var/export --data var/data/gsm8k-openai.jsonl
    --tier-map edge=gpt3-175b-verifier,mid=mixtral-8x7b-instruct,frontier=gpt-4-1106-preview
    --out var/model

    Example: tierwise classifier train --outcomes var/export --data var/data/gsm8k-openai.jsonl
    --tier-map edge=gpt3-175b-verifier,mid=mixtral-8x7b-instruct,frontier=gpt-4-1106-preview
    --holdout 0.2 --out var/model --compare-with var/model-previous --require-no-worse
    """
    from classifiers.trainer import TrainRequest, run_training

    if not 0 <= holdout < 1:
        raise _fail(f"invalid --holdout {holdout:g}: give the fraction of rows to hold out, "
                    "at least 0 and below 1, such as 0.2")
    compared = _compared_model(compare_with, require_no_worse, tolerance)
    # The gateway rows are written to a temporary file because they contain prompts, which
    # must not end up beside the artifact.
    with tempfile.TemporaryDirectory(prefix="tierwise-train-") as scratch:
        files = list(data or []) + _gateway_log_data(outcomes or [], Path(scratch), min_log_rows)
        if not files:
            raise _fail("no training data: give --data FILE or --outcomes PATH")
        try:
            request = TrainRequest(
                data=files, out=out, tiers=_split_names(tiers), tier_map=parse_tier_map(tier_map),
                implied=parse_implied_tiers(implied_tier),
                config=TrainConfig(n_features=n_features, struct_weight=struct_weight, c=c,
                                   threshold=threshold, source_power=source_power,
                                   min_sources=min_sources, length_prior=length_prior,
                                   solver=solver,
                                   source_intercepts=source_intercepts),
                seed=seed, holdout=holdout, version=version, command=_command_line(),
                evaluations=list(evaluation or []), compare_with=compare_with, compared=compared,
                no_worse_tolerance=tolerance if require_no_worse else None,
            )
            with progress_bar(_console) as progress:
                report = run_training(request, progress=progress)
        except (OutcomesError, TrainingError, OSError, json.JSONDecodeError) as exc:
            raise _fail(str(exc)) from None
    _print_training_report(report)
    if report.artifact is None:
        _console.print(f"[red]not written:[/red] model {escape(report.version)} failed "
                       f"--require-no-worse, so nothing was written to {escape(str(out))}")
        raise typer.Exit(code=4)


def _compared_model(location: str | None, require_no_worse: bool,
                    tolerance: float) -> Scorer | None:
    """Load the --compare-with model before training, so that a bad path fails fast."""
    from classifiers.artifact import ArtifactError
    from classifiers.comparison import load_compared_model

    if location is None:
        if require_no_worse:
            raise _fail("--require-no-worse needs --compare-with PATH (or --compare-with bundled)")
        return None
    if tolerance < 0:
        raise _fail(f"--tolerance must be 0 or more, got {tolerance}")
    try:
        return load_compared_model(location)
    except ArtifactError as exc:
        raise _fail(f"--compare-with {location}: {exc}") from None


def _print_comparison(comparison: dict[str, Any]) -> None:
    from classifiers.comparison import verdict_lines
    from classifiers.report import print_evaluation

    result = dict(comparison["result"])
    if "routellm_tiers" in result:
        result["tiers"] = result["routellm_tiers"]
    result["mode"] = (f"held-out rows, {comparison['new_router']} beside "
                      f"{comparison['compared_router']} from {comparison['compared_with']}")
    # Piped output gets a wide console, so that rich does not cut router names at 80 columns.
    print_evaluation(result, Console() if sys.stdout.isatty() else Console(width=160))
    for line in verdict_lines(comparison):
        _console.print(escape(line))


def _gateway_log_data(paths: list[Path], scratch: Path, min_rows: int) -> list[Path]:
    """Write the log's labelled prompts into ``scratch`` and return that file, if any.

    Exits with code 3 when the log yields fewer than ``min_rows`` rows.
    """
    if not paths:
        return []
    try:
        written, counts = write_gateway_training_file(paths, scratch, min_rows)
    except NothingTrainableError as exc:
        _print_log_counts(exc.counts)
        _console.print(f"[red]nothing to train:[/red] {escape(str(exc))}")
        raise typer.Exit(code=3) from None
    except OutcomesError as exc:
        raise _fail(str(exc)) from None
    _print_log_counts(counts)
    return [] if written is None else [written]


def _print_log_counts(counts: GatewayLogCounts) -> None:
    for line in counts.summary_lines():
        _console.print(escape(line))


def _print_training_report(report: TrainReport) -> None:
    from rich.table import Table

    if report.n_test == 0:
        _console.print(f"trained on {report.n_train} rows and held none out, so there are no "
                       "held-out metrics; pass --holdout 0.2 to hold out a fifth of the rows, or "
                       "measure with `tierwise evaluate`")
        _console.print(f"wrote {report.artifact}")
        return
    table = Table(title=f"held-out metrics, model {report.version}")
    for column in ("source", "tier", "rows", "adequate rate", "ROC AUC", "Brier"):
        table.add_column(column)
    for group, tiers in report.metrics.items():
        for tier, values in tiers.items():
            auc = "n/a" if values["auc"] is None else f"{values['auc']:.3f}"
            table.add_row(group, tier, str(int(values["n"] or 0)), f"{values['positive_rate']:.3f}",
                          auc, f"{values['brier']:.3f}")
    Console().print(table)
    if report.comparison is not None:
        _print_comparison(report.comparison)
    written = "" if report.artifact is None else f"; wrote {report.artifact}"
    _console.print(f"trained on {report.n_train} rows, held out {report.n_test}{written}")


def _split_names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise OutcomesError("--tiers must name at least one tier")
    return names


def _command_line() -> str:
    """Return the command as typed, with the program name shortened to its base name."""
    program = Path(sys.argv[0]).name
    if program == "__main__.py":
        program = "python -m classifiers"
    return " ".join([program, shlex.join(sys.argv[1:])])


evaluate_app = typer.Typer(help="Evaluate routing on held-out rows beside baselines.")


# A callback rather than a command, so that add_typer(evaluate_app, name="evaluate")
# gives `tierwise evaluate --data ...` without a second "evaluate".
@evaluate_app.callback(invoke_without_command=True)
def evaluate(
    data: Annotated[list[Path], typer.Option(help="Labelled-outcomes JSONL file; repeat for more.")],
    tiers: Annotated[str, typer.Option(help="Tier names, cheapest first; two tiers give "
                                            "RouteLLM metrics.")] = DEFAULT_TIERS,
    tier_map: Annotated[list[str] | None, typer.Option(
        help="TIER=MODEL, repeatable or comma-separated; without it outcome keys are tiers.")] = None,
    folds: Annotated[int, typer.Option(help="Folds when the data has no test split.")] = 5,
    split: Annotated[str, typer.Option(
        help="auto (the file's own split if it has test rows), own, or kfold.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed for folds and solvers.")] = 0,
    c: COption = DEFAULT_C,
    struct_weight: StructWeightOption = 1.0,
    source_power: SourcePowerOption = 0.0,
    min_sources: MinSourcesOption = 1,
    length_prior: LengthPriorOption = 0.0,
    solver: SolverOption = "auto",
    source_intercepts: SourceInterceptsOption = False,
    train_extra: Annotated[list[Path] | None, typer.Option(
        help="Labelled file added to every training fold and never scored; repeatable.")] = None,
    implied_tier: Annotated[list[str] | None, typer.Option(
        help="TIER=A+B: where TIER is unlabelled, label it with the minimum quality of tiers "
             "A and B; repeatable.")] = None,
    model: Annotated[Path | None, typer.Option(
        help="Score with this fixed artifact folder, or 'bundled' for the model shipped in the "
             "package, instead of training; the rows must not be in its training data.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write all metrics as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of the curves (needs matplotlib).")] = None,
) -> None:
    """Train on training rows only, score held-out rows, and compare routers.

    Example: tierwise evaluate --data var/data/routellm-mmlu.jsonl --tiers mid,frontier
    --tier-map mid=mistralai/Mixtral-8x7B-Instruct-v0.1 --tier-map frontier=gpt-4-1106-preview
    """
    from classifiers.artifact import ArtifactError
    from classifiers.comparison import load_compared_model
    from classifiers.evaluation import evaluate_records
    from classifiers.outcomes import imply_tiers, read_outcomes
    from classifiers.report import check_plotting, print_evaluation, write_plot

    if split not in ("auto", "own", "kfold"):
        raise _fail(f"--split must be auto, own or kfold, got {split!r}")
    if plot is not None:
        try:
            check_plotting()
        except RuntimeError as exc:
            raise _fail(str(exc)) from None
    use_split = None if split == "auto" else split == "own"
    try:
        mapping = parse_tier_map(tier_map) or None
        implied = parse_implied_tiers(implied_tier)
        records = imply_tiers(read_outcomes(data, mapping), implied)
        extras = imply_tiers(read_outcomes(train_extra or [], mapping), implied)
        config = TrainConfig(c=c, struct_weight=struct_weight, source_power=source_power,
                             min_sources=min_sources, length_prior=length_prior, solver=solver,
                             source_intercepts=source_intercepts)
        scorer = load_compared_model(str(model)) if model is not None else None
        with progress_bar(_console) as progress:
            result = evaluate_records(records, _split_names(tiers), folds=folds, seed=seed,
                                      use_split=use_split, config=config, extra_train=extras,
                                      scorer=scorer, progress=progress)
    except (OutcomesError, TrainingError, ArtifactError, ValueError) as exc:
        raise _fail(str(exc)) from None
    result["command"] = _command_line()
    # Piped output gets a wide console, so that rich does not cut router names at 80 columns.
    print_evaluation(result, Console() if sys.stdout.isatty() else Console(width=160))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    if plot is not None:
        try:
            write_plot(result, plot)
        except RuntimeError as exc:
            raise _fail(str(exc)) from None


calibrate_app = typer.Typer(help="Choose routing thresholds on held-out rows and write a policy copy.")
# Registered as a callback for the same reason as evaluate: `tierwise calibrate --data ...`.
calibrate_app.callback(invoke_without_command=True)(calibrate_command)
