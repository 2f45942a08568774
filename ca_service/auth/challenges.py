"""Signed challenges: a one-time nonce that a certificate's key signs to prove possession.

Used for certificate login without TLS client certificates (``ca-client login``, a mobile
signer reading the QR code) and for binding a tax certificate. The signed message is
``"ca-service <purpose> challenge: <nonce>"`` — domain-separated, so a token that signs it can
never be made to sign a document or another purpose's challenge with the same bytes.

A challenge is short-lived (``CHALLENGE_SECONDS``) and single use: the answer claims it with
one conditional UPDATE, so a replay — or two racing answers — finds it used. Only the SHA-256
of the nonce is stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from flask_babel import gettext as _

from ca_client import remote
from ca_service.auth.models import ChallengePurpose, LoginChallenge, User
from ca_service.auth.verification import CertificateRefused, Refusal
from ca_service.db import db, rows_changed

__all__ = [
    "Challenge",
    "claim_challenge",
    "digest",
    "new_challenge",
    "signed_message",
    "verify_possession",
]


_KEEP_EXPIRED = dt.timedelta(hours=1)


@dataclasses.dataclass(frozen=True)
class Challenge:
    nonce: str
    purpose: ChallengePurpose
    expires_at: dt.datetime
    row_id: int

    @property
    def to_sign(self) -> str:
        return signed_message(self.purpose, self.nonce).decode()


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def signed_message(purpose: ChallengePurpose, nonce: str) -> bytes:
    """The exact bytes the certificate's key signs (the format is ca-client's, defined once)."""
    return remote.signed_message(purpose.value, nonce)


def new_challenge(
    *,
    purpose: ChallengePurpose,
    lifetime: dt.timedelta,
    now: dt.datetime,
    browser_secret: str | None = None,
    user: User | None = None,
) -> Challenge:
    """A fresh nonce (256 bits); flushes. ``browser_secret`` ties it to one browser session,
    ``user`` to the signed-in administrator who asked to bind a certificate."""
    # Challenges are worth nothing an hour after they expired: the table holds only recent ones.
    db.session.execute(
        sa.delete(LoginChallenge).where(LoginChallenge.expires_at < now - _KEEP_EXPIRED)
    )
    nonce = secrets.token_urlsafe(32)
    row = LoginChallenge(
        nonce_hash=digest(nonce),
        purpose=purpose,
        browser_hash=digest(browser_secret) if browser_secret else None,
        user_id=user.id if user is not None else None,
        expires_at=now + lifetime,
    )
    db.session.add(row)
    db.session.flush()
    return Challenge(nonce=nonce, purpose=purpose, expires_at=row.expires_at, row_id=row.id)


# ca-client signs with the hash it uses for CSRs (SHA-384 for P-384 and RSA-3072 up, SHA-256
# below); both are accepted from any key.
_HASHES: Sequence[hashes.HashAlgorithm] = (hashes.SHA256(), hashes.SHA384())


def verify_possession(certificate: x509.Certificate, message: bytes, signature: bytes) -> None:
    """Check that ``signature`` over ``message`` was made with the certificate's key
    (ECDSA, or RSA PKCS#1 v1.5).

    :raises CertificateRefused: (bad signature) otherwise.
    """
    try:
        key = certificate.public_key()
    except (UnsupportedAlgorithm, ValueError):
        raise CertificateRefused(
            Refusal.UNREADABLE,
            "The certificate's key cannot be read (an unknown algorithm or curve); sign in "
            "with an ECDSA P-256/P-384 or RSA certificate.",
        ) from None
    for algorithm in _HASHES:
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, message, ec.ECDSA(algorithm))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, message, padding.PKCS1v15(), algorithm)
            else:
                break
        except InvalidSignature:
            continue
        return
    raise CertificateRefused(
        Refusal.BAD_SIGNATURE,
        _(
            "The signature does not match this challenge and certificate: it was made over "
            "another challenge or with another key. Ask for a new challenge and sign it with "
            "the key of this certificate."
        ),
    )


def claim_challenge(*, nonce: str, purpose: ChallengePurpose, now: dt.datetime) -> LoginChallenge:
    """Use up a live challenge of ``purpose`` (single use, first answer wins); flushes.

    :raises CertificateRefused: unknown, expired, or already used (a replay).
    """
    row = db.session.scalar(
        sa.select(LoginChallenge).where(LoginChallenge.nonce_hash == digest(nonce.strip()))
    )
    if row is None or row.purpose is not purpose:
        raise CertificateRefused(
            Refusal.CHALLENGE_UNUSABLE,
            _("This challenge is unknown here. Ask for a new one (they are single use)."),
        )
    if row.used_at is not None:
        raise CertificateRefused(
            Refusal.CHALLENGE_UNUSABLE,
            _(
                "This challenge was already used; a signed challenge cannot be replayed. Ask for "
                "a new one."
            ),
        )
    if row.expires_at <= now:
        raise CertificateRefused(
            Refusal.CHALLENGE_UNUSABLE,
            _("This challenge has expired. Ask for a new one and sign it."),
        )
    claimed = rows_changed(
        sa.update(LoginChallenge)
        .where(LoginChallenge.id == row.id, LoginChallenge.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session="fetch")
    )
    if claimed != 1:
        raise CertificateRefused(
            Refusal.CHALLENGE_UNUSABLE,
            _("This challenge was already used; a signed challenge cannot be replayed."),
        )
    return row
