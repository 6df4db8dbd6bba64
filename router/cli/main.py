"""The ``tierwise`` command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from router.cli.help_format import hide_flag_placeholders, reflow_help_paragraphs
from router.cli.outcomes import outcomes_app
from router.cli.policy import policy_app
from router.cli.publish import (
    classifier_versions_command,
    policy_versions_command,
    publish_classifier_command,
    publish_policy_command,
    rollback_classifier_command,
    rollback_policy_command,
)
from router.cli.usage import usage_command

if TYPE_CHECKING:
    from router.app import GatewayApp
    from router.settings import Settings

hide_flag_placeholders()
reflow_help_paragraphs()

app = typer.Typer(
    name="tierwise",
    help="Tierwise: an OpenAI-compatible gateway that routes each request to the cheapest "
    "adequate model tier.\n\nExit status of every command: 0 on success, 1 when an operation "
    "failed (such as an unreachable Redis), 2 on invalid input or usage (an unknown option, an "
    "invalid policy, data file or artifact, or an invalid setting at start). classifier train "
    "also exits with 3 and 4; its help says when.\n\nExample: tierwise serve --port 8080",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(policy_app, name="policy")
app.add_typer(outcomes_app, name="outcomes")
policy_app.command("publish")(publish_policy_command)
policy_app.command("versions")(policy_versions_command)
policy_app.command("rollback")(rollback_policy_command)
app.command("usage")(usage_command)


def _mount_classifier_commands() -> None:
    try:
        from classifiers.cli import app as classifier_app
        from classifiers.cli import calibrate_command, evaluate
    except ImportError:
        return
    classifier_app.command("publish")(publish_classifier_command)
    classifier_app.command("versions")(classifier_versions_command)
    classifier_app.command("rollback")(rollback_classifier_command)
    app.add_typer(classifier_app, name="classifier")
    # Plain commands, because a sub-app's usage line shows "COMMAND [ARGS]..." although
    # neither of these has subcommands.
    app.command("evaluate")(evaluate)
    app.command("calibrate")(calibrate_command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tierwise {_installed_version()}")
        raise typer.Exit()


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tierwise")
    except PackageNotFoundError:
        return "unknown (not installed; run pip install -e .)"


@app.callback()
def _main_options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed Tierwise version and exit.",
        ),
    ] = False,
) -> None:
    """Apply the options given before the command; --help prints the app's help text."""


@app.command()
def serve(
    policy: Annotated[
        Path | None,
        typer.Option(envvar="TIERWISE_POLICY", help="Policy YAML file; the bundled default when unset."),
    ] = None,
    host: Annotated[str, typer.Option(envvar="TIERWISE_HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TIERWISE_PORT", help="TCP port to listen on.")] = 8080,
    redis_url: Annotated[
        str | None,
        typer.Option(envvar=["TIERWISE_REDIS_URL", "REDIS_URL"], help="Redis URL; in-process cache and a local outcome file when unset."),
    ] = None,
    classifier: Annotated[
        Path | None,
        typer.Option(envvar="TIERWISE_CLASSIFIER", help="Classifier artifact folder; the bundled model when unset."),
    ] = None,
    local_model: Annotated[
        bool,
        typer.Option(envvar="TIERWISE_LOCAL_MODEL", help="Start the local edge model when the edge extra is installed."),
    ] = True,
    log_format: Annotated[
        str, typer.Option(envvar="TIERWISE_LOG_FORMAT", help="json, console, or auto (console on a terminal).")
    ] = "auto",
) -> None:
    """Run the gateway.

    Example: REDIS_URL=redis://127.0.0.1:6379/0 tierwise serve --port 8080
    """
    import uvicorn

    from router.app import create_app
    from router.http_protocol import GatewayHttpProtocol
    from router.logging_setup import configure_logging, logs_are_json
    from router.settings import Settings

    overrides: dict[str, object] = {"host": host, "port": port, "log_format": log_format}
    overrides["local_model"] = local_model
    if policy is not None:
        overrides["policy"] = policy
    if redis_url:
        overrides["redis_url"] = redis_url
    if classifier is not None:
        overrides["classifier"] = classifier
    # Known before the settings are valid, so that a start stopped by an invalid setting is
    # reported in the same format as a start stopped later.
    json_logs = logs_are_json(log_format)
    settings = _settings_or_exit(Settings, overrides, json_logs)
    json_logs = configure_logging(settings.log_format, settings.log_level)
    gateway = _build_or_exit(create_app, settings, json_logs)
    config = uvicorn.Config(
        gateway,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=GatewayHttpProtocol,
        access_log=False,
        log_level="warning",
        # uvicorn's own records go to the root logger, which renders them as JSON or console
        # lines like the gateway's (router/logging_setup.py).
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=int(settings.http_idle_timeout_s),
    )
    _drain_logging_server_class()(config).run()


GRACEFUL_SHUTDOWN_S = 30
"""Seconds that requests in flight get to finish after SIGTERM or SIGINT."""


