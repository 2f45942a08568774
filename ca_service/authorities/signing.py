"""Signing certificates with HSM keys without ever losing or reusing a serial.

The order is the contract (DESIGN.md, "Nothing signed is lost"):
1. ``reserve_certificate`` adds a PENDING row with a fresh random serial and flushes;
2. the caller commits (the early commit that protects the irreversible HSM step);
3. ``sign_reserved`` signs with the HSM and stores the DER on the row; the caller commits again
   before the certificate is shown to anyone.
A failure between 2 and 3 leaves a PENDING row that ``ca-service reconcile`` finds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from ca_service.db import db, utcnow
from ca_service.models import Authority, Certificate, CertificateKind, CertificateStatus
from hsm import KeyAlgorithm, Token

SERIAL_BITS = 159
# Names for attributes RFC 4514 has no short name for, as pages and logs show them.
READABLE_NAMES = {
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}


def new_serial() -> int:
    """A positive 159-bit serial from the CSPRNG (RFC 5280 allows 20 octets; CABF wants 64 bits
    of entropy; 159 bits keep the DER INTEGER at 20 octets without a sign byte)."""
    while True:
        serial = secrets.randbits(SERIAL_BITS)
        if serial > 0:
            return serial


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def normalise_serial(serial: str) -> str:
    """A serial as typed by a person or tool (``0x``, leading zeros, upper case) in the stored
    form: lowercase hex without leading zeros."""
    return serial.strip().lower().removeprefix("0x").lstrip("0")


def hash_for(algorithm: KeyAlgorithm) -> hashes.SHA256 | hashes.SHA384:
    """The signature hash that matches a key's strength."""
    if algorithm in (KeyAlgorithm.EC_P384, KeyAlgorithm.RSA_3072, KeyAlgorithm.RSA_4096):
        return hashes.SHA384()
    return hashes.SHA256()


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def reserve_certificate(
    *,
    issuer: Authority,
    kind: CertificateKind,
    subject: x509.Name,
    not_before: dt.datetime,
    not_after: dt.datetime,
    key_label: str | None = None,
) -> Certificate:
    """Add a PENDING certificate row with a new unique serial; flushes, never commits."""
    # No look-up first: a collision among 2**159 random values does not happen in practice,
    # and the unique constraint (issuer_id, serial) makes the flush fail if it ever did.
    serial = serial_hex(new_serial())
    row = Certificate(
        issuer_id=issuer.id,
        serial=serial,
        kind=kind,
        status=CertificateStatus.PENDING,
        subject=subject.rfc4514_string(READABLE_NAMES),
        not_before=not_before,
        not_after=not_after,
        key_label=key_label,
    )
    db.session.add(row)
    db.session.flush()
    return row


def sign_reserved(
    row: Certificate,
    builder: x509.CertificateBuilder,
    *,
    token: Token,
    issuer_key_label: str,
    issuer_algorithm: KeyAlgorithm,
) -> x509.Certificate:
    """Sign ``builder`` (serial, validity taken from ``row``) and store the result on the row.

    :raises hsm.errors.HSMError: when the HSM cannot sign; the committed PENDING row stays
        behind for ``reconcile`` and its serial is never reused.
    """
    builder = (
        builder.serial_number(row.serial_number)
        .not_valid_before(row.not_before)
        .not_valid_after(row.not_after)
    )
    certificate = builder.sign(token.private_key(issuer_key_label), hash_for(issuer_algorithm))
    store_signed(row, certificate)
    return certificate


def store_signed(row: Certificate, certificate: x509.Certificate) -> None:
    """Record a signed certificate on its reserved row; flushes."""
    der = certificate.public_bytes(Encoding.DER)
    row.der = der
    row.fingerprint_sha256 = hashlib.sha256(der).hexdigest()
    row.status = CertificateStatus.ISSUED
    row.issued_at = utcnow()
    db.session.flush()


def public_key_matches(certificate: x509.Certificate, token: Token, key_label: str) -> bool:
    """Whether the certificate certifies the token's key with that label."""
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return certificate.public_key().public_bytes(*spki) == token.public_key(key_label).public_bytes(
        *spki
    )
