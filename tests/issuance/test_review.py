"""Officer review: what blocks an approval, paper-seal attestation, dual control, officers
of the employer itself, rejection, concurrent approvals, HSM failure during issuance."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.models import User
from ca_service.db import db
from ca_service.errors import CAError, Conflict, ServiceUnavailable
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import service
from ca_service.issuance.models import Application, ApplicationStatus, DocumentType
from ca_service.models import Certificate, CertificateStatus
from ca_service.outbox.models import OutboxMessage
from hsm import HSMConfig, Token, find_softhsm_module
from tests.conftest import HsmEnv
from tests.issuance.conftest import (
    MakeEmployer,
    employer_login,
    seal_for,
    software_csr,
)
from tests.issuance.seal_factory import Authority, minimal_pdf, minimal_png, seal_pdf
from tests.issuance.test_flow import (
    attach_csr,
    complete_application,
    new_application,
    officer_post,
    submit,
    upload,
)

OfficerClient = Callable[..., FlaskClient]


def _status(app: Flask, application_id: int) -> ApplicationStatus:
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        return application.status


def _with_paper_scan(
    app: Flask, make_employer: MakeEmployer, ca: Authority
) -> tuple[FlaskClient, int]:
    """A submitted application whose business licence is an unsigned scan."""
    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = new_application(client)
    seal = seal_for(ca, account.number)
    for doc_type in DocumentType:
        if doc_type is DocumentType.BUSINESS_LICENCE:
            status, text = upload(client, application_id, doc_type, minimal_png(), filename="l.png")
            assert "needs officer attestation" in text
        else:
            status, text = upload(client, application_id, doc_type, seal_pdf(minimal_pdf(), seal))
        assert status == 302, text
    assert attach_csr(client, application_id, software_csr())[0] == 302
    assert submit(client, application_id)[0] == 302
    return client, application_id


def test_an_unattested_paper_seal_blocks_approval_until_attested(
    app: Flask,
    make_employer: MakeEmployer,
    trusted_seal_ca: Authority,
    officer_client: OfficerClient,
) -> None:
    employer, application_id = _with_paper_scan(app, make_employer, trusted_seal_ca)
    officer = officer_client()
    page = officer.get(f"/officer/applications/{application_id}").get_data(as_text=True)
    assert "paper seal is not attested" in page
    assert officer_post(officer, application_id, "approve") == 400
    assert _status(app, application_id) is ApplicationStatus.SUBMITTED

    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        licence = application.document(DocumentType.BUSINESS_LICENCE)
        assert licence is not None
        licence_id = licence.id
    assert officer_post(officer, application_id, f"documents/{licence_id}/attest") == 302
    assert officer_post(officer, application_id, "approve") == 302
    assert _status(app, application_id) is ApplicationStatus.ISSUED
    page = employer.get(f"/applications/{application_id}").get_data(as_text=True)
    assert "attested by an officer" in page


def test_an_expired_business_licence_blocks_approval(
    app: Flask,
    make_employer: MakeEmployer,
    trusted_seal_ca: Authority,
    officer_client: OfficerClient,
) -> None:
    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = complete_application(client, account, trusted_seal_ca)
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        licence = application.document(DocumentType.BUSINESS_LICENCE)
        assert licence is not None
        licence_id = licence.id
    officer = officer_client()
    path = f"documents/{licence_id}/validity"
    assert officer_post(officer, application_id, path, valid_until="2020-01-31") == 302
    assert officer_post(officer, application_id, "approve") == 400
    assert officer_post(officer, application_id, path, valid_until="2099-01-31") == 302
    assert officer_post(officer, application_id, "approve") == 302


def test_dual_control_needs_a_second_different_officer(
    app: Flask,
    make_employer: MakeEmployer,
    trusted_seal_ca: Authority,
    officer_client: OfficerClient,
) -> None:
    settings = settings_of(app)
    app.extensions["ca_settings"] = settings.with_overrides(DUAL_CONTROL=True)
    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = complete_application(client, account, trusted_seal_ca)
    first, second = officer_client(), officer_client()
    assert officer_post(first, application_id, "approve") == 302
    assert _status(app, application_id) is ApplicationStatus.AWAITING_CONFIRMATION
    assert officer_post(first, application_id, "approve") == 409  # not their own confirmation
    assert _status(app, application_id) is ApplicationStatus.AWAITING_CONFIRMATION
    assert officer_post(second, application_id, "approve") == 302
    assert _status(app, application_id) is ApplicationStatus.ISSUED


def test_an_officer_of_the_employer_cannot_act_on_its_application(
    app: Flask,
    make_employer: MakeEmployer,
    trusted_seal_ca: Authority,
    officer_client: OfficerClient,
) -> None:
    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = complete_application(client, account, trusted_seal_ca)
    insider = officer_client(employer_id=account.employer_id)
    assert officer_post(insider, application_id, "approve") == 403
    assert officer_post(insider, application_id, "reject", reason="no") == 403
    assert _status(app, application_id) is ApplicationStatus.SUBMITTED


def test_rejection_reason_reaches_the_employer(
    app: Flask,
    make_employer: MakeEmployer,
    trusted_seal_ca: Authority,
    officer_client: OfficerClient,
) -> None:
    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = complete_application(client, account, trusted_seal_ca)
    officer = officer_client()
    assert officer_post(officer, application_id, "reject", reason="") == 400
    reason = "The commitment letter is not signed by the legal representative."
    assert officer_post(officer, application_id, "reject", reason=reason) == 302
    assert reason in client.get(f"/applications/{application_id}").get_data(as_text=True)
    assert officer_post(officer, application_id, "approve") == 409
    with app.app_context():
        bodies = db.session.scalars(
            sa.select(OutboxMessage.body).where(OutboxMessage.dedupe_key.like("application:%"))
        ).all()
    assert any(reason in body for body in bodies)


def test_two_officers_approving_at_once_issue_one_certificate(
    app: Flask,
    make_employer: MakeEmployer,
    trusted_seal_ca: Authority,
    make_officer: Callable[..., object],
) -> None:
    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = complete_application(client, account, trusted_seal_ca)
    officers = [make_officer().user.id for _ in range(2)]  # type: ignore[attr-defined]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def approve(officer_id: int) -> None:
        barrier.wait()
        with app.app_context():
            try:
                officer = db.session.get(User, officer_id)
                assert officer is not None
                application = service.officer_application(
                    officer=officer, application_id=application_id
                )
                service.approve_application(
                    officer=officer, application=application, dual_control=False
                )
                service.issue_certificate(
                    application=application,
                    token=app_token(),
                    profile=service.EmployerProfile.from_settings(settings_of(app)),
                    commit=db.session.commit,
                    actor="tests",
                )
                outcomes.append("issued")
            except CAError as exc:
                db.session.rollback()
                outcomes.append(type(exc).__name__)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=approve, args=(o,)) for o in officers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["Conflict", "issued"]
    with app.app_context():
        issued = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Certificate)
            .where(
                Certificate.employer_id == account.employer_id,
                Certificate.status == CertificateStatus.ISSUED,
            )
        )
    assert issued == 1


def test_hsm_failure_leaves_the_application_approved_and_a_retry_issues(
    app: Flask,
    hsm_env: HsmEnv,
    make_employer: MakeEmployer,
    trusted_seal_ca: Authority,
    officer_client: OfficerClient,
) -> None:
    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = complete_application(client, account, trusted_seal_ca)
    officer = officer_client()
    # A token without the issuing CA's key: the HSM refuses to sign.
    label, pin = hsm_env.new_token("empty")
    module = find_softhsm_module()
    assert module
    wrong = Token(HSMConfig(module_path=module, token_label=label, pin=pin, pool_size=1))
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.role == "ra_officer"))
        application = db.session.get(Application, application_id)
        assert user is not None
        assert application is not None
        service.approve_application(officer=user, application=application, dual_control=False)
        with pytest.raises(ServiceUnavailable):
            service.issue_certificate(
                application=application,
                token=wrong,
                profile=service.EmployerProfile.from_settings(settings_of(app)),
                commit=db.session.commit,
                actor="tests",
            )
        db.session.remove()
    wrong.close()
    assert _status(app, application_id) is ApplicationStatus.APPROVED
    with app.app_context():
        failed = db.session.scalars(
            sa.select(Certificate.status).where(Certificate.employer_id == account.employer_id)
        ).all()
    assert failed == [CertificateStatus.FAILED]  # the serial stays burnt, nothing half-issued

    page = officer.get(f"/officer/applications/{application_id}").get_data(as_text=True)
    assert "Issue the certificate now" in page
    assert officer_post(officer, application_id, "issue") == 302
    assert _status(app, application_id) is ApplicationStatus.ISSUED
    assert officer_post(officer, application_id, "issue") == 302  # idempotent: the same one
    with app.app_context():
        statuses = db.session.scalars(
            sa.select(Certificate.status).where(Certificate.employer_id == account.employer_id)
        ).all()
    assert sorted(statuses) == [CertificateStatus.FAILED, CertificateStatus.ISSUED]
    with app.app_context():
        application = db.session.get(Application, application_id)
        user = db.session.scalar(sa.select(User).where(User.role == "ra_officer"))
        assert application is not None
        assert user is not None
        with pytest.raises(Conflict):
            service.approve_application(officer=user, application=application, dual_control=False)
