"""Run the classifier commands without the gateway CLI.

``python -m classifiers train|import-data|evaluate|calibrate ...`` behaves like
``tierwise classifier train|import-data``, ``tierwise evaluate`` and ``tierwise calibrate``.
"""

import typer

from classifiers.cli import app, calibrate_app, evaluate_app

root = typer.Typer(no_args_is_help=True)
root.add_typer(app)
root.add_typer(evaluate_app, name="evaluate")
root.add_typer(calibrate_app, name="calibrate")
root(prog_name="python -m classifiers")
