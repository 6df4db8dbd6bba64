"""``tierwise policy ...``: commands for policy files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from router.cli.progress import Bars
    from router.policy.schema import Policy
    from router.policy.simulate import FeedbackKey, SimulationResult

policy_app = typer.Typer(
    help="Check and inspect policy files, and publish them to gateways through Redis.\n\nExample: tierwise policy check policies/default.yaml",
    no_args_is_help=True,
)


@policy_app.command("check")
def check(
    files: Annotated[list[Path], typer.Argument(help="Policy YAML files to validate.")],
) -> None:
    """Validate policy files; exit 2 when any is invalid.

    Example: tierwise policy check policies/default.yaml policies/examples/*.yaml
    """
    from router.policy.loader import PolicyError, load_policy

    failed = False
    for path in files:
        try:
            loaded = load_policy(path)
        except PolicyError as exc:
            failed = True
            typer.echo(str(exc), err=True)
            continue
        tiers = ", ".join(
            f"{name} ({len(tier.deployments)})" for name, tier in loaded.policy.ordered_tiers()
        )
        embeddings = loaded.policy.embeddings
        embedding_count = f"; embeddings: {len(embeddings.deployments)}" if embeddings else ""
        typer.echo(f"{path}: valid (version {loaded.version}; tiers: {tiers}{embedding_count})")
    if failed:
        raise typer.Exit(2)


@policy_app.command("explain")
def explain(
    prompt: Annotated[str | None, typer.Argument(help="The user message to route.")] = None,
    policy: Annotated[
        Path | None,
        typer.Option(envvar="TIERWISE_POLICY", help="Policy YAML file; the bundled default when unset."),
    ] = None,
    messages: Annotated[
        Path | None,
        typer.Option(
            help="A JSON file with a Chat Completions messages list, instead of PROMPT; it is "
            "checked as /v1/chat/completions checks it."
        ),
    ] = None,
    model: Annotated[str, typer.Option(help="The requested model or router alias.")] = "auto",
    expected_output_tokens: Annotated[
        int, typer.Option(help="Output tokens assumed for the cost estimate.")
    ] = 300,
    classifier: Annotated[
        Path | None,
        typer.Option(envvar="TIERWISE_CLASSIFIER", help="Classifier artifact folder; the bundled model when unset."),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(help="A tenant of the policy, whose minimum tier and blocked tiers apply."),
    ] = None,
) -> None:
    """Show how the policy would route a conversation, without sending any request.

    Example: tierwise policy explain --policy policies/default.yaml "Prove that sqrt(2) is irrational"
    """
    from router.cli.explain import explain_routing

    typer.echo(
        explain_routing(prompt, policy, messages, model, expected_output_tokens, classifier, tenant)
    )


@policy_app.command("diff")
def diff(
    old: Annotated[Path, typer.Argument(help="The current policy file.")],
    new: Annotated[Path, typer.Argument(help="The proposed policy file.")],
) -> None:
    """Describe the changes from OLD to NEW in sentences; exit 2 when either is invalid.

    Example: tierwise policy diff policies/default.yaml proposed.yaml
    """
    from router.policy.diff import describe_changes
    from router.policy.loader import PolicyError, load_policy

    try:
        before, after = load_policy(old), load_policy(new)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    changes = describe_changes(before.policy, after.policy)
    if not changes:
        typer.echo("The policies route identically: no differences.")
    for change in changes:
        typer.echo(f"- {change}")


@policy_app.command("simulate")
def simulate_command(
    policy: Annotated[Path, typer.Option(help="The proposed policy YAML.")],
    outcomes: Annotated[
        Path, typer.Option(help="Outcome log: the gateway's JSONL file, or a folder of exported JSONL files.")
    ],
    against: Annotated[
        Path | None,
        typer.Option(
            help="The current policy, for a side-by-side comparison. Both columns assume "
            "every deployment is available, so the current column can differ from the tiers "
            "that answered."
        ),
    ] = None,
    classifier_version: Annotated[
        str | None,
        typer.Option(
            help="Replay only the requests that this classifier version scored, as "
            "`/readyz` and model.json name it; all requests when unset."
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Draw no progress bar, even on a terminal.")
    ] = False,
) -> None:
    """Replay logged traffic through a policy and print tier mix, cost and known quality.

    The replay reuses the scores that the serving classifier logged, and it prints that
    classifier's version. A policy's thresholds suit one classifier, so a log that spans a
    classifier rollout gets a warning; --classifier-version keeps one version's requests.

    Every deployment counts as available, as if every provider key were set, so a request
    logged while a tier was unavailable may be simulated on that tier.

    A progress bar is drawn on standard error when it is a terminal, unless --quiet is given.

    Lines of other record types (embeddings, shadow, or an unknown type) are skipped.
    Exits with code 2 when a policy is invalid or the log cannot be read. It does the same
    for a line that is not a JSON object, or a feedback record without a request id or a
    numeric score, and the message names the file and line. Exits with code 1 when the log
    has no routed request to simulate.

    Example: tierwise policy simulate --policy proposed.yaml --outcomes var/outcomes.jsonl --against policies/default.yaml
    """
    from router.cli.progress import bars_enabled, progress_bars
    from router.policy.loader import PolicyError, load_policy
    from router.policy.simulate import tier_shift_warnings

    try:
        new = load_policy(policy).policy
        old = load_policy(against).policy if against is not None else None
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    with progress_bars(bars_enabled(quiet)) as bars:
        records, feedback = _read_outcomes_or_exit(outcomes, bars)
        if classifier_version is not None:
            records = _records_of_version(records, classifier_version)
        policies = {"proposed": new} | ({"current": old} if old is not None else {})
        results = {
            name: _simulate_counting(candidate, records, feedback, bars, name)
            for name, candidate in policies.items()
        }
    tiers = [name for name, _ in new.ordered_tiers()]
    rated = sum((record.get("tenant"), record["request_id"]) in feedback for record in records)
    typer.echo(f"{len(records)} routed requests in the log, {rated} of them with feedback "
               "(cache hits and failed requests are left out)")
    typer.echo(_classifier_versions_line(records))
    typer.echo(f"{'':<16}" + "".join(f"{name:>14}" for name in results))
    for tier in tiers:
        cells = "".join(f"{r.share(tier):>14.1%}" for r in results.values())
        typer.echo(f"{tier + ' share':<16}{cells}")
    unroutable = any(r.unroutable for r in results.values())
    if unroutable:
        cells = "".join(f"{r.unroutable / r.requests:>14.1%}" for r in results.values())
        typer.echo(f"{'unroutable':<16}{cells}")
    typer.echo(f"{'cost USD':<16}" + "".join(f"{r.cost_usd:>14.6f}" for r in results.values()))
    quality = "".join(
        f"{r.quality:>14.3f}" if r.quality is not None else f"{'-':>14}" for r in results.values()
    )
    typer.echo(f"{'quality':<16}{quality}")
    rated_cells = "".join(f"{r.quality_count:>14}" for r in results.values())
    typer.echo(f"{'rated requests':<16}{rated_cells}")
    typer.echo(
        "quality: mean feedback score of the rated requests, those with feedback whose simulated "
        "tier is the tier that answered; columns with different rated requests are not comparable"
    )
    if unroutable:
        counts = ", ".join(f"{name} {r.unroutable}" for name, r in results.items())
        typer.echo(
            f"unroutable: requests that no deployment of the policy can take, such as a prompt "
            f"longer than every context window ({counts}); the cost leaves them out"
        )
    # Records written before the gateway recorded a prompt category have none.
    without_category = sum(record.get("category") is None for record in records)
    floored = [name for name, candidate in policies.items() if candidate.routing.category_floors]
    if floored and without_category:
        owner = f"{' and '.join(floored)} {'policies' if len(floored) > 1 else 'policy'}"
        typer.echo(
            f"{without_category} records have no prompt category, so the category floors of the "
            f"{owner} apply to none of them"
        )
    if "current" in results:
        for warning in tier_shift_warnings(results["proposed"], results["current"], tiers):
            typer.echo(warning)


def _records_of_version(records: list[dict[str, Any]], version: str) -> list[dict[str, Any]]:
    """Keep the records scored by classifier ``version``; exit with 1 when there are none."""
    matching = [record for record in records if record.get("classifier_version") == version]
    if not matching:
        found = sorted({str(record.get("classifier_version")) for record in records})
        typer.echo(f"error: no routed request in the log was scored by classifier {version}; "
                   f"the log has {', '.join(found) or 'none'}", err=True)
        raise typer.Exit(1)
    return matching


def _classifier_versions_line(records: list[dict[str, Any]]) -> str:
    """Describe which classifier versions computed the logged scores that simulate replays.

    Thresholds suit the scores of one classifier, so a log that spans a rollout, or a
    policy calibrated for a newer classifier, gives figures that the gateway would not reach.
    """
    versions = Counter(str(record.get("classifier_version") or "unknown") for record in records)
    listed = ", ".join(f"{version} ({count})" for version, count in sorted(versions.items()))
    if len(versions) == 1:
        return (f"scores logged by classifier {listed}; the simulation reuses them, so its "
                "figures hold for a policy whose thresholds were chosen for that classifier")
    return (f"WARNING: scores logged by {len(versions)} classifier versions: {listed}. The "
            "thresholds of a policy suit one classifier's scores, so pass --classifier-version "
            "to replay the requests that one of them scored")


def _read_outcomes_or_exit(
    outcomes: Path, bars: Bars
) -> tuple[list[dict[str, Any]], dict[FeedbackKey, float]]:
    from router.policy.simulate import OutcomeFileError, load_records

    reading = bars.add(f"read {outcomes.name}")
    try:
        records, feedback = load_records(outcomes)
    except OutcomeFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        typer.echo(f"error: cannot read outcome records from {outcomes}: {reason}", err=True)
        raise typer.Exit(2) from None
    bars.update(reading, len(records), total=len(records))
    if not records:
        typer.echo(f"{outcomes} has no routed request records with scores; nothing to simulate.")
        raise typer.Exit(1)
    return records, feedback


def _simulate_counting(
    policy: Policy,
    records: list[dict[str, Any]],
    feedback: dict[FeedbackKey, float],
    bars: Bars,
    name: str,
) -> SimulationResult:
    from router.cli.progress import counting
    from router.policy.simulate import simulate

    bar = bars.add(f"simulate {name}", total=len(records))
    return simulate(policy, counting(records, bars, bar), feedback)
