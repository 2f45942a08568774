"""Factories of the issuance tests: employers (registered through the service, mobile
confirmed), a seal CA trusted by the app, sealed documents, CSRs, signed-in clients."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.code_limits import CodeThrottle
from ca_service.binding.models import TrustPurpose
from ca_service.binding.service import add_trust_anchor
from ca_service.db import db, utcnow
from ca_service.employers.service import CodePolicy, Registration, register_employer
from ca_service.issuance.models import Application, ApplicationStatus, DocumentType, KeySource
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
