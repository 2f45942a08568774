"""Certificate login: a verified certificate (TLS client certificate or signed challenge)
signs in the employer administrator it maps to.

Every attempt is audited. A refusal is committed at once — the request fails and its boundary
rolls back, yet the attempt must stay on the record — and then re-raised.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from cryptography import x509
from flask_babel import gettext as _

from ca_service.audit.service import record_event
from ca_service.auth.challenges import claim_challenge, signed_message, verify_possession
from ca_service.auth.models import ChallengePurpose, LoginChallenge, User
from ca_service.auth.service import actor_of
from ca_service.auth.verification import (
    CertificateRefused,
    Refusal,
    VerifiedCertificate,
    account_for,
    verify_certificate,
)
from ca_service.config import Settings
from ca_service.db import db
from ca_service.models import Certificate

__all__ = [
    "CertificateLogin",
    "answer_challenge",
    "certificate_ended_message",
    "certificate_session_end",
    "login_with_certificate",
    "record_refusal",
]


@dataclasses.dataclass(frozen=True)
class CertificateLogin:
    user: User
    verified: VerifiedCertificate
    binding_id: int | None
    method: str  # "certificate:tls" or "certificate:challenge"
    challenge: LoginChallenge | None = None

    @property
    def certificate_id(self) -> int | None:
        """Ours: the certificate's row, whose revocation ends the tokens and sessions it gave."""
        return self.verified.certificate_id

    @property
    def not_after(self) -> dt.datetime:
        """The certificate's notAfter: tokens and sessions it gave end then at the latest."""
        return self.verified.certificate.not_valid_after_utc


def record_refusal(
    exc: CertificateRefused,
    chain: Sequence[x509.Certificate],
    method: str,
    *,
    actor: str = "anonymous",
) -> None:
    """Audit a refused certificate and commit at once (the request itself rolls back).
    ``actor``: the signed-in account presenting it (a binding), else nobody known yet."""
    db.session.rollback()
    leaf = chain[0] if chain else None
    record_event(
        actor,
        "auth.certificate_refused",
        leaf.subject.rfc4514_string()[:200] if leaf is not None else "-",
        {
            "refusal": exc.refusal.value,
            "method": method,
            "issuer": leaf.issuer.rfc4514_string() if leaf is not None else None,
            "serial": format(leaf.serial_number, "x") if leaf is not None else None,
        },
    )
    db.session.commit()


def _verified_login(
    chain: Sequence[x509.Certificate], *, method: str, settings: Settings, now: dt.datetime
) -> CertificateLogin:
    verified = verify_certificate(chain, settings=settings, now=now)
    user, binding_id = account_for(verified)
    return CertificateLogin(user=user, verified=verified, binding_id=binding_id, method=method)


def _audit_login(login: CertificateLogin) -> None:
    record_event(
        actor_of(login.user),
        "auth.certificate_accepted",
        login.user.username,
        {
            "method": login.method,
            "source": login.verified.source.value,
            "subject": login.verified.subject,
            "fingerprint_sha256": login.verified.fingerprint_sha256,
            "binding_id": login.binding_id,
        },
    )


def login_with_certificate(
    chain: Sequence[x509.Certificate], *, settings: Settings, now: dt.datetime
) -> CertificateLogin:
    """Sign in with a TLS client certificate the server (or a trusted proxy) verified the
    possession of; flushes.

    :raises CertificateRefused: each failure with its own message (already audited).
    """
    method = "certificate:tls"
    try:
        login = _verified_login(chain, method=method, settings=settings, now=now)
    except CertificateRefused as exc:
        record_refusal(exc, chain, method)
        raise
    _audit_login(login)
    return login


def answer_challenge(
    *,
    nonce: str,
    chain: Sequence[x509.Certificate],
    signature: bytes,
    settings: Settings,
    now: dt.datetime,
) -> CertificateLogin:
    """Sign in with a login challenge signed by the certificate's key; flushes. The caller
    hands the result to the browser that started the challenge, or issues an API token.

    :raises CertificateRefused: unusable challenge, bad signature, or a refused certificate
        (audited).
    """
    method = "certificate:challenge"
    if not chain:
        raise CertificateRefused(Refusal.UNREADABLE, _("No certificate was presented."))
    try:
        challenge = claim_challenge(nonce=nonce, purpose=ChallengePurpose.LOGIN, now=now)
        verify_possession(
            chain[0], signed_message(ChallengePurpose.LOGIN, nonce.strip()), signature
        )
        login = _verified_login(chain, method=method, settings=settings, now=now)
    except CertificateRefused as exc:
        record_refusal(exc, chain, method)
        raise
    challenge.result_user_id = login.user.id
    challenge.result_method = method
    challenge.result_certificate_id = login.certificate_id
    challenge.result_certificate_not_after = login.not_after
    db.session.flush()
    _audit_login(login)
    return dataclasses.replace(login, challenge=challenge)


def certificate_ended_message(
    *, revoked_at: dt.datetime | None, not_after: dt.datetime | None, now: dt.datetime
) -> str | None:
    """Why a token or session obtained by certificate login has ended: its certificate was
    revoked or is past notAfter; None while the certificate is usable."""
    if revoked_at is not None:
        return str(
            _(
                "The certificate you signed in with was revoked on %(date)s UTC, which ended "
                "this sign-in. Sign in again with a valid certificate or your password.",
                date=f"{revoked_at:%Y-%m-%d %H:%M}",
            )
        )
    if not_after is not None and not_after <= now:
        return str(
            _(
                "The certificate you signed in with expired on %(date)s UTC, which ended this "
                "sign-in. Sign in again with a valid certificate or your password.",
                date=f"{not_after:%Y-%m-%d %H:%M}",
            )
        )
    return None


def certificate_session_end(
    certificate_id: int | None, not_after: dt.datetime | None, now: dt.datetime
) -> str | None:
    """``certificate_ended_message`` for a certificate known by its row (one primary-key
    lookup) and/or its notAfter."""
    revoked_at = None
    if certificate_id is not None:
        row = db.session.execute(
            sa.select(Certificate.revoked_at, Certificate.not_after).where(
                Certificate.id == certificate_id
            )
        ).one_or_none()
        if row is None:
            return str(_("The certificate you signed in with is no longer known; sign in again."))
        revoked_at = row.revoked_at
        not_after = min(not_after, row.not_after) if not_after is not None else row.not_after
    return certificate_ended_message(revoked_at=revoked_at, not_after=not_after, now=now)
