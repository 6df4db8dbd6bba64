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
