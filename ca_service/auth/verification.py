"""The one verification core behind every certificate-based decision: certificate login (both
transports), tax-certificate binding, and login with a bound tax certificate.

Path building and signature checks are cryptography's ``x509.verification`` (a maintained
WebPKI-style validator; we only adapt its end-entity policy: organisation certificates carry no
subjectAltName). Before it runs, the leaf is checked for the failures a person can act on —
validity, key usage, extended key usage — so each gets its own message; after it, revocation
(ours from the database, the tax CA's from its CRL, failing closed) and the account mapping.

Trust is per source: our root for our certificates; the enabled tax-CA anchors for tax
certificates. The tax store is the self-signed anchors and every other anchor whose issuer is
not an enabled anchor (an intermediate whose root is disabled, or was never added, is a trust
anchor of its own); the other anchors only help build paths. A chain through a CA that is not
an enabled anchor is untrusted, so every tax CA on a path is an anchor. The revocation policy
of the anchor a path ends at says whether the path's CA certificates must each be on their
issuer's CRL (``require``) or only when revocation information is published for them
(``when-published``); the taxpayer's certificate must be on its issuer's current CRL always.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import itertools
import re
import time
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from flask_babel import gettext as _
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from ca_service.auth.models import Role, User
from ca_service.auth.trust_cache import TrustCache, invalidate_trust_cache, trust_cache
from ca_service.binding.models import (
    CertificateBinding,
    RevocationPolicy,
    TaxCrl,
    TrustAnchor,
    TrustPurpose,
)
from ca_service.config import Settings
from ca_service.db import db
from ca_service.employers.models import Employer
from ca_service.errors import Forbidden
from ca_service.i18n import N_, format_utc_datetime
from ca_service.models import Certificate, CertificateKind, CertificateStatus
from ca_service.prepared import OneRowQuery

__all__ = [
    "CertificateRefused",
    "Refusal",
    "Source",
    "VerifiedCertificate",
    "account_for",
    "certificate_number",
    "invalidate_trust_cache",
    "parse_chain",
    "spki_sha256",
    "verify_certificate",
]

# Trust material (our CA certificates, the tax anchors) is re-read at most this often per
# process: disabling an anchor takes effect everywhere within this many seconds.
TRUST_CACHE_SECONDS = 5.0
_SHA256 = hashes.SHA256()
_ETSI_PREFIX = re.compile(r"^[A-Z]{3}[A-Z]{2}-")  # ETSI EN 319 412-1: "NTRCN-<number>"
# Messages are translated where a refusal is raised, in the language of the request that
# asked: nothing cached per process (the trust contexts, the validated paths, the tax CRLs'
# retry state) holds a translated text.
_WAYS_BACK_IN = N_(
    "To get back in, sign in with your password and an SMS code to your reserved mobile "
    "(/auth/login), or with a tax-bureau certificate bound to your account, then renew "
    "your certificate."
)


class Refusal(enum.StrEnum):
    """Why a certificate was refused: each has its own message."""

    UNREADABLE = "unreadable"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_KEY_USAGE = "wrong_key_usage"
    UNTRUSTED = "untrusted_issuer"
    REVOKED = "revoked"
    REVOCATION_UNKNOWN = "revocation_unknown"
    NOT_BOUND = "not_bound"
    OTHER_ORGANISATION = "other_organisation"
    NO_ACCOUNT = "no_account"
    BAD_SIGNATURE = "bad_signature"
    CHALLENGE_UNUSABLE = "challenge_unusable"  # unknown, expired or already used (replay)


class CertificateRefused(Forbidden):
    """A certificate-based decision said no; ``refusal`` says which check failed."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.code = refusal.value  # API clients can tell the refusals apart


class Source(enum.StrEnum):
    AGENCY = "agency"  # issued by one of our CAs
    TAX = "tax"  # issued by a tax-bureau CA configured as a trust anchor


@dataclasses.dataclass(frozen=True)
class VerifiedCertificate:
    """A certificate that passed path validation, usage and revocation checks."""

    source: Source
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    fingerprint_sha256: str
    spki_sha256: str
    # The registration number the certificate carries (normalised), or None when it has none.
    registration_number: str | None
    # Ours: the employer our records say the certificate was issued to, and its
    # administrator, read in the same query as the certificate's status. Tax: the
    # administrator and the live binding that map the certificate to an account, read in the
    # same query as which CRL of its issuer is stored. For account_for.
    employer_id: int | None = None
    administrator: User | None = dataclasses.field(default=None, repr=False, compare=False)
    binding_id: int | None = None
    # Ours: the certificate's row (tokens and sessions it gives end with it).
    certificate_id: int | None = None

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


