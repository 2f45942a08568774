"""Revocation from the web pages: an officer (any reason, a hold and its release) and an employer
administrator (its own certificate, three reasons, the password again), each notifying the
employer by e-mail and SMS and visible in OCSP and on /verify at once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.x509 import ocsp
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ca_service.auth.models import User
from ca_service.authorities.service import ISSUING_SLUG
from ca_service.db import db
from ca_service.issuance.models import Application
from ca_service.models import Certificate
from ca_service.outbox.models import OutboxMessage
from ca_service.revocation.service import latest_crl, pending_crl_issuers
from tests.auth.flows import csrf_token
from tests.issuance.conftest import (  # noqa: F401  (fixtures used by name)
    EmployerAccount,
    MakeEmployer,
    employer_login,
    make_employer,
    make_officer,
    officer_client,
    seal_ca,
    trusted_seal_ca,
)
from tests.issuance.seal_factory import Authority
from tests.issuance.test_flow import complete_application, officer_post
from tests.revocation.ocsp_tools import OCSP_REQUEST, ca_certificates, ocsp_request


@dataclass(frozen=True)
class IssuedApplication:
    owner: EmployerAccount
    client: FlaskClient  # signed in as the owner
    application_id: int
    serial: str
    certificate: x509.Certificate


@pytest.fixture
def issued(
    app: Flask,
    make_employer: MakeEmployer,  # noqa: F811
    trusted_seal_ca: Authority,  # noqa: F811
    officer_client: Callable[..., FlaskClient],  # noqa: F811
) -> IssuedApplication:
    """An application approved (and issued) through the web pages."""
    owner = make_employer()
    client = employer_login(app.test_client(), owner)
    application_id = complete_application(client, owner, trusted_seal_ca)
    assert officer_post(officer_client(), application_id, "approve") == 302
    pem = client.get(f"/applications/{application_id}/certificate.pem")
    assert pem.status_code == 200
    certificate = x509.load_pem_x509_certificate(pem.data)
    return IssuedApplication(
        owner, client, application_id, format(certificate.serial_number, "x"), certificate
    )


def officer_revoke(
    officer: FlaskClient, issued: IssuedApplication, reason: str, **extra: str
) -> TestResponse:
    token = csrf_token(officer, f"/officer/applications/{issued.application_id}")
    return officer.post(
        f"/officer/certificates/{issued.serial}/revoke",
        data={"csrf_token": token, "reason": reason, **extra},
    )


def employer_revoke(issued: IssuedApplication, reason: str, password: str) -> TestResponse:
    path = f"/applications/{issued.application_id}"
    return issued.client.post(
        f"{path}/revoke",
        data={
            "csrf_token": csrf_token(issued.client, path),
            "reason": reason,
            "password": password,
        },
    )


def stored(app: Flask, serial: str) -> Certificate:
    with app.app_context():
        row = db.session.scalar(sa.select(Certificate).where(Certificate.serial == serial))
        assert row is not None
        db.session.expunge(row)
        return row


def ocsp_status(app: Flask, client: FlaskClient, issued: IssuedApplication) -> ocsp.OCSPCertStatus:
    _, issuing, _ = ca_certificates(app)
    response = client.post(
        "/ocsp", data=ocsp_request(issued.certificate, issuing), headers=OCSP_REQUEST
    )
    assert response.status_code == 200
    return ocsp.load_der_ocsp_response(response.data).certificate_status


def notices(app: Flask, serial: str) -> list[OutboxMessage]:
    with app.app_context():
        rows = db.session.scalars(
            sa.select(OutboxMessage)
            .where(OutboxMessage.subject.like(f"Your certificate {serial} %"))
            .order_by(OutboxMessage.id)
        ).all()
        db.session.expunge_all()
        return list(rows)


def test_officer_revokes_visible_at_once_and_employer_notified(
    app: Flask,
    client: FlaskClient,
    issued: IssuedApplication,
    officer_client: Callable[..., FlaskClient],  # noqa: F811
) -> None:
    officer = officer_client()
    review = officer.get(f"/officer/applications/{issued.application_id}").get_data(as_text=True)
    assert f"/officer/certificates/{issued.serial}/revoke" in review
    assert 'value="certificateHold"' in review
    assert ocsp_status(app, client, issued) is ocsp.OCSPCertStatus.GOOD

    response = officer_revoke(officer, issued, "keyCompromise")
    assert response.headers["Location"].endswith(f"/officer/applications/{issued.application_id}")
    row = stored(app, issued.serial)
    assert row.revoked_at is not None
    assert row.revocation_reason == "keyCompromise"

    # OCSP and the public page say so at once; the CRL is published or marked pending.
    assert ocsp_status(app, client, issued) is ocsp.OCSPCertStatus.REVOKED
    verify = client.get(f"/verify/{issued.serial}").get_data(as_text=True)
    assert "Revoked" in verify
    assert "keyCompromise" in verify
    with app.app_context():
        crl = x509.load_der_x509_crl(latest_crl(ISSUING_SLUG).der)
        listed = crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number)
        assert listed is not None or pending_crl_issuers()

    messages = notices(app, issued.serial)
    assert sorted(m.channel.value for m in messages) == ["email", "sms"]
    assert all(m.subject.endswith("was revoked: keyCompromise") for m in messages)
    assert {m.recipient for m in messages} == {
        f"hr-{issued.owner.number.lower()}@example.test",
        "+8613800138000",
    }

    # Both pages show the revocation; the employer's form is gone.
    page = issued.client.get(f"/applications/{issued.application_id}").get_data(as_text=True)
    assert "Revoked on" in page
    assert "/revoke" not in page
    review = officer.get(f"/officer/applications/{issued.application_id}").get_data(as_text=True)
    assert "Revoked on" in review

    # Revoking again is a conflict that says why, on the review page.
    again = officer_revoke(officer, issued, "superseded")
    assert again.status_code == 409
    assert "already revoked" in again.get_data(as_text=True)
    assert stored(app, issued.serial).revocation_reason == "keyCompromise"
    assert len(notices(app, issued.serial)) == 2


def test_hold_then_release(
    app: Flask,
    client: FlaskClient,
    issued: IssuedApplication,
    officer_client: Callable[..., FlaskClient],  # noqa: F811
) -> None:
    officer = officer_client()
    assert officer_revoke(officer, issued, "certificateHold").status_code == 302
    assert stored(app, issued.serial).revocation_reason == "certificateHold"
    assert ocsp_status(app, client, issued) is ocsp.OCSPCertStatus.REVOKED
    review = officer.get(f"/officer/applications/{issued.application_id}").get_data(as_text=True)
    assert "On hold since" in review
    assert 'value="removeFromCRL"' in review

    assert officer_revoke(officer, issued, "removeFromCRL").status_code == 302
    row = stored(app, issued.serial)
    assert row.revoked_at is None
    assert row.revocation_reason is None
    assert ocsp_status(app, client, issued) is ocsp.OCSPCertStatus.GOOD
    assert "Valid" in client.get(f"/verify/{issued.serial}").get_data(as_text=True)
    subjects = [m.subject for m in notices(app, issued.serial)]
    assert f"Your certificate {issued.serial} is valid again" in subjects

    # Releasing a certificate that is not on hold is a conflict.
    assert officer_revoke(officer, issued, "removeFromCRL").status_code == 409


def test_officer_checks(
    app: Flask,
    issued: IssuedApplication,
    officer_client: Callable[..., FlaskClient],  # noqa: F811
) -> None:
    # An officer belonging to the employer may not act on its certificate.
    insider = officer_client(employer_id=issued.owner.employer_id)
    response = officer_revoke(insider, issued, "keyCompromise")
    assert response.status_code == 403
    assert "another officer" in response.get_data(as_text=True)
    officer = officer_client()
    assert officer_revoke(officer, issued, "notAReason").status_code == 400
    future = officer_revoke(officer, issued, "keyCompromise", invalidity_date="2999-01-01T00:00")
    assert future.status_code == 400
    malformed = officer_revoke(officer, issued, "keyCompromise", invalidity_date="yesterday")
    assert malformed.status_code == 400
    assert "Key compromised since" in malformed.get_data(as_text=True)
    assert stored(app, issued.serial).revoked_at is None
    # Employers cannot use the officer's route; unknown serials are 404.
    employer_token = csrf_token(issued.client, f"/applications/{issued.application_id}")
    refused = issued.client.post(
        f"/officer/certificates/{issued.serial}/revoke",
        data={"csrf_token": employer_token, "reason": "keyCompromise"},
    )
    assert refused.status_code == 403
    token = csrf_token(officer, f"/officer/applications/{issued.application_id}")
    unknown = officer.post(
        "/officer/certificates/abcdef0123/revoke",
        data={"csrf_token": token, "reason": "keyCompromise"},
    )
    assert unknown.status_code == 404
    # No CSRF token, no revocation.
    bare = officer.post(
        f"/officer/certificates/{issued.serial}/revoke", data={"reason": "unspecified"}
    )
    assert bare.status_code == 400
    assert stored(app, issued.serial).revoked_at is None


def test_officer_invalidity_date_is_recorded(
    app: Flask,
    issued: IssuedApplication,
    officer_client: Callable[..., FlaskClient],  # noqa: F811
) -> None:
    response = officer_revoke(
        officer_client(), issued, "keyCompromise", invalidity_date="2024-05-01T08:30"
    )
    assert response.status_code == 302
    row = stored(app, issued.serial)
    assert row.invalidity_date is not None
    assert row.invalidity_date.isoformat().startswith("2024-05-01T08:30")


def test_employer_revokes_own_certificate(app: Flask, issued: IssuedApplication) -> None:
    page = issued.client.get(f"/applications/{issued.application_id}").get_data(as_text=True)
    assert f"/applications/{issued.application_id}/revoke" in page
    assert 'value="certificateHold"' not in page

    response = employer_revoke(issued, "cessationOfOperation", issued.owner.password)
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/applications/{issued.application_id}")
    row = stored(app, issued.serial)
    assert row.revocation_reason == "cessationOfOperation"
    assert "Revoked" in issued.client.get(f"/verify/{issued.serial}").get_data(as_text=True)
    assert sorted(m.channel.value for m in notices(app, issued.serial)) == ["email", "sms"]

    again = employer_revoke(issued, "keyCompromise", issued.owner.password)
    assert again.status_code == 409
    assert "already revoked" in again.get_data(as_text=True)


def test_employer_wrong_password_counts_and_revokes_nothing(
    app: Flask, issued: IssuedApplication
) -> None:
    response = employer_revoke(issued, "keyCompromise", "not my password at all")
    assert response.status_code == 401
    assert "Wrong username or password" in response.get_data(as_text=True)
    assert stored(app, issued.serial).revoked_at is None
    with app.app_context():
        user = db.session.get(User, issued.owner.user_id)
        assert user is not None
        assert user.failed_logins == 1
    assert notices(app, issued.serial) == []


def test_employer_reason_and_ownership(
    app: Flask,
    make_employer: MakeEmployer,  # noqa: F811
    issued: IssuedApplication,
) -> None:
    held = employer_revoke(issued, "certificateHold", issued.owner.password)
    assert held.status_code == 400
    assert "contact the certification authority" in held.get_data(as_text=True)
    no_password = employer_revoke(issued, "keyCompromise", "")
    assert no_password.status_code == 400
    assert "Your current password: This field is required." in no_password.get_data(as_text=True)
    assert stored(app, issued.serial).revoked_at is None

    other = make_employer()
    intruder = employer_login(app.test_client(), other)
    path = f"/applications/{issued.application_id}"
    token = csrf_token(intruder, "/applications/")
    response = intruder.post(
        f"{path}/revoke",
        data={"csrf_token": token, "reason": "keyCompromise", "password": other.password},
    )
    assert response.status_code == 404
    assert stored(app, issued.serial).revoked_at is None


def test_employer_cannot_revoke_before_issuance(
    app: Flask,
    make_employer: MakeEmployer,  # noqa: F811
    trusted_seal_ca: Authority,  # noqa: F811
) -> None:
    owner = make_employer()
    client = employer_login(app.test_client(), owner)
    application_id = complete_application(client, owner, trusted_seal_ca)
    path = f"/applications/{application_id}"
    response = client.post(
        f"{path}/revoke",
        data={
            "csrf_token": csrf_token(client, path),
            "reason": "keyCompromise",
            "password": owner.password,
        },
    )
    assert response.status_code == 404
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        assert application.certificate_id is None


def test_the_application_shows_what_became_of_its_certificate(
    app: Flask,
    issued: IssuedApplication,
    officer_client: Callable[..., FlaskClient],  # noqa: F811
) -> None:
    page_path = f"/applications/{issued.application_id}"
    page = issued.client.get(page_path).get_data(as_text=True)
    assert f"Application {issued.application_id} — issued" in page
    assert f"{page_path}/revoke" in page

    # Revoked: the application, its list and the officer's page say so, and offer no Revoke.
    assert employer_revoke(issued, "cessationOfOperation", issued.owner.password).status_code == 302
    page = issued.client.get(page_path).get_data(as_text=True)
    assert f"Application {issued.application_id} — certificate revoked" in page
    assert f"{page_path}/revoke" not in page
    assert "certificate revoked" in issued.client.get("/applications/").get_data(as_text=True)
    officer = officer_client()
    review = officer.get(f"/officer/applications/{issued.application_id}").get_data(as_text=True)
    assert "— certificate revoked" in review
    assert f"/officer/certificates/{issued.serial}/revoke" not in review


def test_an_expired_certificate_is_shown_expired_and_offers_no_revoke(
    app: Flask,
    issued: IssuedApplication,
    officer_client: Callable[..., FlaskClient],  # noqa: F811
) -> None:
    with app.app_context():
        row = db.session.scalar(sa.select(Certificate).where(Certificate.serial == issued.serial))
        assert row is not None
        row.not_before = row.not_before - dt.timedelta(days=800)
        row.not_after = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        db.session.commit()
    page_path = f"/applications/{issued.application_id}"
    page = issued.client.get(page_path).get_data(as_text=True)
    assert f"Application {issued.application_id} — certificate expired" in page
    assert f"{page_path}/revoke" not in page
    assert "it needs no revocation" in page
    review = officer_client().get(f"/officer/applications/{issued.application_id}")
    text = review.get_data(as_text=True)
    assert "— certificate expired" in text
    assert f"/officer/certificates/{issued.serial}/revoke" not in text
