"""One place that turns errors into HTML pages or JSON bodies, never a traceback."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Flask, Response, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException

from ca_service.db import db
from ca_service.errors import CAError
from hsm.errors import DuplicateKeyLabel, HSMError, KeyNotFound

log = logging.getLogger(__name__)

_TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported content type",
    423: "Account locked",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Service unavailable",
}


def wants_json() -> bool:
    """API paths and clients that prefer JSON get JSON errors."""
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(status: int, code: str, message: str) -> tuple[Response | str, int]:
    """Render an error as JSON or as the error page for its status."""
    if wants_json():
        return jsonify(error={"code": code, "message": message}), status
    title = _TITLES.get(status, "Error")
    return render_template("errors/error.html", status=status, title=title, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(CAError)
    def handle_ca_error(exc: CAError) -> tuple[Response | str, int]:
        db.session.rollback()
        return error_response(exc.status_code, exc.code, exc.message)

    @app.errorhandler(HSMError)
    def handle_hsm_error(exc: HSMError) -> tuple[Response | str, int]:
        db.session.rollback()
        log.error("HSM error: %s", exc)
        if isinstance(exc, KeyNotFound | DuplicateKeyLabel):
            # A missing CA key is a set-up problem, not a passing outage.
            return error_response(500, "hsm_key_error", str(exc))
        return error_response(
            503, "hsm_unavailable", "The signing device (HSM) is unavailable. Try again shortly."
        )

    @app.errorhandler(sa.exc.OperationalError)
    def handle_database_down(exc: sa.exc.OperationalError) -> tuple[Response | str, int]:
        db.session.rollback()
        log.error("database unavailable: %s", exc.orig)
        return error_response(
            503, "database_unavailable", "The database is unavailable. Try again shortly."
        )

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException) -> Response | HTTPException:
        if exc.code is None or exc.code < 400:
            return exc
        db.session.rollback()
        code = (exc.name or "error").lower().replace(" ", "_")
        response = make_response(
            error_response(exc.code, code, exc.description or _TITLES.get(exc.code, "Error"))
        )
        # Keep what the exception says about itself (Allow on a 405, Retry-After on a 429).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> tuple[Response | str, int]:
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "An unexpected error happened; it was logged.")
