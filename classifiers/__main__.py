"""Run the classifier commands without the gateway CLI: ``python -m classifiers train ...``."""

from classifiers.cli import app

app(prog_name="python -m classifiers")
