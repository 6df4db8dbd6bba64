"""Log lines of the standard library's loggers (uvicorn, OpenTelemetry, asyncio) look like the gateway's,
and the timestamps of both."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from router.logging_setup import IsoUtcTimestamper
from tests.support.stack import free_port

REPO = Path(__file__).resolve().parents[2]

_EMIT = """
import logging, sys, warnings
from router.logging_setup import configure_logging
configure_logging(sys.argv[1])
logging.getLogger("opentelemetry.exporter").warning("export failed: %s", "connection refused")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("asyncio").exception("task failed")
logging.getLogger("asyncio").info("below the level")
warnings.warn("an old parameter", DeprecationWarning)
"""


def emit(log_format: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _EMIT, log_format], capture_output=True, text=True, timeout=60,
        cwd=REPO, check=True,
    )
    return result.stderr


def test_standard_logging_renders_json() -> None:
    lines = [json.loads(line) for line in emit("json").splitlines()]

    assert [(line["logger"], line["level"], line["event"]) for line in lines] == [
        ("opentelemetry.exporter", "warning", "export failed: connection refused"),
        ("asyncio", "error", "task failed"),
        ("py.warnings", "warning", lines[2]["event"]),
    ]
    assert "DeprecationWarning: an old parameter" in lines[2]["event"]
    assert "ZeroDivisionError" in lines[1]["exception"]
    assert all(line["timestamp"].endswith("Z") for line in lines)


def test_standard_logging_renders_console() -> None:
    output = emit("console")

    assert "export failed: connection refused" in output
    assert "ZeroDivisionError" in output
    assert "below the level" not in output


def test_serve_logs_uvicorn_warnings_as_json(tmp_path: Path) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIERWISE_")}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "TIERWISE_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--no-local-model", "--port", str(port),
         "--log-format", "json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            # uvicorn logs a warning for a request it cannot parse.
            connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            connection.recv(1024)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)

    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    warnings = [line for line in lines if line.get("logger", "").startswith("uvicorn")]
    assert [line["event"] for line in warnings] == ["Invalid HTTP request received."]
    assert warnings[0]["level"] == "warning"


def test_failed_start_is_one_json_line(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\ntiers: {}\n", encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIERWISE_")}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "TIERWISE_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--no-local-model", "--port", str(free_port()),
         "--policy", str(policy), "--log-format", "json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 2, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert [line["event"] for line in lines] == ["gateway_start_failed"]
    assert f"{policy}:2: tiers" in lines[0]["error"]


@pytest.mark.parametrize(
    "instant",
    [1_700_000_000.0, 1_700_000_000.25, 1_700_000_000.123456, 1_700_000_059.9999996, 0.5e-6, 86_399.0000004],
)
def test_timestamper_matches_datetime_isoformat(instant: float) -> None:
    expected = datetime.fromtimestamp(instant, tz=UTC).isoformat().replace("+00:00", "Z")

    stamped = IsoUtcTimestamper(clock=lambda: instant)(None, "info", {})

    assert stamped["timestamp"] == expected


def test_timestamper_formats_each_second() -> None:
    instants = iter([100.5, 100.75, 101.0, 100.25])
    stamper = IsoUtcTimestamper(clock=lambda: next(instants))

    stamps = [stamper(None, "info", {})["timestamp"] for _ in range(4)]

    # The clock may step back (an NTP correction), and the second is formatted again then.
    assert stamps == ["1970-01-01T00:01:40.500000Z", "1970-01-01T00:01:40.750000Z",
                      "1970-01-01T00:01:41Z", "1970-01-01T00:01:40.250000Z"]
