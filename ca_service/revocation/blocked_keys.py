"""Keys revoked for keyCompromise are never certified again.

Every revocation for keyCompromise (including a hold made permanent with that reason) adds
the certificate's public key to ``blocked_keys``; attaching a CSR, counter provisioning and
issuance itself (before the HSM signs) refuse a blocked key. Renewal calls the same
``refuse_blocked_key``. The key is named by the SHA-256 of its DER SubjectPublicKeyInfo (hex).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from ca_service.audit.service import record_event
from ca_service.db import utcnow
from ca_service.errors import Conflict
from ca_service.models import Certificate
from ca_service.revocation.models import BlockedKey

__all__ = [
    "KeyBlocked",
    "block_certificate_key",
    "blocked_among",
    "is_key_blocked",
    "refuse_blocked_key",
    "spki_sha256",
]

KEY_COMPROMISE = x509.ReasonFlags.key_compromise.value


class KeyBlocked(Conflict):
    """The public key belongs to a certificate revoked for keyCompromise."""

    code = "key_blocked"


def spki_sha256(key: bytes | str | CertificatePublicKeyTypes) -> str:
    """The hex SHA-256 of a key's DER SubjectPublicKeyInfo; a ``str`` is taken as that hash
    already (``applications.public_key_sha256``), ``bytes`` as the DER SPKI."""
    if isinstance(key, str):
        return key.lower()
    if isinstance(key, bytes):
        return hashlib.sha256(key).hexdigest()
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


def is_key_blocked(session: Session, key: bytes | str | CertificatePublicKeyTypes) -> bool:
    """Whether the key (DER SPKI, its hex SHA-256, or a public key) is blocked."""
    query = sa.select(BlockedKey.id).where(BlockedKey.spki_sha256 == spki_sha256(key)).limit(1)
    return session.scalar(query) is not None


def blocked_among(session: Session, hashes: Iterable[str]) -> set[str]:
    """Which of these SPKI hashes are blocked (one query for a batch)."""
    wanted = {value.lower() for value in hashes}
    if not wanted:
        return set()
    query = sa.select(BlockedKey.spki_sha256).where(BlockedKey.spki_sha256.in_(wanted))
    return set(session.scalars(query))


def blocked_message() -> str:
    return str(
        _(
            "This public key belonged to a certificate revoked because its key was "
            "compromised; it can never be certified again. Generate a new key pair and send "
            "a new request."
        )
    )


def refuse_blocked_key(session: Session, key: bytes | str | CertificatePublicKeyTypes) -> None:
    """:raises KeyBlocked: (409) when the key is blocked."""
    if is_key_blocked(session, key):
        raise KeyBlocked(blocked_message())


def block_certificate_key(
    session: Session, certificate: Certificate, *, reason: str, actor: str
) -> BlockedKey | None:
    """Block the public key of ``certificate`` (revoked for ``reason``); flushes and audits
    ``key.blocked``. Returns None when the key was blocked already or the row has no DER."""
    if certificate.der is None:
        return None
    digest = spki_sha256(
        x509.load_der_x509_certificate(certificate.der)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    if is_key_blocked(session, digest):
        return None
    row = BlockedKey(
        spki_sha256=digest, certificate_id=certificate.id, reason=reason, blocked_at=utcnow()
    )
    session.add(row)
    session.flush()
    record_event(
        actor,
        "key.blocked",
        digest,
        {"certificate_id": certificate.id, "serial": certificate.serial, "reason": reason},
    )
    return row
