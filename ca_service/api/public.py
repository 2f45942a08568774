"""Public, unauthenticated calls: a certificate's status and the OpenAPI document."""

from __future__ import annotations

from flask import Response, current_app, jsonify

from ca_service.api.http import JSON, bp
from ca_service.api.openapi import openapi_document
from ca_service.api.schemas import PublicStatus
from ca_service.api.serialise import public_status_json
from ca_service.api.spec import PUBLIC, Reply, documented
from ca_service.issuance import service
from ca_service.web import stateless


@bp.get("/certificates/<serial>/status")
@stateless
@documented(
    tag=PUBLIC,
    public=True,
    responses={200: Reply(PublicStatus, "The certificate's status.")},
    errors=(404,),
)
def certificate_status(serial: str) -> JSON:
    """Public status of an employer certificate."""
    return public_status_json(service.public_status(serial))


@bp.get("/openapi.json")
@stateless
@documented(
    tag=PUBLIC,
    public=True,
    responses={
        200: Reply(
            None, "The OpenAPI 3.1 document.", media={"application/json": {"type": "object"}}
        )
    },
)
def openapi() -> Response:
    """This document."""
    response = jsonify(openapi_document(current_app))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
