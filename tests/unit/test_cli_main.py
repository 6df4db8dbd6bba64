"""The ``tierwise`` command's own options and how it mounts the classifier commands."""

from __future__ import annotations

import json
import re
import shlex
import socket
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import redis
import typer
from typer.testing import CliRunner

from router.cli import main
from router.cli.help_format import EXAMPLE_LINE_WIDTH, format_example
from router.cli.redis_client import redis_failure_message

runner = CliRunner()


def mounted_app() -> typer.Typer:
    # Mounting twice in one process would register the classifier group twice.
    if not any(group.name == "classifier" for group in main.app.registered_groups):
        main._mount_classifier_commands()
    return main.app


def test_version_option_prints_version() -> None:
    result = runner.invoke(mounted_app(), ["--version"])

    assert result.exit_code == 0
    assert result.output == f"tierwise {version('tierwise')}\n"


@pytest.mark.parametrize(("command", "option"), [("evaluate", "--tier-map"), ("calibrate", "--data")])
def test_classifier_command_help_has_no_subcommands(command: str, option: str) -> None:
    pytest.importorskip("sklearn", reason="the classifier commands need the classifier dependencies")
    result = runner.invoke(mounted_app(), [command, "--help"], terminal_width=200)

    assert result.exit_code == 0
    assert f"Usage: tierwise {command} [OPTIONS]" in result.output
    assert "COMMAND [ARGS]" not in result.output
    assert option in result.output


def test_redis_failure_message_has_one_period() -> None:
    error = redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    assert redis_failure_message("redis://user:pw@127.0.0.1:1/0", error) == (
        "Redis at redis://127.0.0.1:1/0 failed: Error 111 connecting to 127.0.0.1:1. Connection "
        "refused. Check --redis-url and that Redis is running."
    )


def test_usage_without_redis_prints_one_line() -> None:
    # Nothing listens on port 1 of the loopback address, so the connection is refused at once.
    result = runner.invoke(mounted_app(), ["usage", "--redis-url", "redis://127.0.0.1:1/0"])

    assert result.exit_code == 1
    assert "Connection refused. Check --redis-url" in result.output
    assert ".." not in result.output