@dataclasses.dataclass(frozen=True)
class _CrlCheck:
    """A certificate of a tax path below the root, to look up on its issuer's CRL."""

    serial: int
    fingerprint: str
    anchor: TrustAnchor  # the issuer, whose CRL lists the certificate
    # The certificate's own CRL distribution points (where to fetch when the anchor names none).
    urls: tuple[str, ...]
    # Whether the certificate has a CRL distribution point at all (of any kind): a CA
    # certificate that names one is checked under every revocation policy.
    names_crl_dp: bool


@dataclasses.dataclass(frozen=True)
class _Known:
    """What never changes about a certificate validated under one trust context."""

    path: tuple[x509.Certificate, ...]
    spki_sha256: str
    # When every certificate of the path is valid (the intersection of their validity).
    valid_from: dt.datetime
    valid_until: dt.datetime
    # Tax only: each certificate below the trust anchor, leaf first.
    crl_checks: tuple[_CrlCheck, ...] = ()
    # Tax only: the revocation policy of the anchor the path ends at.
    policy: RevocationPolicy = RevocationPolicy.REQUIRE
    # The registration number the leaf carries, by subject attribute (``certificate_number``).
    numbers: dict[str, str | None] = dataclasses.field(default_factory=dict)

    def number(self, leaf: x509.Certificate, attribute: str) -> str | None:
        try:
            return self.numbers[attribute]
        except KeyError:
            return self.numbers.setdefault(attribute, certificate_number(leaf, attribute))


# What a trust context was built from: each CA certificate's fingerprint, and for a tax
# anchor what the CRL checks use of its row (id, subject, CRL URL, revocation policy).
_Material = frozenset[tuple[str, int | None, str | None, str | None, str | None]]


@dataclasses.dataclass(frozen=True)
class _TrustContext:
    material: _Material
    store: verification.Store
    intermediates: tuple[x509.Certificate, ...]
    issuer_names: frozenset[bytes]  # DER subjects of the CAs that issue end entities
    # Tax only: CA fingerprint -> its anchor (detached, read-only copies).
    anchors_by_fingerprint: dict[str, TrustAnchor]
    # Leaf fingerprint -> what was validated. Signatures and extensions do not change, so a
    # path validated once is reused while the trust material is the same (it is read again
    # every TRUST_CACHE_SECONDS; a context built from the same material shares this dict);
    # only the validity periods are checked again, against each login's time. Revocation and
    # the account mapping are checked on every login.
    paths: dict[str, _Known] = dataclasses.field(default_factory=dict)
    # Tax CA certificates (fingerprints) found unrevoked by their parent's CRL while this
    # context lives: a CA's revocation takes effect within TRUST_CACHE_SECONDS, like disabling
    # its anchor; a taxpayer's certificate is checked on every login.
    good_cas: set[str] = dataclasses.field(default_factory=set)


def _self_signed(certificate: x509.Certificate) -> bool:
    return certificate.issuer == certificate.subject


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _anchors_a_path(certificate: x509.Certificate, trusted: Sequence[x509.Certificate]) -> bool:
    """Whether ``certificate`` is a trust anchor of the store: a root, or a CA whose issuer is
    not among the ``trusted`` ones (its root is disabled or was never added), so that paths
    end at it. Below a trusted issuer it only helps build paths, and is checked on its
    issuer's CRL."""
    if _self_signed(certificate):
        return True
    return not any(
        _issued_by(certificate, issuer) for issuer in trusted if issuer is not certificate
    )


