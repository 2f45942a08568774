"""issue_certificates: several applications issued together with two commits, the errors of one
application not stopping the others, and `ca-service issue`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from ca_service.audit.models import AuditEvent
from ca_service.db import db
from ca_service.errors import Conflict, ServiceUnavailable
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import service
from ca_service.issuance.models import Application, ApplicationStatus
from ca_service.models import Certificate, CertificateStatus
from ca_service.outbox.models import OutboxMessage
from hsm import Token
from hsm.errors import HSMError
from hsm.signers import HSMPrivateKey
from tests.audit.support import verify
from tests.conftest import CliInvoke
from tests.issuance.conftest import MakeEmployer, approved_application


class _WatchedToken:
    """The app's token, with a hook run each time issuance asks for the signing key (once per
    certificate, just before the HSM signs it)."""

    def __init__(self, token: Token, before_signing: Callable[[int], None]) -> None:
        self._token = token
        self._before_signing = before_signing
        self.signatures = 0

    def private_key(self, label: str) -> HSMPrivateKey:
        self._before_signing(self.signatures)
        self.signatures += 1
        return self._token.private_key(label)


def _issue_all(app: Flask, ids: list[int], token: Any = None) -> tuple[list[service.Issued], int]:
    """Issue the applications together; (results, commits made)."""
    commits = 0

    def commit() -> None:
        nonlocal commits
        commits += 1
        db.session.commit()

    applications = [db.session.get(Application, i) for i in ids]
    assert all(a is not None for a in applications)
    results = service.issue_certificates(
        applications=applications,  # type: ignore[arg-type]
        token=token or app_token(),
        profile=service.EmployerProfile.from_settings(settings_of(app)),
        commit=commit,
        actor="tests",
    )
    return results, commits


def _certificate_statuses(application_id: int) -> list[CertificateStatus]:
    employer_id = db.session.scalar(
        sa.select(Application.employer_id).where(Application.id == application_id)
    )
    return list(
        db.session.scalars(
            sa.select(Certificate.status)
            .where(Certificate.employer_id == employer_id)
            .order_by(Certificate.id)
        )
    )


def _pending_elsewhere(app: Flask, ids: list[int]) -> list[tuple[int, CertificateStatus]]:
    """What another connection sees committed for the applications' certificates."""
    with db.engine.connect() as other:
        return [
            (row.id, row.status)
            for row in other.execute(
                sa.select(Application.id, Certificate.status)
                .join(Certificate, Certificate.id == Application.certificate_id)
                .where(Application.id.in_(ids))
                .order_by(Application.id)
            )
        ]


def test_a_batch_reserves_every_serial_before_signing_and_stores_all_in_one_commit(
    app: Flask, make_employer: MakeEmployer
) -> None:
    ids = [approved_application(app, make_employer) for _ in range(3)]
    seen_before_first_signature: list[tuple[int, CertificateStatus]] = []

    def before_signing(index: int) -> None:
        if index == 0:
            seen_before_first_signature.extend(_pending_elsewhere(app, ids))

    with app.app_context():
        results, commits = _issue_all(app, ids, _WatchedToken(app_token(), before_signing))
        assert commits == 2
        assert seen_before_first_signature == [(i, CertificateStatus.PENDING) for i in ids]
        assert [r.application_id for r in results] == ids
        assert all(r.error is None and r.certificate is not None for r in results)
        serials = {r.certificate.serial for r in results if r.certificate}
        assert len(serials) == 3
        for application_id in ids:
            application = db.session.get(Application, application_id)
            assert application is not None
            assert application.status is ApplicationStatus.ISSUED
            assert [e.status for e in application.events] == [ApplicationStatus.ISSUED]
        issued_events = db.session.scalars(
            sa.select(AuditEvent.target).where(AuditEvent.action == "certificate.issued")
        ).all()
        assert serials <= set(issued_events)
        notices = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.dedupe_key.like("certificate:%:issued:%"))
        )
        assert notices == 6
    assert verify(app).ok


def test_an_application_that_cannot_be_issued_does_not_stop_the_others(
    app: Flask, make_employer: MakeEmployer
) -> None:
    ids = [approved_application(app, make_employer) for _ in range(3)]
    with app.app_context():
        db.session.execute(
            sa.update(Application)
            .where(Application.id == ids[1])
            .values(status=ApplicationStatus.SUBMITTED)
        )
        db.session.commit()
        results, _ = _issue_all(app, [ids[0], ids[1], ids[2], ids[0]])  # one named twice
        assert [r.application_id for r in results] == ids
        assert isinstance(results[1].error, Conflict)
        assert "is submitted, not approved" in results[1].error.message
        assert results[0].certificate is not None
        assert results[2].certificate is not None
        assert _certificate_statuses(ids[1]) == []
        assert _certificate_statuses(ids[0]) == [CertificateStatus.ISSUED]