def test_export_missing_redis_url_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TIERWISE_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    result = runner.invoke(mounted_app(), ["outcomes", "export", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith(
        "error: missing Redis URL: give --redis-url, or set TIERWISE_REDIS_URL or REDIS_URL."
    )


def free_port() -> int:
    """Return a port that no process listened on a moment ago, for the port check to pass."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_with_invalid_settings_prints_one_line_each() -> None:
    result = runner.invoke(
        main.app,
        ["serve", "--no-local-model", "--port", str(free_port()), "--log-format", "console"],
        env={"TIERWISE_CACHE_NEAR_ENTRIES": "-1", "TIERWISE_MAX_BODY_BYTES": "x"},
    )

    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    assert "invalid TIERWISE_CACHE_NEAR_ENTRIES (got '-1')" in result.output
    assert "invalid TIERWISE_MAX_BODY_BYTES (got 'x')" in result.output
    assert "Traceback" not in result.output


def test_serve_on_busy_port_exits_early() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = runner.invoke(
            main.app, ["serve", "--no-local-model", "--port", str(port), "--log-format", "console"]
        )

    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert f"error: 127.0.0.1:{port} is already in use" in message
    assert "choose another port with --port or TIERWISE_PORT" in message
    assert "gateway_started" not in result.output


def test_invalid_setting_is_json_line_with_json_logs() -> None:
    result = runner.invoke(
        main.app,
        ["serve", "--no-local-model", "--port", str(free_port()), "--log-format", "json"],
        env={"TIERWISE_MAX_BODY_BYTES": "x"},
    )

    assert result.exit_code == 2
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [line["event"] for line in lines] == ["gateway_start_failed"]
    assert lines[0]["level"] == "error"
    assert lines[0]["error"].startswith("invalid TIERWISE_MAX_BODY_BYTES (got 'x')")


def test_busy_port_is_json_line_with_json_logs() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = runner.invoke(
            main.app, ["serve", "--no-local-model", "--port", str(port), "--log-format", "json"]
        )

    assert result.exit_code == 2
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [line["event"] for line in lines] == ["gateway_start_failed"]
    assert f"127.0.0.1:{port} is already in use" in lines[0]["error"]


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        ("99999", "invalid --port / TIERWISE_PORT (got 99999): Input should be less than or equal to 65535"),
        ("0", "invalid --port / TIERWISE_PORT (got 0): Input should be greater than or equal to 1"),
    ],
)
def test_serve_rejects_port_out_of_range(port: str, expected: str) -> None:
    # Under uvloop, port 99999 listened on 34463 (99999 - 65536), and port 0 takes a random
    # free port, while the gateway_started line names the port given.
    result = runner.invoke(
        main.app, ["serve", "--no-local-model", "--port", port, "--log-format", "console"]
    )

    assert result.exit_code == 2
    assert expected in result.output
    assert "gateway_started" not in result.output


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://user:hunter2@127.0.0.1:6379/0", "Redis URL must specify one of the following schemes"),
        ("redis://user:hunter2/0", "the port is not a number from 0 to 65535"),
    ],
)
def test_serve_rejects_unparsable_redis_url(url: str, reason: str) -> None:
    result = runner.invoke(
        main.app,
        ["serve", "--no-local-model", "--port", str(free_port()), "--log-format", "json"],
        env={"REDIS_URL": url, "TIERWISE_REDIS_URL": None},
    )

    assert result.exit_code == 2
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [line["event"] for line in lines] == ["gateway_start_failed"]
    assert lines[0]["error"].startswith("invalid --redis-url / TIERWISE_REDIS_URL: ")
    assert "Value error" not in lines[0]["error"]
    assert reason in lines[0]["error"]
    assert "redis://HOST:6379/0" in lines[0]["error"]
    assert "hunter2" not in result.output


def test_serve_with_missing_classifier_exits_early(tmp_path: Path) -> None:
    result = runner.invoke(
        main.app,
        ["serve", "--no-local-model", "--classifier", str(tmp_path), "--log-format", "console"],
    )

    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert f"error: cannot load the classifier: {tmp_path}/model.json: file not found" in message
    assert "Traceback" not in result.output
    assert "gateway_started" not in result.output


def test_usage_rejects_unparsable_redis_url() -> None:
    result = runner.invoke(
        mounted_app(), ["usage", "--redis-url", "http://user:hunter2@127.0.0.1:6379/0"]
    )

    assert result.exit_code == 2
    assert "error: invalid --redis-url: Redis URL must specify one of the following schemes" in (
        result.output
    )
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Return the argument lists that reach ``command`` and each of its subcommands."""
    paths = [path]
    for name, child in getattr(command, "commands", {}).items():
        if not child.hidden:
            paths.extend(command_paths(child, (*path, name)))
    return paths


def test_flags_show_no_value_placeholder() -> None:
    root = typer.main.get_command(mounted_app())
    paths = command_paths(root)
    assert ("serve",) in paths
    for path in paths:
        result = runner.invoke(mounted_app(), [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, path
        assert "<bool>" not in result.output, path
    root_help = runner.invoke(mounted_app(), ["--help"], terminal_width=200).output
    assert re.search(r"--version +Print the installed Tierwise version", root_help)
    assert re.search(r"--help +Show this message and exit", root_help)
    serve_help = runner.invoke(mounted_app(), ["serve", "--help"], terminal_width=200).output
    assert re.search(r"--local-model +--no-local-model +Start the local edge model", serve_help)
    assert re.search(r"--port +<int> +TCP port to listen on", serve_help)


def test_help_paragraphs_reflow() -> None:
    # The second paragraph of `outcomes export`'s docstring breaks its source lines after
    # "a killed export can be" and before "--flush-interval".
    result = runner.invoke(mounted_app(), ["outcomes", "export", "--help"], env={"COLUMNS": "200"})

    assert "a killed export can be restarted with the same --group" in result.output
    assert "--batch of them or --flush-interval has passed" in result.output


def test_help_keeps_marked_paragraph_lines() -> None:
    from typer import rich_utils

    text = rich_utils._fix_linebreaks(["one\ntwo", "\bkept\nlines"], "rich")

    assert text == "one two\n\n\bkept\nlines"


def test_examples_fit_80_columns_and_paste() -> None:
    command = ("tierwise calibrate --data var/data/routerbench.jsonl --target-quality 0.95 "
               "--tier-map edge=mistralai/mistral-7b-chat,frontier=gpt-4-1106-preview "
               "--policy 'my policy.yaml' --note \"a b  c\"")

    text = format_example(command)

    lines = text.split(" \\\n")
    assert len(lines) > 1
    assert all(len(line) <= EXAMPLE_LINE_WIDTH for line in lines)
    assert shlex.split(text.replace(" \\\n", " ")) == shlex.split(command)
    assert "--policy 'my policy.yaml'" in text
    assert '--note "a b  c"' in text


def test_help_example_lines_break_between_words() -> None:
    result = runner.invoke(mounted_app(), ["classifier", "publish", "--help"], env={"COLUMNS": "80"})

    example = [line.strip() for line in result.output.split("Example:")[1].splitlines()]
    command = [line for line in example if line][:2]
    assert command == [
        "tierwise classifier publish var/model --policy policies/default.yaml \\",
        "--redis-url redis://127.0.0.1:6379/0",
    ]


def test_serve_reports_every_start_problem(tmp_path: Path) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text("tiers: 5\n", encoding="utf-8")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = runner.invoke(
            main.app,
            ["serve", "--no-local-model", "--port", str(port), "--policy", str(policy),
             "--classifier", str(tmp_path), "--log-format", "console"],
            env={"TIERWISE_MAX_BODY_BYTES": "x"},
        )  # fmt: skip

    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("error: invalid TIERWISE_MAX_BODY_BYTES (got 'x')")
    assert lines[1:3] == [
        f"invalid policy {policy}:",
        f"  {policy}:1: tiers: expected a mapping of keys and values (found 5)",
    ]
    assert lines[3].startswith(f"error: cannot load the classifier: {tmp_path}/model.json")
    assert lines[4].startswith(f"error: 127.0.0.1:{port} is already in use")
    assert len(lines) == 5


def test_serve_reports_policy_and_port_as_json_lines(tmp_path: Path) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text("tiers: 5\n", encoding="utf-8")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = runner.invoke(
            main.app,
            ["serve", "--no-local-model", "--port", str(port), "--policy", str(policy),
             "--log-format", "json"],
        )  # fmt: skip

    assert result.exit_code == 2
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [line["event"] for line in lines] == ["gateway_start_failed"] * 2
    assert lines[0]["error"].startswith(f"invalid policy {policy}:\n")
    assert lines[1]["error"].startswith(f"127.0.0.1:{port} is already in use")


def test_serve_skips_port_check_for_invalid_port(tmp_path: Path) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text("tiers: 5\n", encoding="utf-8")

    result = runner.invoke(
        main.app,
        ["serve", "--no-local-model", "--port", "0", "--policy", str(policy),
         "--log-format", "console"],
    )  # fmt: skip

    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[0] == (
        "error: invalid --port / TIERWISE_PORT (got 0): Input should be greater than or equal to 1"
    )
    assert lines[1] == f"invalid policy {policy}:"
    assert "already in use" not in result.output
