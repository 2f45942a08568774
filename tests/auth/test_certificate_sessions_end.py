"""Tokens and web sessions obtained by certificate login end when that certificate is revoked
(any reason) or expires; those obtained with a password do not depend on a certificate."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth.models import ApiToken
from ca_service.db import db, utcnow
from ca_service.models import Certificate
from tests.api.conftest import API, bearer, error_of, request_token, token_of
from tests.auth.certificates import (  # noqa: F401  (fixtures used by name)
    AgencyCertificate,
    IssueFor,
    agency_certificate,
    sign,
)
from tests.auth.test_certificate_login import NONCE, answer, new_challenge
from tests.issuance.conftest import make_employer  # noqa: F401
from tests.revocation.test_blocked_keys import revoke


def certificate_token(client: FlaskClient, issued: AgencyCertificate) -> str:
    nonce = new_challenge(client)
    response = answer(
        client, nonce, issued.pem, sign(issued.key, f"ca-service login challenge: {nonce}")
    )
    return token_of(response)


def certificate_browser(app: Flask, issued: AgencyCertificate) -> FlaskClient:
    """A browser signed in by a challenge that the certificate's key answered elsewhere."""
    browser, signer = app.test_client(), app.test_client()
    match = NONCE.search(browser.get("/auth/certificate").get_data(as_text=True))
    assert match
    nonce = match.group(1)
    done = answer(
        signer, nonce, issued.pem, sign(issued.key, f"ca-service login challenge: {nonce}")
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    assert browser.get("/auth/certificate").status_code == 302
    assert browser.get("/auth/home").status_code == 200
    return browser


def expire(app: Flask, issued: AgencyCertificate) -> None:
    """Move the certificate's validity into the past, as if its notAfter had passed."""
    with app.app_context():
        row = db.session.scalar(sa.select(Certificate).where(Certificate.serial == issued.serial))
        assert row is not None
        now = utcnow()
        row.not_before = now - dt.timedelta(days=400)
        row.not_after = now - dt.timedelta(minutes=1)
        db.session.commit()


@pytest.mark.parametrize("reason", ["superseded", "keyCompromise", "certificateHold"])
def test_a_certificate_token_ends_when_its_certificate_is_revoked(
    app: Flask,
    client: FlaskClient,
    agency_certificate: IssueFor,  # noqa: F811
    reason: str,
) -> None:
    issued = agency_certificate()
    token = certificate_token(client, issued)
    # A password token of the same account is not tied to the certificate.
    password_token = token_of(
        request_token(client, issued.account.username, issued.account.password)
    )
    with app.app_context():
        row = db.session.scalar(sa.select(ApiToken).where(ApiToken.certificate_id.is_not(None)))
        assert row is not None
        assert row.certificate_not_after is not None
    assert client.get(f"{API}/applications", headers=bearer(token)).status_code == 200
    revoke(app, issued, reason)
    refused = client.get(f"{API}/applications", headers=bearer(token))
    assert refused.status_code == 401
    assert "was revoked on" in error_of(refused)["message"]
    assert client.get(f"{API}/applications", headers=bearer(password_token)).status_code == 200


def test_a_certificate_token_ends_when_its_certificate_expires(
    app: Flask,
    client: FlaskClient,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    token = certificate_token(client, issued)
    assert client.get(f"{API}/applications", headers=bearer(token)).status_code == 200
    expire(app, issued)
    refused = client.get(f"{API}/applications", headers=bearer(token))
    assert refused.status_code == 401
    assert "expired on" in error_of(refused)["message"]


def test_a_certificate_token_ends_at_the_not_after_it_was_issued_with(
    app: Flask,
    client: FlaskClient,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    # The notAfter noted on the token is enough by itself (a tax certificate has no row here).
    issued = agency_certificate()
    token = certificate_token(client, issued)
    with app.app_context():
        db.session.execute(
            sa.update(ApiToken).values(
                certificate_id=None, certificate_not_after=utcnow() - dt.timedelta(seconds=1)
            )
        )
        db.session.commit()
    refused = client.get(f"{API}/applications", headers=bearer(token))
    assert refused.status_code == 401
    assert "expired on" in error_of(refused)["message"]


def test_a_certificate_web_session_ends_when_its_certificate_is_revoked(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    browser = certificate_browser(app, issued)
    revoke(app, issued, "superseded")
    ended = browser.get("/auth/home")
    assert ended.status_code == 302
    assert ended.headers["Location"].endswith("/auth/login")
    page = browser.get("/auth/login").get_data(as_text=True)
    assert "was revoked on" in page
    # Signed out for good: the next page asks to sign in again.
    again = browser.get("/auth/home")
    assert again.status_code == 302
    assert "/auth/login" in again.headers["Location"]
    with app.app_context():
        actions = db.session.scalars(sa.select(AuditEvent.action)).all()
    assert "auth.certificate_session_ended" in actions


def test_a_certificate_web_session_ends_when_its_certificate_expires(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    browser = certificate_browser(app, issued)
    expire(app, issued)
    ended = browser.get("/auth/home")
    assert ended.status_code == 302
    assert ended.headers["Location"].endswith("/auth/login")
    assert "expired on" in browser.get("/auth/login").get_data(as_text=True)
    assert browser.get("/auth/home").status_code == 302