def _build_context(source: Source, previous: _TrustContext | None) -> _TrustContext | None:
    """The trust context of ``source`` as the database has it now; ``previous`` (the one
    being replaced) lends its validated paths when built from the same material."""
    if source is Source.AGENCY:
        # A revoked CA certificate of ours builds no path (takes effect within the cache's
        # lifetime, like disabling an anchor).
        ders = db.session.scalars(
            sa.select(Certificate.der).where(
                Certificate.kind.in_((CertificateKind.ROOT_CA, CertificateKind.ISSUING_CA)),
                Certificate.status == CertificateStatus.ISSUED,
                Certificate.revoked_at.is_(None),
            )
        )
        certificates = [x509.load_der_x509_certificate(der) for der in ders if der]
        anchors: dict[str, TrustAnchor] = {}
        material: _Material = frozenset(
            (c.fingerprint(_SHA256).hex(), None, None, None, None) for c in certificates
        )
    else:
        rows = list(
            db.session.scalars(
                sa.select(TrustAnchor).where(
                    TrustAnchor.purpose == TrustPurpose.TAX, TrustAnchor.enabled.is_(True)
                )
            )
        )
        for row in rows:
            db.session.expunge(row)  # kept beyond this session, read only
        certificates = [x509.load_der_x509_certificate(row.der) for row in rows]
        anchors = {
            certificate.fingerprint(_SHA256).hex(): row
            for certificate, row in zip(certificates, rows, strict=True)
        }
        material = frozenset(
            (fingerprint, row.id, row.subject, row.crl_url, row.revocation_policy.value)
            for fingerprint, row in anchors.items()
        )
    if previous is not None and previous.material == material:
        # Same CAs, same anchors: the paths validated under them stay valid. Which CAs their
        # parents' CRLs list is asked again (good_cas starts empty).
        return dataclasses.replace(previous, good_cas=set())
    roots = [c for c in certificates if _anchors_a_path(c, certificates)]
    if not roots:
        return None
    others = tuple(c for c in certificates if not any(c is root for root in roots))
    return _TrustContext(
        material=material,
        store=verification.Store(roots),
        intermediates=others,
        issuer_names=frozenset(c.subject.public_bytes() for c in certificates),
        anchors_by_fingerprint=anchors,
    )


def _context(source: Source, cache: TrustCache | None = None) -> _TrustContext | None:
    now = time.monotonic()
    if cache is None:
        cache = trust_cache()
    with cache.lock:
        cached = cache.entries.get(source)
    previous = cast("_TrustContext | None", cached[1]) if cached is not None else None
    if cached is not None and now - cached[0] < TRUST_CACHE_SECONDS:
        return previous
    context = _build_context(source, previous)
    with cache.lock:
        cache.entries[source] = (now, context)
    return context


# Organisation certificates have no subjectAltName; everything else stays WebPKI's default
# (basicConstraints not CA, EKU present, key usage well-formed, AKI present ...).
_EE_POLICY = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
)
_CA_POLICY = verification.ExtensionPolicy.webpki_defaults_ca()


# A leaf and its intermediates are a few kilobytes; more is not a certificate chain.
MAX_CHAIN_BYTES = 64 * 1024
MAX_CHAIN_CERTIFICATES = 8


def _decode_fully(certificate: x509.Certificate) -> None:
    """Read what the checks read: cryptography decodes these lazily, and a malformed one
    would otherwise raise ValueError (a 500) in the middle of validation."""
    _ = (certificate.subject, certificate.issuer, certificate.extensions)
    _ = (certificate.not_valid_before_utc, certificate.not_valid_after_utc)
    _ = (certificate.public_key(), certificate.signature_hash_algorithm)
    for attribute in certificate.subject:
        _ = attribute.value


def parse_chain(data: bytes | str) -> list[x509.Certificate]:
    """Certificates from PEM (leaf first, then any intermediates) or one DER certificate.

    :raises CertificateRefused: (unreadable) when there is no certificate in ``data``.
    """
    raw = data.encode() if isinstance(data, str) else data
    chain: list[x509.Certificate] = []
    if len(raw) <= MAX_CHAIN_BYTES:
        try:
            if b"-----BEGIN" in raw:
                chain = x509.load_pem_x509_certificates(raw)
            else:
                chain = [x509.load_der_x509_certificate(raw)]
            for certificate in chain:
                _decode_fully(certificate)
        except (ValueError, UnsupportedAlgorithm):
            chain = []
    if not chain or len(chain) > MAX_CHAIN_CERTIFICATES:
        raise CertificateRefused(
            Refusal.UNREADABLE, _("This is not a readable X.509 certificate (PEM or DER).")
        )
    return chain


