"""Revocation records and CRL publication."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.audit.service import record_event
from ca_service.authorities.service import (
    ROOT_SLUG,
    current_certificate,
    get_authority,
    load_certificate,
)
from ca_service.authorities.signing import hash_for
from ca_service.config import Settings
from ca_service.db import db, utcnow
from ca_service.errors import Conflict, NotFound, ValidationError
from ca_service.models import Authority, Certificate, CertificateStatus
from ca_service.revocation.models import PublishedCRL
from hsm import KeyAlgorithm, Token

# RFC 5280 §5.3.1 reasons an operator may give; removeFromCRL only releases a hold.
REASONS: dict[str, x509.ReasonFlags] = {
    flag.value: flag for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
}


def find_certificate(issuer: Authority, serial: str) -> Certificate:
    """An issued certificate of ``issuer`` by hex serial.

    :raises NotFound: when this issuer never issued it.
    """
    normalised = serial.strip().lower().removeprefix("0x").lstrip("0")
    row = db.session.scalar(
        sa.select(Certificate).where(
            Certificate.issuer_id == issuer.id,
            Certificate.serial == normalised,
            Certificate.status == CertificateStatus.ISSUED,
        )
    )
    if row is None:
        raise NotFound(f"{issuer.name} issued no certificate with serial {serial}")
    return row


def revoke_certificate(
    *,
    certificate: Certificate,
    reason: str,
    invalidity_date: dt.datetime | None,
    actor: str,
) -> Certificate:
    """Record a revocation (RFC 5280 reason); flushes.

    :raises ValidationError: for an unknown reason or an invalidity date in the future.
    :raises Conflict: when the certificate is already revoked (a hold may become permanent).
    """
    flag = REASONS.get(reason)
    if flag is None:
        raise ValidationError(f"unknown revocation reason {reason!r}; one of {', '.join(REASONS)}")
    now = utcnow()
    if invalidity_date is not None and invalidity_date > now:
        raise ValidationError("the invalidity date cannot be in the future")
    if certificate.revoked_at is not None:
        on_hold = certificate.revocation_reason == x509.ReasonFlags.certificate_hold.value
        if not on_hold or flag is x509.ReasonFlags.certificate_hold:
            raise Conflict(
                f"certificate {certificate.serial} is already revoked "
                f"({certificate.revocation_reason}) since {certificate.revoked_at:%Y-%m-%d %H:%M}"
            )
    certificate.revoked_at = now
    certificate.revocation_reason = flag.value
    certificate.invalidity_date = invalidity_date
    db.session.flush()
    record_event(
        actor,
        "certificate.revoked",
        certificate.serial,
        {"reason": flag.value, "issuer_id": certificate.issuer_id, "subject": certificate.subject},
    )
    return certificate


def release_hold(*, certificate: Certificate, actor: str) -> Certificate:
    """Take a certificate off hold (removeFromCRL); flushes.

    :raises Conflict: when it is not on hold.
    """
    if certificate.revocation_reason != x509.ReasonFlags.certificate_hold.value:
        raise Conflict(f"certificate {certificate.serial} is not on hold")
    certificate.revoked_at = None
    certificate.revocation_reason = None
    certificate.invalidity_date = None
    db.session.flush()
    record_event(actor, "certificate.hold_released", certificate.serial, {})
    return certificate


def _revoked_entries(issuer: Authority, now: dt.datetime) -> list[x509.RevokedCertificate]:
    """The issuer's unexpired revoked certificates, read as plain rows in one streamed pass."""
    rows = db.session.execute(
        sa.select(
            Certificate.serial,
            Certificate.revoked_at,
            Certificate.revocation_reason,
            Certificate.invalidity_date,
        )
        .where(
            Certificate.issuer_id == issuer.id,
            Certificate.revoked_at.is_not(None),
            Certificate.not_after > now,
        )
        .execution_options(yield_per=10_000)
    )
    entries = []
    try:
        for serial, revoked_at, reason, invalidity in rows:
            builder = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial, 16))
                .revocation_date(revoked_at or now)  # never None: the query filters on it
            )
            if reason and reason != x509.ReasonFlags.unspecified.value:
                # RFC 5280 §5.3.1: unspecified is expressed by leaving the reason out.
                builder = builder.add_extension(
                    x509.CRLReason(x509.ReasonFlags(reason)), critical=False
                )
            if invalidity is not None:
                builder = builder.add_extension(x509.InvalidityDate(invalidity), critical=False)
            entries.append(builder.build())
    finally:
        rows.close()
    return entries


