"""Trust anchors: the CA certificates trusted for document seals and tax certificates."""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.audit.service import record_event
from ca_service.auth.access import ensure_role
from ca_service.auth.models import Role, User
from ca_service.auth.service import actor_of
from ca_service.auth.verification import invalidate_trust_cache
from ca_service.authorities.signing import fingerprint
from ca_service.binding.models import TrustAnchor, TrustPurpose
from ca_service.db import db
from ca_service.errors import Conflict, NotFound, ValidationError, echoed

# Who changes trust: a signed-in user, who must be a CA administrator, or the name of an
# operator tool ("cli", "tests"), whose operator holds the database credentials anyway.
Actor = User | str

_URL_LENGTH = 500  # TrustAnchor.crl_url


def acting(actor: Actor) -> str:
    """The audit actor string of ``actor``, after checking a user is a CA administrator.

    :raises Forbidden: for a user of any other role, or a disabled one.
    """
    if isinstance(actor, str):
        return actor
    ensure_role(actor, Role.CA_ADMIN)
    return actor_of(actor)


def check_crl_url(url: str) -> str:
    """``url`` stripped, when it is an http(s) URL a CRL can be fetched from.

    :raises ValidationError: for any other scheme, no host, or a URL too long to keep.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed port or IPv6 address
        usable = False
    if not usable or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValidationError(
            f"The CRL URL must be an http:// or https:// URL with a host name, not {echoed(url)}."
        )
    if len(url) > _URL_LENGTH:
        raise ValidationError(f"The CRL URL is longer than {_URL_LENGTH} characters.")
    return url


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


def add_trust_anchor(
    *, actor: Actor, purpose: TrustPurpose, data: bytes, crl_url: str | None = None
) -> TrustAnchor:
    """Trust a CA certificate for ``purpose``; flushes.

    ``crl_url`` is where this CA publishes the CRL it signs. It is never taken from the
    certificate's own CRL distribution point: that is where the CA's *parent* publishes.

    :raises Forbidden: when a user who is not a CA administrator acts.
    :raises ValidationError: when ``data`` is not a CA certificate, or the URL is not http(s).
    :raises Conflict: when it is already trusted for that purpose.
    """
    actor_name = acting(actor)
    url = check_crl_url(crl_url) if crl_url else None
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
        crl_url=url,
        enabled=True,
        added_by=actor_name,
    )
    db.session.add(anchor)
    db.session.flush()
    record_event(
        actor_name,
        "trust.anchor_added",
        digest,
        {"purpose": purpose.value, "subject": anchor.subject, "crl_url": url},
    )
    invalidate_trust_cache()
    return anchor


def get_anchor(anchor_id: int) -> TrustAnchor:
    """The trust anchor ``anchor_id``.

    :raises NotFound: when there is no such anchor.
    """
    anchor = db.session.get(TrustAnchor, anchor_id)
    if anchor is None:
        raise NotFound(f"There is no trust anchor {anchor_id}.")
    return anchor


def set_anchor_enabled(*, actor: Actor, anchor_id: int, enabled: bool) -> TrustAnchor:
    """Enable or disable a trust anchor; flushes.

    :raises Forbidden: when a user who is not a CA administrator acts.
    :raises NotFound: when there is no such anchor.
    """
    actor_name = acting(actor)
    anchor = get_anchor(anchor_id)
    anchor.enabled = enabled
    db.session.flush()
    record_event(
        actor_name,
        "trust.anchor_enabled" if enabled else "trust.anchor_disabled",
        anchor.fingerprint_sha256,
        {"purpose": anchor.purpose.value, "subject": anchor.subject},
    )
    invalidate_trust_cache()  # here at once; other workers within TRUST_CACHE_SECONDS
    return anchor


def set_crl_url(*, actor: Actor, anchor_id: int, url: str | None) -> TrustAnchor:
    """Set (or, with None, clear) where the anchor's CA publishes the CRL it signs; flushes.

    :raises Forbidden: when a user who is not a CA administrator acts.
    :raises NotFound: when there is no such anchor.
    :raises ValidationError: when the URL is not http(s).
    """
    actor_name = acting(actor)
    checked = check_crl_url(url) if url else None
    anchor = get_anchor(anchor_id)
    previous, anchor.crl_url = anchor.crl_url, checked
    db.session.flush()
    record_event(
        actor_name,
        "trust.crl_url_set",
        anchor.fingerprint_sha256,
        {"subject": anchor.subject, "crl_url": checked, "previous": previous},
    )
    invalidate_trust_cache()
    return anchor


def list_anchors(purpose: TrustPurpose | None = None) -> list[TrustAnchor]:
    """Every trust anchor (of ``purpose``), oldest first, enabled or not."""
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
