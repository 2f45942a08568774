"""A key revoked for keyCompromise is never certified again: refused when a request carrying
it is attached (web and API), at counter provisioning, and at issuance itself before the HSM
signs; other reasons block nothing; the migration blocks keys revoked before it."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.authorities.service import ISSUING_SLUG, get_authority
from ca_service.db import db, upgrade_database, utcnow
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import service
from ca_service.issuance.csr import check_request
from ca_service.issuance.models import Application, ApplicationStatus, KeySource
from ca_service.models import Certificate
from ca_service.revocation.blocked_keys import (
    KeyBlocked,
    is_key_blocked,
    refuse_blocked_key,
    spki_sha256,
)
from ca_service.revocation.models import BlockedKey
from ca_service.revocation.service import find_certificate, revoke_certificate
from tests.api.conftest import API, bearer, error_of, request_token, token_of
from tests.auth.certificates import (  # noqa: F401  (fixtures used by name)
    AgencyCertificate,
    IssueFor,
    agency_certificate,
    issue_employer_certificate,
)
from tests.conftest import PG_ENV, _scratch_postgres_database
from tests.issuance.conftest import MakeEmployer, employer_login, make_employer  # noqa: F401
from tests.issuance.test_flow import attach_csr
from tests.issuance.test_flow import new_application as web_new_application

BLOCKED = "can never be certified again"


def csr_for(key: Any) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "again")]))
        .sign(key, hashes.SHA256())
        .public_bytes(Encoding.PEM)
    )


def revoke(app: Flask, issued: AgencyCertificate, reason: str) -> None:
    with app.app_context():
        row = find_certificate(get_authority(ISSUING_SLUG), issued.serial)
        revoke_certificate(
            certificate=row,
            reason=reason,
            invalidity_date=None,
            actor="test",
            token=app_token(),
            settings=settings_of(app),
        )
        db.session.commit()


def approved_with_key(app: Flask, account: Any, key: Any) -> int:
    """An approved application carrying a CSR for ``key``, written straight to the database
    (past every check of attach and review: only issuance is left to refuse it)."""
    with app.app_context():
        application = Application(
            employer_id=account.employer_id,
            status=ApplicationStatus.APPROVED,
            key_source=KeySource.CSR,
            csr_der=x509.load_pem_x509_csr(csr_for(key)).public_bytes(Encoding.DER),
            created_by_id=account.user_id,
        )
        db.session.add(application)
        db.session.commit()
        return application.id


def issue(app: Flask, application_id: int) -> Certificate:
    application = db.session.get(Application, application_id)
    assert application is not None
    return service.issue_certificate(
        application=application,
        token=app_token(),
        profile=service.EmployerProfile.from_settings(settings_of(app)),
        commit=db.session.commit,
        actor="test",
    )


def test_a_compromised_key_is_refused_at_attach_and_at_issuance(
    app: Flask,
    client: FlaskClient,
    agency_certificate: IssueFor,  # noqa: F811
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = agency_certificate(key)
    revoke(app, issued, "keyCompromise")
    with app.app_context():
        row = db.session.scalar(sa.select(BlockedKey))
        assert row is not None
        assert row.spki_sha256 == spki_sha256(key.public_key())
        assert row.reason == "keyCompromise"
        assert is_key_blocked(db.session(), key.public_key())
        events = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "key.blocked")
        ).all()
        assert [event.target for event in events] == [row.spki_sha256]

    # The API: another employer's new application with the same key.
    other = make_employer()
    token = token_of(request_token(client, other.username, other.password))
    created = client.post(f"{API}/applications", json={"key_source": "csr"}, headers=bearer(token))
    assert created.status_code == 201, created.get_data(as_text=True)
    path = f"{API}/applications/{created.get_json()['id']}/csr"
    refused = client.put(
        path, data=csr_for(key), content_type="application/pkcs10", headers=bearer(token)
    )
    assert refused.status_code == 409, refused.get_data(as_text=True)
    error = error_of(refused)
    assert error["code"] == "key_blocked"
    assert BLOCKED in error["message"]
    fresh = ec.generate_private_key(ec.SECP256R1())
    accepted = client.put(
        path, data=csr_for(fresh), content_type="application/pkcs10", headers=bearer(token)
    )
    assert accepted.status_code == 200, accepted.get_data(as_text=True)

    # The web portal: the same key again, refused with the message on the page.
    browser = employer_login(app.test_client(), issued.account)
    application_id = web_new_application(browser)
    status, page = attach_csr(browser, application_id, csr_for(key))
    assert status == 409
    assert BLOCKED in page
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        assert application.csr_der is None

    # Issuance itself: an approved application that reached the database with the key.
    forced = approved_with_key(app, issued.account, key)
    with app.app_context():
        before = db.session.scalar(sa.select(sa.func.count()).select_from(Certificate))
        with pytest.raises(KeyBlocked, match=BLOCKED):
            issue(app, forced)
        db.session.rollback()
        after = db.session.scalar(sa.select(sa.func.count()).select_from(Certificate))
        assert after == before  # nothing reserved, nothing signed
        application = db.session.get(Application, forced)
        assert application is not None
        assert application.status is ApplicationStatus.APPROVED
        assert application.certificate_id is None


def test_a_batch_issues_the_others_and_refuses_the_blocked_key(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = agency_certificate(key)
    revoke(app, issued, "keyCompromise")
    blocked = approved_with_key(app, issued.account, key)
    fine = approved_with_key(app, issued.account, ec.generate_private_key(ec.SECP256R1()))
    with app.app_context():
        applications = service.applications_by_id([blocked, fine])
        results = service.issue_certificates(
            applications=applications,
            token=app_token(),
            profile=service.EmployerProfile.from_settings(settings_of(app)),
            commit=db.session.commit,
            actor="test",
        )
    by_id = {result.application_id: result for result in results}
    assert isinstance(by_id[blocked].error, KeyBlocked)
    assert by_id[fine].error is None
    assert by_id[fine].certificate is not None


@pytest.mark.parametrize("reason", ["superseded", "cessationOfOperation", "certificateHold"])
def test_other_reasons_block_nothing(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
    reason: str,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = agency_certificate(key)
    revoke(app, issued, reason)
    with app.app_context():
        assert not is_key_blocked(db.session(), key.public_key())
        assert db.session.scalar(sa.select(sa.func.count()).select_from(BlockedKey)) == 0
    again = issue_employer_certificate(app, issued.account, key)
    assert again.public_key() == key.public_key()


def test_a_hold_made_permanent_for_key_compromise_blocks(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = agency_certificate(key)
    revoke(app, issued, "certificateHold")
    revoke(app, issued, "keyCompromise")
    with app.app_context():
        assert is_key_blocked(db.session(), key.public_key())
        with pytest.raises(KeyBlocked):
            refuse_blocked_key(db.session(), key.public_key())
    # The two ways of naming the key say the same.
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    with app.app_context():
        assert is_key_blocked(db.session(), spki)
        assert is_key_blocked(db.session(), spki_sha256(spki).upper())


def test_a_counter_generated_key_that_is_blocked_is_refused(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = agency_certificate(key)
    revoke(app, issued, "keyCompromise")
    with app.app_context():
        application = Application(
            employer_id=issued.account.employer_id,
            status=ApplicationStatus.APPROVED,
            key_source=KeySource.COUNTER,
            created_by_id=issued.account.user_id,
        )
        db.session.add(application)
        db.session.flush()
        with pytest.raises(KeyBlocked, match=BLOCKED):
            service.provision_request(
                application=application, checked=check_request(csr_for(key)), actor="test"
            )
        assert application.csr_der is None


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "before 0008")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} not set"),
            ],
        ),
    ],
)
def test_the_migration_blocks_keys_revoked_before_it(tmp_path: Path, backend: str) -> None:
    if backend == "sqlite":
        _backfill_check(f"sqlite:///{tmp_path / 'old.db'}")
        return
    server = os.environ[PG_ENV].replace("postgresql://", "postgresql+psycopg://", 1)
    with _scratch_postgres_database(server) as url:
        _backfill_check(url)


def _backfill_check(url: str) -> None:
    upgrade_database(url, "0007")
    compromised, superseded = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    engine = sa.create_engine(url)
    now = utcnow()
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO authorities (id, slug, name, key_label, key_algorithm, created_at)"
                    " VALUES (1, 'issuing', 'Issuing CA', 'k', 'ec-p256', :now)"
                ),
                {"now": now},
            )
            for serial, key, reason in (
                ("a1", compromised, "keyCompromise"),
                ("a2", compromised, "keyCompromise"),  # the same key twice: one row
                ("b1", superseded, "superseded"),
            ):
                conn.execute(
                    sa.text(
                        "INSERT INTO certificates (issuer_id, serial, kind, status, subject,"
                        " not_before, not_after, der, created_at, revoked_at, revocation_reason)"
                        " VALUES (1, :serial, 'end_entity', 'issued', 'CN=x', :before, :after,"
                        " :der, :now, :now, :reason)"
                    ),
                    {
                        "serial": serial,
                        "before": now - dt.timedelta(days=1),
                        "after": now + dt.timedelta(days=1),
                        "der": _self_signed(key).public_bytes(Encoding.DER),
                        "now": now,
                        "reason": reason,
                    },
                )
        upgrade_database(url)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT b.spki_sha256, c.serial, b.reason FROM blocked_keys b"
                    " JOIN certificates c ON c.id = b.certificate_id"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [
        (spki_sha256(compromised.public_key()), "a1", "keyCompromise")
    ]


def test_a_key_blocked_after_its_request_was_attached_blocks_the_approval(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = agency_certificate(key)
    with app.app_context():
        application = Application(
            employer_id=issued.account.employer_id,
            status=ApplicationStatus.SUBMITTED,
            key_source=KeySource.CSR,
            csr_der=x509.load_pem_x509_csr(csr_for(key)).public_bytes(Encoding.DER),
            public_key_sha256=spki_sha256(key.public_key()),
            created_by_id=issued.account.user_id,
        )
        db.session.add(application)
        db.session.commit()
        application_id = application.id
        assert not any(BLOCKED in b for b in service.approval_blockers(application))
    revoke(app, issued, "keyCompromise")
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        assert any(BLOCKED in b for b in service.approval_blockers(application))
