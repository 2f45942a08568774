"""Renewals issued at once go through the process's batch (ca_service.issuance.renewal_batch):
several written together, each under its own employer's name; a plan whose facts changed
after it was read, or that supersedes, is left to the one-by-one path; a batch that fails
before committing falls back to it; an HSM failure in a batch is a 503 in the request's
language."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient

from ca_service.api.serialise import timestamp
from ca_service.audit.models import AuditEvent
from ca_service.auth.models import User
from ca_service.db import db, utcnow
from ca_service.employers.models import Employer
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import renewal, renewal_batch
from ca_service.issuance.models import Application, ApplicationEvent
from ca_service.issuance.notes import event_note
from ca_service.models import Certificate
from tests.api.conftest import API
from tests.issuance.conftest import (
    FailingToken,
    Issued,
    MakeEmployer,
    csr_pem,
    issue_employer_certificate,
)
from tests.issuance.test_renewal import _renew, _token
from tests.statements import counted_statements


def _issued(app: Flask, make_employer: MakeEmployer, officer_id: int, count: int) -> list[Issued]:
    return [issue_employer_certificate(app, make_employer(), officer_id) for _ in range(count)]


def _plan(app: Flask, issued: Issued, **flags: bool) -> renewal.RenewalPlan:
    user = db.session.get(User, issued.account.user_id)
    certificate = db.session.get(Certificate, issued.certificate_id)
    assert user is not None
    assert certificate is not None
    csr = csr_pem(ec.generate_private_key(ec.SECP256R1())).encode()
    return renewal.plan_renewal(
        user=user,
        certificate=certificate,
        csr=csr,
        supersede=flags.get("supersede", False),
        contacts_confirmed=False,
        settings=settings_of(app),
    )


def _renew_planned(app: Flask, plans: list[renewal.RenewalPlan]) -> list[Any]:
    results = renewal.renew_planned(
        plans, token=app_token(), settings=settings_of(app), commit=db.session.commit
    )
    db.session.commit()
    return results


def _renewals_of(certificate_id: int) -> list[Application]:
    return list(
        db.session.scalars(sa.select(Application).where(Application.renews_id == certificate_id))
    )


def test_a_batch_issues_every_plan_under_its_employers_name(
    app: Flask, cli: Any, make_employer: MakeEmployer, officer_id: int
) -> None:
    issued = _issued(app, make_employer, officer_id, 3)
    with (
        time_machine.travel(issued[0].not_after - dt.timedelta(days=20), tick=True),
        app.app_context(),
    ):
        plans = [_plan(app, one) for one in issued]
        results = _renew_planned(app, plans)
        assert all(r is not None and r.error is None for r in results)
        for one, plan, result in zip(issued, plans, results, strict=True):
            new = result.certificate
            assert new is not None
            assert new.der is not None
            assert new.renews_id == one.certificate_id
            key = x509.load_der_x509_certificate(new.der).public_key()
            assert key == plan.checked.public_key
            actors = dict(
                db.session.execute(
                    sa.select(AuditEvent.action, AuditEvent.actor).where(
                        AuditEvent.target.in_([str(result.application.id), new.serial])
                    )
                ).all()
            )
            assert actors == {
                "renewal.requested": plan.actor,
                "application.approved": "system",
                "certificate.issued": plan.actor,
            }
            notes = [
                event_note(event)
                for event in db.session.scalars(
                    sa.select(ApplicationEvent)
                    .where(ApplicationEvent.application_id == result.application.id)
                    .order_by(ApplicationEvent.id)
                )
            ]
            assert notes[0] == f"Renewal of certificate {one.serial} requested."
            assert notes[-1] == f"Certificate issued (serial {new.serial})."
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output


def test_a_plan_whose_facts_changed_is_left_to_the_one_by_one_path(
    app: Flask, make_employer: MakeEmployer, officer_id: int
) -> None:
    kept, revoked, edited, supersede, raced = _issued(app, make_employer, officer_id, 5)
    with (
        time_machine.travel(kept.not_after - dt.timedelta(days=20), tick=True),
        app.app_context(),
    ):
        plans = [
            _plan(app, kept),
            _plan(app, kept),  # the same certificate twice: only the first
            _plan(app, revoked),
            _plan(app, edited),
            _plan(app, supersede, supersede=True),
            _plan(app, raced),
        ]
        # After the plans were read: a revocation, and an edit of the employer record.
        db.session.execute(
            sa.update(Certificate)
            .where(Certificate.id == revoked.certificate_id)
            .values(revoked_at=utcnow(), revocation_reason="keyCompromise")
        )
        db.session.execute(
            sa.update(Employer)
            .where(Employer.id == edited.account.employer_id)
            .values(updated_at=utcnow())
        )
        db.session.commit()
        # ... and another request's renewal of ``raced``, under way.
        raced_row = db.session.get(Certificate, raced.certificate_id)
        assert raced_row is not None
        other = renewal.carry_out(
            _plan(app, raced),
            certificate=raced_row,
            token=app_token(),
            settings=settings_of(app),
            commit=db.session.commit,
        )
        db.session.commit()
        results = _renew_planned(app, plans)
        assert results[0] is not None
        assert results[0].certificate is not None
        assert results[1:] == [None, None, None, None, None]
        assert [a.id for a in _renewals_of(raced.certificate_id)] == [other.application.id]
        assert len(_renewals_of(kept.certificate_id)) == 1
        for other in (revoked, edited, supersede):
            assert _renewals_of(other.certificate_id) == []  # nothing half-written


def test_renewals_at_once_are_written_together(
    app: Flask, make_employer: MakeEmployer, officer_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = _issued(app, make_employer, officer_id, 5)
    sizes: list[int] = []
    real = renewal.renew_planned
    batcher = renewal_batch.batcher_of(app)

    def watched(plans: list[renewal.RenewalPlan], **kwargs: Any) -> Any:
        if not sizes:  # hold the first batch until the other requests wait in the queue
            deadline = time.monotonic() + 20
            while batcher._queue.qsize() < len(issued) - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        sizes.append(len(plans))
        return real(plans, **kwargs)

    monkeypatch.setattr(renewal, "renew_planned", watched)
    answers: list[tuple[int, dict[str, Any]]] = []
    with time_machine.travel(issued[0].not_after - dt.timedelta(days=20), tick=True):
        clients = [app.test_client() for _ in issued]
        headers = [_token(client, one.account) for client, one in zip(clients, issued, strict=True)]

        def renew(index: int) -> None:
            key = ec.generate_private_key(ec.SECP256R1())
            answers.append(
                _renew(clients[index], headers[index], issued[index].serial, csr_pem(key))
            )

        threads = [threading.Thread(target=renew, args=(i,)) for i in range(len(issued))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert sorted(status for status, _body in answers) == [201] * len(issued), answers
    assert sum(sizes) == len(issued)
    assert max(sizes) >= 2  # at least two written together
    serials = {str(body["certificate"]["serial"]) for _status, body in answers}  # type: ignore[index]
    assert len(serials) == len(issued)
    for _status, body in answers:  # the answer shows what the batch wrote
        history = [entry["actor"] for entry in body["application"]["history"]]  # type: ignore[index]
        assert len(history) == 3
        assert history[1] == "system"
        assert str(body["chain_pem"]).count("BEGIN CERTIFICATE") == 3
        # Made from what was written, not read back: the same as what is stored.
        with app.app_context():
            stored = db.session.scalars(
                sa.select(ApplicationEvent)
                .where(ApplicationEvent.application_id == body["application"]["id"])  # type: ignore[index]
                .order_by(ApplicationEvent.id)
            ).all()
            assert body["application"]["history"] == [  # type: ignore[index]
                {
                    "status": e.status.value,
                    "actor": e.actor,
                    "note": event_note(e) or None,
                    "note_code": e.note_code,
                    "at": timestamp(e.created_at),
                }
                for e in stored
            ]


def _failing_once(real: Callable[..., Any], error: Exception) -> Callable[..., Any]:
    calls = []

    def fail_first(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    return fail_first


def test_a_batch_failing_before_it_commits_falls_back_to_one_by_one(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,
    officer_id: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (one,) = _issued(app, make_employer, officer_id, 1)
    failing = _failing_once(
        renewal.renew_planned, sa.exc.OperationalError("INSERT", {}, Exception("disk I/O"))
    )
    monkeypatch.setattr(renewal, "renew_planned", failing)
    with time_machine.travel(one.not_after - dt.timedelta(days=20), tick=True):
        headers = _token(client, one.account)
        status, body = _renew(
            client, headers, one.serial, csr_pem(ec.generate_private_key(ec.SECP256R1()))
        )
    assert status == 201, body
    with app.app_context():
        assert len(_renewals_of(one.certificate_id)) == 1


def test_an_hsm_failure_in_a_batch_is_a_503_in_the_requests_language(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,
    officer_id: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (one,) = _issued(app, make_employer, officer_id, 1)
    real_token = app_token(app)
    monkeypatch.setitem(app.extensions, "hsm_token", FailingToken(real_token))
    with time_machine.travel(one.not_after - dt.timedelta(days=20), tick=True):
        headers = _token(client, one.account)
        response = client.post(
            f"{API}/certificates/{one.serial}/renewal",
            json={"csr_pem": csr_pem(ec.generate_private_key(ec.SECP256R1()))},
            headers={**headers, "Accept-Language": "es"},
        )
    assert response.status_code == 503
    message = response.get_json()["error"]["message"]
    assert "sigue aprobada" in message, message
    with app.app_context():
        (application,) = _renewals_of(one.certificate_id)
        assert application.status.value == "approved"  # as after issue_certificate: a retry
        assert application.certificate_id is None


def test_a_batch_whose_clean_up_fails_still_answers_its_requests(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,
    officer_id: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (one,) = _issued(app, make_employer, officer_id, 1)
    monkeypatch.setattr(
        renewal, "renew_planned", _failing_once(renewal.renew_planned, RuntimeError("lost"))
    )
    real_rollback = db.session.rollback

    def rollback() -> None:
        if threading.current_thread().name == "renewal-batch":
            raise sa.exc.OperationalError("ROLLBACK", {}, Exception("server closed the connection"))
        real_rollback()

    monkeypatch.setattr(db.session, "rollback", rollback)
    with time_machine.travel(one.not_after - dt.timedelta(days=20), tick=True):
        headers = _token(client, one.account)
        started = time.monotonic()
        status, _body = _renew(
            client, headers, one.serial, csr_pem(ec.generate_private_key(ec.SECP256R1()))
        )
    assert status == 503  # answered at once, never left waiting
    assert time.monotonic() - started < 30


def test_a_renewal_request_reads_its_facts_in_two_queries(
    app: Flask, make_employer: MakeEmployer, officer_id: int
) -> None:
    """The request's own reads before its batch: the token with its account (and the
    certificate it came from), then the certificate with its employer, its lineage state and
    the approval it came from with its documents. Each more is a round trip and ~0.3 ms of
    SQLAlchemy per renewal (bench/renewal.py)."""
    (issued,) = _issued(app, make_employer, officer_id, 1)
    request_thread = threading.get_ident()
    selects: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == request_thread and statement.lstrip().startswith("SELECT"):
            selects.append(statement)

    with time_machine.travel(issued.not_after - dt.timedelta(days=20), tick=True):
        client = app.test_client()
        headers = _token(client, issued.account)
        key = ec.generate_private_key(ec.SECP256R1())
        with counted_statements(app, each=count):
            status, _body = _renew(client, headers, issued.serial, csr_pem(key))
    assert status == 201
    # Before the batch answers: 2; after it, the answer reads nothing more.
    assert len(selects) == 2, selects
