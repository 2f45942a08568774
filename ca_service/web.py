"""Cross-cutting web concerns: the commit boundary, security headers, the home page."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    make_response,
    redirect,
    request,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.routing import IntegerConverter, Map
from werkzeug.wrappers import Response as WerkzeugResponse

from ca_service.db import db
from ca_service.errors import ValidationError

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
    # Most requests carry no session cookie (API calls, OCSP, CRLs): Flask's interface still
    # builds a signing serializer to open none, and works out every cookie attribute to set
    # none. The same answers without that work.
    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        view = app.view_functions.get(request.endpoint or "")
        if getattr(view, "stateless", False):
            return
        if not session and not session.modified:  # nothing to set, nothing to delete
            if session.accessed:
                response.vary.add("Cookie")
            return
        if not session.modified and _loads_into_a_page(request):
            # A refresh only (the same content, a later expiry) from a file a page loads: an
            # iframe's PDF, a scan, the style sheet. Such loads run beside the page's own
            # requests, and one answered after a form's POST would put back the cookie from
            # before it, dropping what the POST stored (its flash message, a sign-in). The
            # page's own requests refresh the expiry.
            if session.accessed:
                response.vary.add("Cookie")
            return
        super().save_session(app, session, response)


# What a browser says it loads (Fetch Metadata): a page or a frame the user navigates, or a
# script's fetch. Everything else is a file inside a page. Clients that send no such header
# (the CLI, curl, tests) are treated as loading pages.
_PAGE_DESTINATIONS = frozenset({"", "document", "empty"})


def _loads_into_a_page(request: Request) -> bool:
    if request.endpoint == "static":
        return True
    return request.headers.get("Sec-Fetch-Dest", "") not in _PAGE_DESTINATIONS


@bp.get("/")
def index() -> WerkzeugResponse:
    if current_user.is_authenticated:
        return redirect(url_for("auth.home"))
    return redirect(url_for("auth.login"))


# What a response says about its own content; a 503 that replaces it drops them.
_ENTITY_HEADERS = frozenset(
    {
        "cache-control",
        "content-disposition",
        "content-length",
        "content-type",
        "etag",
        "expires",
        "last-modified",
        "location",
    }
)


def _commit_boundary(response: Response) -> Response:
    # The one transaction boundary of a request: services only flush. A successful response
    # commits; an error response rolls back (error handlers have already rolled back too).
    if response.status_code >= 400:
        db.session.rollback()
        return response
    try:
        db.session.commit()
    except sa.exc.OperationalError as exc:
        # The COMMIT itself failed (the server went away): nothing of the request is kept,
        # so the success it was about to report would be false. The same 503 as for a
        # failure at any other statement, not a 500: this runs after the error handlers, so
        # it hands the error to the app's handler for it itself.
        failed = make_response(current_app.handle_user_exception(exc))
        for name, value in response.headers.items():
            if name.lower() not in _ENTITY_HEADERS:
                failed.headers.add(name, value)
        failed.headers["Cache-Control"] = "no-store"
        return failed
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


_SECURITY_HEADER_KEYS = tuple((name.lower(), name, value) for name, value in SECURITY_HEADERS)


def _security_headers(response: Response) -> Response:
    # As ``headers.setdefault`` for each, with one pass over the response's headers.
    headers = response.headers
    present = {name.lower() for name, _ in headers}
    for key, name, value in _SECURITY_HEADER_KEYS:
        if key not in present:
            headers.add(name, value)
    if request.is_secure and HSTS[0].lower() not in present:
        headers.add(*HSTS)
    return response


# The largest row id (PostgreSQL's INTEGER; SQLite's are wider but never this large here).
MAX_ROW_ID = 2**31 - 1


class RowIdConverter(IntegerConverter):
    """``<int:...>`` in every route: a row id, so at most MAX_ROW_ID. A larger number is a 404
    like any unknown id, never a database error (PostgreSQL refuses it as out of range)."""

    def __init__(
        self,
        map: Map,
        fixed_digits: int = 0,
        min: int | None = None,
        max: int | None = None,
        signed: bool = False,
    ) -> None:
        super().__init__(
            map,
            fixed_digits=fixed_digits,
            min=min,
            max=MAX_ROW_ID if max is None else max,
            signed=signed,
        )


def refuse_nul(value: object) -> None:
    """Refuse a NUL character anywhere in request text (no field holds one, and PostgreSQL
    refuses to store or compare it: a database error, not the client's clear 400).

    :raises ValidationError: ``value`` (a string, or lists and dicts of them) holds one.
    """
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError(
                _("The request contains a NUL character, which no field accepts.")
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key)
            refuse_nul(item)
    elif isinstance(value, list):
        for item in value:
            refuse_nul(item)


def _refuse_nul_in_request() -> None:
    # Query and form fields, and uploaded files' names; JSON bodies in ``api.http.json_body``.
    for _name, values in request.args.lists():
        refuse_nul(values)
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for _name, values in request.form.lists():
            refuse_nul(values)
        for upload in request.files.values():
            refuse_nul(upload.filename or "")


def init_app(app: Flask) -> None:
    # Before the feature packages add their routes: each ``<int:…>`` is then a row id.
    app.url_map.converters["int"] = RowIdConverter
    app.before_request(_refuse_nul_in_request)
    app.session_interface = _SessionInterface()
    app.register_blueprint(bp)
    app.after_request(_commit_boundary)
    app.after_request(_security_headers)
