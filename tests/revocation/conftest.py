"""Factories for the revocation tests: end-entity certificates signed by the issuing CA's HSM
key, as the issuance service makes them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from ca_service.authorities.service import ISSUING_SLUG, get_authority, load_certificate
from ca_service.authorities.signing import reserve_certificate, sign_reserved
from ca_service.db import db, utcnow
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.models import CertificateKind
from ca_service.revocation.ocsp import presign_for_certificate
from hsm import KeyAlgorithm


@dataclass(frozen=True)
class Issued:
    """A certificate the issuing CA signed in a test."""

    id: int
    serial: str
    certificate: x509.Certificate


MakeCertificate = Callable[..., Issued]


@pytest.fixture
def make_certificate(app: Flask) -> MakeCertificate:
    """Issue (and commit) an end-entity certificate; ``presign`` stores its OCSP responses
    as `ca-service ocsp refresh` (or a first request) would."""

    def make(*, presign: bool = True, days: int = 30) -> Issued:
        with app.app_context():
            issuer = get_authority(ISSUING_SLUG)
            issuer_cert = load_certificate(issuer.certificate)  # type: ignore[arg-type]
            subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Employer Ltd")])
            now = utcnow()
            row = reserve_certificate(
                issuer=issuer,
                kind=CertificateKind.END_ENTITY,
                subject=subject,
                not_before=now - dt.timedelta(minutes=1),
                not_after=now + dt.timedelta(days=days),
            )
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(issuer_cert.subject)
                .public_key(key.public_key())
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            )
            certificate = sign_reserved(
                row,
                builder,
                token=app_token(),
                issuer_key_label=issuer.key_label,
                issuer_algorithm=KeyAlgorithm(issuer.key_algorithm),
            )
            db.session.commit()
            if presign:
                presign_for_certificate(
                    token=app_token(), certificate=row, settings=settings_of(app)
                )
                db.session.commit()
            return Issued(id=row.id, serial=row.serial, certificate=certificate)

    return make
