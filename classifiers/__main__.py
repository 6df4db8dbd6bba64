"""Run the classifier commands without the gateway CLI.

``python -m classifiers train|import-data|evaluate ...`` behaves like
``tierwise classifier train|import-data`` and ``tierwise evaluate``.
"""

import typer

from classifiers.cli import app, evaluate_app

root = typer.Typer(no_args_is_help=True)
root.add_typer(app)
root.add_typer(evaluate_app, name="evaluate")
root(prog_name="python -m classifiers")
