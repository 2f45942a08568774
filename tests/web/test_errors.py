"""Outages and errors become clear pages or JSON, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask, redirect
from werkzeug.wrappers import Response as WerkzeugResponse

from hsm import HSMUnavailable, SessionLost


def _add_failing_route(app: Flask, exc: BaseException) -> None:
    def fail() -> str:
        raise exc

    app.add_url_rule("/_test/fail", "test_fail", fail)


@pytest.mark.parametrize(
    "exc", [HSMUnavailable("token did not answer"), SessionLost("ca", "SessionHandleInvalid")]
)
def test_hsm_outage_is_503(app: Flask, exc: BaseException) -> None:
    _add_failing_route(app, exc)
    client = app.test_client()
    page = client.get("/_test/fail")
    assert page.status_code == 503
    assert b"signing device (HSM) is unavailable" in page.data
    api = client.get("/_test/fail", headers={"Accept": "application/json"})
    assert api.status_code == 503
    assert api.get_json()["error"]["code"] == "hsm_unavailable"


def test_database_outage_is_503(app: Flask) -> None:
    _add_failing_route(
        app, sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    )
    page = app.test_client().get("/_test/fail")
    assert page.status_code == 503
    assert b"database is unavailable" in page.data


def test_a_database_failing_at_the_commit_is_503_and_keeps_nothing(app: Flask) -> None:
    from ca_service.audit.models import AuditEvent
    from ca_service.audit.service import record_event
    from ca_service.db import db
    from tests.statements import failing_commit

    def write_and_redirect() -> WerkzeugResponse:
        record_event("tests", "test.commit", "target", {})
        return redirect("/elsewhere")

    app.add_url_rule("/_test/write", "test_write", write_and_redirect)
    client = app.test_client()
    with failing_commit(app) as failed:
        page = client.get("/_test/write", headers={"Accept-Language": "es"})
        api = client.get("/_test/write", headers={"Accept": "application/json"})
    assert len(failed) == 2
    assert page.status_code == api.status_code == 503
    assert "La base de datos no está disponible" in page.get_data(as_text=True)
    assert api.get_json()["error"]["code"] == "database_unavailable"
    for response in (page, api):
        assert "Location" not in response.headers  # not the redirect it would have been
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Frame-Options"] == "DENY"  # the security headers stay
    with app.app_context():
        assert db.session.scalars(sa.select(AuditEvent.action)).all() == []
    assert client.get("/_test/write").status_code == 302  # the database is back


def test_unexpected_error_is_a_500_page_without_traceback(app: Flask) -> None:
    _add_failing_route(app, RuntimeError("secret internals"))
    app.testing = False  # as in production: the handler, not the debugger, answers
    page = app.test_client().get("/_test/fail")
    assert page.status_code == 500
    assert b"secret internals" not in page.data
    assert b"Traceback" not in page.data


def test_unknown_page_is_404(app: Flask) -> None:
    page = app.test_client().get("/no/such/page")
    assert page.status_code == 404
    assert b"Not found" in page.data


def test_security_headers(app: Flask) -> None:
    response = app.test_client().get("/auth/login")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'self'
    assert "Strict-Transport-Security" not in response.headers  # meaningless over plain HTTP


def test_hsts_over_tls(app: Flask) -> None:
    response = app.test_client().get("/auth/login", base_url="https://ca.test")
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert (
        app.test_client()
        .get("/pki/", base_url="https://ca.test")
        .headers["Strict-Transport-Security"]
    )


def test_no_page_carries_an_inline_script() -> None:
    # The CSP (default-src 'self', no 'unsafe-inline' for scripts) would block one anyway.
    templates = Path(__file__).resolve().parents[2] / "templates"
    offenders = [
        str(path.relative_to(templates))
        for path in templates.rglob("*.html")
        if re.search(r"<script(?![^>]*\bsrc=)[^>]*>", path.read_text(encoding="utf-8"))
        or re.search(r"\son[a-z]+\s*=", path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_no_page_carries_an_inline_style() -> None:
    # The CSP's style-src is 'self' only: the look lives in ca_service/static/css/app.css.
    templates = Path(__file__).resolve().parents[2] / "templates"
    offenders = [
        str(path.relative_to(templates))
        for path in templates.rglob("*.html")
        if re.search(r"<style\b", path.read_text(encoding="utf-8"), re.I)
        or re.search(r"\sstyle\s*=", path.read_text(encoding="utf-8"), re.I)
    ]
    assert offenders == []


def test_the_stylesheet_is_served_and_no_inline_style_is_allowed(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/auth/login")
    assert "'unsafe-inline'" not in page.headers["Content-Security-Policy"]
    assert "style-src 'self';" in page.headers["Content-Security-Policy"]
    assert b'href="/static/css/app.css"' in page.data
    with client.get("/static/css/app.css") as css:
        assert css.status_code == 200
        assert css.mimetype == "text/css"
        assert b":focus-visible" in css.get_data()
