"""An employer's retry resumes a renewal that was approved but got no certificate (the HSM
failed, or the worker died while signing): with the same request it is issued as approved, with
a new key the renewal takes that key when a new request would be approved at once, a
reservation still being signed is left alone, and there is never more than one successor."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm.attributes import set_committed_value

from ca_service.audit.models import AuditEvent
from ca_service.auth.models import User
from ca_service.db import db, utcnow
from ca_service.employers.models import Employer
from ca_service.errors import Conflict, ServiceUnavailable
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import renewal, service
from ca_service.issuance.csr import check_request
from ca_service.issuance.models import Application, ApplicationEvent, ApplicationStatus
from ca_service.issuance.notes import event_note
from ca_service.models import Certificate, CertificateStatus
from ca_service.revocation.blocked_keys import spki_sha256
from tests.auth.flows import csrf_token
from tests.issuance.conftest import (
    FailingToken,
    Issued,
    csr_pem,
    employer_login,
)
from tests.issuance.test_renewal import _renew, _token


def _inside_window(issued: Issued) -> Any:
    return time_machine.travel(issued.not_after - dt.timedelta(days=20), tick=True)


def _renewals(app: Flask, issued: Issued) -> list[Application]:
    with app.app_context():
        rows = list(
            db.session.scalars(
                sa.select(Application)
                .where(Application.renews_id == issued.certificate_id)
                .order_by(Application.id)
            )
        )
        for row in rows:
            db.session.expunge(row)
        return rows


def _successors(app: Flask, issued: Issued) -> list[tuple[str, CertificateStatus]]:
    with app.app_context():
        return [
            (row.serial, row.status)
            for row in db.session.execute(
                sa.select(Certificate.serial, Certificate.status)
                .where(Certificate.renews_id == issued.certificate_id)
                .order_by(Certificate.id)
            )
        ]


def _resumed_events(app: Flask, application_id: int) -> list[dict[str, Any]]:
    with app.app_context():
        return [
            json.loads(details)
            for details in db.session.scalars(
                sa.select(AuditEvent.details).where(
                    AuditEvent.action == "renewal.resumed",
                    AuditEvent.target == str(application_id),
                )
            )
        ]


def _history(app: Flask, application_id: int) -> list[str]:
    """The application's history notes, in English."""
    with app.app_context():
        return [
            event_note(event)
            for event in db.session.scalars(
                sa.select(ApplicationEvent)
                .where(ApplicationEvent.application_id == application_id)
                .order_by(ApplicationEvent.id)
            )
        ]


def _officer_issues(app: Flask, application_id: int, token: Any) -> Certificate:
    """The officer's retry of an approved application's issuance (the console's Issue
    button), in its own session, with ``token`` signing."""
    with app.app_context():
        row = db.session.get(Application, application_id)
        assert row is not None
        issued = service.issue_certificate(
            application=row,
            token=token,
            profile=service.EmployerProfile.from_settings(settings_of(app)),
            commit=db.session.commit,
            actor="officer",
        )
        db.session.commit()
        return issued


def _in_thread(work: Any) -> tuple[threading.Thread, list[BaseException | Certificate]]:
    """``work()`` started in its own thread; what it returned or raised, once joined."""
    outcome: list[BaseException | Certificate] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _fail_once(
    app: Flask, client: FlaskClient, issued: Issued, monkeypatch: pytest.MonkeyPatch, csr: str
) -> Application:
    """A renewal whose signing fails in the HSM: 503, approved, no certificate."""
    real = app_token(app)
    monkeypatch.setitem(app.extensions, "hsm_token", FailingToken(real))
    status, body = _renew(client, _token(client, issued.account), issued.serial, csr)
    assert status == 503, body
    monkeypatch.setitem(app.extensions, "hsm_token", real)  # the token is back
    (stuck,) = _renewals(app, issued)
    assert stuck.status is ApplicationStatus.APPROVED
    assert stuck.certificate_id is None
    assert [s for _serial, s in _successors(app, issued)] == [CertificateStatus.FAILED]
    return stuck