def _drain_logging_server_class() -> type:
    import signal

    import structlog
    import uvicorn

    class DrainLoggingServer(uvicorn.Server):
        """uvicorn's server, which also logs when a signal starts the drain of open requests."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not self.should_exit:
                structlog.get_logger("tierwise.gateway").info(
                    "gateway_stopping",
                    signal=signal.Signals(sig).name,
                    open_connections=len(self.server_state.connections),
                    grace_s=GRACEFUL_SHUTDOWN_S,
                )
            super().handle_exit(sig, frame)

    return DrainLoggingServer


def _report_start_failure(message: str, json_logs: bool) -> None:
    """Print why the gateway did not start: a ``gateway_start_failed`` line with JSON logs."""
    if not json_logs:
        typer.echo(message, err=True)
        return
    import structlog

    from router.logging_setup import configure_logging

    configure_logging("json")
    structlog.get_logger("tierwise.cli").error("gateway_start_failed", error=message.removeprefix("error: "))


_UNQUOTED_SETTINGS = frozenset({"redis_url", "feedback_secret"})
"""Settings whose value a start failure never prints, because it can contain a password."""


def _settings_or_exit(settings_class: Any, overrides: dict[str, object], json_logs: bool = False) -> Any:
    """Build the settings and check the policy, classifier and port before anything starts.

    Every problem found is reported, one report each, and then the command exits with 2, so
    that one start shows all the configuration errors that these checks can find.
    """
    from pydantic import ValidationError

    problems: list[str] = []
    invalid_fields: set[str] = set()
    settings = None
    try:
        settings = settings_class(**overrides)
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "settings"
            invalid_fields.add(field)
            problems.append(_setting_problem(field, error, field in overrides))
    if settings is not None:
        policy, classifier, host, port = (
            settings.policy, settings.classifier, settings.host, settings.port
        )
    else:
        from router.settings import BUNDLED_POLICY

        # The options already contain the values of TIERWISE_POLICY, TIERWISE_CLASSIFIER,
        # TIERWISE_HOST and TIERWISE_PORT.
        policy = overrides.get("policy") or BUNDLED_POLICY
        classifier = overrides.get("classifier")
        host, port = overrides["host"], overrides["port"]
    if "policy" not in invalid_fields:
        problems += _policy_problems(Path(str(policy)))
    if classifier is not None and "classifier" not in invalid_fields:
        problems += _classifier_problems(Path(str(classifier)))
    if not invalid_fields & {"host", "port"}:
        problems += _port_problems(str(host), int(port))
    for problem in problems:
        _report_start_failure(problem, json_logs)
    if problems:
        raise typer.Exit(2)
    return settings


def _setting_problem(field: str, error: Any, has_option: bool) -> str:
    # The value of a setting with a command-line option came from the option or its
    # environment variable, and the option's value does not tell which.
    name = f"TIERWISE_{field.upper()}"
    if has_option:
        name = f"--{field.replace('_', '-')} / {name}"
    value = error.get("input")
    printable = isinstance(value, str | int | float) and field not in _UNQUOTED_SETTINGS
    got = f" (got {value!r})" if printable else ""
    # A field validator's ValueError reaches pydantic's message as "Value error, ...".
    reason = str(error["msg"]).removeprefix("Value error, ")
    return f"error: invalid {name}{got}: {reason}"


def _policy_problems(path: Path) -> list[str]:
    """Return the report of an invalid policy file, or nothing when it loads."""
    from router.policy.loader import PolicyError, load_policy

    try:
        load_policy(path)
    except PolicyError as exc:
        return [str(exc)]
    return []


def _classifier_problems(path: Path) -> list[str]:
    """Return the report of a classifier artifact that does not load, or nothing when it loads.

    The gateway loads it again. For an artifact the size of the bundled model (1.6 MB),
    one load took about 20 ms in one timing run, so checking twice costs little.
    """
    try:
        from classifiers import ArtifactError, load_artifact
    except ImportError:
        return []  # create_app reports the missing classifier package.
    try:
        load_artifact(path)
    except ArtifactError as exc:
        return [f"error: cannot load the classifier: {exc}"]
    return []


def _port_problems(host: str, port: int) -> list[str]:
    """Return a report when another process listens on ``host:port``, else nothing.

    uvicorn binds only after the gateway has started (and logged gateway_started), so
    without this check a busy port ends in uvicorn's own error line after a misleading
    start.  Another process can still take the port between this check and the bind.
    """
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        return []  # uvicorn reports the unknown host.
    with socket.socket(family, kind, proto) as probe:
        # uvicorn sets SO_REUSEADDR too, so a port with only closing connections is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return []  # uvicorn reports other bind errors with their reason.
            message = (
                f"error: {host}:{port} is already in use, so the gateway cannot listen there. "
                "Stop the process that listens on it, or choose another port with --port "
                "or TIERWISE_PORT."
            )
            return [message]
    return []


def _build_or_exit(
    factory: Callable[[Settings], GatewayApp], settings: Settings, json_logs: bool = False
) -> GatewayApp:
    """Build the gateway; on a bad policy, bad classifier or missing tracing extra, exit with 2.

    With JSON logs the report is one ``gateway_start_failed`` line, so that a log pipeline
    that parses every line also records why the process exited.
    """
    from classifiers import ArtifactError
    from router.policy.loader import PolicyError

    expected: tuple[type[Exception], ...] = (PolicyError,)
    if settings.tracing:
        # Imported only then, so a gateway without tracing loads no tracing module.
        from router.tracing import TracingUnavailable

        expected += (TracingUnavailable,)
    try:
        return factory(settings)
    except ArtifactError as exc:
        _report_start_failure(f"error: cannot load the classifier: {exc}", json_logs)
        raise typer.Exit(2) from None
    except expected as exc:
        _report_start_failure(str(exc), json_logs)
        raise typer.Exit(2) from None


def main() -> None:
    _mount_classifier_commands()
    app()


if __name__ == "__main__":
    main()
