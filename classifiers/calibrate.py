"""Choose the policy's routing thresholds from held-out labelled outcomes.

The gateway routes a prompt to the cheapest tier whose score is at or above that tier's
threshold (edge, then mid) and sends the rest to the frontier tier.  ``simulate_grid``
replays exactly that rule over a grid of (edge, mid) threshold pairs on rows the
classifier did not train on, and ``pick`` chooses a pair:

- target mode: the lowest mean cost whose mean quality reaches ``target`` times the
  always-frontier mean quality (ties: higher quality, then higher edge threshold, then
  higher mid threshold, so the highest thresholds among equal pairs);
- budget mode: the highest mean quality whose cost per 1,000 requests is at most the
  budget (ties: lower cost, then the same threshold order).

The policy's ``routing.category_floors`` apply as in the gateway's ``decide``.  A row whose
prompt category has a floor never goes below that tier (``lowest_tiers``), so the chosen
pair and its figures are those of the policy as the gateway runs it with every tier
available.

Costs are USD per request as recorded in the data; figures are printed per 1,000
requests.  ``write_policy`` puts the chosen thresholds into a copy of a policy file.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape

from classifiers.config import DEFAULT_C
from classifiers.metrics import THRESHOLD_GRID, pair_grid_means
from classifiers.outcomes import LabelledPrompt
from classifiers.progress import Progress, progress_bar, silent

TIERS = ("edge", "mid", "frontier")
_console = Console(stderr=True, soft_wrap=True)


class CalibrationError(ValueError):
    """Raised when no threshold pair meets the goal or the rows cannot be simulated."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One simulated threshold pair: mean cost (USD per request), mean quality, tier shares."""

    edge: float
    mid: float
    cost: float
    quality: float
    shares: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Grid:
    """Simulated routing for every (edge, mid) pair; arrays have shape (len(grid), len(grid))."""

    thresholds: np.ndarray
    cost: np.ndarray
    quality: np.ndarray
    edge_share: np.ndarray
    mid_share: np.ndarray
    frontier_cost: float
    frontier_quality: float

    def outcome(self, i: int, j: int) -> Outcome:
        """Return the outcome of edge threshold ``thresholds[i]`` and mid ``thresholds[j]``."""
        edge, mid = float(self.edge_share[i, j]), float(self.mid_share[i, j])
        return Outcome(float(self.thresholds[i]), float(self.thresholds[j]),
                       float(self.cost[i, j]), float(self.quality[i, j]),
                       (edge, mid, 1.0 - edge - mid))


def simulate_grid(scores: np.ndarray, quality: np.ndarray, cost: np.ndarray,
                  thresholds: np.ndarray = THRESHOLD_GRID, *,
                  lowest: np.ndarray | None = None) -> Grid:
    """Replay the gateway's rule for every (edge, mid) threshold pair.

    ``scores``, ``quality`` and ``cost`` have shape (n, 3), columns edge, mid, frontier.
    ``lowest`` holds each row's cheapest allowed tier (0 edge, 1 mid, 2 frontier) from
    ``lowest_tiers``; None allows edge for every row.  A row goes to edge when edge is
    allowed and its edge score >= the edge threshold, else to mid when mid is allowed and
    its mid score >= the mid threshold, else to frontier.  Raises CalibrationError on NaN.
    """
    _check_complete(scores, quality, cost)
    if lowest is not None:
        scores = apply_floors(scores, lowest)
    n = len(scores)
    to_edge = (scores[None, :, 0] >= thresholds[:, None]).astype(float)  # (edge grid, rows)
    mid_ok = (scores[None, :, 1] >= thresholds[:, None]).astype(float)   # (mid grid, rows)
    return Grid(thresholds, pair_grid_means(scores, cost, thresholds),
                pair_grid_means(scores, quality, thresholds),
                np.repeat(to_edge.mean(axis=1)[:, None], len(thresholds), axis=1),
                (1.0 - to_edge) @ mid_ok.T / n, float(cost[:, 2].mean()), float(quality[:, 2].mean()))


