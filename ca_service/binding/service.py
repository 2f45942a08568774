"""Trust anchors: the CA certificates trusted for document seals and tax certificates."""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask_babel import gettext as _

from ca_service.audit.service import record_event
from ca_service.auth.access import ensure_role
from ca_service.auth.models import Role, User
from ca_service.auth.service import actor_of
from ca_service.auth.trust_cache import invalidate_trust_cache
from ca_service.authorities.signing import fingerprint
from ca_service.binding.models import (
    DEFAULT_REVOCATION_POLICY,
    RevocationPolicy,
    TrustAnchor,
    TrustPurpose,
)
from ca_service.db import db
from ca_service.errors import Conflict, NotFound, ValidationError, echoed

# Who changes trust: a signed-in user, who must be a CA administrator, or the name of an
# operator tool ("cli", "tests"), whose operator holds the database credentials anyway.
Actor = User | str

_URL_LENGTH = 500  # TrustAnchor.crl_url
# The fewest hex digits of a fingerprint that name an anchor (fewer: its number).
_MIN_PREFIX = 8


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
            _(
                "The CRL URL must be an http:// or https:// URL with a host name, not %(url)s.",
                url=echoed(url),
            )
        )
    if len(url) > _URL_LENGTH:
        raise ValidationError(
            _("The CRL URL is longer than %(length)s characters.", length=_URL_LENGTH)
        )
    return url


def _load_ca_certificate(data: bytes) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certificate = x509.load_pem_x509_certificate(data)
        else:
            certificate = x509.load_der_x509_certificate(data)
    except ValueError:
        raise ValidationError(_("This is not an X.509 certificate (PEM or DER).")) from None
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ValidationError(
            _(
                "%(subject)s is not a CA certificate (basicConstraints cA is not set); trust "
                "anchors must be CA certificates.",
                subject=certificate.subject.rfc4514_string(),
            )
        )
    return certificate


def add_trust_anchor(
    *,
    actor: Actor,
    purpose: TrustPurpose,
    data: bytes,
    crl_url: str | None = None,
    revocation_policy: RevocationPolicy = DEFAULT_REVOCATION_POLICY,
) -> TrustAnchor:
    """Trust a CA certificate for ``purpose``; flushes.

    ``crl_url`` is where this CA publishes the CRL it signs. It is never taken from the
    certificate's own CRL distribution point: that is where the CA's *parent* publishes.
    ``revocation_policy`` applies to the tax paths that end at this anchor.

    :raises Forbidden: when a user who is not a CA administrator acts.
    :raises ValidationError: when ``data`` is not a CA certificate, the URL is not http(s), or
        a seal anchor is given a revocation policy other than the default.
    :raises Conflict: when it is already trusted for that purpose.
    """
    actor_name = acting(actor)
    url = check_crl_url(crl_url) if crl_url else None
    if purpose is not TrustPurpose.TAX and revocation_policy is not DEFAULT_REVOCATION_POLICY:
        raise ValidationError(
            _(
                "Revocation policies apply to tax anchors only; seal CAs are not checked "
                "against CRLs."
            )
        )
    certificate = _load_ca_certificate(data)
    digest = fingerprint(certificate)
    existing = db.session.scalar(
        sa.select(TrustAnchor).where(
            TrustAnchor.purpose == purpose, TrustAnchor.fingerprint_sha256 == digest
        )
    )
    if existing is not None:
        raise Conflict(
            _(
                "%(subject)s is already a %(purpose)s trust anchor.",
                subject=existing.subject,
                purpose=purpose.value,
            )
        )
    anchor = TrustAnchor(
        purpose=purpose,
        subject=certificate.subject.rfc4514_string(),
        fingerprint_sha256=digest,
        der=certificate.public_bytes(Encoding.DER),
        not_after=certificate.not_valid_after_utc,
        crl_url=url,
        enabled=True,
        revocation_policy=revocation_policy,
        added_by=actor_name,
    )
    db.session.add(anchor)
    db.session.flush()
    record_event(
        actor_name,
        "trust.anchor_added",
        digest,
        {
            "purpose": purpose.value,
            "subject": anchor.subject,
            "crl_url": url,
            "revocation_policy": revocation_policy.value,
        },
    )
    invalidate_trust_cache()
    return anchor


def get_anchor(anchor_id: int) -> TrustAnchor:
    """The trust anchor ``anchor_id``.

    :raises NotFound: when there is no such anchor.
    """
    anchor = db.session.get(TrustAnchor, anchor_id)
    if anchor is None:
        raise NotFound(_("There is no trust anchor %(reference)s.", reference=anchor_id))
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


def set_revocation_policy(*, actor: Actor, anchor_id: int, policy: RevocationPolicy) -> TrustAnchor:
    """Set how the CA certificates of tax paths ending at anchor ``anchor_id`` are checked for
    revocation; flushes. Setting the policy it already has changes nothing and is not audited.

    :raises Forbidden: when a user who is not a CA administrator acts.
    :raises NotFound: when there is no such anchor.
    :raises ValidationError: when it is not a tax anchor (seals are not checked against CRLs).
    """
    actor_name = acting(actor)
    anchor = get_anchor(anchor_id)
    if anchor.purpose is not TrustPurpose.TAX:
        raise ValidationError(
            _(
                "%(subject)s is a %(purpose)s trust anchor; revocation policies apply to tax "
                "anchors only.",
                subject=anchor.subject,
                purpose=anchor.purpose.value,
            )
        )
    previous = anchor.revocation_policy
    if previous is policy:
        return anchor
    anchor.revocation_policy = policy
    db.session.flush()
    record_event(
        actor_name,
        "trust.revocation_policy_set",
        anchor.fingerprint_sha256,
        {"subject": anchor.subject, "revocation_policy": policy.value, "previous": previous.value},
    )
    invalidate_trust_cache()  # here at once; other workers within TRUST_CACHE_SECONDS
    return anchor


def find_anchor(reference: str) -> TrustAnchor:
    """The trust anchor that ``reference`` names: its number, or its SHA-256 fingerprint (hex,
    colons allowed) or a unique prefix of it of at least 8 digits.

    :raises NotFound: when no anchor matches.
    :raises ValidationError: when a fingerprint prefix matches more than one anchor.
    """
    text = reference.strip()
    if text.isdigit() and len(text) < _MIN_PREFIX:
        return get_anchor(int(text))
    digits = text.replace(":", "").lower()
    if len(digits) < _MIN_PREFIX or any(c not in "0123456789abcdef" for c in digits):
        raise NotFound(_("There is no trust anchor %(reference)s.", reference=echoed(text)))
    matches = db.session.scalars(
        sa.select(TrustAnchor)
        .where(TrustAnchor.fingerprint_sha256.startswith(digits, autoescape=True))
        .order_by(TrustAnchor.id)
    ).all()
    if not matches:
        raise NotFound(_("There is no trust anchor %(reference)s.", reference=echoed(text)))
    if len(matches) > 1:
        raise ValidationError(
            _(
                "%(reference)s is the start of the fingerprints of %(count)s trust anchors; "
                "give more of it.",
                reference=echoed(text),
                count=len(matches),
            )
        )
    return matches[0]


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
