"""Binding tax-bureau certificates to employer accounts (after proof of possession), listing
and unbinding them.

A certificate is bound only when the verification core accepts it as a tax certificate (path
to an enabled tax anchor, validity, usage, not revoked by its CRL) and it carries the employer's
registration number. A certificate has at most one live binding (a partial unique index backs
the check below against races).

A refusal that matters for security is audited and committed at once, before it is raised: the
request then fails and its boundary rolls back, yet the attempt must stay on the record (as
certificate login does). The refused certificate, readable or not (``auth.certificate_refused``),
another organisation's certificate, one bound to another employer, a challenge of a disabled
account, a binding that lost the race to a concurrent binding of the same certificate
(``binding.refused``), and an unbinding of another employer's binding or by a role that may not
(``binding.unbind_refused``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask_babel import gettext as _
from sqlalchemy.exc import IntegrityError

from ca_service.audit.service import record_event
from ca_service.auth.access import ensure_role
from ca_service.auth.certificate_login import record_refusal
from ca_service.auth.challenges import claim_challenge, signed_message, verify_possession
from ca_service.auth.models import ChallengePurpose, Role, User
from ca_service.auth.service import actor_of
from ca_service.auth.verification import (
    CertificateRefused,
    Refusal,
    Source,
    VerifiedCertificate,
    verify_certificate,
)
from ca_service.binding.models import CertificateBinding
from ca_service.config import Settings
from ca_service.db import db
from ca_service.employers.models import Employer
from ca_service.employers.service import employer_of
from ca_service.errors import CAError, Conflict, Forbidden, NotFound, ValidationError, echoed
from ca_service.i18n import format_utc_datetime
from ca_service.outbox.service import in_language_of, notify_employer

__all__ = [
    "bind_by_challenge",
    "bind_certificate",
    "bind_presented",
    "employer_by_number",
    "list_bindings",
    "refuse_unreadable_presented",
    "unbind",
]

_STAFF = (Role.RA_OFFICER, Role.CA_ADMIN)


def _live(fingerprint: str) -> CertificateBinding | None:
    return db.session.scalar(
        sa.select(CertificateBinding).where(
            CertificateBinding.fingerprint_sha256 == fingerprint,
            CertificateBinding.unbound_at.is_(None),
        )
    )


def _audited_refusal(
    exc: CAError, *, actor: str, action: str, target: str, details: Mapping[str, object]
) -> CAError:
    """Audit a refused binding or unbinding and commit at once (the request itself rolls
    back); ``exc``, to raise. The request's own pending changes are dropped first, as
    ``record_refusal`` does: nothing of the refused action is kept (a claimed challenge stays
    usable)."""
    db.session.rollback()
    record_event(actor, action, target, details)
    db.session.commit()
    return exc


def _certificate_facts(certificate: x509.Certificate, method: str) -> dict[str, object]:
    return {
        "method": method,
        "subject": certificate.subject.rfc4514_string()[:200],
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
    }


def _bound_elsewhere(
    user: User,
    employer: Employer,
    verified: VerifiedCertificate,
    method: str,
    existing: CertificateBinding,
    *,
    concurrent: bool = False,
) -> CAError:
    """The refusal of a certificate bound to another employer (audited, committed)."""
    conflict = Conflict(
        _(
            "This tax certificate is bound to another employer's account and cannot be "
            "bound here. If it is yours, contact the agency."
        )
    )
    details: dict[str, object] = {
        "reason": "bound_to_another_employer",
        "binding_id": existing.id,
        "fingerprint_sha256": verified.fingerprint_sha256,
        **_certificate_facts(verified.certificate, method),
    }
    if concurrent:
        details["concurrent"] = True
    return _audited_refusal(
        conflict,
        actor=actor_of(user),
        action="binding.refused",
        target=employer.registration_number,
        details=details,
    )


def _bound_meanwhile(
    user: User, employer: Employer, verified: VerifiedCertificate, method: str
) -> CAError:
    """The refusal of a binding that lost the race to a concurrent binding of the same
    certificate (the unique index said no after the check above found none); audited and
    committed like the refusals it stands in for. The winner is read in this transaction: it
    committed before the index turned this one down."""
    winner = _live(verified.fingerprint_sha256)
    if winner is not None and winner.employer_id != employer.id:
        # Answered as if this request had come second: the employer learns where it is bound.
        return _bound_elsewhere(user, employer, verified, method, winner, concurrent=True)
    # The same employer's two requests at once (a double submission, two tabs), or a winner
    # already unbound again: harmless, yet two binds of one certificate at once stay on the
    # record, since nobody can tell from here which of them the administrator meant.
    return _audited_refusal(
        Conflict(_("This tax certificate was just bound by another request.")),
        actor=actor_of(user),
        action="binding.refused",
        target=employer.registration_number,
        details={
            "reason": "bound_concurrently",
            "binding_id": winner.id if winner is not None else None,
            "fingerprint_sha256": verified.fingerprint_sha256,
            **_certificate_facts(verified.certificate, method),
        },
    )


def bind_certificate(
    *, user: User, verified: VerifiedCertificate, method: str, now: dt.datetime
) -> CertificateBinding:
    """Bind a verified tax certificate whose key the user has just proven to hold; flushes.

    :raises ValidationError: not a tax-bureau certificate (ours already sign in).
    :raises CertificateRefused: it carries another organisation's number (audited, committed).
    :raises Conflict: already bound to this account, or bound to another employer (audited,
        committed).
    """
    ensure_role(user, Role.EMPLOYER_ADMIN)
    employer = employer_of(user)
    if verified.source is not Source.TAX:
        raise ValidationError(
            _(
                "This is one of this agency's own certificates: it signs in as it is. Only "
                "tax-bureau certificates are bound."
            )
        )
    existing = _live(verified.fingerprint_sha256)
    if existing is not None:
        if existing.employer_id == employer.id:
            raise Conflict(_("This tax certificate is already bound to your account."))
        raise _bound_elsewhere(user, employer, verified, method, existing)
    if verified.registration_number != employer.registration_number:
        refusal = CertificateRefused(
            Refusal.OTHER_ORGANISATION,
            _(
                "This tax certificate identifies another organisation (%(number)s), not "
                "%(employer)s (%(employer_number)s).",
                number=verified.registration_number or _("no registration number"),
                employer=employer.legal_name,
                employer_number=employer.registration_number,
            ),
        )
        raise _audited_refusal(
            refusal,
            actor=actor_of(user),
            action="binding.refused",
            target=employer.registration_number,
            details={
                "reason": Refusal.OTHER_ORGANISATION.value,
                "registration_number": verified.registration_number,
                "fingerprint_sha256": verified.fingerprint_sha256,
                **_certificate_facts(verified.certificate, method),
            },
        )
    certificate = verified.certificate
    binding = CertificateBinding(
        employer_id=employer.id,
        issuer=certificate.issuer.rfc4514_string(),
        serial=format(certificate.serial_number, "x"),
        fingerprint_sha256=verified.fingerprint_sha256,
        spki_sha256=verified.spki_sha256,
        subject=verified.subject,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        der=certificate.public_bytes(Encoding.DER),
        bound_by=actor_of(user),
    )
    try:
        with db.session.begin_nested():
            db.session.add(binding)
            db.session.flush()
    except IntegrityError:
        raise _bound_meanwhile(user, employer, verified, method) from None
    record_event(
        actor_of(user),
        "binding.bound",
        employer.registration_number,
        {
            "binding_id": binding.id,
            "method": method,
            "issuer": binding.issuer,
            "serial": binding.serial,
            "fingerprint_sha256": binding.fingerprint_sha256,
        },
    )
    with in_language_of(employer):
        notify_employer(
            employer,
            subject=_("Tax certificate bound to your account"),
            body=_(
                "The tax-bureau certificate %(subject)s (serial %(serial)s) was bound to your "
                "social-security employer account on %(when)s UTC and can now sign in. If this "
                "was not you, unbind it and contact the agency.",
                subject=binding.subject,
                serial=binding.serial,
                when=format_utc_datetime(now),
            ),
            dedupe_key=f"binding:{binding.id}:bound",
        )
    return binding


def bind_presented(
    *, user: User, chain: Sequence[x509.Certificate], settings: Settings, now: dt.datetime
) -> CertificateBinding:
    """Bind the TLS client certificate of the administrator's own connection (the handshake
    proved possession of its key); flushes. Refusals are audited.

    :raises CertificateRefused: a refused certificate.
    :raises Conflict: already bound.
    """
    try:
        verified = verify_certificate(chain, settings=settings, now=now)
    except CertificateRefused as exc:
        # The signed-in administrator presented it: the record names them.
        record_refusal(exc, chain, "bind:tls", actor=actor_of(user))
        raise
    return bind_certificate(user=user, verified=verified, method="tls", now=now)


def refuse_unreadable_presented(*, user: User, refusal: CertificateRefused) -> CertificateRefused:
    """Audit (and commit) the unreadable TLS client certificate the administrator's connection
    presented for binding, as ``bind_presented`` audits the readable ones it refuses;
    ``refusal``, to raise. Nothing of what was presented is recorded: it could not be read,
    and its bytes are whatever the client sent."""
    record_refusal(refusal, (), "bind:tls", actor=actor_of(user))
    return refusal


def bind_by_challenge(
    *,
    nonce: str,
    chain: Sequence[x509.Certificate],
    signature: bytes,
    settings: Settings,
    now: dt.datetime,
) -> CertificateBinding:
    """Bind with a binding challenge (asked for by a signed-in administrator) signed by the tax
    certificate's key; flushes.

    :raises CertificateRefused: unusable challenge, bad signature, refused certificate.
    :raises Forbidden: the account that asked for the challenge is disabled (audited).
    :raises Conflict: already bound.
    """
    try:
        challenge = claim_challenge(nonce=nonce, purpose=ChallengePurpose.BIND, now=now)
        user = db.session.get(User, challenge.user_id) if challenge.user_id is not None else None
        if user is None or user.disabled:
            forbidden = Forbidden(
                _("The account that asked for this binding challenge is disabled.")
            )
            raise _audited_refusal(
                forbidden,
                actor=actor_of(user) if user is not None else "anonymous",
                action="binding.refused",
                target=user.username if user is not None else "-",
                details={
                    "reason": "account_disabled" if user is not None else "account_missing",
                    **(_certificate_facts(chain[0], "challenge") if chain else {}),
                },
            )
        message = signed_message(ChallengePurpose.BIND, nonce.strip())
        verify_possession(chain[0], message, signature)
        verified = verify_certificate(chain, settings=settings, now=now)
    except CertificateRefused as exc:
        record_refusal(exc, chain, "bind:challenge")
        raise
    return bind_certificate(user=user, verified=verified, method="challenge", now=now)


def list_bindings(employer_id: int, *, include_unbound: bool = False) -> list[CertificateBinding]:
    query = (
        sa.select(CertificateBinding)
        .where(CertificateBinding.employer_id == employer_id)
        .order_by(CertificateBinding.id.desc())
    )
    if not include_unbound:
        query = query.where(CertificateBinding.unbound_at.is_(None))
    return list(db.session.scalars(query))


def employer_by_number(number: str) -> Employer:
    """:raises NotFound: no employer with this registration number."""
    employer = db.session.scalar(
        sa.select(Employer).where(Employer.registration_number == number.strip().upper())
    )
    if employer is None:
        raise NotFound(_("There is no employer %(number)s.", number=echoed(number.strip())))
    return employer


def unbind(*, user: User, binding_id: int, now: dt.datetime) -> CertificateBinding:
    """End a binding: by the employer's administrator or by an RA officer / CA administrator;
    flushes.

    :raises NotFound: no such live binding (for an administrator: none of theirs; another
        employer's is audited, committed).
    :raises Forbidden: the user may not unbind it (audited, committed).
    """
    binding = db.session.get(CertificateBinding, binding_id)
    if binding is None or binding.unbound_at is not None:
        raise NotFound(_("There is no bound certificate %(id)s.", id=binding_id))
    refusal: CAError | None = None
    if user.role is Role.EMPLOYER_ADMIN:
        if user.employer_id != binding.employer_id:
            # Another employer's binding answers as a missing one: its number says nothing.
            refusal = NotFound(_("There is no bound certificate %(id)s.", id=binding_id))
            reason = "another_employers_binding"
    else:
        try:
            ensure_role(user, *_STAFF)
        except Forbidden as exc:
            refusal, reason = exc, "role"
    if refusal is not None:
        owner = db.session.get(Employer, binding.employer_id)
        raise _audited_refusal(
            refusal,
            actor=actor_of(user),
            action="binding.unbind_refused",
            target=owner.registration_number if owner is not None else "-",
            details={
                "reason": reason,
                "binding_id": binding.id,
                "serial": binding.serial,
                "issuer": binding.issuer,
            },
        )
    binding.unbound_at = now
    binding.unbound_by = actor_of(user)
    db.session.flush()
    employer = db.session.get(Employer, binding.employer_id)
    assert employer is not None  # noqa: S101  (foreign key)
    record_event(
        actor_of(user),
        "binding.unbound",
        employer.registration_number,
        {"binding_id": binding.id, "serial": binding.serial, "issuer": binding.issuer},
    )
    with in_language_of(employer):
        facts = {
            "subject": binding.subject,
            "serial": binding.serial,
            "when": format_utc_datetime(now),
        }
        if user.role is Role.EMPLOYER_ADMIN:
            body = _(
                "The tax-bureau certificate %(subject)s (serial %(serial)s) was unbound from "
                "your social-security employer account on %(when)s UTC by you; it can no longer "
                "sign in.",
                **facts,
            )
        else:
            body = _(
                "The tax-bureau certificate %(subject)s (serial %(serial)s) was unbound from "
                "your social-security employer account on %(when)s UTC by the agency; it can no "
                "longer sign in.",
                **facts,
            )
        notify_employer(
            employer,
            subject=_("Tax certificate unbound from your account"),
            body=body,
            dedupe_key=f"binding:{binding.id}:unbound",
        )
    return binding
