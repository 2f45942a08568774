"""OCSP responder (RFC 6960, RFC 5019 profile) for the employer issuing CA.

Responses are signed by the delegated responder certificate whose key is in the HSM. The status
comes from the same database rows as the CRLs, so a revocation shows at once.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp

from ca_service.authorities.service import (
    ISSUING_SLUG,
    current_certificate,
    current_ocsp_responder,
    load_certificate,
)
from ca_service.db import db, utcnow
from ca_service.models import Authority, Certificate, CertificateStatus
from hsm import Token

MAX_REQUEST_BYTES = 8 * 1024
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}


@dataclass(frozen=True)
class OCSPAnswer:
    """The DER response and, for successful answers, how long caches may keep it."""

    der: bytes
    next_update: dt.datetime | None


def _key_bits(public_key: object) -> bytes:
    """The subjectPublicKey BIT STRING contents that issuerKeyHash covers (RFC 6960 §4.1.1)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.public_bytes(Encoding.DER, PublicFormat.PKCS1)
    raise TypeError(f"unsupported issuer key {type(public_key).__name__}")


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> OCSPAnswer:
    return OCSPAnswer(
        ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER), None
    )


@functools.lru_cache(maxsize=16)
def _issuer_hashes(issuer_der: bytes, algorithm: str) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of a CA certificate; computed once per CA and hash."""
    issuer_cert = x509.load_der_x509_certificate(issuer_der)
    return (
        hashlib.new(algorithm, issuer_cert.subject.public_bytes()).digest(),
        hashlib.new(algorithm, _key_bits(issuer_cert.public_key())).digest(),
    )


def _matches(request: ocsp.OCSPRequest, issuer_der: bytes) -> bool:
    name = request.hash_algorithm.name
    if name not in _HASHES:
        return False
    return (request.issuer_name_hash, request.issuer_key_hash) == _issuer_hashes(issuer_der, name)


def answer_ocsp_request(
    data: bytes, *, token: Token, lifetime: dt.timedelta, now: dt.datetime | None = None
) -> OCSPAnswer:
    """Answer one DER OCSP request: good / revoked / unknown, or an unsuccessful status."""
    try:
        request = ocsp.load_der_ocsp_request(data)
    except ValueError:
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)

    issuer = db.session.scalar(sa.select(Authority).where(Authority.slug == ISSUING_SLUG))
    if issuer is None or issuer.certificate is None:
        return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
    issuer_der = current_certificate(issuer).der
    if issuer_der is None or not _matches(request, issuer_der):
        # Not a CA this responder speaks for (another CA, or a name/key hash that is off).
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    responder_row = current_ocsp_responder(issuer)
    if responder_row is None or responder_row.key_label is None:
        return _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
    responder = load_certificate(responder_row)

    moment = now or utcnow()
    row = db.session.scalar(
        sa.select(Certificate).where(
            Certificate.issuer_id == issuer.id,
            Certificate.serial == format(request.serial_number, "x"),
            Certificate.status == CertificateStatus.ISSUED,
        )
    )
    revocation_time, reason = None, None
    if row is None:
        status = ocsp.OCSPCertStatus.UNKNOWN  # never issued by this CA
    elif row.revoked_at is not None and row.revoked_at <= moment:
        status, revocation_time = ocsp.OCSPCertStatus.REVOKED, row.revoked_at
        flag = x509.ReasonFlags(row.revocation_reason or "unspecified")
        reason = None if flag is x509.ReasonFlags.unspecified else flag
    else:
        status = ocsp.OCSPCertStatus.GOOD
    next_update = min(moment + lifetime, responder.not_valid_after_utc)

    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial_number=request.serial_number,
            algorithm=_HASHES[request.hash_algorithm.name](),
            cert_status=status,
            this_update=moment,
            next_update=next_update,
            revocation_time=revocation_time,
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder)
        .certificates([responder])
    )
    try:
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce)
    except x509.ExtensionNotFound:
        pass
    else:
        builder = builder.add_extension(x509.OCSPNonce(nonce.value.nonce), critical=False)
    response = builder.sign(token.private_key(responder_row.key_label), hashes.SHA256())
    return OCSPAnswer(response.public_bytes(Encoding.DER), next_update)
