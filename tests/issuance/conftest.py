"""Factories of the issuance tests: employers (registered through the service, mobile
confirmed), a seal CA trusted by the app, sealed documents, CSRs, signed-in clients, and
applications at each stage up to an issued certificate."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.code_limits import CodeThrottle
from ca_service.binding.models import TrustPurpose
from ca_service.binding.service import add_trust_anchor
from ca_service.db import db, utcnow
from ca_service.employers.models import Employer
from ca_service.employers.service import CodePolicy, Registration, register_employer
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import service
from ca_service.issuance.models import (
    Application,
    ApplicationStatus,
    Document,
    DocumentType,
    KeySource,
)
from ca_service.issuance.seals import SealVerdict
from hsm.errors import HSMError
from tests.auth.conftest import make_officer  # noqa: F401  (fixture re-exported)
from tests.auth.flows import MakeOfficer, code_at, enter_code, login, sms_login
from tests.issuance.seal_factory import (
    Authority,
    SealIdentity,
    make_seal,
    make_seal_ca,
    make_uscc,
    minimal_pdf,
    seal_pdf,
)


@dataclass(frozen=True)
class EmployerAccount:
    employer_id: int
    user_id: int
    username: str
    password: str
    number: str
    legal_name: str


MakeEmployer = Callable[..., EmployerAccount]


def new_number() -> str:
    """A fresh valid USCC (random organisation code part)."""
    return make_uscc("91110000" + "".join(secrets.choice("0123456789") for _ in range(9)))


@pytest.fixture(scope="session")
def seal_ca() -> Authority:
    return make_seal_ca("Test Seal Root", now=dt.datetime.now(dt.UTC))


@pytest.fixture
def trusted_seal_ca(app: Flask, seal_ca: Authority) -> Authority:
    """The seal CA as a trust anchor of the app under test."""
    with app.app_context():
        add_trust_anchor(
            actor="tests",
            purpose=TrustPurpose.SEAL,
            data=seal_ca.certificate.public_bytes(Encoding.PEM),
        )
        db.session.commit()
    return seal_ca


def seal_for(ca: Authority, number: str, organisation: str = "Test Employer Co") -> SealIdentity:
    now = dt.datetime.now(dt.UTC)
    return make_seal(
        ca,
        organisation=organisation,
        registration_number=number,
        not_before=now - dt.timedelta(days=30),
        not_after=now + dt.timedelta(days=365),
    )


def sealed_documents(ca: Authority, number: str) -> dict[DocumentType, bytes]:
    """Six PAdES-sealed PDFs for the employer ``number``."""
    seal = seal_for(ca, number)
    return {t: seal_pdf(minimal_pdf(f"{t.label} of {number}".encode()), seal) for t in DocumentType}


@pytest.fixture
def make_employer(app: Flask) -> MakeEmployer:
    """Register an employer through the service and confirm its mobile number."""

    def make(number: str | None = None, legal_name: str | None = None) -> EmployerAccount:
        number = number or new_number()
        legal_name = legal_name or f"Test Employer {secrets.token_hex(3)} Co., Ltd."
        password = secrets.token_urlsafe(16)
        with app.app_context():
            employer, user, _sent = register_employer(
                Registration(
                    registration_number=number,
                    legal_name=legal_name,
                    administrator_name="Hr Admin",
                    mobile="+8613800138000",
                    email=f"hr-{number.lower()}@example.test",
                    password=password,
                ),
                scheme="stdnum.cn.uscc",
                codes=CodePolicy(
                    secret_key="k" * 32,
                    lifetime=dt.timedelta(minutes=10),
                    throttle=CodeThrottle.unlimited(),
                ),
                client_address=None,
            )
            employer.mobile_confirmed_at = utcnow()
            db.session.commit()
            return EmployerAccount(
                employer_id=employer.id,
                user_id=user.id,
                username=user.username,
                password=password,
                number=number,
                legal_name=legal_name,
            )

    return make


def approved_application(app: Flask, make_employer: MakeEmployer) -> int:
    """An approved application with a CSR, as after the officer's decision (committed)."""
    account = make_employer()
    csr = x509.load_pem_x509_csr(software_csr())
    with app.app_context():
        application = Application(
            employer_id=account.employer_id,
            status=ApplicationStatus.APPROVED,
            key_source=KeySource.CSR,
            csr_der=csr.public_bytes(Encoding.DER),
            created_by_id=account.user_id,
        )
        db.session.add(application)
        db.session.commit()
        return application.id


def employer_login(client: FlaskClient, account: EmployerAccount) -> FlaskClient:
    """Sign the administrator in: password, then the SMS code from the outbox."""
    response = sms_login(client, account.username, account.password)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


@pytest.fixture
def officer_client(app: Flask, make_officer: MakeOfficer) -> Callable[..., FlaskClient]:  # noqa: F811
    """A new test client signed in as a new RA officer (password + TOTP)."""

    def make(employer_id: int | None = None) -> FlaskClient:
        officer = make_officer()
        if employer_id is not None:
            from ca_service.auth.models import User

            with app.app_context():
                row = db.session.get(User, officer.user.id)
                assert row is not None
                row.employer_id = employer_id
                db.session.commit()
        client = app.test_client()
        login(client, officer.user.username, officer.password)
        response = enter_code(client, code_at(officer.seed))
        assert response.status_code == 302, response.get_data(as_text=True)
        return client

    return make


