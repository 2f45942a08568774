"""Revocation through the JSON API: an officer by serial (any reason, a hold and its release),
an employer administrator its own application's certificate with its password."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.models import Role, User
from ca_service.db import db
from ca_service.outbox.models import OutboxMessage
from ca_service.revocation.portal import OFFICER_REASONS
from tests.api.conftest import (
    API,
    ApiEmployer,
    bearer,
    error_of,
    request_token,
    submitted_application,
    token_of,
)
from tests.auth.flows import MakeOfficer, code_at
from tests.issuance.seal_factory import Authority


@dataclass(frozen=True)
class Issued:
    employer: ApiEmployer
    application_id: int
    serial: str


@pytest.fixture
def issued(
    client: FlaskClient,
    api_employer: Callable[[], ApiEmployer],
    officer_token: Callable[[], str],
    trusted_seal_ca: Authority,
) -> Issued:
    """An application submitted and approved (issued at once) through the API."""
    employer = api_employer()
    application_id = submitted_application(client, employer, trusted_seal_ca)
    approved = client.post(
        f"{API}/review/{application_id}/approve", headers=bearer(officer_token())
    )
    assert approved.status_code == 200, approved.get_data(as_text=True)
    serial: str = approved.get_json()["certificate"]["serial"]
    return Issued(employer, application_id, serial)


def agency_token(
    client: FlaskClient, make_officer: MakeOfficer, role: Role, employer_id: int | None = None
) -> str:
    officer = make_officer(role)
    if employer_id is not None:
        app: Flask = client.application
        with app.app_context():
            row = db.session.get(User, officer.user.id)
            assert row is not None
            row.employer_id = employer_id
            db.session.commit()
    response = request_token(client, officer.user.username, officer.password, code_at(officer.seed))
    return token_of(response)


def status_of(client: FlaskClient, serial: str) -> dict[str, str | None]:
    body: dict[str, str | None] = client.get(f"{API}/certificates/{serial}/status").get_json()
    return body


def notice_channels(app: Flask, serial: str) -> list[str]:
    with app.app_context():
        channels = db.session.scalars(
            sa.select(OutboxMessage.channel).where(
                OutboxMessage.subject == f"Your certificate {serial} was revoked: keyCompromise"
            )
        ).all()
    return sorted(c.value for c in channels)


def test_officer_revokes_by_serial(
    app: Flask, client: FlaskClient, issued: Issued, officer_token: Callable[[], str]
) -> None:
    officer = bearer(officer_token())
    path = f"{API}/review/certificates/{issued.serial}/revoke"
    response = client.post(
        path,
        json={"reason": "keyCompromise", "invalidity_date": "2024-05-01T08:30:00Z"},
        headers=officer,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["certificate"]["serial"] == issued.serial
    assert body["certificate"]["revocation_reason"] == "keyCompromise"
    assert body["certificate"]["revoked_at"] is not None
    assert set(body) == {"certificate", "crl_number", "crl_published_at"}
    assert status_of(client, issued.serial)["status"] == "revoked"
    assert notice_channels(app, issued.serial) == ["email", "sms"]
    # The employer sees it on its application too.
    application = client.get(
        f"{API}/applications/{issued.application_id}", headers=issued.employer.headers
    ).get_json()
    assert application["certificate"]["revocation_reason"] == "keyCompromise"

    again = client.post(path, json={"reason": "superseded"}, headers=officer)
    assert again.status_code == 409
    assert error_of(again)["code"] == "conflict"
    assert "already revoked" in error_of(again)["message"]
    assert notice_channels(app, issued.serial) == ["email", "sms"]


def test_hold_and_release(
    client: FlaskClient, issued: Issued, officer_token: Callable[[], str]
) -> None:
    officer = bearer(officer_token())
    path = f"{API}/review/certificates/{issued.serial}/revoke"
    held = client.post(path, json={"reason": "certificateHold"}, headers=officer)
    assert held.status_code == 200
    assert status_of(client, issued.serial)["revocation_reason"] == "certificateHold"
    released = client.post(path, json={"reason": "removeFromCRL"}, headers=officer)
    assert released.status_code == 200
    assert released.get_json()["certificate"]["revoked_at"] is None
    assert status_of(client, issued.serial)["status"] == "valid"


def test_officer_errors(
    client: FlaskClient,
    issued: Issued,
    officer_token: Callable[[], str],
    make_officer: MakeOfficer,
) -> None:
    path = f"{API}/review/certificates/{issued.serial}/revoke"
    body = {"reason": "keyCompromise"}
    no_token = client.post(path, json=body)
    assert no_token.status_code == 401
    assert no_token.headers["WWW-Authenticate"].startswith("Bearer")
    employer = client.post(path, json=body, headers=issued.employer.headers)
    assert employer.status_code == 403
    auditor = client.post(
        path, json=body, headers=bearer(agency_token(client, make_officer, Role.AUDITOR))
    )
    assert auditor.status_code == 403
    insider_token = agency_token(
        client, make_officer, Role.RA_OFFICER, employer_id=issued.employer.account.employer_id
    )
    insider = client.post(path, json=body, headers=bearer(insider_token))
    assert insider.status_code == 403
    assert "another officer" in error_of(insider)["message"]

    officer = bearer(officer_token())
    for bad in (
        {},
        {"reason": "lost"},
        {"reason": "keyCompromise", "invalidity_date": "yesterday"},
        {"reason": "keyCompromise", "invalidity_date": "2999-01-01T00:00:00Z"},
        {"reason": "keyCompromise", "extra": 1},
    ):
        response = client.post(path, json=bad, headers=officer)
        assert response.status_code == 400, bad
    unknown = client.post(
        f"{API}/review/certificates/abcdef0123/revoke", json=body, headers=officer
    )
    assert unknown.status_code == 404
    assert status_of(client, issued.serial)["status"] == "valid"


def test_ca_admin_may_revoke(
    client: FlaskClient, issued: Issued, make_officer: MakeOfficer
) -> None:
    admin = bearer(agency_token(client, make_officer, Role.CA_ADMIN))
    response = client.post(
        f"{API}/review/certificates/{issued.serial}/revoke",
        json={"reason": "privilegeWithdrawn"},
        headers=admin,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert status_of(client, issued.serial)["status"] == "revoked"


def test_employer_revokes_own_certificate(app: Flask, client: FlaskClient, issued: Issued) -> None:
    path = f"{API}/applications/{issued.application_id}/revoke"
    response = client.post(
        path,
        json={"reason": "keyCompromise", "password": issued.employer.account.password},
        headers=issued.employer.headers,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["certificate"]["revocation_reason"] == "keyCompromise"
    assert status_of(client, issued.serial)["status"] == "revoked"
    assert notice_channels(app, issued.serial) == ["email", "sms"]
    again = client.post(
        path,
        json={"reason": "superseded", "password": issued.employer.account.password},
        headers=issued.employer.headers,
    )
    assert again.status_code == 409


def test_employer_errors(
    app: Flask,
    client: FlaskClient,
    issued: Issued,
    api_employer: Callable[[], ApiEmployer],
    officer_token: Callable[[], str],
) -> None:
    path = f"{API}/applications/{issued.application_id}/revoke"
    password = issued.employer.account.password
    assert (
        client.post(path, json={"reason": "keyCompromise", "password": password}).status_code == 401
    )

    wrong = client.post(
        path,
        json={"reason": "keyCompromise", "password": "not the password"},
        headers=issued.employer.headers,
    )
    assert wrong.status_code == 401
    assert error_of(wrong)["code"] == "authentication_failed"
    with app.app_context():
        user = db.session.get(User, issued.employer.account.user_id)
        assert user is not None
        assert user.failed_logins == 1

    hold = client.post(
        path,
        json={"reason": "certificateHold", "password": password},
        headers=issued.employer.headers,
    )
    assert hold.status_code == 400
    assert "contact the certification authority" in error_of(hold)["message"]
    missing = client.post(path, json={"reason": "keyCompromise"}, headers=issued.employer.headers)
    assert missing.status_code == 400
    assert "'password'" in error_of(missing)["message"]

    other = api_employer()
    intruder = client.post(
        path,
        json={"reason": "keyCompromise", "password": other.account.password},
        headers=other.headers,
    )
    assert intruder.status_code == 404
    officer = client.post(
        path,
        json={"reason": "keyCompromise", "password": password},
        headers=bearer(officer_token()),
    )
    assert officer.status_code == 403
    assert status_of(client, issued.serial)["status"] == "valid"


def test_openapi_lists_every_officer_reason(client: FlaskClient) -> None:
    document = client.get(f"{API}/openapi.json").get_json()
    reason = document["components"]["schemas"]["OfficerRevocation"]["properties"]["reason"]
    assert reason["enum"] == list(OFFICER_REASONS)
