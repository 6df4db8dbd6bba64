"""``GET /metrics``: the app's Prometheus metrics, in the text format or OpenMetrics.

The format follows the scraper's ``Accept`` header (prometheus-client's ``choose_encoder``).
Like ``/healthz``, the endpoint needs no API key, so expose it only where scrapers reach it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client.exposition import choose_encoder
from starlette.responses import Response

from router.runtime import Runtime

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def get_metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(runtime.metrics.registry), media_type=content_type)
