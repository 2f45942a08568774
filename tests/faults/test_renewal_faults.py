"""Database faults at each statement of a renewal through the API (issue #16, scope 2): the
n-th statement fails as when the database goes away, for every n until the request no longer
reaches it (the statements of the process's renewal batch thread count too). Each time the
employer gets a 503, never a 500; nothing is half-written (no renewal, or an approved one with
at most its reserved serial, or the renewal issued with its one certificate); and the
employer's own retry once the signing window has passed ends with exactly one successor."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
import time_machine
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient

from ca_service.db import db
from ca_service.issuance.models import Application, ApplicationStatus
from ca_service.models import Certificate, CertificateStatus
from tests.auth.conftest import make_officer  # noqa: F401  (fixture used below)
from tests.conftest import CliInvoke
from tests.issuance.conftest import (  # noqa: F401  (make_employer: a fixture)
    Issued,
    MakeEmployer,
    csr_pem,
    issue_employer_certificate,
    make_employer,
    officer_id,
)
from tests.issuance.test_renewal import _renew, _token
from tests.statements import failing_commit, failing_statement

# Far more than a renewal runs; the loop stops at the first n the request does not reach.
MAX_STATEMENTS = 80


def _state(app: Flask, issued: Issued) -> tuple[list[ApplicationStatus], list[CertificateStatus]]:
    """The renewal applications of the certificate and the certificate rows renewing it."""
    with app.app_context():
        applications = db.session.scalars(
            sa.select(Application).where(Application.renews_id == issued.certificate_id)
        ).all()
        for application in applications:
            if application.status is ApplicationStatus.ISSUED:
                assert application.certificate is not None
                assert application.certificate.status is CertificateStatus.ISSUED
        rows = db.session.scalars(
            sa.select(Certificate.status)
            .where(Certificate.renews_id == issued.certificate_id)
            .order_by(Certificate.id)
        ).all()
        return [a.status for a in applications], list(rows)


def test_a_database_fault_at_any_statement_of_a_renewal_leaves_nothing_half_written(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    make_employer: MakeEmployer,  # noqa: F811
    officer_id: int,  # noqa: F811
) -> None:
    reached_end = False
    for n in range(1, MAX_STATEMENTS + 1):
        issued = issue_employer_certificate(app, make_employer(), officer_id)
        # Each round signs in afresh: from its own address, under the sign-in rate limits.
        client.environ_base["REMOTE_ADDR"] = f"198.51.100.{n}"
        inside = issued.not_after - dt.timedelta(days=20)
        csr = csr_pem(ec.generate_private_key(ec.SECP256R1()))
        with time_machine.travel(inside, tick=True):
            headers = _token(client, issued.account)
            with failing_statement(app, n) as failed:
                status, body = _renew(client, headers, issued.serial, csr)
        if not failed:
            assert status == 201, body
            reached_end = True
            break
        applications, rows = _state(app, issued)
        if status == 201:
            # The batch failed before it committed: the request renewed one by one.
            assert (applications, rows) == ([ApplicationStatus.ISSUED], [CertificateStatus.ISSUED])
            continue
        assert status == 503, (n, failed, body)
        assert (applications, rows) in (
            ([], []),  # nothing kept
            ([ApplicationStatus.APPROVED], []),  # released after the fault
            ([ApplicationStatus.APPROVED], [CertificateStatus.PENDING]),  # serial reserved
            ([ApplicationStatus.APPROVED], [CertificateStatus.FAILED]),  # serial burnt
            ([ApplicationStatus.ISSUED], [CertificateStatus.ISSUED]),  # stored, answer lost
        ), (n, failed)
        # The employer asks again once the signing window has passed: renewed, exactly once.
        with time_machine.travel(inside + dt.timedelta(minutes=3), tick=True):
            headers = _token(client, issued.account)
            status, body = _renew(client, headers, issued.serial, csr)
        if applications == [ApplicationStatus.ISSUED]:
            assert status == 409, (n, failed, body)
            assert "already renewed" in str(body), (n, body)
        else:
            assert status == 201, (n, failed, body)
        applications, rows = _state(app, issued)
        assert applications == [ApplicationStatus.ISSUED], (n, failed, applications)
        assert rows.count(CertificateStatus.ISSUED) == 1, (n, failed, rows)
        assert set(rows) <= {CertificateStatus.ISSUED, CertificateStatus.FAILED}, (n, rows)
    assert reached_end, f"a renewal ran more than {MAX_STATEMENTS} statements"
    assert n > 8, n  # the faults did hit the renewal's statements, one after another
    print(f"a fault at each of the renewal's {n - 1} statements")
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize(
    ("nth", "answer", "left"),
    [
        # The batch's reservation COMMIT: nothing kept, the request renews one by one.
        (1, 201, ([ApplicationStatus.ISSUED], [CertificateStatus.ISSUED])),
        # The storing COMMIT: the serial stays reserved, the application approved.
        (2, 503, ([ApplicationStatus.APPROVED], [CertificateStatus.PENDING])),
        # Every COMMIT: nothing kept at all.
        (None, 503, ([], [])),
    ],
    ids=["reservation", "storing", "every"],
)
def test_a_failed_commit_of_a_renewal_leaves_nothing_half_written(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
    officer_id: int,  # noqa: F811
    nth: int | None,
    answer: int,
    left: tuple[list[ApplicationStatus], list[CertificateStatus]],
) -> None:
    """The COMMIT that keeps the reserved serial (the first), the one that stores the
    certificate (the second), or every COMMIT fails as when the database went away before it
    answered: a 503 or a renewal done one by one, and the retry renews exactly once."""
    issued = issue_employer_certificate(app, make_employer(), officer_id)
    inside = issued.not_after - dt.timedelta(days=20)
    csr = csr_pem(ec.generate_private_key(ec.SECP256R1()))
    with time_machine.travel(inside, tick=True):
        headers = _token(client, issued.account)
        with failing_commit(app, nth) as failed:
            status, body = _renew(client, headers, issued.serial, csr)
    assert failed, "the renewal did not commit"
    assert status == answer, body
    applications, rows = _state(app, issued)
    assert (applications, rows) == left
    if status == 201:
        return
    with time_machine.travel(inside + dt.timedelta(minutes=3), tick=True):
        headers = _token(client, issued.account)
        status, body = _renew(client, headers, issued.serial, csr)
    assert status == 201, (nth, applications, rows, body)
    applications, rows = _state(app, issued)
    assert applications == [ApplicationStatus.ISSUED], applications
    assert rows.count(CertificateStatus.ISSUED) == 1, rows
    assert set(rows) <= {CertificateStatus.ISSUED, CertificateStatus.FAILED}, rows
