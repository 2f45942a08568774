"""Renewal (re-key) before and after expiry: issued at once when nothing changed, to an officer
or back to the employer when something did, refused outside the window, for the same key,
another subject, a revoked or already renewed certificate, and once only when raced."""

from __future__ import annotations

import datetime as dt
import threading
import traceback

import sqlalchemy as sa
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.models import User
from ca_service.db import db, utcnow
from ca_service.employers.models import Employer
from ca_service.errors import Conflict
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import renewal, service
from ca_service.issuance.models import (
    Application,
)
from ca_service.models import Certificate
from ca_service.revocation.blocked_keys import spki_sha256
from ca_service.revocation.models import BlockedKey
from tests.api.conftest import API, bearer, error_of, request_token, token_of
from tests.auth.flows import csrf_token
from tests.issuance.conftest import (
    EmployerAccount,
    Issued,
    MakeEmployer,
    csr_pem,
    employer_login,
    issue_employer_certificate,
)
from tests.statements import counted_statements


def _token(client: FlaskClient, account: EmployerAccount) -> dict[str, str]:
    return bearer(token_of(request_token(client, account.username, account.password)))


def _renew(
    client: FlaskClient, headers: dict[str, str], serial: str, csr: str, **flags: bool
) -> tuple[int, dict[str, object]]:
    response = client.post(
        f"{API}/certificates/{serial}/renewal", json={"csr_pem": csr, **flags}, headers=headers
    )
    return response.status_code, response.get_json()


def _row(app: Flask, serial: str) -> Certificate:
    with app.app_context():
        row = db.session.scalar(sa.select(Certificate).where(Certificate.serial == serial))
        assert row is not None
        db.session.expunge(row)
        return row


def test_renewal_inside_the_window_is_issued_at_once_and_only_the_newest_renews(
    app: Flask, client: FlaskClient, issued: Issued
) -> None:
    with time_machine.travel(issued.not_after - dt.timedelta(days=30), tick=True):
        headers = _token(client, issued.account)
        info = client.get(f"{API}/certificates/{issued.serial}/renewal-info").get_json()
        assert info["state"] == "due"
        assert info["due"] is True
        assert info["days_left"] in (29, 30)
        new_key = ec.generate_private_key(ec.SECP256R1())
        status, body = _renew(client, headers, issued.serial, csr_pem(new_key))
        assert status == 201, body
        new = x509.load_pem_x509_certificate(str(body["certificate_pem"]).encode())
        assert new.public_key().public_numbers() == new_key.public_key().public_numbers()
        new_serial = f"{new.serial_number:x}"
        assert new_serial != issued.serial
        stored = _row(app, new_serial)
        assert stored.renews_id == issued.certificate_id
        assert _row(app, issued.serial).revoked_at is None  # valid until it expires
        # The old one now says renewed, and cannot be renewed again; the new one is not due.
        info = client.get(f"{API}/certificates/{issued.serial}/renewal-info").get_json()
        assert info["state"] == "renewed"
        assert info["renewed_by"] == new_serial
        again = ec.generate_private_key(ec.SECP256R1())
        status, body = _renew(client, headers, issued.serial, csr_pem(again))
        assert status == 409
        assert "already renewed" in str(body["error"])
        status, body = _renew(client, headers, new_serial, csr_pem(again))
        assert status == 409
        assert "can be renewed from" in str(body["error"])


def test_renewal_refusals(app: Flask, client: FlaskClient, issued: Issued) -> None:
    headers = _token(client, issued.account)
    fresh = csr_pem(ec.generate_private_key(ec.SECP256R1()))
    status, body = _renew(client, headers, issued.serial, fresh)
    assert status == 409
    assert "can be renewed from" in str(body["error"])
    with time_machine.travel(issued.not_after - dt.timedelta(days=10), tick=True):
        headers = _token(client, issued.account)
        status, body = _renew(client, headers, issued.serial, csr_pem(issued.key))
        assert status == 400
        assert "new key pair" in str(body["error"])
        other = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "91110000XXXXXXXX")])
        key = ec.generate_private_key(ec.SECP256R1())
        status, body = _renew(client, headers, issued.serial, csr_pem(key, other))
        assert status == 400
        assert "another organisation" in str(body["error"])
        compromised = ec.generate_private_key(ec.SECP256R1())
        with app.app_context():
            db.session.add(
                BlockedKey(
                    spki_sha256=spki_sha256(compromised.public_key()),
                    certificate_id=issued.certificate_id,
                    reason="keyCompromise",
                    blocked_at=utcnow(),
                )
            )
            db.session.commit()
        status, body = _renew(client, headers, issued.serial, csr_pem(compromised))
        assert status == 409
        assert body["error"]["code"] == "key_blocked"
        status, body = _renew(client, headers, issued.serial, "not a csr")
        assert status == 400
        status, body = _renew(client, headers, "ff" * 30, fresh)
        assert status == 404
        # Nothing was half-written by the refusals.
        with app.app_context():
            assert (
                db.session.scalar(
                    sa.select(sa.func.count())
                    .select_from(Application)
                    .where(Application.renews_id == issued.certificate_id)
                )
                == 0
            )


