"""The CA hierarchy: create it once (idempotently), look it up, describe it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography import x509
from flask_babel import gettext as _

from ca_service.audit.service import record_event
from ca_service.authorities.profiles import (
    PublicUrls,
    ca_name,
    ocsp_responder_builder,
    root_ca_builder,
    subordinate_ca_builder,
)
from ca_service.authorities.signing import (
    fingerprint,
    public_key_matches,
    reserve_certificate,
    sign_reserved,
)
from ca_service.config import Settings
from ca_service.db import db, utcnow
from ca_service.errors import ConfigurationError, NotFound, echoed
from ca_service.issuance.expiry import DEFAULT_WARNING_DAYS
from ca_service.models import Authority, Certificate, CertificateKind, CertificateStatus
from hsm import KeyAlgorithm, Token

ROOT_SLUG = "root"
ISSUING_SLUG = "employer"


@dataclass(frozen=True)
class PkiParameters:
    """What `init` needs from the settings, passed explicitly."""

    country: str
    organization: str
    urls: PublicUrls
    root_algorithm: KeyAlgorithm
    issuing_algorithm: KeyAlgorithm
    ocsp_algorithm: KeyAlgorithm
    root_days: int
    issuing_days: int
    ocsp_days: int
    # EXPIRY_WARNING_DAYS: CA administrators are warned max() days before a CA certificate ends.
    warning_days: tuple[int, ...] = DEFAULT_WARNING_DAYS

    @classmethod
    def from_settings(cls, settings: Settings) -> PkiParameters:
        return cls(
            country=str(settings["CA_COUNTRY"]),
            organization=str(settings["CA_ORGANIZATION"]),
            urls=PublicUrls(settings.public_base_url),
            root_algorithm=KeyAlgorithm(settings["ROOT_KEY_ALGORITHM"]),
            issuing_algorithm=KeyAlgorithm(settings["ISSUING_KEY_ALGORITHM"]),
            ocsp_algorithm=KeyAlgorithm(settings["OCSP_KEY_ALGORITHM"]),
            root_days=int(settings["ROOT_VALIDITY_DAYS"]),
            issuing_days=int(settings["ISSUING_VALIDITY_DAYS"]),
            ocsp_days=int(settings["OCSP_VALIDITY_DAYS"]),
            warning_days=settings.warning_days,
        )


@dataclass(frozen=True)
class CertificateSummary:
    """A line of `init` output and of the repository page."""

    role: str
    subject: str
    serial: str
    not_after: dt.datetime
    sha256: str
    created: bool


Commit = Callable[[], None]


def get_authority(slug: str) -> Authority:
    """The authority with this slug and an issued certificate.

    :raises NotFound: when there is none (the PKI is not initialised).
    """
    authority = db.session.scalar(sa.select(Authority).where(Authority.slug == slug))
    if authority is None or authority.certificate is None:
        raise NotFound(
            _("no certificate authority %(slug)s; run `ca-service init`", slug=echoed(slug))
        )
    return authority


def list_authorities() -> list[Authority]:
    """Every authority with an issued certificate, root first."""
    rows = db.session.scalars(
        sa.select(Authority).where(Authority.certificate_id.is_not(None)).order_by(Authority.id)
    )
    return list(rows)


def load_certificate(row: Certificate) -> x509.Certificate:
    """The parsed certificate of an issued row."""
    if row.der is None:
        raise NotFound(_("certificate %(serial)s has not been issued", serial=row.serial))
    return x509.load_der_x509_certificate(row.der)


def initialise_pki(
    *, token: Token, params: PkiParameters, commit: Commit, actor: str
) -> list[CertificateSummary]:
    """Create root CA, issuing CA and OCSP responder where missing; running it again changes
    nothing. ``commit`` is called before each HSM signature (the serial reservation) and
    after it (the stored certificate), because a signature is irreversible.

    :raises ConfigurationError: when the token holds a CA key that does not match the
        database (a token or database from another installation).
    """
    root = _ensure_authority(
        token=token,
        slug=ROOT_SLUG,
        name=f"{params.organization} Root CA",
        algorithm=params.root_algorithm,
        days=params.root_days,
        parent=None,
        params=params,
        commit=commit,
        actor=actor,
    )
    issuing = _ensure_authority(
        token=token,
        slug=ISSUING_SLUG,
        name=f"{params.organization} Employer Issuing CA",
        algorithm=params.issuing_algorithm,
        days=params.issuing_days,
        parent=root[0],
        params=params,
        commit=commit,
        actor=actor,
    )
    responder = ensure_ocsp_responder(
        token=token, issuer=issuing[0], params=params, commit=commit, actor=actor
    )
    return [root[1], issuing[1], responder]


def _summary(role: str, row: Certificate, created: bool) -> CertificateSummary:
    return CertificateSummary(
        role=role,
        subject=row.subject,
        serial=row.serial,
        not_after=row.not_after,
        sha256=row.fingerprint_sha256 or "",
        created=created,
    )


def _ensure_key(token: Token, label: str, algorithm: KeyAlgorithm, actor: str) -> None:
    # A key may already exist when an earlier run generated it and then failed before its
    # certificate was stored: reuse it rather than leave an orphan in the token.
    if token.has_key(label):
        return
    token.generate_key(label, algorithm)
    record_event(actor, "hsm.key_generated", label, {"algorithm": algorithm.value})


def _ensure_authority(
    *,
    token: Token,
    slug: str,
    name: str,
    algorithm: KeyAlgorithm,
    days: int,
    parent: Authority | None,
    params: PkiParameters,
    commit: Commit,
    actor: str,
) -> tuple[Authority, CertificateSummary]:
    authority = db.session.scalar(sa.select(Authority).where(Authority.slug == slug))
    if authority is not None and authority.certificate is not None:
        if not public_key_matches(
            load_certificate(authority.certificate), token, authority.key_label
        ):
            raise ConfigurationError(
                f"the HSM key {authority.key_label!r} does not match the {slug} CA certificate "
                "in the database: the token and the database belong to different installations"
            )
        return authority, _summary(slug, authority.certificate, created=False)

    key_label = f"ca-{slug}"
    if authority is None:
        authority = Authority(
            slug=slug,
            name=name,
            parent_id=parent.id if parent else None,
            key_label=key_label,
            key_algorithm=algorithm.value,
        )
        db.session.add(authority)
        db.session.flush()
    algorithm = KeyAlgorithm(authority.key_algorithm)
    _ensure_key(token, authority.key_label, algorithm, actor)
    public_key = token.public_key(authority.key_label)
    subject = ca_name(params.country, params.organization, authority.name)

    not_before = utcnow()
    not_after = not_before + dt.timedelta(days=days)
    if parent is None:
        signer_label, signer_algorithm, issuer = authority.key_label, algorithm, authority
        builder = root_ca_builder(subject, public_key)
        kind = CertificateKind.ROOT_CA
    else:
        parent_cert = load_certificate(current_certificate(parent))
        not_after = min(not_after, parent_cert.not_valid_after_utc)
        signer_label, signer_algorithm, issuer = (
            parent.key_label,
            KeyAlgorithm(parent.key_algorithm),
            parent,
        )
        builder = subordinate_ca_builder(
            subject=subject,
            public_key=public_key,
            issuer=parent_cert,
            issuer_slug=parent.slug,
            urls=params.urls,
        )
        kind = CertificateKind.ISSUING_CA

    row = reserve_certificate(
        issuer=issuer,
        kind=kind,
        subject=subject,
        not_before=not_before,
        not_after=not_after,
        key_label=authority.key_label,
    )
    commit()  # the serial is reserved before the HSM signs (DESIGN.md: nothing signed is lost)
    certificate = sign_reserved(
        row,
        builder,
        token=token,
        issuer_key_label=signer_label,
        issuer_algorithm=signer_algorithm,
        warning_days=params.warning_days,
    )
    authority.certificate_id = row.id
    db.session.flush()
    record_event(
        actor,
        "ca.created",
        slug,
        {"subject": row.subject, "serial": row.serial, "sha256": fingerprint(certificate)},
    )
    commit()
    db.session.refresh(authority)
    return authority, _summary(slug, row, created=True)


def current_certificate(authority: Authority) -> Certificate:
    """The authority's current certificate row.

    :raises NotFound: when it has none yet.
    """
    if authority.certificate is None:
        raise NotFound(
            _("certificate authority %(slug)s has no certificate", slug=repr(authority.slug))
        )
    return authority.certificate


def current_ocsp_responder(issuer: Authority, at: dt.datetime | None = None) -> Certificate | None:
    """The newest issued responder certificate of ``issuer`` valid at ``at``."""
    moment = at or utcnow()
    return db.session.scalar(
        sa.select(Certificate)
        .where(
            Certificate.issuer_id == issuer.id,
            Certificate.kind == CertificateKind.OCSP_RESPONDER,
            Certificate.status == CertificateStatus.ISSUED,
            Certificate.revoked_at.is_(None),
            Certificate.not_before <= moment,
            Certificate.not_after > moment,
        )
        .order_by(Certificate.not_after.desc())
        .limit(1)
    )


def ensure_ocsp_responder(
    *,
    token: Token,
    issuer: Authority,
    params: PkiParameters,
    commit: Commit,
    actor: str,
    force: bool = False,
) -> CertificateSummary:
    """Issue a delegated OCSP responder certificate for ``issuer`` unless a valid one exists
    (``force`` issues a new one with a new key: rotation)."""
    existing = current_ocsp_responder(issuer)
    if existing is not None and not force:
        return _summary("ocsp", existing, created=False)

    issuer_cert = load_certificate(current_certificate(issuer))
    count = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Certificate)
        .where(
            Certificate.issuer_id == issuer.id, Certificate.kind == CertificateKind.OCSP_RESPONDER
        )
    )
    # One key per responder certificate: rotation replaces the key too.
    key_label = f"ocsp-{issuer.slug}-{(count or 0) + 1}"
    _ensure_key(token, key_label, params.ocsp_algorithm, actor)
    subject = ca_name(params.country, params.organization, f"{issuer.name} OCSP Responder")
    not_before = utcnow()
    not_after = min(
        not_before + dt.timedelta(days=params.ocsp_days), issuer_cert.not_valid_after_utc
    )
    builder = ocsp_responder_builder(
        subject=subject,
        public_key=token.public_key(key_label),
        issuer=issuer_cert,
        issuer_slug=issuer.slug,
        urls=params.urls,
    )
    row = reserve_certificate(
        issuer=issuer,
        kind=CertificateKind.OCSP_RESPONDER,
        subject=subject,
        not_before=not_before,
        not_after=not_after,
        key_label=key_label,
    )
    commit()  # the serial is reserved before the HSM signs (DESIGN.md: nothing signed is lost)
    sign_reserved(
        row,
        builder,
        token=token,
        issuer_key_label=issuer.key_label,
        issuer_algorithm=KeyAlgorithm(issuer.key_algorithm),
        warning_days=params.warning_days,
    )
    record_event(
        actor,
        "ocsp.responder_issued",
        issuer.slug,
        {"serial": row.serial, "key_label": key_label, "not_after": row.not_after.isoformat()},
    )
    commit()
    return _summary("ocsp", row, created=True)
