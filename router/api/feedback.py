"""``POST /v1/feedback``: attach a quality score to an earlier request."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.api.admission import read_json_body
from router.api.auth import tenant_of
from router.api.schemas import invalid_request
from router.errors import RequestIdNotFound, RequestNotAnswered
from router.runtime import Runtime

router = APIRouter()


class Feedback(BaseModel):
    # Strict like ChatRequest: a score must be a JSON number, because pydantic's lax mode
    # would read true as 1.0 (a perfect label) and the string "0.5" as 0.5.  Integers pass.
    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(min_length=1, max_length=200)
    score: float = Field(ge=0.0, le=1.0, description="Quality of the answer, 0 (bad) to 1 (good).")
    label: str | None = Field(default=None, max_length=200)


@router.post("/v1/feedback")
async def post_feedback(request: Request) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    body = await read_json_body(
        request, runtime.settings.max_body_bytes, runtime.settings.body_timeout_s
    )
    try:
        feedback = Feedback.model_validate(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None
    tenant = tenant_of(request, runtime.policies.current.policy)
    if runtime.request_ids is not None and runtime.request_ids.verify_unanswered(
        feedback.request_id, tenant
    ):
        # Rejected rather than recorded: the request ended in an error response (rate limit,
        # budget, invalid request, failed upstreams), so no answer exists that the score
        # could rate, and training and `policy simulate` skip failed requests anyway.
        # Accepting it would tell the client that a label counted when it never does.
        raise RequestNotAnswered(
            f"The request '{feedback.request_id}' ended in an error response, so it has no "
            "answer to rate; send feedback for requests that returned an answer.",
            param="request_id",
        )
    if runtime.request_ids is None or not runtime.request_ids.verify(feedback.request_id, tenant):
        # One message for unknown ids and other tenants' ids, so it reveals neither.
        raise RequestIdNotFound(
            f"No request with id '{feedback.request_id}' was issued to this API key. Send the "
            "x-request-id that the gateway returned for a request made with the same key "
            "and without its own x-request-id header.",
            param="request_id",
        )
    runtime.outcomes.emit(
        {
            "type": "feedback",
            "request_id": feedback.request_id,
            "tenant": tenant,
            "score": feedback.score,
            "label": feedback.label,
            "ts": round(time.time(), 3),
        }
    )
    runtime.dashboard.observe_feedback(tenant, feedback.request_id, feedback.score)
    return {"object": "feedback", "request_id": feedback.request_id, "accepted": True}