def _check_complete(scores: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> None:
    """Raise CalibrationError naming each tier and value that some rows lack."""
    if not len(scores):
        raise CalibrationError("no rows to simulate")
    gaps = []
    # The frontier score is never compared with a threshold, so it may be missing.
    for name, values, tiers in (("score", scores, TIERS[:2]), ("quality", quality, TIERS),
                                ("cost_usd", cost, TIERS)):
        for column, tier in enumerate(tiers):
            count = int(np.isnan(values[:, column]).sum())
            if count:
                gaps.append(f"{name} for {tier} in {count} of {len(scores)} rows")
    if gaps:
        raise CalibrationError(
            f"cannot simulate routing, because rows are missing values: {', '.join(gaps)}. "
            "A missing score means that the classifier has no such tier.")


def missing_values_error(records: Sequence[LabelledPrompt]) -> CalibrationError:
    """Return the error for held-out rows of which none has quality and cost for every tier."""
    from classifiers.evaluation import missing_outcome_fields

    if not records:
        return CalibrationError("no held-out rows to simulate: the data contains no records")
    return CalibrationError(
        f"none of the {len(records)} held-out rows has quality and cost_usd for all of "
        f"{', '.join(TIERS)} (missing: {missing_outcome_fields(records, TIERS)}); "
        "give each tier's outcome a quality and a cost_usd, and map the data's model names "
        "to tiers with --tier-map")


def prompt_categories(records: Sequence[LabelledPrompt]) -> list[str]:
    """Return each row's prompt category, computed as the gateway computes a request's."""
    from router.routing.category import prompt_category

    return [prompt_category(record.messages) for record in records]


def lowest_tiers(categories: Sequence[str], floors: Mapping[str, str]) -> np.ndarray:
    """Return each row's cheapest allowed tier (0 edge, 1 mid, 2 frontier) under ``floors``.

    ``floors`` is a policy's ``routing.category_floors``.  Each floor is applied with the
    function that ``decide`` uses.
    """
    from router.routing.decide import tiers_at_or_above

    # The frontier tier is at or above every floor, so the list is never empty.
    lowest = {category: TIERS.index(tiers_at_or_above(TIERS, floor)[0])
              for category, floor in floors.items()}
    return np.array([lowest.get(category, 0) for category in categories], dtype=int)


def apply_floors(scores: np.ndarray, lowest: np.ndarray) -> np.ndarray:
    """Return a copy of ``scores`` with each row's tiers below ``lowest`` set to -inf.

    A score of -inf meets no threshold, so the threshold rule then chooses among the tiers
    at or above the floor, as ``decide`` does once a floor has removed the cheaper tiers.
    """
    floored = np.array(scores, dtype=float)
    floored[np.arange(3)[None, :] < lowest[:, None]] = -np.inf
    return floored


def route(scores: np.ndarray, edge: float, mid: float) -> np.ndarray:
    """Return each row's tier (0 edge, 1 mid, 2 frontier) under the thresholds ``edge`` and ``mid``."""
    return np.where(scores[:, 0] >= edge, 0, np.where(scores[:, 1] >= mid, 1, 2))


def pick(grid: Grid, *, target: float | None = None, budget_per_1k: float | None = None) -> Outcome:
    """Return the chosen pair for a quality ``target`` share or a USD ``budget_per_1k``.

    Exactly one of the two must be given.  Raises CalibrationError when no pair meets it.
    """
    if (target is None) == (budget_per_1k is None):
        raise CalibrationError("give exactly one of --target-quality and --budget-per-1k")
    # Rounding keeps float noise from splitting pairs with equal routing into non-ties.
    cost, quality = np.round(grid.cost, 12), np.round(grid.quality, 12)
    if target is not None:
        feasible = quality >= np.round(target * grid.frontier_quality, 12)
        keys = (cost, -quality)
        goal = f"{target:.0%} of always-frontier quality"
    else:
        assert budget_per_1k is not None  # exactly one of the two is set, checked above
        feasible = cost * 1000 <= budget_per_1k + 1e-12
        keys = (-quality, cost)
        goal = f"a budget of {budget_per_1k} USD per 1,000 requests"
    if not feasible.any():
        raise CalibrationError(f"no threshold pair reaches {goal}")
    edge_t, mid_t = np.meshgrid(grid.thresholds, grid.thresholds, indexing="ij")
    # np.lexsort sorts by its last key first; negated thresholds prefer the higher ones.
    order = np.lexsort((-mid_t[feasible], -edge_t[feasible], keys[1][feasible], keys[0][feasible]))
    i, j = (index[order[0]] for index in np.nonzero(feasible))
    return grid.outcome(int(i), int(j))


def report_lines(chosen: Outcome, grid: Grid) -> list[str]:
    """Return the printed summary of one outcome beside always-frontier."""
    edge, mid, frontier = chosen.shares
    return [
        f"thresholds: edge {chosen.edge:.2f}, mid {chosen.mid:.2f}",
        (f"expected cost per 1,000 requests: {chosen.cost * 1000:.4f} USD "
         f"(always-frontier {grid.frontier_cost * 1000:.4f} USD)"),
        f"cost share vs always-frontier: {chosen.cost / grid.frontier_cost:.1%}",
        (f"quality share vs always-frontier: {chosen.quality / grid.frontier_quality:.1%} "
         f"(mean quality {chosen.quality:.4f} vs {grid.frontier_quality:.4f})"),
        f"tier mix: edge {edge:.1%}, mid {mid:.1%}, frontier {frontier:.1%}",
    ]


_BLOCK = re.compile(r"^(?P<indent>[ \t]+)thresholds:[ \t]*(?P<flow>\{[^}\n]*\})?[ \t]*(?P<comment>#.*)?$",
                    re.MULTILINE)


def substitute_thresholds(text: str, edge: float, mid: float) -> str | None:
    """Return ``text`` with the ``routing.thresholds`` block replaced, keeping comments.

    Returns None when the block is not found in a form this text edit understands.
    """
    routing = re.search(r"^routing:[ \t]*(#.*)?$", text, re.MULTILINE)
    match = _BLOCK.search(text, routing.end()) if routing else None
    if match is None:
        return None
    indent = match["indent"]
    lines = [f"{indent}  edge: {edge:.2f}", f"{indent}  mid: {mid:.2f}"]
    end = match.end() if match["flow"] is not None else _block_end(text, match.end(), indent)
    head = f"{indent}thresholds:" + (f"  {match['comment']}" if match["comment"] else "")
    return text[:match.start()] + "\n".join([head, *lines]) + text[end:]


def _block_end(text: str, start: int, indent: str) -> int:
    """Return the offset after the last line indented deeper than ``indent`` from ``start``."""
    end, offset = start, start
    for line in text[start:].split("\n")[1:]:
        offset += 1 + len(line)
        if not line.strip():
            continue  # a blank line belongs to the block only if a child line follows
        if not line.startswith(indent) or not line[len(indent):][:1].isspace():
            break
        end = offset
    return end


def policy_text(source: Path, edge: float, mid: float) -> tuple[str, bool]:
    """Return the new policy text and whether comments were kept (text edit) or lost."""
    import yaml

    text = source.read_text(encoding="utf-8")
    edited = substitute_thresholds(text, edge, mid)
    if edited is not None and _thresholds_of(edited) == {"edge": edge, "mid": mid}:
        return edited, True
    data = yaml.safe_load(text) or {}
    data.setdefault("routing", {})["thresholds"] = {"edge": edge, "mid": mid}
    return yaml.safe_dump(data, sort_keys=False), False


def _thresholds_of(text: str) -> dict[str, float] | None:
    import yaml

    try:
        data = yaml.safe_load(text)
        return dict(data["routing"]["thresholds"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def write_policy(text: str, out: Path) -> None:
    """Validate ``text`` with the gateway's policy loader, then write it to ``out``.

    The text goes to a temporary file beside ``out`` first, so an invalid policy never
    replaces an existing file.  Raises router.policy.loader.PolicyError when invalid.
    """
    from router.policy.loader import load_policy

    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".calibrate-", suffix=".yaml", dir=out.parent)
    temporary = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        load_policy(temporary)
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)


def matrices(records: Sequence[LabelledPrompt]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (keep, quality, cost): rows with quality and cost for all three tiers."""
    quality = np.array([[r.quality.get(t, np.nan) for t in TIERS] for r in records]).reshape(-1, 3)
    cost = np.array([[r.cost.get(t, np.nan) for t in TIERS] for r in records]).reshape(-1, 3)
    keep = ~np.isnan(quality).any(axis=1) & ~np.isnan(cost).any(axis=1)
    return keep, quality[keep], cost[keep]


def held_out_scores(records: Sequence[LabelledPrompt], classifier: Path | None, *, folds: int,
                    seed: int, use_split: bool | None, c: float, source_power: float,
                    extra: Sequence[LabelledPrompt],
                    progress: Progress = silent) -> tuple[list[LabelledPrompt], np.ndarray, str]:
    """Return the scored rows, their (n, 3) scores and a description of how they were held out."""
    from classifiers.evaluation import _without_overlap, held_out_predictions
    from classifiers.trainer import merge_duplicates
    from classifiers.training import TrainConfig, check_tiers_labelled

    merged = merge_duplicates(records)
    if classifier is not None:
        return _artifact_scores(merged, classifier, use_split)
    extra_train = _without_overlap(merge_duplicates(extra), merged)
    # Calibration needs all three tiers, so the error must not suggest leaving one out.
    check_tiers_labelled([*merged, *extra_train], TIERS, can_leave_out=False)
    predictions = held_out_predictions(
        merged, TIERS, folds=folds, seed=seed, use_split=use_split,
        config=TrainConfig(c=c, source_power=source_power),
        extra_train=extra_train, progress=progress)
    return predictions.records, predictions.routers["classifier"], predictions.mode


def _artifact_scores(records: list[LabelledPrompt], classifier: Path,
                     use_split: bool | None) -> tuple[list[LabelledPrompt], np.ndarray, str]:
    from classifiers.comparison import load_compared_model

    scorer = load_compared_model(str(classifier))
    test = [r for r in records if r.split == "test"]
    rows = test if (use_split is not False and test) else records
    scores = np.array([[scorer.score(r.messages).get(t, np.nan) for t in TIERS] for r in rows])
    described = "the file's test split" if rows is test else "all rows"
    return rows, scores.reshape(-1, 3), f"{described}, scored by {classifier}"


def calibrate(
    data: Annotated[list[Path], typer.Option(help="Labelled-outcomes JSONL file; repeat for more.")],
    policy: Annotated[Path, typer.Option(help="Policy YAML to copy the thresholds into.")],
    tier_map: Annotated[list[str] | None, typer.Option(
        help="TIER=MODEL, repeatable or comma-separated; without it outcome keys are tiers.")] = None,
    classifier: Annotated[Path | None, typer.Option(
        help="Score with this artifact folder, or 'bundled' for the model shipped in the "
             "package, instead of cross-fitting; its training data must not include the "
             "scored rows.")] = None,
    target_quality: Annotated[float | None, typer.Option(
        help="Share of always-frontier mean quality to reach at the lowest cost.")] = None,
    budget_per_1k: Annotated[float | None, typer.Option(
        help="USD per 1,000 requests; the best quality within it is chosen.")] = None,
    out: Annotated[Path | None, typer.Option(help="Policy YAML to write (default: print only).")] = None,
    folds: Annotated[int, typer.Option(help="Folds when the data has no test split.")] = 5,
    split: Annotated[str, typer.Option(
        help="auto (the file's own split if it has test rows), own, or kfold.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed for folds and solvers.")] = 0,
    c: Annotated[float, typer.Option(help="Inverse L2 regularisation strength.")] = DEFAULT_C,
    source_power: Annotated[float, typer.Option(
        help="Row weight (rows in its source group)^-POWER, as in evaluate.")] = 0.0,
    train_extra: Annotated[list[Path] | None, typer.Option(
        help="Labelled file added to every training fold and never scored; repeatable.")] = None,
    ignore_floors: Annotated[bool, typer.Option(
        "--ignore-floors", help="Simulate without the policy's routing.category_floors, "
                                "although the gateway applies them.")] = False,
) -> None:
    """Choose edge and mid thresholds on held-out rows and write them into a policy copy.

    The policy's category floors apply to each held-out row as in the gateway, unless
    --ignore-floors is given.

    Thresholds suit the classifier they were chosen for, so pass --classifier with the
    folder of the one the gateway serves. Without it, classifiers are trained on the data's
    training rows and the thresholds fit them.

    Example: tierwise calibrate --data var/data/routerbench.jsonl --classifier
    classifiers/default --tier-map
    edge=mistralai/mistral-7b-chat,mid=mistralai/mixtral-8x7b-chat,frontier=gpt-4-1106-preview
    --target-quality 0.95 --policy policies/default.yaml --out var/policy.yaml
    """
    from classifiers.artifact import ArtifactError
    from classifiers.outcomes import OutcomesError, parse_tier_map, read_outcomes
    from classifiers.training import TrainingError
    from router.policy.loader import PolicyError, load_policy

    if split not in ("auto", "own", "kfold"):
        raise _fail(f"--split must be auto, own or kfold, got {split!r}")
    if target_quality is not None and target_quality <= 0:
        raise _fail(f"invalid --target-quality {target_quality:g}: give a share of "
                    "always-frontier quality above 0, such as 0.95")
    if budget_per_1k is not None and budget_per_1k < 0:
        raise _fail(f"invalid --budget-per-1k {budget_per_1k:g}: give 0 or more USD per 1,000 "
                    "requests")
    try:
        floors = dict(load_policy(policy).policy.routing.category_floors)
        mapping = parse_tier_map(tier_map) or None
        with progress_bar(_console) as progress:
            rows, scores, mode = held_out_scores(
                read_outcomes(data, mapping), classifier, folds=folds, seed=seed,
                use_split=None if split == "auto" else split == "own", c=c,
                source_power=source_power, extra=read_outcomes(train_extra or [], mapping),
                progress=progress)
        keep, quality, cost = matrices(rows)
        if not keep.any():
            raise missing_values_error(rows)
        scored = [row for row, kept in zip(rows, keep, strict=True) if kept]
        overlap = _trained_sources(classifier, scored)
        categories: list[str] = []
        lowest = None
        if floors and not ignore_floors:
            categories = prompt_categories([row for row, kept in zip(rows, keep, strict=True) if kept])
            lowest = lowest_tiers(categories, floors)
        grid = simulate_grid(scores[keep], quality, cost, lowest=lowest)
        chosen = pick(grid, target=target_quality, budget_per_1k=budget_per_1k)
        text, kept_comments = policy_text(policy, chosen.edge, chosen.mid)
        if out is not None:
            write_policy(text, out)
    except (OutcomesError, TrainingError, CalibrationError, ArtifactError, PolicyError, OSError) as exc:
        raise _fail(str(exc)) from None
    if lowest is not None:
        floor_note = floors_applied_line(categories, scores[keep], lowest, chosen)
    elif floors:
        floor_note = floors_ignored_line(floors)
    else:
        floor_note = None
    _print_result(chosen, grid, mode, int(keep.sum()), classifier is not None, floor_note, overlap)
    if out is not None:
        note = "comments kept" if kept_comments else "rewritten with yaml.safe_dump, comments dropped"
        _console.print(f"wrote {out} ({note})")


def floors_applied_line(categories: Sequence[str], scores: np.ndarray, lowest: np.ndarray,
                        chosen: Outcome) -> str:
    """Describe the rows under a floor above edge and how many the floors lift at ``chosen``."""
    floored = lowest > 0
    counts = Counter(category for category, above in zip(categories, floored, strict=True) if above)
    by_category = ", ".join(f"{category} {count}" for category, count in counts.most_common())
    lifted = route(apply_floors(scores, lowest), chosen.edge, chosen.mid) != route(
        scores, chosen.edge, chosen.mid)
    return (f"category floors applied: {int(floored.sum())} of {len(categories)} rows have a "
            f"floor above edge ({by_category or 'none'}), and at these thresholds "
            f"{int(lifted.sum())} of them go to a higher tier than without floors")


def floors_ignored_line(floors: Mapping[str, str]) -> str:
    """Warn that the figures leave out floors that the gateway applies with this policy."""
    described = ", ".join(f"{category}: {tier}" for category, tier in floors.items())
    return (f"category floors ignored (--ignore-floors): the gateway applies this policy's "
            f"floors ({described}), so it sends some of those prompts to higher tiers than "
            "these figures show")


def _trained_sources(classifier: Path | None, rows: Sequence[LabelledPrompt]) -> dict[str, int]:
    """Count the scored rows per source set that the ``classifier`` artifact was trained on."""
    if classifier is None:
        return {}
    from classifiers.comparison import load_compared_model, trained_sources_in

    return trained_sources_in(load_compared_model(str(classifier)), rows)


def _print_result(chosen: Outcome, grid: Grid, mode: str, rows: int, from_artifact: bool,
                  floor_note: str | None, overlap: Mapping[str, int]) -> None:
    console = Console(soft_wrap=True)
    console.print(f"held-out rows: {rows} ({escape(mode)})")
    if overlap:
        sets = ", ".join(f"{source} ({count} rows)" for source, count in sorted(overlap.items()))
        console.print(escape(
            f"warning: the classifier was trained on the sets of some scored rows: {sets}. "
            "Its scores there fit labels it has seen, so on new traffic these thresholds "
            "probably reach a lower quality than printed; calibrate on a labelled file of "
            "another set"))
    elif from_artifact:
        console.print("note: these rows must not have been in the classifier's training data")
    if floor_note is not None:
        console.print(escape(floor_note))
    for line in report_lines(chosen, grid):
        console.print(escape(line))
    if not from_artifact:
        console.print(CROSS_FIT_NOTE)


CROSS_FIT_NOTE = (
    "note: these thresholds fit classifiers trained here on the data's training rows, not "
    "the classifier a gateway serves; pass --classifier with that classifier's folder "
    "(bundled for the model shipped in the package) to choose thresholds for it")


def _fail(message: str) -> typer.Exit:
    _console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=2)
