"""Request body schemas in the OpenAPI document.

The chat, Responses, Messages, embeddings and feedback endpoints parse their bodies
themselves (one ``orjson.loads``, one pydantic validation), so FastAPI cannot see their body
models.  This adds them to the
document, so clients, schema-driven fuzzers and API browsers know the request shapes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

REF_TEMPLATE = "#/components/schemas/{model}"


def install_request_schemas(app: FastAPI, bodies: dict[str, type[BaseModel]]) -> None:
    """Document ``bodies`` (path -> model) as the JSON request bodies of those POST paths."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for path, model in bodies.items():
            schema = model.model_json_schema(ref_template=REF_TEMPLATE)
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
            operation = document["paths"][path]["post"]
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=model.__name__)}}
                },
            }
        app.openapi_schema = document
        return document

    # FastAPI documents replacing app.openapi as the way to customise the schema.
    app.openapi = openapi  # type: ignore[method-assign]
