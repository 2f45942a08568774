"""Database faults at each statement of an approval (issue #16, scope 2): the n-th statement
of the request fails as when the database goes away, for every n until the request no longer
reaches it. Each time the officer gets a clear 503 (never a 500), nothing is half-written
(the application is submitted, approved or issued with exactly the certificate rows that state
allows), the audit chain verifies, and approving again once the signing window has passed
gives exactly one certificate."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from ca_service.db import db
from ca_service.issuance.models import Application, ApplicationStatus
from ca_service.models import Certificate, CertificateStatus
from tests.api.conftest import officer_token  # noqa: F401  (fixture used below)
from tests.auth.conftest import make_officer  # noqa: F401  (officer_token's fixture)
from tests.conftest import CliInvoke
from tests.issuance.conftest import (  # noqa: F401  (make_employer: a fixture)
    MakeEmployer,
    make_employer,
    submitted_application,
)
from tests.statements import failing_statement

API = "/api/v1"
# Far more than an approval runs; the loop stops at the first n the request does not reach.
MAX_STATEMENTS = 80


def _state(app: Flask, application_id: int) -> tuple[ApplicationStatus, list[CertificateStatus]]:
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        rows = db.session.scalars(
            sa.select(Certificate.status).where(Certificate.employer_id == application.employer_id)
        ).all()
        if application.status is ApplicationStatus.ISSUED:
            assert application.certificate is not None
            assert application.certificate.status is CertificateStatus.ISSUED
        return application.status, list(rows)


def test_a_database_fault_at_any_statement_of_an_approval_leaves_nothing_half_written(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    make_employer: MakeEmployer,  # noqa: F811
    officer_token: Callable[[], str],  # noqa: F811
) -> None:
    headers = {"Authorization": f"Bearer {officer_token()}"}
    reached_end = False
    for n in range(1, MAX_STATEMENTS + 1):
        application_id = submitted_application(app, make_employer())
        with failing_statement(app, n) as failed:
            response = client.post(
                f"{API}/review/{application_id}/approve", json={}, headers=headers
            )
        if not failed:
            assert response.status_code == 200, response.get_data(as_text=True)
            reached_end = True
            break
        assert response.status_code == 503, (n, failed, response.get_data(as_text=True))
        assert response.get_json()["error"]["code"] == "database_unavailable"
        status, rows = _state(app, application_id)
        # Before the reservation commit nothing is kept; after it the serial stays reserved
        # (PENDING, claimed) or, once stored, the application is issued with its certificate.
        assert (status, rows) in (
            (ApplicationStatus.SUBMITTED, []),
            (ApplicationStatus.APPROVED, []),
            (ApplicationStatus.APPROVED, [CertificateStatus.PENDING]),
            (ApplicationStatus.ISSUED, [CertificateStatus.ISSUED]),
        ), (n, failed)
        # Once the signing window has passed, the officer's retry (approve again, or issue
        # the approved application) issues exactly one certificate.
        action = "approve" if status is ApplicationStatus.SUBMITTED else "issue"
        with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=3), tick=True):
            retry = client.post(f"{API}/review/{application_id}/{action}", json={}, headers=headers)
        assert retry.status_code == 200, (n, failed, retry.get_data(as_text=True))
        status, rows = _state(app, application_id)
        assert status is ApplicationStatus.ISSUED, (n, failed, retry.get_data(as_text=True))
        assert rows.count(CertificateStatus.ISSUED) == 1, (n, failed, rows)
        assert set(rows) <= {CertificateStatus.ISSUED, CertificateStatus.FAILED}, (n, rows)
    assert reached_end, f"an approval ran more than {MAX_STATEMENTS} statements"
    assert n > 10, n  # the faults did hit the approval's statements, one after another
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output