def spki_sha256(certificate: x509.Certificate) -> str:
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _number_oid(attribute: str) -> ObjectIdentifier:
    if attribute == "organizationIdentifier":
        return NameOID.ORGANIZATION_IDENTIFIER
    if attribute == "serialNumber":
        return NameOID.SERIAL_NUMBER
    return ObjectIdentifier(attribute)


def certificate_number(certificate: x509.Certificate, attribute: str) -> str | None:
    """The registration number in the subject attribute ``attribute`` (compact, upper case;
    an ETSI ``NTRCN-`` style prefix removed), or None."""
    values = certificate.subject.get_attributes_for_oid(_number_oid(attribute))
    if not values:
        return None
    value = "".join(str(values[0].value).split()).upper()
    return _ETSI_PREFIX.sub("", value) or None


def _check_times(leaf: x509.Certificate, now: dt.datetime) -> None:
    if now < leaf.not_valid_before_utc:
        raise CertificateRefused(
            Refusal.NOT_YET_VALID,
            _(
                "This certificate is not valid yet: it becomes valid on %(time)s UTC.",
                time=format_utc_datetime(leaf.not_valid_before_utc),
            ),
        )
    if now > leaf.not_valid_after_utc:
        raise CertificateRefused(
            Refusal.EXPIRED,
            _(
                "This certificate expired on %(time)s UTC.",
                time=format_utc_datetime(leaf.not_valid_after_utc),
            )
            + " "
            + _(_WAYS_BACK_IN),
        )


def _check_usage(leaf: x509.Certificate) -> None:
    try:
        key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        signs = key_usage.digital_signature
    except x509.ExtensionNotFound:
        signs = False
    if not signs:
        raise CertificateRefused(
            Refusal.WRONG_KEY_USAGE,
            _("This certificate may not be used to sign in: its key usage lacks digitalSignature."),
        )
    try:
        purposes = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client_auth = ExtendedKeyUsageOID.CLIENT_AUTH in purposes
    except x509.ExtensionNotFound:
        client_auth = False
    if not client_auth:
        raise CertificateRefused(
            Refusal.WRONG_KEY_USAGE,
            _(
                "This certificate may not be used to sign in: its extended key usage lacks "
                "clientAuth (TLS client authentication)."
            ),
        )


def _source_of(leaf: x509.Certificate) -> tuple[Source, _TrustContext] | None:
    issuer = leaf.issuer.public_bytes()
    for source in (Source.AGENCY, Source.TAX):
        context = _context(source)
        if context is not None and issuer in context.issuer_names:
            return source, context
    return None


def _untrusted(leaf: x509.Certificate, detail: str = "") -> CertificateRefused:
    """``detail``: the path validator's reason, which stays as cryptography words it."""
    issuer = leaf.issuer.rfc4514_string()
    if detail:
        message = _(
            "This certificate's issuer (%(issuer)s) is not a certificate authority trusted for "
            "signing in: neither this agency's CA nor a configured tax-bureau CA (%(detail)s).",
            issuer=issuer,
            detail=detail,
        )
    else:
        message = _(
            "This certificate's issuer (%(issuer)s) is not a certificate authority trusted for "
            "signing in: neither this agency's CA nor a configured tax-bureau CA.",
            issuer=issuer,
        )
    return CertificateRefused(Refusal.UNTRUSTED, message)


def verify_certificate(
    chain: Sequence[x509.Certificate], *, settings: Settings, now: dt.datetime
) -> VerifiedCertificate:
    """Validate ``chain`` (leaf first; more certificates are only path hints) for signing in
    at ``now``.

    :raises CertificateRefused: with the refusal and a message for the person.
    """
    if not chain:
        raise CertificateRefused(Refusal.UNREADABLE, _("No certificate was presented."))
    leaf = chain[0]
    fingerprint = leaf.fingerprint(_SHA256).hex()
    source, context, known = _remembered(fingerprint)
    if known is None or context is None:
        found = _source_of(leaf)
        if found is None:
            raise _untrusted(leaf)
        source, context = found
    _check_times(leaf, now)
    if known is None or not known.valid_from <= now <= known.valid_until:
        _check_usage(leaf)
        known = _validate(leaf, fingerprint, context, now)
    assert context is not None  # noqa: S101  (set with known)
    # Ours carry the number where our profile puts it; the tax CA's where configured.
    number = known.number(
        leaf,
        "organizationIdentifier"
        if source is Source.AGENCY
        else str(settings["TAX_NUMBER_ATTRIBUTE"]),
    )
    employer_id = binding_id = certificate_id = None
    if source is Source.AGENCY:
        certificate_id, employer_id, administrator = _check_agency_revocation(
            fingerprint, number or ""
        )
    else:
        administrator, binding_id = _check_tax_revocation(
            known, context, fingerprint, number or "", settings=settings, now=now
        )
    return VerifiedCertificate(
        source=source,
        certificate=leaf,
        chain=known.path,
        fingerprint_sha256=fingerprint,
        spki_sha256=known.spki_sha256,
        registration_number=number,
        employer_id=employer_id,
        administrator=administrator,
        binding_id=binding_id,
        certificate_id=certificate_id,
    )