def test_supersede_revokes_the_old_certificate(
    app: Flask, client: FlaskClient, issued: Issued
) -> None:
    with time_machine.travel(issued.not_after - dt.timedelta(days=5), tick=True):
        headers = _token(client, issued.account)
        key = ec.generate_private_key(ec.SECP256R1())
        status, body = _renew(client, headers, issued.serial, csr_pem(key), supersede=True)
        assert status == 201, body
        assert _row(app, issued.serial).revocation_reason == "superseded"
        info = client.get(f"{API}/certificates/{issued.serial}/renewal-info").get_json()
        assert info["state"] in ("renewed", "revoked")


def test_a_revoked_certificate_is_not_renewed(
    app: Flask, client: FlaskClient, issued: Issued
) -> None:
    with app.app_context():
        row = db.session.get(Certificate, issued.certificate_id)
        assert row is not None
        row.revoked_at = utcnow()
        row.revocation_reason = "cessationOfOperation"
        db.session.commit()
    with time_machine.travel(issued.not_after - dt.timedelta(days=5), tick=True):
        headers = _token(client, issued.account)
        key = ec.generate_private_key(ec.SECP256R1())
        status, body = _renew(client, headers, issued.serial, csr_pem(key))
        assert status == 409
        assert "revoked" in str(body["error"])


def test_a_changed_record_sends_the_renewal_to_an_officer(
    app: Flask, client: FlaskClient, issued: Issued, officer_id: int
) -> None:
    with app.app_context():
        employer = db.session.get(Employer, issued.account.employer_id)
        assert employer is not None
        employer.email = "new-hr@example.org"  # a change after the approval
        db.session.commit()
    with time_machine.travel(issued.not_after - dt.timedelta(days=20), tick=True):
        headers = _token(client, issued.account)
        key = ec.generate_private_key(ec.SECP256R1())
        status, body = _renew(client, headers, issued.serial, csr_pem(key))
        assert status == 202, body
        assert "employer record changed" in str(body["reasons"])
        application = body["application"]
        assert isinstance(application, dict)
        assert application["status"] == "submitted"
        # The officer approves on the documents of record; the certificate joins the lineage.
        with app.app_context():
            row = db.session.get(Application, application["id"])
            officer = db.session.get(User, officer_id)
            assert row is not None
            assert officer is not None
            assert service.approval_blockers(row) == []
            service.approve_application(officer=officer, application=row, dual_control=False)
            db.session.commit()
            new = service.issue_certificate(
                application=row,
                token=app_token(),
                profile=service.EmployerProfile.from_settings(settings_of(app)),
                commit=db.session.commit,
                actor="tests",
            )
            assert new.renews_id == issued.certificate_id


def test_an_expired_document_asks_the_employer_for_a_current_one(
    app: Flask, client: FlaskClient, make_employer: MakeEmployer, officer_id: int
) -> None:
    today = utcnow().date()
    first = issue_employer_certificate(
        app, make_employer(), officer_id, licence_valid_until=today + dt.timedelta(days=200)
    )
    with time_machine.travel(first.not_after - dt.timedelta(days=20), tick=True):
        headers = _token(client, first.account)
        key = ec.generate_private_key(ec.SECP256R1())
        status, body = _renew(client, headers, first.serial, csr_pem(key))
        assert status == 202, body
        assert "Business licence" in str(body["reasons"])
        application = body["application"]
        assert isinstance(application, dict)
        assert application["status"] == "draft"
        assert any("Business licence" in m for m in application["missing"])


