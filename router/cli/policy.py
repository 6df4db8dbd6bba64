"""``tierwise policy ...``: commands for policy files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

policy_app = typer.Typer(
    help="Check and inspect policy files.\n\nExample: tierwise policy check policies/default.yaml",
    no_args_is_help=True,
)


@policy_app.command("check")
def check(
    files: Annotated[list[Path], typer.Argument(help="Policy YAML files to validate.")],
) -> None:
    """Validate policy files; exit 1 when any is invalid.

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
        typer.echo(f"{path}: valid (version {loaded.version}; tiers: {tiers})")
    if failed:
        raise typer.Exit(1)


@policy_app.command("explain")
def explain(
    prompt: Annotated[str | None, typer.Argument(help="The user message to route.")] = None,
    policy: Annotated[
        Path | None,
        typer.Option(envvar="TIERWISE_POLICY", help="Policy YAML file; the bundled default when unset."),
    ] = None,
    messages: Annotated[
        Path | None, typer.Option(help="A JSON file with an OpenAI messages list, instead of PROMPT.")
    ] = None,
    model: Annotated[str, typer.Option(help="The requested model or router alias.")] = "auto",
    expected_output_tokens: Annotated[
        int, typer.Option(help="Output tokens assumed for the cost estimate.")
    ] = 300,
    classifier: Annotated[
        Path | None,
        typer.Option(envvar="TIERWISE_CLASSIFIER", help="Classifier artifact folder; the bundled model when unset."),
    ] = None,
) -> None:
    """Show how the policy would route a conversation, without sending any request.

    Example: tierwise policy explain --policy policies/default.yaml "Prove that sqrt(2) is irrational"
    """
    from router.cli.explain import explain_routing

    typer.echo(explain_routing(prompt, policy, messages, model, expected_output_tokens, classifier))


@policy_app.command("diff")
def diff(
    old: Annotated[Path, typer.Argument(help="The current policy file.")],
    new: Annotated[Path, typer.Argument(help="The proposed policy file.")],
) -> None:
    """Describe the changes from OLD to NEW in sentences; exit 1 when either is invalid.

    Example: tierwise policy diff policies/default.yaml proposed.yaml
    """
    from router.policy.diff import describe_changes
    from router.policy.loader import PolicyError, load_policy

    try:
        before, after = load_policy(old), load_policy(new)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    changes = describe_changes(before.policy, after.policy)
    if not changes:
        typer.echo("The policies route identically: no differences.")
    for change in changes:
        typer.echo(f"- {change}")


@policy_app.command("simulate")
def simulate_command(
    policy: Annotated[Path, typer.Option(help="The proposed policy YAML.")],
    outcomes: Annotated[
        Path, typer.Option(help="Outcome log JSONL (the gateway's local file or an export part).")
    ],
    against: Annotated[
        Path | None,
        typer.Option(help="The current policy, for a side-by-side comparison."),
    ] = None,
) -> None:
    """Replay logged traffic through a policy and print tier mix, cost and known quality.

    Example: tierwise policy simulate --policy proposed.yaml --outcomes var/outcomes.jsonl --against policies/default.yaml
    """
    from router.policy.loader import PolicyError, load_policy
    from router.policy.simulate import load_records, simulate, tier_shift_warnings

    try:
        new = load_policy(policy).policy
        old = load_policy(against).policy if against is not None else None
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    try:
        records, feedback = load_records(outcomes)
    except (OSError, ValueError) as exc:
        typer.echo(f"cannot read outcome records from {outcomes}: {exc}", err=True)
        raise typer.Exit(1) from None
    if not records:
        typer.echo(f"{outcomes} has no routed request records with scores; nothing to simulate.")
        raise typer.Exit(1)

    results = {"proposed": simulate(new, records, feedback)}
    if old is not None:
        results["current"] = simulate(old, records, feedback)
    tiers = [name for name, _ in new.ordered_tiers()]
    typer.echo(f"{len(records)} logged requests, {len(feedback)} with feedback")
    typer.echo(f"{'':<16}" + "".join(f"{name:>14}" for name in results))
    for tier in tiers:
        cells = "".join(f"{r.share(tier):>14.1%}" for r in results.values())
        typer.echo(f"{tier + ' share':<16}{cells}")
    typer.echo(f"{'cost USD':<16}" + "".join(f"{r.cost_usd:>14.6f}" for r in results.values()))
    quality = "".join(
        f"{r.quality:>14.3f}" if r.quality is not None else f"{'-':>14}" for r in results.values()
    )
    typer.echo(f"{'quality':<16}{quality}")
    typer.echo(
        "quality: mean feedback score of requests whose simulated tier is the tier that answered"
    )
    if "current" in results:
        for warning in tier_shift_warnings(results["proposed"], results["current"], tiers):
            typer.echo(warning)
