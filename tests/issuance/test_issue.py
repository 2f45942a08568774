"""issue_certificate itself: what it writes, the objects it leaves the caller holding, and a
reservation marked failed while the HSM signs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from flask import Flask

from ca_service.audit.models import AuditEvent
from ca_service.authorities.signing import fingerprint
from ca_service.db import db
from ca_service.errors import Conflict
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import service
from ca_service.issuance.models import (
    Application,
    ApplicationEvent,
    ApplicationStatus,
)
from ca_service.models import Certificate, CertificateStatus
from ca_service.outbox.models import OutboxMessage
from hsm import Token
from hsm.signers import HSMPrivateKey
from tests.issuance.conftest import MakeEmployer, approved_application
from tests.pki_tools import errors_only, pkilint_findings


def _issue(app: Flask, application: Application, token: Any = None) -> Certificate:
    """Issue with the app's token, or a stand-in that wraps it."""
    return service.issue_certificate(
        application=application,
        token=token or app_token(),
        profile=service.EmployerProfile.from_settings(settings_of(app)),
        commit=db.session.commit,
        actor="tests",
    )


def test_the_objects_held_after_issuance_match_what_was_stored(
    app: Flask, make_employer: MakeEmployer, tmp_path: Path
) -> None:
    application_id = approved_application(app, make_employer)
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        assert application.events == []  # loaded before issuance: must not stay stale
        row = _issue(app, application)
        # What the caller holds, without a round trip ...
        held = (
            application.status,
            application.certificate_id,
            row.status,
            row.serial,
            row.der,
            row.fingerprint_sha256,
            row.issued_at,
            row.employer_id,
        )
        assert application.certificate is row
        assert [e.status for e in application.events] == [ApplicationStatus.ISSUED]
        # ... is what a fresh read of the database finds.
        stored_application = db.session.execute(
            sa.select(Application.status, Application.certificate_id).where(
                Application.id == application_id
            )
        ).one()
        stored_row = db.session.execute(
            sa.select(
                Certificate.status,
                Certificate.serial,
                Certificate.der,
                Certificate.fingerprint_sha256,
                Certificate.issued_at,
                Certificate.employer_id,
            ).where(Certificate.id == row.id)
        ).one()
        assert held == (*stored_application, *stored_row)
        assert row.status is CertificateStatus.ISSUED
        assert row.employer_id == application.employer_id
        assert row.der is not None
        certificate = x509.load_der_x509_certificate(row.der)
        assert fingerprint(certificate) == row.fingerprint_sha256
        assert format(certificate.serial_number, "x") == row.serial
        der = row.der
        # The audit event, the history row and both notices are in the same commit.
        audited = db.session.scalars(
            sa.select(AuditEvent).where(
                AuditEvent.action == "certificate.issued", AuditEvent.target == row.serial
            )
        ).all()
        assert len(audited) == 1
        assert f'"sha256":"{row.fingerprint_sha256}"' in audited[0].details
        channels = db.session.scalars(
            sa.select(OutboxMessage.channel).where(
                OutboxMessage.dedupe_key.like(f"certificate:{row.id}:issued:%")
            )
        ).all()
        assert sorted(c.value for c in channels) == ["email", "sms"]
        history = db.session.execute(
            sa.select(ApplicationEvent.note_code, ApplicationEvent.note_params).where(
                ApplicationEvent.application_id == application_id
            )
        ).all()
        assert [tuple(h) for h in history] == [("issued", {"serial": row.serial})]
    assert errors_only(pkilint_findings("lint_pkix_cert", der, tmp_path)) == []


def test_a_retry_returns_the_same_certificate_and_notifies_once(
    app: Flask, make_employer: MakeEmployer
) -> None:
    application_id = approved_application(app, make_employer)
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        first = _issue(app, application)
        first_id, first_serial = first.id, first.serial
        db.session.remove()
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        again = _issue(app, application)
        assert (again.id, again.serial) == (first_id, first_serial)
        issued = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Certificate)
            .where(Certificate.employer_id == application.employer_id)
        )
        notices = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.dedupe_key.like(f"certificate:{first_id}:issued:%"))
        )
    assert (issued, notices) == (1, 2)


class _ReconcileWhileSigning:
    """A token whose issuing key, when asked for, first lets `reconcile` mark the employer's
    pending reservation failed from another connection, as if the HSM had hung too long."""

    def __init__(self, token: Token, employer_id: int, serial_holder: list[str]) -> None:
        self._token = token
        self._employer_id = employer_id
        self._serials = serial_holder

    def private_key(self, label: str) -> HSMPrivateKey:
        with db.engine.begin() as other:  # its own connection and transaction
            serial = other.execute(
                sa.update(Certificate)
                .where(
                    Certificate.employer_id == self._employer_id,
                    Certificate.status == CertificateStatus.PENDING,
                )
                .values(status=CertificateStatus.FAILED)
                .returning(Certificate.serial)
            ).scalar_one()
        self._serials.append(serial)
        return self._token.private_key(label)


def test_a_signature_for_a_reservation_failed_meanwhile_is_discarded(
    app: Flask, make_employer: MakeEmployer
) -> None:
    application_id = approved_application(app, make_employer)
    failed: list[str] = []
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        reconciling = _ReconcileWhileSigning(app_token(), application.employer_id, failed)
        with pytest.raises(Conflict, match="marked failed while the HSM signed it"):
            _issue(app, application, reconciling)
        db.session.rollback()
        db.session.remove()
    with app.app_context():
        (serial,) = failed
        row = db.session.scalar(sa.select(Certificate).where(Certificate.serial == serial))
        assert row is not None
        assert (row.status, row.der, row.fingerprint_sha256) == (
            CertificateStatus.FAILED,
            None,
            None,
        )
        # The application still points at the failed reservation; a retry releases it and
        # issues with a new serial.
        application = db.session.get(Application, application_id)
        assert application is not None
        assert application.status is ApplicationStatus.APPROVED
        retried = _issue(app, application)
        assert retried.serial != serial
        assert retried.status is CertificateStatus.ISSUED
        assert application.status is ApplicationStatus.ISSUED