def publish_crl(
    *, token: Token, issuer: Authority, lifetime: dt.timedelta, actor: str
) -> PublishedCRL:
    """Sign and store the issuer's next CRL; flushes (the caller commits).

    The revoked list goes to cryptography's builder constructor in one piece: adding entries
    one by one (add_revoked_certificate) copies the list each time, quadratic at scale.
    """
    issuer_cert = load_certificate(current_certificate(issuer))
    now = utcnow()
    next_update = min(now + lifetime, issuer_cert.not_valid_after_utc)
    entries = _revoked_entries(issuer, now)
    # The scope (user or CA certificates) without a distribution point name: a name would put
    # certificates without a CRL distribution point (the nocheck OCSP responder's) out of this
    # CRL's scope (RFC 5280 §6.3.3 b.2), and the CRL is complete for its scope anyway.
    scope = x509.IssuingDistributionPoint(
        full_name=None,
        relative_name=None,
        only_contains_user_certs=issuer.slug != ROOT_SLUG,
        only_contains_ca_certs=issuer.slug == ROOT_SLUG,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
        issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    )
    # Publishers of one issuer queue on its row (PostgreSQL FOR UPDATE; SQLite writers are
    # serialised already), so each takes the next number; the unique constraint still
    # guarantees that no two CRLs of an issuer ever share one.
    db.session.execute(sa.select(Authority.id).where(Authority.id == issuer.id).with_for_update())
    number = (
        db.session.scalar(
            sa.select(sa.func.max(PublishedCRL.number)).where(PublishedCRL.issuer_id == issuer.id)
        )
        or 0
    ) + 1
    extensions = [
        x509.Extension(aki.oid, False, aki),
        x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
        x509.Extension(scope.oid, True, scope),
    ]
    crl = x509.CertificateRevocationListBuilder(
        issuer_name=issuer_cert.subject,
        last_update=now,
        next_update=next_update,
        extensions=extensions,
        revoked_certificates=entries,
    ).sign(token.private_key(issuer.key_label), hash_for(KeyAlgorithm(issuer.key_algorithm)))
    row = PublishedCRL(
        issuer_id=issuer.id,
        number=number,
        this_update=now,
        next_update=next_update,
        entries=len(entries),
        der=crl.public_bytes(Encoding.DER),
    )
    db.session.add(row)
    db.session.flush()
    record_event(actor, "crl.published", issuer.slug, {"number": number, "entries": len(entries)})
    return row


def crl_lifetime(settings: Settings, slug: str) -> dt.timedelta:
    """How long a CA's CRL stays valid (root: CA certificates, rarely changes)."""
    if slug == ROOT_SLUG:
        return dt.timedelta(days=int(settings["ROOT_CRL_NEXT_UPDATE_DAYS"]))
    return dt.timedelta(hours=int(settings["CRL_NEXT_UPDATE_HOURS"]))


def publish_all_crls(*, token: Token, settings: Settings, actor: str) -> list[PublishedCRL]:
    """Publish a new CRL for every CA (cron, init)."""
    from ca_service.authorities.service import list_authorities

    return [
        publish_crl(
            token=token,
            issuer=authority,
            lifetime=crl_lifetime(settings, authority.slug),
            actor=actor,
        )
        for authority in list_authorities()
    ]


def has_crl(issuer: Authority) -> bool:
    """Whether any CRL was published for the CA."""
    query = sa.select(PublishedCRL.id).where(PublishedCRL.issuer_id == issuer.id).limit(1)
    return db.session.scalar(query) is not None


def latest_crl(slug: str) -> PublishedCRL:
    """The newest CRL of a CA.

    :raises NotFound: when none was published.
    """
    issuer = get_authority(slug)
    row = db.session.scalar(
        sa.select(PublishedCRL)
        .where(PublishedCRL.issuer_id == issuer.id)
        .order_by(PublishedCRL.number.desc())
        .limit(1)
    )
    if row is None:
        raise NotFound(f"no CRL has been published for {slug!r}; run `ca-service crl publish`")
    return row