def _remembered(fingerprint: str) -> tuple[Source, _TrustContext | None, _Known | None]:
    """A certificate validated before under the current trust material, and its source."""
    cache = trust_cache()
    for source in (Source.AGENCY, Source.TAX):
        context = _context(source, cache)
        known = context.paths.get(fingerprint) if context is not None else None
        if known is not None:
            return source, context, known
    return Source.AGENCY, None, None


_MAX_REMEMBERED_PATHS = 50_000


def _validate(
    leaf: x509.Certificate, fingerprint: str, context: _TrustContext, now: dt.datetime
) -> _Known:
    verifier = (
        verification.PolicyBuilder()
        .store(context.store)
        .time(now)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    # Only configured CAs build paths: a presented intermediate cannot add a CA we never
    # agreed to trust (nor one whose CRL we do not know).
    try:
        verified = verifier.verify(leaf, list(context.intermediates))
    except verification.VerificationError as exc:
        raise _untrusted(leaf, _validator_reason(exc)) from None
    path = tuple(verified.chain)
    # The tax anchor the path ends at (None for ours).
    end = context.anchors_by_fingerprint.get(path[-1].fingerprint(_SHA256).hex())
    checks = []
    for certificate, issuer in itertools.pairwise(path):
        anchor = context.anchors_by_fingerprint.get(issuer.fingerprint(_SHA256).hex())
        if anchor is not None:  # always, for tax paths (only anchors build them)
            checks.append(
                _CrlCheck(
                    serial=certificate.serial_number,
                    fingerprint=certificate.fingerprint(_SHA256).hex(),
                    anchor=anchor,
                    urls=tuple(_crl_urls(certificate)),
                    names_crl_dp=_names_crl_dp(certificate),
                )
            )
    known = _Known(
        path=path,
        spki_sha256=spki_sha256(leaf),
        valid_from=max(c.not_valid_before_utc for c in path),
        valid_until=min(c.not_valid_after_utc for c in path),
        crl_checks=tuple(checks),
        policy=end.revocation_policy if end is not None else RevocationPolicy.REQUIRE,
    )
    if len(context.paths) >= _MAX_REMEMBERED_PATHS:
        context.paths.clear()
    context.paths[fingerprint] = known
    return known


def _validator_reason(exc: verification.VerificationError) -> str:
    # "validation failed: <reason> (encountered processing <Certificate(...)>)"
    text = str(exc).removeprefix("validation failed: ")
    return text.split(" (encountered processing", 1)[0]


class _Revoked(enum.Enum):
    """What was revoked, for ``_revoked_message``."""

    CERTIFICATE = "certificate"
    TAX_CERTIFICATE = "tax certificate"
    TAX_ISSUING_CA = "tax certificate's issuing CA"


def _revoked_message(kind: _Revoked, at: dt.datetime, reason: str | None) -> str:
    """Why a revoked certificate is refused, in the current request's language (built each
    time it is raised). ``reason`` is the RFC 5280 reason name (keyCompromise ...)."""
    time = format_utc_datetime(at)
    # Whole sentences per kind and with or without a reason: translators see each one.
    if kind is _Revoked.CERTIFICATE:
        if reason:
            return str(
                _(
                    "This certificate was revoked on %(time)s UTC (reason: %(reason)s); it can no "
                    "longer be used to sign in.",
                    time=time,
                    reason=reason,
                )
            )
        return str(
            _(
                "This certificate was revoked on %(time)s UTC; it can no longer be used to "
                "sign in.",
                time=time,
            )
        )
    if kind is _Revoked.TAX_CERTIFICATE:
        if reason:
            return str(
                _(
                    "This tax certificate was revoked on %(time)s UTC (reason: %(reason)s); it can "
                    "no longer be used to sign in.",
                    time=time,
                    reason=reason,
                )
            )
        return str(
            _(
                "This tax certificate was revoked on %(time)s UTC; it can no longer be used to "
                "sign in.",
                time=time,
            )
        )
    if reason:
        return str(
            _(
                "This tax certificate's issuing CA was revoked on %(time)s UTC (reason: "
                "%(reason)s); its certificates can no longer be used to sign in.",
                time=time,
                reason=reason,
            )
        )
    return str(
        _(
            "This tax certificate's issuing CA was revoked on %(time)s UTC; its certificates can "
            "no longer be used to sign in.",
            time=time,
        )
    )


# The tables of the sign-in queries. They are run by ``OneRowQuery`` and the account is made
# from their row (``_administrator``): through the ORM (an entity in the statement, run by
# session.execute) they took a third of a certificate login's CPU time on PostgreSQL.
_USERS = User.__table__
_EMPLOYERS = Employer.__table__
_CERTIFICATES = Certificate.__table__
_BINDINGS = CertificateBinding.__table__
_TAX_CRLS = TaxCrl.__table__
_USER_MAPPER = sa.inspect(User)
_USER_CLASS = _USER_MAPPER.class_manager

# An employer's active administrator: its role and disabled flag are therefore known, and its
# employer is the one the query joins.
_ADMINISTRATOR = sa.and_(
    _USERS.c.employer_id == _EMPLOYERS.c.id,
    _USERS.c.role == Role.EMPLOYER_ADMIN,
    _USERS.c.disabled.is_(False),
)
# Of the account, the columns a sign-in uses and the query's conditions do not tell:
# Flask-Login's id and session_version, the audit record's username, the previous sign-in the
# web page shows. Every column of every result costs psycopg and SQLAlchemy something, so no
# more; any other is loaded when first read (the sign-in stamp only writes).
_ACCOUNT_COLUMNS = (
    _USERS.c.id.label("user_id"),
    _USERS.c.username,
    _USERS.c.session_version,
    _USERS.c.last_login_at,
)

# The certificate's status and, in the same round trip, the administrator it would sign in
# (an employer whose number is still the one in the certificate).
_LEAF_STATUS = OneRowQuery(
    sa.select(
        _CERTIFICATES.c.id.label("certificate_id"),
        _CERTIFICATES.c.employer_id,
        _CERTIFICATES.c.revoked_at,
        _CERTIFICATES.c.revocation_reason,
        *_ACCOUNT_COLUMNS,
    )
    .select_from(_CERTIFICATES)
    .outerjoin(
        _EMPLOYERS,
        sa.and_(
            _EMPLOYERS.c.id == _CERTIFICATES.c.employer_id,
            _EMPLOYERS.c.registration_number == sa.bindparam("number"),
        ),
    )
    .outerjoin(_USERS, _ADMINISTRATOR)
    .where(_CERTIFICATES.c.fingerprint_sha256 == sa.bindparam("fingerprint"))
    .order_by(_USERS.c.id)
    .limit(1)
)


def _administrator(session: Session, row: dict[str, Any], employer_id: int) -> User | None:
    """The account of a sign-in query's row (None when the row has none), a persistent
    ``User`` of this session made from the row without another query, as the ORM would have
    loaded it: the columns the query read are loaded, the others load when first read."""
    user_id = row["user_id"]
    if user_id is None:
        return None
    values = {
        "id": user_id,
        "username": row["username"],
        "session_version": row["session_version"],
        "last_login_at": row["last_login_at"],
        # What the query's conditions (_ADMINISTRATOR) say.
        "role": Role.EMPLOYER_ADMIN,
        "disabled": False,
        "employer_id": employer_id,
    }
    user = session.identity_map.get(_USER_MAPPER.identity_key_from_primary_key((user_id,)))
    if user is None:
        # As the ORM's loader makes an instance: no constructor (its attribute events would
        # record the values as changes), the values straight into its state; then persistent
        # with that state as loaded and the other columns expired.
        user = _USER_CLASS.new_instance()
        user.__dict__.update(values)
        make_transient_to_detached(user)
        session.add(user)
    else:
        # Already in this session: like a query, keep what it holds (and any change not yet
        # flushed), fill in only what it has not loaded.
        for key, value in values.items():
            if key not in user.__dict__:
                set_committed_value(user, key, value)
    return user


def _check_agency_revocation(fingerprint: str, number: str) -> tuple[int, int | None, User | None]:
    """Our certificate's status straight from the database (the state OCSP and CRLs are made
    from), so a revocation takes effect on the very next login; and the account it maps to.
    (Our CA certificates: a revoked one builds no path, see ``_build_context``.) Returns the
    certificate's row id, its employer and that employer's administrator."""
    session = db.session()
    row = _LEAF_STATUS.row(session, {"fingerprint": fingerprint, "number": number})
    if row is None:
        raise CertificateRefused(
            Refusal.UNTRUSTED,
            _(
                "This certificate carries our CA's signature but is not in our records; "
                "it cannot be used to sign in. Contact the agency."
            ),
        )
    if row["revoked_at"] is not None:
        raise CertificateRefused(
            Refusal.REVOKED,
            _revoked_message(_Revoked.CERTIFICATE, row["revoked_at"], row["revocation_reason"]),
        )
    certificate_id = int(row["certificate_id"])
    if row["employer_id"] is None:
        return certificate_id, None, None
    employer_id = int(row["employer_id"])
    return certificate_id, employer_id, _administrator(session, row, employer_id)


def _crl_urls(certificate: x509.Certificate) -> list[str]:
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [
        str(name.value)
        for point in points
        for name in point.full_name or []
        if isinstance(name, x509.UniformResourceIdentifier)
        and str(name.value).startswith(("http://", "https://"))
    ]


def _names_crl_dp(certificate: x509.Certificate) -> bool:
    try:
        certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except x509.ExtensionNotFound:
        return False
    return True


# Which CRL of the leaf's issuer is stored and, in the same round trip, the administrator a
# live binding maps the certificate to (an employer whose number is still the one in the
# certificate). Outer joins from a one-row probe: a row comes back whatever is missing.
_PROBE = sa.select(sa.literal_column("1").label("one")).subquery("probe")
# Of the stored CRL only what tells it from the anchor's other CRLs (``StoredCrl``).
_TAX_STATUS = OneRowQuery(
    sa.select(
        _TAX_CRLS.c.this_update.label("crl_this_update"),
        _TAX_CRLS.c.crl_number,
        _BINDINGS.c.id.label("binding_id"),
        _BINDINGS.c.employer_id,
        *_ACCOUNT_COLUMNS,
    )
    .select_from(_PROBE)
    .outerjoin(_TAX_CRLS, _TAX_CRLS.c.anchor_id == sa.bindparam("anchor_id"))
    .outerjoin(
        sa.join(_BINDINGS, _EMPLOYERS, _BINDINGS.c.employer_id == _EMPLOYERS.c.id).join(
            _USERS, _ADMINISTRATOR
        ),
        sa.and_(
            _BINDINGS.c.fingerprint_sha256 == sa.bindparam("fingerprint"),
            _BINDINGS.c.unbound_at.is_(None),
            _EMPLOYERS.c.registration_number == sa.bindparam("number"),
        ),
    )
    .order_by(_USERS.c.id)
    .limit(1)
)


def _check_tax_revocation(
    known: _Known,
    context: _TrustContext,
    fingerprint: str,
    number: str,
    *,
    settings: Settings,
    now: dt.datetime,
) -> tuple[User | None, int | None]:
    """Each certificate below the trust anchor against the CRL its issuer (an anchor)
    publishes, as the path's revocation policy says; and the account a live binding maps the
    certificate to: (administrator, binding id)."""
    # Lazy: the tax-CRL code (with its HTTP client) is only needed once a tax path is checked.
    # It imports nothing of this module (the trust cache lives in auth.trust_cache).
    from ca_service.binding.tax_crls import (
        CrlUnavailable,
        StoredCrl,
        revocation_in_stored,
        stored_crl_of,
    )

    # Only anchors build tax paths, so the leaf's issuer is always an anchor (crl_checks[0]).
    leaf_anchor = known.crl_checks[0].anchor if known.crl_checks else None
    session = db.session()
    row = _TAX_STATUS.row(
        session,
        {
            "anchor_id": leaf_anchor.id if leaf_anchor is not None else None,
            "fingerprint": fingerprint,
            "number": number,
        },
    )
    if row is None:  # outer joins from a one-row probe: a row comes back whatever is missing
        raise RuntimeError("the tax sign-in query returned no row")
    for index, check in enumerate(known.crl_checks):
        if index and check.fingerprint in context.good_cas:
            continue
        try:
            if index == 0:
                entry = revocation_in_stored(
                    anchor=check.anchor,
                    stored=None
                    if row["crl_this_update"] is None
                    else StoredCrl(row["crl_this_update"], row["crl_number"]),
                    serial=check.serial,
                    hint_urls=check.urls,
                    settings=settings,
                    now=now,
                )
            else:
                stored = stored_crl_of(check.anchor.id)
                if stored is None and _unpublished(check, known.policy):
                    # Nothing says where this CA certificate's status would be published:
                    # not checkable, accepted under when-published (RFC 5280 relying
                    # parties and pyhanko-certvalidator's hard-fail mode do the same).
                    context.good_cas.add(check.fingerprint)
                    continue
                entry = revocation_in_stored(
                    anchor=check.anchor,
                    stored=stored,
                    serial=check.serial,
                    hint_urls=check.urls,
                    settings=settings,
                    now=now,
                )
        except CrlUnavailable as exc:
            raise CertificateRefused(Refusal.REVOCATION_UNKNOWN, exc.message) from None
        if entry is not None:
            kind = _Revoked.TAX_CERTIFICATE if index == 0 else _Revoked.TAX_ISSUING_CA
            raise CertificateRefused(
                Refusal.REVOKED, _revoked_message(kind, entry.revoked_at, entry.reason)
            )
        if index:
            context.good_cas.add(check.fingerprint)
    if row["binding_id"] is None:
        return None, None
    return _administrator(session, row, int(row["employer_id"])), int(row["binding_id"])


def _unpublished(check: _CrlCheck, policy: RevocationPolicy) -> bool:
    """Whether a CA certificate with no stored CRL of its issuer goes unchecked under
    ``policy``: when-published, and neither the certificate (a CRL distribution point) nor
    its issuer's anchor (a CRL URL) says where a CRL would be fetched."""
    return (
        policy is RevocationPolicy.WHEN_PUBLISHED
        and not check.names_crl_dp
        and not check.anchor.crl_url
    )


def account_for(verified: VerifiedCertificate) -> tuple[User, int | None]:
    """The account a verified certificate signs in: (the employer's administrator, the binding
    id for a tax certificate).

    Ours map through our issuance records; tax certificates through a live binding; either
    way the number the certificate carries must be the employer's. Read by
    ``verify_certificate`` in the same query as the revocation status; the reason is looked
    up only when it does not sign in.

    :raises CertificateRefused: not bound, another organisation, no account.
    """
    number = verified.registration_number or ""
    if verified.source is Source.AGENCY:
        if verified.employer_id is None:
            raise CertificateRefused(
                Refusal.NO_ACCOUNT, _("This certificate was not issued to an employer.")
            )
        if verified.administrator is not None:
            return verified.administrator, None
        employer_id: int | None = verified.employer_id
    else:
        if verified.administrator is not None and verified.binding_id is not None:
            return verified.administrator, verified.binding_id
        employer_id = db.session.scalar(
            sa.select(CertificateBinding.employer_id).where(
                CertificateBinding.fingerprint_sha256 == verified.fingerprint_sha256,
                CertificateBinding.unbound_at.is_(None),
            )
        )
        if employer_id is None:
            raise CertificateRefused(
                Refusal.NOT_BOUND,
                _(
                    "This tax-bureau certificate is not bound to any employer account. Sign in "
                    "another way (password and SMS code) and bind it from your account page "
                    "first."
                ),
            )
    employer = db.session.get(Employer, employer_id)
    if employer is not None and employer.registration_number != number:
        raise CertificateRefused(
            Refusal.OTHER_ORGANISATION,
            _(
                "This certificate identifies another organisation (%(number)s) than the "
                "account it would sign in to (%(account_number)s).",
                number=verified.registration_number or _("no registration number"),
                account_number=employer.registration_number,
            ),
        )
    raise CertificateRefused(
        Refusal.NO_ACCOUNT,
        _("The employer this certificate identifies has no active administrator account."),
    )
