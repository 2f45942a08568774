"""Crash consistency (issue #16, scope 2): a worker SIGKILLed between the committed
reservation and the stored signature — before the HSM signed, or after it signed and before
anything of it was stored — loses and duplicates nothing. The application stays approved and
claimed, a retry inside the signing window is refused (the signature may still be in flight),
`ca-service reconcile` burns the serial and releases the application, and the next issuance
gives exactly one certificate with a new serial. The audit chain stays intact throughout.

The processes, the database and the SoftHSM token are real (tests/faults/dying.py only chooses
the moment of death)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from ca_service.audit.models import AuditEvent
from ca_service.db import db
from ca_service.issuance.models import Application, ApplicationStatus
from ca_service.models import Certificate, CertificateStatus
from tests.api.conftest import request_token, token_of
from tests.auth.conftest import make_officer  # noqa: F401  (fixture used below)
from tests.auth.flows import MakeOfficer
from tests.conftest import CliInvoke, process_env, serving
from tests.issuance.conftest import (  # noqa: F401  (make_employer: a fixture)
    MakeEmployer,
    approved_application,
    csr_pem,
    issue_employer_certificate,
    make_employer,
)

DYING = Path(__file__).with_name("dying.py")
POINTS = ["before-sign", "after-sign"]
# Inside the renewal window of a one-year certificate, on the server's real clock.
ISSUED_DAYS_AGO = 340


def _rows_of(app: Flask, employer_id: int) -> list[tuple[str, CertificateStatus]]:
    with app.app_context():
        return [
            (row.serial, row.status)
            for row in db.session.scalars(
                sa.select(Certificate)
                .where(Certificate.employer_id == employer_id)
                .order_by(Certificate.id)
            )
        ]


def _application(app: Flask, application_id: int) -> tuple[ApplicationStatus, int | None]:
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        return application.status, application.certificate_id


def _assert_audit_intact(cli: CliInvoke) -> None:
    result = cli("audit", "verify")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("point", POINTS)
def test_a_worker_killed_inside_issuance_is_reconciled_and_issued_once(
    app: Flask,
    cli: CliInvoke,
    app_overrides: dict[str, Any],
    make_employer: MakeEmployer,  # noqa: F811
    point: str,
) -> None:
    application_id = approved_application(app, make_employer)
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        employer_id = application.employer_id
    died = subprocess.run(
        [sys.executable, str(DYING), point, "issue", "--application", str(application_id)],
        env=process_env(app_overrides),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr.decode()

    # What the crash left: the serial reserved and committed, the application still approved
    # and claimed by it, nothing issued.
    ((burnt, status),) = _rows_of(app, employer_id)
    assert status is CertificateStatus.PENDING
    assert _application(app, application_id)[0] is ApplicationStatus.APPROVED
    _assert_audit_intact(cli)

    # A retry inside the signing window does not sign a second certificate for it.
    retry = cli("issue", "--application", str(application_id))
    assert retry.exit_code == 1
    assert "being signed right now" in retry.output
    assert _rows_of(app, employer_id) == [(burnt, CertificateStatus.PENDING)]

    result = cli("reconcile", "--older-than-minutes", "0", "--issue")
    assert result.exit_code == 0, result.output
    assert f"marked failed: serial {burnt}" in result.output
    assert f"application {application_id} released for issuance" in result.output
    rows = _rows_of(app, employer_id)
    assert rows[0] == (burnt, CertificateStatus.FAILED)  # burnt for good, never reused
    assert [status for _serial, status in rows[1:]] == [CertificateStatus.ISSUED]
    issued_serial = rows[1][0]
    assert issued_serial != burnt
    assert f"application {application_id}: certificate {issued_serial}" in result.output
    status, certificate_id = _application(app, application_id)
    assert status is ApplicationStatus.ISSUED
    with app.app_context():
        assert db.session.get(Certificate, certificate_id).serial == issued_serial  # type: ignore[union-attr]

    # Idempotent: nothing left to do, nothing changes.
    again = cli("reconcile", "--older-than-minutes", "0")
    assert again.exit_code == 0, again.output
    assert "0 pending certificate(s) reconciled" in again.output
    assert _rows_of(app, employer_id) == rows
    _assert_audit_intact(cli)
    with app.app_context():
        actions = db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.target == burnt).order_by(AuditEvent.seq)
        ).all()
    assert actions == ["certificate.reconciled_failed"]


def _post(url: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310  (loopback URL of the test server)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_server_worker_killed_inside_a_renewal_loses_and_duplicates_nothing(
    app: Flask,
    cli: CliInvoke,
    app_overrides: dict[str, Any],
    tmp_path: Path,
    make_employer: MakeEmployer,  # noqa: F811
    make_officer: MakeOfficer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = issue_employer_certificate(
        app, make_employer(), make_officer().user.id, days_ago=ISSUED_DAYS_AGO
    )
    token = token_of(
        request_token(app.test_client(), issued.account.username, issued.account.password)
    )
    marker = tmp_path / "die-once"
    marker.touch()
    monkeypatch.setenv("FAULT_MARKER", str(marker))
    renewal = {"csr_pem": csr_pem(ec.generate_private_key(ec.SECP256R1()))}
    with serving(
        app_overrides,
        tmp_path / "server.log",
        "--worker",
        "threads",
        program=(str(DYING), "after-sign"),
    ) as (base, _server):
        path = f"{base}/api/v1/certificates/{issued.serial}/renewal"
        with pytest.raises((ConnectionError, urllib.error.URLError, OSError)):
            _post(path, renewal, token)  # the worker dies under the request
        assert not marker.exists()  # it died at the chosen point

        # The renewal is approved, its serial reserved by the dead worker: asking again inside
        # the signing window never issues a second certificate.
        status, answer = _post(path, renewal, token)
        assert status == 409, answer
        assert "being signed right now" in answer["error"]["message"]

        # Once reconcile burnt the reservation, the employer's own retry resumes the renewal.
        result = cli("reconcile", "--older-than-minutes", "0")
        assert result.exit_code == 0, result.output
        assert "1 pending certificate(s) reconciled" in result.output
        status, answer = _post(path, renewal, token)
        assert status == 201, answer

        status, answer = _post(path, renewal, token)
        assert status == 409, answer
        assert "already renewed" in answer["error"]["message"]

    rows = _rows_of(app, issued.account.employer_id)
    assert [s for _serial, s in rows] == [
        CertificateStatus.ISSUED,  # the renewed certificate, still valid
        CertificateStatus.FAILED,  # the serial the dead worker had reserved
        CertificateStatus.ISSUED,  # its one successor
    ]
    with app.app_context():
        successors = db.session.scalars(
            sa.select(Certificate.status).where(Certificate.renews_id == issued.certificate_id)
        ).all()
    assert successors.count(CertificateStatus.ISSUED) == 1
    _assert_audit_intact(cli)
