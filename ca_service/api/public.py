"""Public, unauthenticated calls: a certificate's status and the OpenAPI document."""

from __future__ import annotations

from flask import Response, current_app, jsonify

from ca_service.api.http import JSON, bp
from ca_service.api.openapi import openapi_document
from ca_service.api.serialise import public_status_json
from ca_service.extensions import settings_of
from ca_service.issuance import service
from ca_service.web import stateless


@bp.get("/certificates/<serial>/status")
@stateless
def certificate_status(serial: str) -> JSON:
    return public_status_json(service.public_status(serial))


@bp.get("/openapi.json")
@stateless
def openapi() -> Response:
    response = jsonify(openapi_document(settings_of(current_app).public_base_url))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
