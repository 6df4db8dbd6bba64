"""Optional OpenTelemetry tracing of the chat and embeddings endpoints (``TIERWISE_TRACING=true``).

This module imports nothing from OpenTelemetry. ``enable_tracing`` imports
:mod:`router.tracing.otel`, which needs the ``otel`` extra, only when the setting is on, so a
gateway without tracing loads neither the SDK nor the exporter and its request path runs no
tracing code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider

    from router.runtime import Runtime
    from router.tracing.otel import GatewayTracing

INSTALL_HINT = (
    "pip install 'tierwise[otel]' (pip install -e '.[otel]' in a checkout), or unset "
    "TIERWISE_TRACING"
)


class TracingUnavailable(RuntimeError):
    """Raised at start-up when tracing is on but the OpenTelemetry packages are missing."""


def enable_tracing(
    app: FastAPI, runtime: Runtime, provider: TracerProvider | None = None
) -> GatewayTracing:
    """Trace the chat and embeddings endpoints of ``app``.

    Returns the tracing, whose ``shutdown`` exports the spans still queued.

    ``provider`` replaces the one built from the ``OTEL_*`` environment variables (tests pass
    one with an in-memory exporter). Raises TracingUnavailable when the ``otel`` extra is
    not installed.
    """
    try:
        from router.tracing.otel import GatewayTracing
    except ImportError as exc:
        raise TracingUnavailable(
            f"TIERWISE_TRACING is on, but the OpenTelemetry SDK or its OTLP exporter is not "
            f"installed ({exc.name or exc}). Install them with: {INSTALL_HINT}."
        ) from None
    return GatewayTracing.install(app, runtime, provider)
