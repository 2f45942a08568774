"""Revocation by people, from the web and the JSON API: RA officers (any RFC 5280 reason, a
hold and its release) and employer administrators (their own certificate, a few reasons, after
typing their password again). The CLI (`ca-service revoke`) stays the operator's tool for
anything else.

Both only flush, like every service; the web or API request commits. CRLs are coalesced
(``publish_now=False``): OCSP shows the change at once, the CRL follows within
CRL_COALESCE_SECONDS.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from cryptography import x509
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ca_service.auth.access import ensure_role
from ca_service.auth.models import Role, User
from ca_service.auth.service import LoginPolicy, actor_of, check_password
from ca_service.authorities.service import ISSUING_SLUG, get_authority
from ca_service.authorities.signing import normalise_serial
from ca_service.config import Settings
from ca_service.db import db, utcnow
from ca_service.employers.models import Employer
from ca_service.errors import Conflict, Forbidden, NotFound, ValidationError, echoed
from ca_service.i18n import format_utc_date, format_utc_datetime
from ca_service.issuance.models import Application
from ca_service.issuance.service import certificate_row, employer_application
from ca_service.models import Certificate, CertificateKind, CertificateStatus
from ca_service.outbox.service import in_language_of, notify_employer
from ca_service.revocation.service import (
    REASONS,
    StatusChange,
    find_certificate,
    release_hold,
    revoke_certificate,
)
from hsm import Token

REVOKING_ROLES = (Role.RA_OFFICER, Role.CA_ADMIN)
RELEASE_HOLD = x509.ReasonFlags.remove_from_crl.value
# An officer may give any RFC 5280 reason; removeFromCRL takes a certificate off hold.
OFFICER_REASONS: tuple[str, ...] = (*REASONS, RELEASE_HOLD)
# What an employer can know about its own certificate. A hold is an agency decision (it is
# released by an officer), and the CA-side reasons (cACompromise …) are not the employer's call.
EMPLOYER_REASONS: tuple[str, ...] = (
    x509.ReasonFlags.key_compromise.value,
    x509.ReasonFlags.superseded.value,
    x509.ReasonFlags.cessation_of_operation.value,
)
REASON_LABELS: dict[str, str] = {
    "unspecified": _l("Unspecified"),
    "keyCompromise": _l("Key compromise (the private key or token was lost or exposed)"),
    "cACompromise": _l("CA compromise"),
    "affiliationChanged": _l("Affiliation changed"),
    "superseded": _l("Superseded (replaced by a new certificate)"),
    "cessationOfOperation": _l("Cessation of operation (no longer needed)"),
    "certificateHold": _l("Certificate hold (suspend; can be released)"),
    "privilegeWithdrawn": _l("Privilege withdrawn"),
    "aACompromise": _l("AA compromise"),
    RELEASE_HOLD: _l("Remove from CRL (release a hold)"),
}


FIND_LIMIT = 50  # certificates a search shows; a narrower search finds the rest
_SEARCH_LIMIT = 100  # longer than any serial, legal name or registration number


def find_certificates(*, officer: User, search: str) -> list[tuple[Certificate, Employer]]:
    """Issued employer certificates whose serial is ``search`` (as typed: ``0x``, upper case,
    leading zeros), or whose employer's registration number or legal name contains it (any
    case), newest first, at most ``FIND_LIMIT``; none for an empty search.

    :raises ValidationError: a search longer than any serial or name.
    """
    ensure_role(officer, *REVOKING_ROLES)
    search = search.strip()
    if not search:
        return []
    if len(search) > _SEARCH_LIMIT:
        raise ValidationError(
            _("The search is too long (at most %(max)s characters).", max=_SEARCH_LIMIT)
        )
    # lower() on both sides: LIKE is case-sensitive on PostgreSQL, not on SQLite.
    term = search.lower()
    matches = sa.or_(
        sa.func.lower(Employer.legal_name).contains(term, autoescape=True),
        sa.func.lower(Employer.registration_number).contains(term, autoescape=True),
        Certificate.serial == normalise_serial(search),
    )
    rows = db.session.execute(
        sa.select(Certificate, Employer)
        .join(Employer, Employer.id == Certificate.employer_id)
        .where(
            Certificate.issuer_id == get_authority(ISSUING_SLUG).id,
            Certificate.kind == CertificateKind.END_ENTITY,
            Certificate.status == CertificateStatus.ISSUED,
            matches,
        )
        .order_by(Certificate.not_after.desc(), Certificate.id.desc())
        .limit(FIND_LIMIT)
    ).all()
    return [(row.Certificate, row.Employer) for row in rows]


def employer_certificate(serial: str) -> Certificate:
    """An issued employer certificate of the issuing CA by hex serial.

    :raises NotFound: when there is none (CA and OCSP responder certificates are revoked with
        the CLI, not from the web).
    """
    certificate = find_certificate(get_authority(ISSUING_SLUG), serial)
    if certificate.kind is not CertificateKind.END_ENTITY or certificate.employer_id is None:
        raise NotFound(_("No employer certificate has the serial %(serial)s.", serial=serial))
    return certificate


def application_of(certificate: Certificate) -> Application | None:
    """The application the certificate was issued for, if any."""
    return db.session.scalar(
        sa.select(Application).where(Application.certificate_id == certificate.id)
    )


def _not_expired(certificate: Certificate, now: dt.datetime) -> None:
    if certificate.not_after <= now:
        raise Conflict(
            _(
                "Certificate %(serial)s expired on %(date)s; an expired certificate needs no "
                "revocation.",
                serial=certificate.serial,
                date=format_utc_date(certificate.not_after),
            )
        )


def revoke_by_officer(
    *,
    officer: User,
    serial: str,
    reason: str,
    invalidity_date: dt.datetime | None,
    token: Token,
    settings: Settings,
) -> StatusChange:
    """Revoke an employer certificate for any RFC 5280 reason (certificateHold suspends it,
    removeFromCRL releases the hold) and notify the employer; flushes.

    :raises Forbidden: not an RA officer or CA administrator, or one belonging to the employer.
    :raises NotFound: no employer certificate with this serial.
    :raises ValidationError: an unknown reason, or an invalidity date in the future.
    :raises Conflict: already revoked (a hold may still become permanent), not on hold (for
        removeFromCRL), or expired.
    """
    ensure_role(officer, *REVOKING_ROLES)
    if reason not in OFFICER_REASONS:
        raise ValidationError(
            _(
                "Unknown revocation reason %(reason)s; one of %(value)s.",
                reason=echoed(reason),
                value=", ".join(OFFICER_REASONS),
            )
        )
    certificate = employer_certificate(serial)
    if officer.employer_id is not None and officer.employer_id == certificate.employer_id:
        raise Forbidden(
            _("You belong to this employer; another officer must revoke its certificate.")
        )
    _not_expired(certificate, utcnow())
    actor = actor_of(officer)
    if reason == RELEASE_HOLD:
        change = release_hold(token=token, settings=settings, certificate=certificate, actor=actor)
        _notify_released(certificate)
        return change
    change = revoke_certificate(
        token=token,
        settings=settings,
        certificate=certificate,
        reason=reason,
        invalidity_date=invalidity_date,
        actor=actor,
        publish_now=False,  # coalesced: a burst of web revocations signs one CRL
    )
    _notify_revoked(certificate, administrator=None)
    return change


def revoke_own_certificate(
    *,
    user: User,
    application_id: int,
    reason: str,
    password: str,
    policy: LoginPolicy,
    token: Token,
    settings: Settings,
) -> StatusChange:
    """Revoke the certificate of one of the user's employer's applications after checking the
    user's current password again; flushes.

    A wrong password counts as a failed sign-in and is committed at once (towards lockout),
    although the request fails.

    :raises Forbidden: not an employer administrator (or the employer is not active).
    :raises NotFound: another employer's application, or one without an issued certificate.
    :raises ValidationError: a reason an employer may not give.
    :raises AuthenticationFailed: a wrong password.
    :raises AccountLocked: the account is locked.
    :raises Conflict: already revoked, or expired.
    """
    ensure_role(user, Role.EMPLOYER_ADMIN)
    application = employer_application(user=user, application_id=application_id)
    certificate = certificate_row(application)
    # employer_application checked the application; this checks the certificate itself.
    if certificate.employer_id is None or certificate.employer_id != user.employer_id:
        raise NotFound(
            _("You have no application %(application_id)s.", application_id=application_id)
        )
    if reason not in EMPLOYER_REASONS:
        raise ValidationError(
            _(
                "Choose one of %(value)s; for any other reason (a hold, for instance) contact "
                "the certification authority.",
                value=", ".join(EMPLOYER_REASONS),
            )
        )
    # Re-authentication: the same verifier, lockout and audit as the sign-in page.
    check_password(username=user.username, password=password, policy=policy)
    _not_expired(certificate, utcnow())
    change = revoke_certificate(
        token=token,
        settings=settings,
        certificate=certificate,
        reason=reason,
        invalidity_date=None,
        actor=actor_of(user),
        publish_now=False,  # coalesced: a burst of web revocations signs one CRL
    )
    _notify_revoked(certificate, administrator=user.username)
    return change


def _employer(certificate: Certificate) -> Employer:
    employer = (
        db.session.get(Employer, certificate.employer_id)
        if certificate.employer_id is not None
        else None
    )
    if employer is None:  # employer_certificate / revoke_own_certificate checked it
        raise NotFound(
            _("Certificate %(serial)s belongs to no employer.", serial=certificate.serial)
        )
    return employer


def _notify_revoked(certificate: Certificate, *, administrator: str | None) -> None:
    """Tell the employer, in its language; ``administrator``: the employer's own administrator
    who revoked, or None for an officer."""
    revoked_at = certificate.revoked_at or utcnow()
    reason = certificate.revocation_reason or "unspecified"
    held = reason == x509.ReasonFlags.certificate_hold.value
    employer = _employer(certificate)
    with in_language_of(employer):
        facts = {
            "serial": certificate.serial,
            "subject": certificate.subject,
            "by": (
                _("your administrator %(username)s", username=administrator)
                if administrator
                else _("an officer of the certification authority")
            ),
            "when": format_utc_datetime(revoked_at),
            "reason": reason,
        }
        if held:
            body = _(
                "Your certificate %(serial)s (%(subject)s) was put on hold by %(by)s on %(when)s "
                "UTC (reason: %(reason)s).\n"
                "It is suspended until the certification authority releases the hold.",
                **facts,
            )
        else:
            body = _(
                "Your certificate %(serial)s (%(subject)s) was revoked by %(by)s on %(when)s UTC "
                "(reason: %(reason)s).\n"
                "Relying parties now reject it. Apply for a new certificate if you need one.",
                **facts,
            )
        notify_employer(
            employer,
            subject=_(
                "Your certificate %(serial)s was revoked: %(reason)s",
                serial=certificate.serial,
                reason=reason,
            ),
            body=body,
            # One notice per revocation: a retried request does not send it twice, and a hold
            # made permanent later is a new revocation time, hence a new notice.
            dedupe_key=f"revocation:{certificate.id}:{revoked_at.isoformat()}",
        )


def _notify_released(certificate: Certificate) -> None:
    now = utcnow()
    employer = _employer(certificate)
    with in_language_of(employer):
        notify_employer(
            employer,
            subject=_("Your certificate %(serial)s is valid again", serial=certificate.serial),
            body=_(
                "The hold on your certificate %(serial)s (%(subject)s) was released on %(when)s "
                "UTC; relying parties accept it again.",
                serial=certificate.serial,
                subject=certificate.subject,
                when=format_utc_datetime(now),
            ),
            dedupe_key=f"hold-released:{certificate.id}:{now.isoformat()}",
        )
