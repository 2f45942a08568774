"""One place that turns errors into HTML pages or JSON bodies, never a traceback."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Flask, Response, jsonify, make_response, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import HTTPException

from ca_service.db import db
from ca_service.errors import CAError
from hsm.errors import DuplicateKeyLabel, HSMError, KeyNotFound

log = logging.getLogger(__name__)

_TITLES = {
    400: _l("Bad request"),
    401: _l("Not signed in"),
    403: _l("Not allowed"),
    404: _l("Not found"),
    405: _l("Method not allowed"),
    409: _l("Conflict"),
    413: _l("Too large"),
    415: _l("Unsupported content type"),
    423: _l("Account locked"),
    429: _l("Too many requests"),
    500: _l("Something went wrong"),
    503: _l("Service unavailable"),
}

# What a page says for Werkzeug's own errors (JSON keeps Werkzeug's English description).
_HTTP_MESSAGES = {
    400: _l("The request could not be understood. Reload the page and try again."),
    403: _l("You are not allowed to open this page."),
    404: _l("There is no such page. Check the address, or start again from the start page."),
    405: _l("This page cannot be used that way."),
    413: _l("The upload is too large."),
    429: _l("Too many requests in a short time. Wait a moment and try again."),
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
    title = str(_TITLES.get(status, _("Error")))
    return render_template("errors/error.html", status=status, title=title, message=message), status


def database_unavailable(exc: sa.exc.OperationalError) -> tuple[Response | str, int]:
    """Roll back and answer 503 for a database that went away (at any statement, or at the
    request's commit)."""
    db.session.rollback()
    log.error("database unavailable: %s", exc.orig)
    return error_response(
        503, "database_unavailable", _("The database is unavailable. Try again shortly.")
    )


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
            503, "hsm_unavailable", _("The signing device (HSM) is unavailable. Try again shortly.")
        )

    app.errorhandler(sa.exc.OperationalError)(database_unavailable)

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException) -> Response | HTTPException:
        if exc.code is None or exc.code < 400:
            return exc
        db.session.rollback()
        code = (exc.name or "error").lower().replace(" ", "_")
        description = exc.description
        if not wants_json() and description == type(exc).description:
            # Werkzeug's own English sentence: a page says it in the reader's language.
            description = str(_HTTP_MESSAGES.get(exc.code, _TITLES.get(exc.code, _("Error"))))
        response = make_response(
            error_response(exc.code, code, description or str(_TITLES.get(exc.code, _("Error"))))
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
        return error_response(
            500, "internal_error", _("An unexpected error happened; it was logged.")
        )
