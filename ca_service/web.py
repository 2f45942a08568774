"""Cross-cutting web concerns: the commit boundary, security headers, the home page."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Blueprint, Flask, Response, redirect, request, url_for
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_login import current_user
from werkzeug.wrappers import Response as WerkzeugResponse

from ca_service.db import db

bp = Blueprint("web", __name__)
V = TypeVar("V", bound=Callable[..., object])


def stateless(view: V) -> V:
    """Mark a public view whose response is the same for everyone (CA certificates, CRLs, OCSP).

    Its response never sets a cookie nor says ``Vary: Cookie``, so CDNs and HTTP caches can keep
    it. (Flask adds that header whenever anything touched the session, and Flask-Login touches
    it after every request.)
    """
    view.stateless = True  # type: ignore[attr-defined]
    return view


class _SessionInterface(SecureCookieSessionInterface):
    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        view = app.view_functions.get(request.endpoint or "")
        if getattr(view, "stateless", False):
            return
        super().save_session(app, session, response)


@bp.get("/")
def index() -> WerkzeugResponse:
    if current_user.is_authenticated:
        return redirect(url_for("auth.home"))
    return redirect(url_for("auth.login"))


def _commit_boundary(response: Response) -> Response:
    # The one transaction boundary of a request: services only flush. A successful response
    # commits; an error response rolls back (error handlers have already rolled back too).
    if response.status_code < 400:
        db.session.commit()
    else:
        db.session.rollback()
    return response


# On every response, including those the OCSP fast path sends without Flask.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'",
    ),
)


# Sent on answers over TLS only (RFC 6797 ignores it over plain HTTP): browsers then refuse
# plain HTTP to this host for a year, so a stripped link cannot lead to a password form.
HSTS = ("Strict-Transport-Security", "max-age=31536000")


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS:
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault(*HSTS)
    return response


def init_app(app: Flask) -> None:
    app.session_interface = _SessionInterface()
    app.register_blueprint(bp)
    app.after_request(_commit_boundary)
    app.after_request(_security_headers)
