"""Trust anchors: the CA certificates trusted for document seals and tax certificates."""

from __future__ import annotations

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.audit.service import record_event
from ca_service.authorities.signing import fingerprint
from ca_service.binding.models import TrustAnchor, TrustPurpose
from ca_service.db import db
from ca_service.errors import Conflict, NotFound, ValidationError


def _load_ca_certificate(data: bytes) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certificate = x509.load_pem_x509_certificate(data)
        else:
            certificate = x509.load_der_x509_certificate(data)
    except ValueError:
        raise ValidationError("This is not an X.509 certificate (PEM or DER).") from None
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ValidationError(
            f"{certificate.subject.rfc4514_string()} is not a CA certificate "
            "(basicConstraints cA is not set); trust anchors must be CA certificates."
        )
    return certificate


def _crl_url_of(certificate: x509.Certificate) -> str | None:
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    for point in points:
        for name in point.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith("http"):
                return str(name.value)
    return None


def add_trust_anchor(
    *, actor: str, purpose: TrustPurpose, data: bytes, crl_url: str | None = None
) -> TrustAnchor:
    """Trust a CA certificate for ``purpose``; flushes.

    :raises ValidationError: when ``data`` is not a CA certificate.
    :raises Conflict: when it is already trusted for that purpose.
    """
    certificate = _load_ca_certificate(data)
    digest = fingerprint(certificate)
    existing = db.session.scalar(
        sa.select(TrustAnchor).where(
            TrustAnchor.purpose == purpose, TrustAnchor.fingerprint_sha256 == digest
        )
    )
    if existing is not None:
        raise Conflict(f"{existing.subject} is already a {purpose.value} trust anchor.")
    anchor = TrustAnchor(
        purpose=purpose,
        subject=certificate.subject.rfc4514_string(),
        fingerprint_sha256=digest,
        der=certificate.public_bytes(Encoding.DER),
        not_after=certificate.not_valid_after_utc,
        crl_url=crl_url or _crl_url_of(certificate),
        enabled=True,
        added_by=actor,
    )
    db.session.add(anchor)
    db.session.flush()
    record_event(
        actor,
        "trust.anchor_added",
        digest,
        {"purpose": purpose.value, "subject": anchor.subject},
    )
    return anchor


def set_anchor_enabled(*, actor: str, anchor_id: int, enabled: bool) -> TrustAnchor:
    """Enable or disable a trust anchor; flushes.

    :raises NotFound: when there is no such anchor.
    """
    anchor = db.session.get(TrustAnchor, anchor_id)
    if anchor is None:
        raise NotFound(f"There is no trust anchor {anchor_id}.")
    anchor.enabled = enabled
    db.session.flush()
    record_event(
        actor,
        "trust.anchor_enabled" if enabled else "trust.anchor_disabled",
        anchor.fingerprint_sha256,
        {"purpose": anchor.purpose.value, "subject": anchor.subject},
    )
    return anchor


def list_anchors(purpose: TrustPurpose | None = None) -> list[TrustAnchor]:
    query = sa.select(TrustAnchor).order_by(TrustAnchor.id)
    if purpose is not None:
        query = query.where(TrustAnchor.purpose == purpose)
    return list(db.session.scalars(query))


def trusted_certificates(purpose: TrustPurpose) -> list[x509.Certificate]:
    """The enabled anchors of ``purpose``, parsed."""
    rows = db.session.scalars(
        sa.select(TrustAnchor.der).where(
            TrustAnchor.purpose == purpose, TrustAnchor.enabled.is_(True)
        )
    )
    return [x509.load_der_x509_certificate(der) for der in rows]