def test_after_expiry_the_employer_renews_in_the_browser_within_the_grace_period(
    app: Flask, client: FlaskClient, issued: Issued
) -> None:
    with time_machine.travel(issued.not_after + dt.timedelta(days=10), tick=True):
        employer_login(client, issued.account)
        page = client.get("/renewal/").get_data(as_text=True)
        assert issued.serial in page
        assert "has expired" in page
        path = f"/renewal/{issued.serial}"
        key = ec.generate_private_key(ec.SECP256R1())
        unconfirmed = client.post(
            path, data={"csrf_token": csrf_token(client, path), "pem": csr_pem(key)}
        )
        assert unconfirmed.status_code == 400
        assert "still current" in unconfirmed.get_data(as_text=True)
        response = client.post(
            path,
            data={
                "csrf_token": csrf_token(client, path),
                "pem": csr_pem(key),
                "contacts_confirmed": "y",
            },
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        application_page = client.get(response.headers["Location"]).get_data(as_text=True)
        assert "Your certificate" in application_page
    with time_machine.travel(issued.not_after + dt.timedelta(days=91), tick=True):
        info = client.get(f"{API}/certificates/{issued.serial}/renewal-info").get_json()
        assert info["state"] == "renewed"


def test_past_the_grace_period_a_new_application_is_needed(
    app: Flask, client: FlaskClient, issued: Issued
) -> None:
    with time_machine.travel(issued.not_after + dt.timedelta(days=91), tick=True):
        info = client.get(f"{API}/certificates/{issued.serial}/renewal-info")
        assert info.get_json()["state"] == "past_grace"
        assert info.headers["Retry-After"]
        headers = _token(client, issued.account)
        key = ec.generate_private_key(ec.SECP256R1())
        status, body = _renew(client, headers, issued.serial, csr_pem(key), contacts_confirmed=True)
        assert status == 409
        assert "new application" in str(body["error"])
        employer_login(client, issued.account)
        page = client.get(f"/renewal/{issued.serial}").get_data(as_text=True)
        assert "Start a new application" in page


def test_two_renewals_at_once_give_one_certificate(app: Flask, issued: Issued) -> None:
    results: list[object] = []
    barrier = threading.Barrier(2)
    travel = time_machine.travel(issued.not_after - dt.timedelta(days=3), tick=True)
    travel.start()
    try:

        def renew() -> None:
            try:
                _renew()
            except BaseException:  # reported below, never a thread left waiting
                barrier.abort()
                results.append(traceback.format_exc())

        def _renew() -> None:
            key = ec.generate_private_key(ec.SECP256R1())
            # Before touching the database: on SQLite the first read takes the write lock.
            barrier.wait(timeout=30)
            with app.app_context():
                user = db.session.get(User, issued.account.user_id)
                certificate = db.session.get(Certificate, issued.certificate_id)
                assert user is not None
                assert certificate is not None
                try:
                    outcome = renewal.request_renewal(
                        user=user,
                        certificate=certificate,
                        csr=csr_pem(key).encode(),
                        supersede=False,
                        contacts_confirmed=False,
                        token=app_token(),
                        settings=settings_of(app),
                        commit=db.session.commit,
                    )
                    db.session.commit()
                    results.append(outcome.certificate.serial if outcome.certificate else None)
                except Conflict as exc:
                    db.session.rollback()
                    results.append(exc)

        threads = [threading.Thread(target=renew) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        travel.stop()
    assert len(results) == 2
    assert not any(isinstance(r, str) and "Traceback" in r for r in results), results
    assert sum(isinstance(r, str) for r in results) == 1, results
    assert sum(isinstance(r, Conflict) for r in results) == 1, results
    with app.app_context():
        successors = db.session.scalars(
            sa.select(Certificate.serial).where(Certificate.renews_id == issued.certificate_id)
        ).all()
    assert len(successors) == 1


def test_the_error_is_json_for_a_bad_flag(client: FlaskClient, issued: Issued) -> None:
    headers = _token(client, issued.account)
    response = client.post(
        f"{API}/certificates/{issued.serial}/renewal",
        json={"csr_pem": "x", "supersede": "yes"},
        headers=headers,
    )
    assert response.status_code == 400
    assert "supersede" in error_of(response)["message"]


def _renewed_twice(client: FlaskClient, first: Issued) -> tuple[int, dict[str, object], list[str]]:
    """Renew ``first`` at once, then its successor inside the successor's window: the second
    renewal's answer, and the SELECTs its request ran itself before its batch."""
    with time_machine.travel(first.not_after - dt.timedelta(days=20), tick=True):
        key = ec.generate_private_key(ec.SECP256R1())
        status, body = _renew(client, _token(client, first.account), first.serial, csr_pem(key))
        assert status == 201, body
        successor = x509.load_pem_x509_certificate(str(body["certificate_pem"]).encode())
    request_thread = threading.get_ident()
    selects: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if threading.get_ident() == request_thread and statement.lstrip().startswith("SELECT"):
            selects.append(statement)

    with time_machine.travel(successor.not_valid_after_utc - dt.timedelta(days=20), tick=True):
        headers = _token(client, first.account)
        key = ec.generate_private_key(ec.SECP256R1())
        with counted_statements(client.application, each=count):
            status, body = _renew(client, headers, f"{successor.serial_number:x}", csr_pem(key))
    return status, body, selects


def test_a_renewed_certificate_renews_on_the_approval_its_lineage_began_with(
    client: FlaskClient, make_employer: MakeEmployer, officer_id: int
) -> None:
    """The renewal that made the successor was approved by no officer and brought no
    documents: the lineage is followed one step further, to the officer's approval and its
    documents (one query more than for the first renewal)."""
    first = issue_employer_certificate(client.application, make_employer(), officer_id)
    status, body, selects = _renewed_twice(client, first)
    assert status == 201, body
    assert body["reasons"] == []
    assert len(selects) == 3, selects


def test_a_document_of_the_first_approval_expired_before_the_second_renewal(
    client: FlaskClient, make_employer: MakeEmployer, officer_id: int
) -> None:
    """Valid at the first renewal, expired at the second: the documents of record come from
    two steps back."""
    valid_until = utcnow().date() + dt.timedelta(days=500)
    first = issue_employer_certificate(
        client.application, make_employer(), officer_id, licence_valid_until=valid_until
    )
    status, body, _selects = _renewed_twice(client, first)
    assert status == 202, body
    assert "Business licence" in str(body["reasons"])
    application = body["application"]
    assert isinstance(application, dict)
    assert application["status"] == "draft"