def test_the_same_request_again_issues_the_approved_renewal(
    app: Flask, client: FlaskClient, issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with _inside_window(issued):
        stuck = _fail_once(app, client, issued, monkeypatch, csr_pem(key))
        headers = _token(client, issued.account)
        status, body = _renew(client, headers, issued.serial, csr_pem(key))
        assert status == 201, body
        assert body["application"]["id"] == stuck.id  # type: ignore[index]
        new = x509.load_pem_x509_certificate(str(body["certificate_pem"]).encode())
        assert spki_sha256(new.public_key()) == spki_sha256(key.public_key())

        # Asked once more: renewed, never a second successor.
        status, body = _renew(client, headers, issued.serial, csr_pem(key))
        assert status == 409, body
        assert "already renewed" in body["error"]["message"]  # type: ignore[index]
    assert [s for _serial, s in _successors(app, issued)] == [
        CertificateStatus.FAILED,  # the serial the HSM failed on, burnt
        CertificateStatus.ISSUED,
    ]
    assert _resumed_events(app, stuck.id) == [
        {
            "renews": issued.serial,
            "public_key_sha256": spki_sha256(key.public_key()),
            "key_replaced": False,
            "supersede": False,
        }
    ]
    assert "Issuance resumed by the employer." in _history(app, stuck.id)


def test_a_new_key_takes_the_place_of_the_one_that_was_never_certified(
    app: Flask, client: FlaskClient, issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    with _inside_window(issued):
        stuck = _fail_once(app, client, issued, monkeypatch, csr_pem(first))
        status, body = _renew(
            client, _token(client, issued.account), issued.serial, csr_pem(second)
        )
    assert status == 201, body
    assert body["application"]["id"] == stuck.id  # type: ignore[index]
    new = x509.load_pem_x509_certificate(str(body["certificate_pem"]).encode())
    assert spki_sha256(new.public_key()) == spki_sha256(second.public_key())
    (renewed,) = _renewals(app, issued)
    assert renewed.public_key_sha256 == spki_sha256(second.public_key())
    assert renewed.status is ApplicationStatus.ISSUED
    assert _resumed_events(app, stuck.id)[0]["key_replaced"] is True
    assert "Issuance resumed by the employer with a new key." in _history(app, stuck.id)
    assert [s for _serial, s in _successors(app, issued)].count(CertificateStatus.ISSUED) == 1


class _HeldToken:
    """The app's token, whose signing waits until the test lets it go (a worker in the middle
    of signing, seen from another request)."""

    def __init__(self, token: Any) -> None:
        self._token = token
        self.signing = threading.Event()
        self.go_on = threading.Event()

    def private_key(self, label: str) -> Any:
        self.signing.set()
        assert self.go_on.wait(30)
        return self._token.private_key(label)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._token, name)


def test_a_renewal_being_signed_is_left_alone_then_found_renewed(
    app: Flask, client: FlaskClient, issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with _inside_window(issued):
        stuck = _fail_once(app, client, issued, monkeypatch, csr_pem(key))
        held = _HeldToken(app_token(app))
        worker, outcome = _in_thread(lambda: _officer_issues(app, stuck.id, held))
        try:
            assert held.signing.wait(30)  # reserved and committed, now in the HSM
            headers = _token(client, issued.account)
            for csr in (csr_pem(key), csr_pem(ec.generate_private_key(ec.SECP256R1()))):
                status, body = _renew(client, headers, issued.serial, csr)
                assert status == 409, body
                assert "being signed right now" in body["error"]["message"]  # type: ignore[index]
        finally:
            held.go_on.set()
            worker.join(30)
        assert len(outcome) == 1, outcome
        assert isinstance(outcome[0], Certificate), outcome
        status, body = _renew(client, headers, issued.serial, csr_pem(key))
        assert status == 409, body
        assert "already renewed" in body["error"]["message"]  # type: ignore[index]
    assert _resumed_events(app, stuck.id) == []  # the refused retries wrote nothing
    assert [s for _serial, s in _successors(app, issued)] == [
        CertificateStatus.FAILED,
        CertificateStatus.ISSUED,
    ]


def test_an_officer_approval_is_not_carried_over_to_another_key(
    app: Flask,
    client: FlaskClient,
    issued: Issued,
    officer_id: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with app.app_context():
        employer = db.session.get(Employer, issued.account.employer_id)
        assert employer is not None
        employer.email = "new-hr@example.org"  # a change since the approval: review
        db.session.commit()
    key = ec.generate_private_key(ec.SECP256R1())
    with _inside_window(issued):
        headers = _token(client, issued.account)
        status, body = _renew(client, headers, issued.serial, csr_pem(key))
        assert status == 202, body
        application_id = body["application"]["id"]  # type: ignore[index]
        with app.app_context():  # the officer approves; the HSM fails at the issuance
            row = db.session.get(Application, application_id)
            officer = db.session.get(User, officer_id)
            assert row is not None
            assert officer is not None
            service.approve_application(officer=officer, application=row, dual_control=False)
            db.session.commit()
        with pytest.raises(ServiceUnavailable):
            _officer_issues(app, application_id, FailingToken(app_token(app)))

        other = csr_pem(ec.generate_private_key(ec.SECP256R1()))
        status, body = _renew(client, headers, issued.serial, other)
        assert status == 409, body
        assert "with another key was approved" in body["error"]["message"]  # type: ignore[index]

        status, body = _renew(client, headers, issued.serial, csr_pem(key))
        assert status == 201, body
    (renewed,) = _renewals(app, issued)
    assert renewed.id == application_id
    assert renewed.public_key_sha256 == spki_sha256(key.public_key())


def test_the_renewal_page_offers_the_retry_in_the_employers_language(
    app: Flask, client: FlaskClient, issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with _inside_window(issued):
        stuck = _fail_once(app, client, issued, monkeypatch, csr_pem(key))
        browser = employer_login(app.test_client(), issued.account)
        page = browser.get(f"/renewal/{issued.serial}", headers={"Accept-Language": "es"})
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        assert f"Su renovación (solicitud {stuck.id}) se aprobó" in text, text
        assert 'name="pem"' in text  # the form is there again
        response = browser.post(
            f"/renewal/{issued.serial}",
            data={
                "csrf_token": csrf_token(browser, f"/renewal/{issued.serial}"),
                "pem": csr_pem(key),
            },
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        assert response.headers["Location"].endswith(f"/applications/{stuck.id}")
    (renewed,) = _renewals(app, issued)
    assert renewed.status is ApplicationStatus.ISSUED


def test_a_reservation_left_past_its_signing_window_is_burnt_by_the_retry(
    app: Flask, client: FlaskClient, issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after a worker died while signing: the employer's retry minutes later burns the
    serial and issues with a new one; a signature the dead issuance makes after that is
    never stored."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = issued.not_after - dt.timedelta(days=20)
    with time_machine.travel(start, tick=True) as clock:
        stuck = _fail_once(app, client, issued, monkeypatch, csr_pem(key))
        held = _HeldToken(app_token(app))
        worker, outcome = _in_thread(lambda: _officer_issues(app, stuck.id, held))
        try:
            assert held.signing.wait(30)
            clock.shift(dt.timedelta(minutes=3))  # past the signing window
            status, body = _renew(
                client, _token(client, issued.account), issued.serial, csr_pem(key)
            )
            assert status == 201, body
        finally:
            held.go_on.set()
            worker.join(30)
    assert len(outcome) == 1, outcome
    assert isinstance(outcome[0], Conflict), outcome
    assert [s for _serial, s in _successors(app, issued)] == [
        CertificateStatus.FAILED,  # the HSM failure
        CertificateStatus.FAILED,  # burnt by the retry; its late signature was not stored
        CertificateStatus.ISSUED,
    ]


def test_a_certificate_stored_after_the_application_was_read_is_never_released(
    app: Flask, client: FlaskClient, issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a request may read the stuck application (approved) before another
    request stores its certificate, and the certificate row after (issued): taking another
    key then is refused, and the stored certificate stays the application's (found by
    tests/test_concurrency_processes.py as a 500)."""
    key = ec.generate_private_key(ec.SECP256R1())
    with _inside_window(issued):
        stuck = _fail_once(app, client, issued, monkeypatch, csr_pem(key))
        _officer_issues(app, stuck.id, app_token(app))  # the officer's retry issues it
        with app.app_context():  # what the other request holds: read before that commit
            row = db.session.get(Application, stuck.id)
            assert row is not None
            set_committed_value(row, "status", ApplicationStatus.APPROVED)
            other = check_request(csr_pem(ec.generate_private_key(ec.SECP256R1())).encode())
            with pytest.raises(Conflict, match="stored just now"):
                service.replace_approved_request(row, other, utcnow())
            db.session.rollback()
    (renewed,) = _renewals(app, issued)
    assert renewed.status is ApplicationStatus.ISSUED
    assert renewed.public_key_sha256 == spki_sha256(key.public_key())
    assert [s for _serial, s in _successors(app, issued)] == [
        CertificateStatus.FAILED,
        CertificateStatus.ISSUED,
    ]


def _resume_plan(
    app: Flask, issued: Issued, csr: str, *, supersede: bool = False
) -> renewal.RenewalPlan:
    """The employer's resume of the stuck renewal, checked (``plan_renewal``) but not yet
    carried out, in a session of its own that has read the stuck application."""
    user = db.session.get(User, issued.account.user_id)
    certificate = db.session.get(Certificate, issued.certificate_id)
    assert user is not None
    assert certificate is not None
    plan = renewal.plan_renewal(
        user=user,
        certificate=certificate,
        csr=csr.encode(),
        supersede=supersede,
        contacts_confirmed=False,
        settings=settings_of(app),
    )
    assert plan.resume_id is not None
    return plan


def _carry_out(app: Flask, issued: Issued, plan: renewal.RenewalPlan) -> str:
    """``plan`` carried out and committed in this session: the serial it answers with."""
    certificate = db.session.get(Certificate, issued.certificate_id)
    assert certificate is not None
    outcome = renewal.carry_out(
        plan,
        certificate=certificate,
        token=app_token(app),
        settings=settings_of(app),
        commit=db.session.commit,
    )
    db.session.commit()
    assert outcome.certificate is not None
    return outcome.certificate.serial


def _resumed_notes(app: Flask, application_id: int) -> list[str]:
    return [note for note in _history(app, application_id) if note.startswith("Issuance resumed")]


def test_a_resume_checked_before_another_finished_answers_its_certificate_writing_nothing(
    app: Flask, client: FlaskClient, issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with _inside_window(issued):
        stuck = _fail_once(app, client, issued, monkeypatch, csr_pem(key))
        # Checked while the renewal was still stuck; carried out once the other resume (the
        # employer's retry of the same request) was done: read again, not as planned.
        with app.app_context():
            plan = _resume_plan(app, issued, csr_pem(key))
            db.session.rollback()
        status, body = _renew(client, _token(client, issued.account), issued.serial, csr_pem(key))
        assert status == 201, body
        with app.app_context():
            serial = _carry_out(app, issued, plan)
    assert serial == body["certificate"]["serial"]  # type: ignore[index]
    assert [s for _serial, s in _successors(app, issued)] == [
        CertificateStatus.FAILED,
        CertificateStatus.ISSUED,
    ]
    assert len(_resumed_events(app, stuck.id)) == 1
    assert _resumed_notes(app, stuck.id) == ["Issuance resumed by the employer."]


def test_a_resume_with_another_key_than_the_one_issued_meanwhile_is_refused(
    app: Flask, client: FlaskClient, issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    with _inside_window(issued):
        stuck = _fail_once(app, client, issued, monkeypatch, csr_pem(key))
        with app.app_context():
            plan = _resume_plan(app, issued, csr_pem(other))
            db.session.rollback()
        status, body = _renew(client, _token(client, issued.account), issued.serial, csr_pem(key))
        assert status == 201, body
        with app.app_context(), pytest.raises(Conflict, match="changed; try again"):
            # The certificate issued meanwhile certifies a key this request does not hold.
            _carry_out(app, issued, plan)
    assert len(_resumed_events(app, stuck.id)) == 1
    assert [s for _serial, s in _successors(app, issued)].count(CertificateStatus.ISSUED) == 1


def test_two_resumes_racing_on_postgresql_do_the_work_once(
    app: Flask,
    client: FlaskClient,
    issued: Issued,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite queues writers on its write lock: two resumes cannot interleave")
    key = ec.generate_private_key(ec.SECP256R1())
    with _inside_window(issued):
        stuck = _fail_once(app, client, issued, monkeypatch, csr_pem(key))
        planned, go_on = threading.Event(), threading.Event()

        def second_resume() -> str:
            # One request's transaction (read committed): checked, then held while the other
            # resume does all its work, then carried out.
            with app.app_context():
                plan = _resume_plan(app, issued, csr_pem(key))
                planned.set()
                assert go_on.wait(60)
                return _carry_out(app, issued, plan)

        worker, outcome = _in_thread(second_resume)
        try:
            assert planned.wait(60)
            headers = _token(client, issued.account)
            status, body = _renew(client, headers, issued.serial, csr_pem(key))
            assert status == 201, body
        finally:
            go_on.set()
            worker.join(60)
    assert outcome == [body["certificate"]["serial"]]  # type: ignore[index]
    assert [s for _serial, s in _successors(app, issued)] == [
        CertificateStatus.FAILED,
        CertificateStatus.ISSUED,
    ]
    assert len(_resumed_events(app, stuck.id)) == 1
    assert _resumed_notes(app, stuck.id) == ["Issuance resumed by the employer."]


def test_a_resume_answered_with_the_certificate_issued_meanwhile_still_supersedes(
    app: Flask, client: FlaskClient, issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with _inside_window(issued):
        _fail_once(app, client, issued, monkeypatch, csr_pem(key))
        with app.app_context():
            plan = _resume_plan(app, issued, csr_pem(key), supersede=True)
            db.session.rollback()
        status, body = _renew(client, _token(client, issued.account), issued.serial, csr_pem(key))
        assert status == 201, body
        with app.app_context():
            assert _carry_out(app, issued, plan) == body["certificate"]["serial"]  # type: ignore[index]
    # What this request asked for beyond the certificate is done: the old one is revoked.
    with app.app_context():
        old = db.session.get(Certificate, issued.certificate_id)
        assert old is not None
        assert (old.revocation_reason, old.revoked_at is not None) == ("superseded", True)