def test_an_hsm_failure_keeps_what_was_signed_and_releases_the_rest(
    app: Flask, make_employer: MakeEmployer
) -> None:
    ids = [approved_application(app, make_employer) for _ in range(3)]

    def before_signing(index: int) -> None:
        if index == 1:
            raise HSMError("token removed")

    with app.app_context():
        results, commits = _issue_all(app, ids, _WatchedToken(app_token(), before_signing))
        assert commits == 2
        assert results[0].certificate is not None
        assert [type(r.error) for r in results[1:]] == [ServiceUnavailable, ServiceUnavailable]
        db.session.remove()
    with app.app_context():
        assert _certificate_statuses(ids[0]) == [CertificateStatus.ISSUED]
        for application_id in ids[1:]:
            # The serial stays burnt; the application stays approved and free for a retry.
            assert _certificate_statuses(application_id) == [CertificateStatus.FAILED]
            application = db.session.get(Application, application_id)
            assert application is not None
            assert (application.status, application.certificate_id) == (
                ApplicationStatus.APPROVED,
                None,
            )
        failures = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "certificate.signing_failed")
        )
        assert failures == 2
        retried, _ = _issue_all(app, ids)
        assert all(r.certificate is not None for r in retried)
        assert retried[0].certificate is not None
        assert results[0].certificate is not None
        assert retried[0].certificate.serial == results[0].certificate.serial  # not issued twice
        for application_id in ids[1:]:
            assert _certificate_statuses(application_id) == [
                CertificateStatus.FAILED,
                CertificateStatus.ISSUED,
            ]
    assert verify(app).ok


def test_a_reservation_failed_while_signing_discards_only_its_signature(
    app: Flask, make_employer: MakeEmployer
) -> None:
    ids = [approved_application(app, make_employer) for _ in range(3)]

    def before_signing(index: int) -> None:
        if index == 0:  # `reconcile` from another connection, as if the HSM had hung
            with db.engine.begin() as other:
                other.execute(
                    sa.update(Certificate)
                    .where(
                        Certificate.id
                        == sa.select(Application.certificate_id)
                        .where(Application.id == ids[1])
                        .scalar_subquery()
                    )
                    .values(status=CertificateStatus.FAILED)
                )

    with app.app_context():
        results, _ = _issue_all(app, ids, _WatchedToken(app_token(), before_signing))
        assert isinstance(results[1].error, Conflict)
        assert "marked failed while the HSM signed it" in results[1].error.message
        assert results[0].certificate is not None
        assert results[2].certificate is not None
        db.session.remove()
    with app.app_context():
        assert _certificate_statuses(ids[1]) == [CertificateStatus.FAILED]
        stored = db.session.scalar(
            sa.select(Certificate.der)
            .join(Application, Application.certificate_id == Certificate.id)
            .where(Application.id == ids[1])
        )
        assert stored is None  # the signature was never stored
        assert _certificate_statuses(ids[0]) == [CertificateStatus.ISSUED]


def test_an_application_issued_by_another_request_meanwhile_is_not_issued_twice(
    app: Flask, make_employer: MakeEmployer
) -> None:
    ids = [approved_application(app, make_employer) for _ in range(3)]
    with app.app_context():
        applications = [db.session.get(Application, i) for i in ids]
        # End the read transaction but keep the objects as read: they are now stale.
        db.session().expire_on_commit = False
        db.session.commit()
        db.session().expire_on_commit = True
        with app.app_context():  # another request, with its own session
            other = db.session.get(Application, ids[1])
            assert other is not None
            service.issue_certificate(
                application=other,
                token=app_token(),
                profile=service.EmployerProfile.from_settings(settings_of(app)),
                commit=db.session.commit,
                actor="tests",
            )
            db.session.remove()
        results = service.issue_certificates(
            applications=applications,  # type: ignore[arg-type]
            token=app_token(),
            profile=service.EmployerProfile.from_settings(settings_of(app)),
            commit=db.session.commit,
            actor="tests",
        )
        assert isinstance(results[1].error, Conflict)
        assert "being issued by another request" in results[1].error.message
        assert results[0].certificate is not None
        assert results[2].certificate is not None
        db.session.remove()
    with app.app_context():
        # The losing reservation was never committed: no pending or failed row is left.
        assert _certificate_statuses(ids[1]) == [CertificateStatus.ISSUED]


def test_cli_issues_every_approved_application_in_batches(
    app: Flask, make_employer: MakeEmployer, cli: CliInvoke
) -> None:
    ids = [approved_application(app, make_employer) for _ in range(3)]
    result = cli("issue", "--all-approved", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "3 issued, 0 not issued" in result.output
    with app.app_context():
        for application_id in ids:
            assert f"application {application_id}: certificate " in result.output
            assert _certificate_statuses(application_id) == [CertificateStatus.ISSUED]
    again = cli("issue", "--application", str(ids[0]))
    assert again.exit_code == 0, again.output  # the one already issued, not a second one
    with app.app_context():
        assert _certificate_statuses(ids[0]) == [CertificateStatus.ISSUED]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name applications with --application, or give --all-approved"),
        (["--all-approved", "--application", "1"], "name applications with --application"),
        (["--application", "999999"], "there is no application 999999"),
    ],
)
def test_cli_refuses_unclear_requests(
    app: Flask, cli: CliInvoke, args: list[str], message: str
) -> None:
    result = cli("issue", *args)
    assert result.exit_code != 0
    assert message in result.output


def test_cli_reports_applications_it_could_not_issue(
    app: Flask, make_employer: MakeEmployer, cli: CliInvoke
) -> None:
    issued, submitted = (approved_application(app, make_employer) for _ in range(2))
    with app.app_context():
        db.session.execute(
            sa.update(Application)
            .where(Application.id == submitted)
            .values(status=ApplicationStatus.SUBMITTED)
        )
        db.session.commit()
    result = cli("issue", "--application", str(issued), "--application", str(submitted))
    assert result.exit_code == 1
    assert f"application {submitted}: Application {submitted} is submitted" in result.output
    assert "1 issued, 1 not issued" in result.output
    with app.app_context():
        assert _certificate_statuses(issued) == [CertificateStatus.ISSUED]  # kept