def software_csr(curve: ec.EllipticCurve | None = None) -> bytes:
    """A PEM CSR made with a throwaway software key (the subject is ignored by the CA)."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ignored")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(Encoding.PEM)


def csr_pem(key: CertificateIssuerPrivateKeyTypes, subject: x509.Name | None = None) -> str:
    """A PEM CSR signed by ``key`` (a software key or a token's), empty subject by default."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or x509.Name([]))
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM).decode()


def _add_verified_documents(
    application_id: int, *, licence_valid_until: dt.date | None = None
) -> None:
    """All six documents of an application, each with a verified seal (flushed)."""
    db.session.add_all(
        Document(
            application_id=application_id,
            doc_type=doc_type,
            filename=f"{doc_type.value}.pdf",
            media_type="application/pdf",
            size=100,
            sha256=f"{index:064x}",
            verdict=SealVerdict.VERIFIED,
            verdict_detail="verified",
            valid_until=licence_valid_until if doc_type is DocumentType.BUSINESS_LICENCE else None,
        )
        for index, doc_type in enumerate(DocumentType)
    )
    db.session.flush()


def submitted_application(
    app: Flask, account: EmployerAccount, *, key: CertificateIssuerPrivateKeyTypes | None = None
) -> int:
    """A submitted application with all six documents verified and a CSR for ``key`` (a new
    P-256 key by default), as an employer leaves it for the officers (committed)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    with app.app_context():
        application = Application(
            employer_id=account.employer_id,
            status=ApplicationStatus.SUBMITTED,
            key_source=KeySource.CSR,
            csr_der=x509.load_pem_x509_csr(csr_pem(key).encode()).public_bytes(Encoding.DER),
            created_by_id=account.user_id,
            submitted_at=utcnow(),
        )
        db.session.add(application)
        db.session.flush()
        _add_verified_documents(application.id)
        db.session.commit()
        assert service.approval_blockers(application) == []
        return application.id


@dataclass(frozen=True)
class Issued:
    """An employer certificate made by ``issue_employer_certificate``."""

    account: EmployerAccount
    application_id: int
    certificate_id: int
    certificate: x509.Certificate
    not_after: dt.datetime
    key: CertificateIssuerPrivateKeyTypes  # the key of the CSR: software or on a token

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")


def issue_employer_certificate(
    app: Flask,
    account: EmployerAccount,
    officer_id: int | None,
    *,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    days_ago: int = 0,
    licence_valid_until: dt.date | None = None,
) -> Issued:
    """An employer certificate for ``key`` (a new P-256 key by default), issued ``days_ago``
    days ago (a frozen clock then) after the officer ``officer_id`` approved an application
    with all six documents verified, the business licence valid until
    ``licence_valid_until`` (committed). Without an officer neither the approval nor the
    documents are on record, so a renewal of it goes to an officer."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr_der = x509.load_pem_x509_csr(csr_pem(key).encode()).public_bytes(Encoding.DER)
    when = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    with time_machine.travel(when, tick=False) if days_ago else nullcontext(), app.app_context():
        now = utcnow()
        # The record was last changed before the approval.
        db.session.execute(
            sa.update(Employer)
            .where(Employer.id == account.employer_id)
            .values(updated_at=now - dt.timedelta(days=2))
        )
        application = Application(
            employer_id=account.employer_id,
            status=ApplicationStatus.APPROVED,
            key_source=KeySource.CSR,
            csr_der=csr_der,
            created_by_id=account.user_id,
            decided_by_id=officer_id,
            decided_at=now - dt.timedelta(days=1) if officer_id is not None else None,
        )
        db.session.add(application)
        db.session.flush()
        if officer_id is not None:
            _add_verified_documents(application.id, licence_valid_until=licence_valid_until)
        db.session.commit()
        row = service.issue_certificate(
            application=application,
            token=app_token(),
            profile=service.EmployerProfile.from_settings(settings_of(app)),
            commit=db.session.commit,
            actor="tests",
        )
        assert row.der is not None
        return Issued(
            account=account,
            application_id=application.id,
            certificate_id=row.id,
            certificate=x509.load_der_x509_certificate(row.der),
            not_after=row.not_after,
            key=key,
        )


class FailingToken:
    """The app's token, whose signing key fails as a removed token does (put in place of
    ``app.extensions["hsm_token"]``; the real token and its keys are untouched)."""

    def __init__(self, token: Any) -> None:
        self._token = token

    def private_key(self, label: str) -> Any:
        raise HSMError("token removed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._token, name)


@pytest.fixture
def officer_id(app: Flask, make_officer: MakeOfficer) -> int:  # noqa: F811
    """An RA officer's user id (the approver of record of ``issued``)."""
    return make_officer().user.id


@pytest.fixture
def issued(app: Flask, make_employer: MakeEmployer, officer_id: int) -> Issued:
    """An employer certificate issued now after an officer's approval (committed)."""
    return issue_employer_certificate(app, make_employer(), officer_id)
