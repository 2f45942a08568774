"""Employer certificates issued by our CA for keys the test holds (a software key, or a key
on an employer's SoftHSM "UKey"), and the signing of login challenges with them."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask

from ca_service.db import db
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import service
from ca_service.issuance.models import Application, ApplicationStatus, KeySource
from tests.issuance.conftest import EmployerAccount, MakeEmployer

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class AgencyCertificate:
    account: EmployerAccount
    certificate: x509.Certificate
    key: Any  # a cryptography private key, software or on a token (hsm signers)

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(Encoding.PEM).decode()

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")


IssueFor = Callable[..., AgencyCertificate]


def sign(key: Any, message: bytes | str) -> str:
    """Base64 signature as ca-client makes it (ECDSA or RSA PKCS#1 v1.5, SHA-256)."""
    data = message.encode() if isinstance(message, str) else message
    if isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        raw = key.sign(data, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(raw).decode()


def issue_employer_certificate(app: Flask, account: EmployerAccount, key: Any) -> x509.Certificate:
    """Issue our employer certificate for ``key`` through the real issuance service (an
    approved application carrying a CSR made with the key; the HSM signs)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "login test")]))
        .sign(key, hashes.SHA256())
    )
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
        row = service.issue_certificate(
            application=application,
            token=app_token(),
            profile=service.EmployerProfile.from_settings(settings_of(app)),
            commit=db.session.commit,
            actor="test",
        )
        assert row.der is not None
        return x509.load_der_x509_certificate(row.der)


@pytest.fixture
def agency_certificate(app: Flask, make_employer: MakeEmployer) -> IssueFor:
    """A new employer with our certificate for a new software P-256 key (or the key given)."""

    def make(key: Any = None, account: EmployerAccount | None = None) -> AgencyCertificate:
        key = key or ec.generate_private_key(ec.SECP256R1())
        account = account or make_employer()
        return AgencyCertificate(account, issue_employer_certificate(app, account, key), key)

    return make
