"""Renewal (re-key) of an employer certificate, before and after it expires.

A renewal is an application that names the certificate it replaces (``renews_id``): it carries
a new CSR and relies on the documents of the approval the certificate came from. It is issued
at once, without review, when the employer record is unchanged since the last officer approval
and no document that approval relied on has passed its validity end; otherwise it goes to an
officer (record changed) or back to the employer for the expired documents, with the reason
recorded in its history. Issuance is the applications' own (``issue_certificate``), so a
renewal has the same guarantees: one certificate per renewal, serial reserved before the HSM
signs. At most one open renewal per certificate (a partial unique index), so two renewals at
once yield one new certificate.

Services take the acting user explicitly, check the role again and only flush, except that a
renewal issued at once commits inside ``issue_certificate`` (the serial before the HSM signs).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from flask_babel import gettext as _

from ca_service.audit.service import NewEvent, record_events
from ca_service.auth.access import ensure_role
from ca_service.auth.models import EMPLOYER_MEMBERS, Role, User
from ca_service.auth.service import actor_of
from ca_service.authorities.service import ISSUING_SLUG, ROOT_SLUG
from ca_service.authorities.signing import normalise_serial
from ca_service.config import Settings
from ca_service.db import db, utcnow
from ca_service.employers.models import Employer
from ca_service.employers.service import employer_of
from ca_service.errors import CAError, Conflict, Forbidden, NotFound, ValidationError
from ca_service.i18n import current_language
from ca_service.issuance import service as applications
from ca_service.issuance.csr import CheckedRequest, check_request
from ca_service.issuance.lineage import (
    LineageStep,
    RenewalBasis,
    expired_documents,
    lineage_step,
    renewal_basis,
    step_columns,
    step_of,
)
from ca_service.issuance.models import Application, ApplicationStatus, Document, KeySource
from ca_service.issuance.notes import Note, NoteCode, ReviewCode, ReviewReason
from ca_service.models import Authority, Certificate, CertificateKind, CertificateStatus
from ca_service.outbox.service import in_language
from ca_service.prepared import Entity, PreparedQuery
from ca_service.revocation.blocked_keys import blocked_among, refuse_blocked_key
from ca_service.revocation.service import revoke_certificate
from hsm import Token


class RenewalState(enum.StrEnum):
    """Where a certificate stands for renewal."""

    NOT_DUE = "not_due"  # before the renewal window
    DUE = "due"  # inside the window, not yet expired
    GRACE = "grace"  # expired, within the grace period
    PAST_GRACE = "past_grace"  # a new application is needed
    PENDING = "pending"  # a renewal of it waits for the employer or an officer
    RENEWED = "renewed"  # a newer certificate of the lineage exists
    REVOKED = "revoked"


@dataclass(frozen=True)
class RenewalWindow:
    """The renewal facts of one certificate at one moment."""

    certificate: Certificate
    state: RenewalState
    opens_at: dt.datetime  # notAfter - RENEWAL_WINDOW_DAYS
    closes_at: dt.datetime  # notAfter + RENEWAL_GRACE_DAYS
    now: dt.datetime
    successor: Certificate | None  # the certificate that renewed it
    pending: Application | None  # the renewal under way

    @property
    def days_left(self) -> int:
        """Whole days until notAfter (negative once expired)."""
        return (self.certificate.not_after - self.now) // dt.timedelta(days=1)

    @property
    def renewable(self) -> bool:
        return self.state in (RenewalState.DUE, RenewalState.GRACE)

    @property
    def clock_state(self) -> RenewalState:
        """Where the certificate stands by the clock alone (as if not revoked, renewed or
        pending)."""
        return _state_by_time(self.certificate, self.now, self.opens_at, self.closes_at)

    @property
    def stuck(self) -> Application | None:
        """The renewal under way when it is approved but holds no issued certificate: its
        signing failed (the HSM) or died with its worker. The employer's next request resumes
        it (``plan_renewal``) instead of waiting for an officer or ``ca-service reconcile``."""
        pending = self.pending
        if self.state is not RenewalState.PENDING or pending is None:
            return None
        return pending if pending.status is ApplicationStatus.APPROVED else None


@dataclass(frozen=True)
class RenewalOutcome:
    """What a renewal request did: issued at once, or where it waits and why."""

    application: Application
    certificate: Certificate | None  # the new certificate when issued at once
    reasons: list[str]  # why it was not issued at once (empty when it was)
    delivery: tuple[str, str] | None = None  # ``delivery_pem`` of it, when already made


def window_days(settings: Settings) -> tuple[dt.timedelta, dt.timedelta]:
    """(window before notAfter, grace after it)."""
    return (
        dt.timedelta(days=int(settings["RENEWAL_WINDOW_DAYS"])),
        dt.timedelta(days=int(settings["RENEWAL_GRACE_DAYS"])),
    )


# What renewal_window reads, in one round trip: the id of the newest certificate that renewed
# this one, and of the renewal under way (at most one: a partial unique index). Both are
# usually absent; the rows are loaded only when present.
_SUCCESSOR_ID = (
    sa.select(Certificate.id)
    .where(
        Certificate.renews_id == sa.bindparam("certificate_id"),
        Certificate.status == CertificateStatus.ISSUED,
    )
    .order_by(Certificate.id.desc())
    .limit(1)
    .scalar_subquery()
)
_OPEN_RENEWAL_ID = (
    sa.select(Application.id)
    .where(
        Application.renews_id == sa.bindparam("certificate_id"),
        Application.status != ApplicationStatus.REJECTED,
    )
    .order_by(Application.id)
    .limit(1)
    .scalar_subquery()
)
_LINEAGE_STATE = sa.select(_SUCCESSOR_ID.label("successor_id"), _OPEN_RENEWAL_ID.label("open_id"))

# ``renewal_target``'s query: the certificate, its employer, the same two ids and the first
# step of its lineage (the application it came from, with its documents' terms: one row per
# document), in one statement compiled once and run without the ORM's statement and loading
# machinery (``prepared``: through ``session.execute`` of the two entities it cost three times
# the database's work).
_CERTIFICATES = Certificate.__table__
_APPLICATIONS = Application.__table__
_EMPLOYERS = Employer.__table__
_ORIGIN = _APPLICATIONS.alias("origin")
_DOCUMENTS = Document.__table__
_TARGET_CERTIFICATE = Entity(Certificate, "certificate")
_TARGET_EMPLOYER = Entity(Employer, "employer")
_SUCCESSOR = _CERTIFICATES.alias("successor")
_SUCCESSOR_OF = (
    sa.select(_SUCCESSOR.c.id)
    .where(
        _SUCCESSOR.c.renews_id == _CERTIFICATES.c.id,
        _SUCCESSOR.c.status == CertificateStatus.ISSUED,
    )
    .order_by(_SUCCESSOR.c.id.desc())
    .limit(1)
    .correlate(_CERTIFICATES)
    .scalar_subquery()
)
_OPEN_RENEWAL_OF = (
    sa.select(_APPLICATIONS.c.id)
    .where(
        _APPLICATIONS.c.renews_id == _CERTIFICATES.c.id,
        _APPLICATIONS.c.status != ApplicationStatus.REJECTED,
    )
    .order_by(_APPLICATIONS.c.id)
    .limit(1)
    .correlate(_CERTIFICATES)
    .scalar_subquery()
)
_TARGET = PreparedQuery(
    sa.select(
        *_TARGET_CERTIFICATE.columns,
        *_TARGET_EMPLOYER.columns,
        _SUCCESSOR_OF.label("successor_id"),
        _OPEN_RENEWAL_OF.label("open_id"),
        # What differs from row to row (``one_to_many``): the certificate's id (one, or
        # ``renewal_target`` refuses) and the step's.
        _CERTIFICATES.c.id.label("row_certificate_id"),
        *step_columns(_ORIGIN, _DOCUMENTS),
    )
    .select_from(_CERTIFICATES)
    .join(_EMPLOYERS, _EMPLOYERS.c.id == _CERTIFICATES.c.employer_id)
    # applications.certificate_id is unique: one origin, its documents one row each.
    .outerjoin(_ORIGIN, _ORIGIN.c.certificate_id == _CERTIFICATES.c.id)
    .outerjoin(_DOCUMENTS, _DOCUMENTS.c.application_id == _ORIGIN.c.id)
    .where(
        _CERTIFICATES.c.serial == sa.bindparam("serial"),
        _CERTIFICATES.c.employer_id == sa.bindparam("employer_id"),
        _CERTIFICATES.c.kind == CertificateKind.END_ENTITY,
        _CERTIFICATES.c.status == CertificateStatus.ISSUED,
    )
    .order_by(_DOCUMENTS.c.id)
)
_EMPLOYER_AT = len(_TARGET_CERTIFICATE.columns)
_IDS_AT = _EMPLOYER_AT + len(_TARGET_EMPLOYER.columns)
_MANY_AT = _IDS_AT + 2


@dataclass(frozen=True)
class LineageIds:
    """The id of the certificate that renewed a certificate and of its renewal under way, and
    the first step of its lineage (None: it came from no application), as read with it
    (``renewal_target``)."""

    successor_id: int | None
    open_id: int | None
    first_step: LineageStep | None


def _successor_and_open_renewal(
    certificate: Certificate, lineage: LineageIds | None = None
) -> tuple[Certificate | None, Application | None]:
    """The certificate that renewed ``certificate`` and, if none did, its renewal under way
    (``lineage``: their ids as already read, else read here)."""
    found = lineage or db.session.execute(_LINEAGE_STATE, {"certificate_id": certificate.id}).one()
    if found.successor_id is not None:
        return db.session.get(Certificate, found.successor_id), None
    if found.open_id is not None:
        return None, db.session.get(Application, found.open_id)
    return None, None


def renewal_window(
    certificate: Certificate,
    settings: Settings,
    now: dt.datetime | None = None,
    lineage: LineageIds | None = None,
) -> RenewalWindow:
    """Where ``certificate`` stands for renewal at ``now`` (``lineage``: as read with it by
    ``renewal_target`` in this transaction, else read here)."""
    now = now or utcnow()
    before, grace = window_days(settings)
    opens_at = certificate.not_after - before
    closes_at = certificate.not_after + grace
    successor, pending = _successor_and_open_renewal(certificate, lineage)
    if certificate.revoked_at is not None:
        state = RenewalState.REVOKED
    elif successor is not None:
        state = RenewalState.RENEWED
    elif pending is not None and pending.status is not ApplicationStatus.ISSUED:
        state = RenewalState.PENDING
    else:
        state = _state_by_time(certificate, now, opens_at, closes_at)
    return RenewalWindow(certificate, state, opens_at, closes_at, now, successor, pending)


def _state_by_time(
    certificate: Certificate, now: dt.datetime, opens_at: dt.datetime, closes_at: dt.datetime
) -> RenewalState:
    """Where the certificate stands by the clock alone (not revoked, renewed or pending)."""
    if now < opens_at:
        return RenewalState.NOT_DUE
    if now < certificate.not_after:
        return RenewalState.DUE
    if now < closes_at:
        return RenewalState.GRACE
    return RenewalState.PAST_GRACE


def employer_certificates(user: User) -> list[Certificate]:
    """The issued certificates of the user's employer, newest first."""
    ensure_role(user, *EMPLOYER_MEMBERS)
    employer = employer_of(user)
    return list(
        db.session.scalars(
            sa.select(Certificate)
            .where(
                Certificate.employer_id == employer.id,
                Certificate.kind == CertificateKind.END_ENTITY,
                Certificate.status == CertificateStatus.ISSUED,
            )
            .order_by(Certificate.not_after.desc(), Certificate.id.desc())
            .limit(200)
        )
    )


def employer_certificate(*, user: User, serial: str) -> Certificate:
    """An issued certificate of the user's own employer, by serial (hex).

    :raises NotFound: also for another employer's certificate (its existence is not revealed).
    """
    return renewal_target(user=user, serial=serial)[0]


def renewal_target(*, user: User, serial: str) -> tuple[Certificate, Employer, LineageIds]:
    """``employer_certificate``, its employer and its lineage's state and first step (for
    ``plan_renewal``), read in one query (a primary-key join, two indexed subqueries, and
    outer joins on unique or indexed keys to the application and documents it came from: a
    row per document). While the caller holds the employer, ``employer_of`` finds it in the
    session instead of reading it again (the session holds its rows weakly).

    :raises NotFound: also for another employer's certificate (its existence is not revealed).
    """
    ensure_role(user, *EMPLOYER_MEMBERS)
    # The account's employer id is enough here (a renewal loads the employer itself).
    employer_id = user.employer_id if user.employer_id is not None else employer_of(user).id
    canonical = normalise_serial(serial)
    session = db.session()
    found = _TARGET.one_to_many(
        session, {"serial": canonical, "employer_id": employer_id}, _MANY_AT
    )
    if found is None:
        raise NotFound(_("You have no certificate with serial %(serial)s.", serial=canonical))
    row, many = found
    # As ``one_or_none`` (a serial is unique per issuing CA): one certificate, whatever the
    # number of its documents' rows.
    if len({certificate_id for certificate_id, *_step in many}) > 1:
        raise sa.exc.MultipleResultsFound("Multiple rows were found when one or none was required")
    certificate = _TARGET_CERTIFICATE.load(session, row)
    employer = _TARGET_EMPLOYER.load(session, row, _EMPLOYER_AT)
    if certificate is None or employer is None:
        raise RuntimeError("an inner join read no certificate or employer")
    lineage = LineageIds(row[_IDS_AT], row[_IDS_AT + 1], step_of(many, 1))
    return certificate, employer, lineage


def certificate_by_serial(serial: str) -> Certificate:
    """An issued employer certificate by serial, for the public renewal information.

    :raises NotFound: no such certificate.
    """
    canonical = normalise_serial(serial)
    row = db.session.scalar(
        sa.select(Certificate).where(
            Certificate.serial == canonical,
            Certificate.kind == CertificateKind.END_ENTITY,
            Certificate.status == CertificateStatus.ISSUED,
        )
    )
    if row is None:
        raise NotFound(_("No employer certificate has serial %(serial)s.", serial=canonical))
    return row


def _refusal(window: RenewalWindow) -> Conflict | None:
    """Why this certificate cannot be renewed now (None: it can)."""
    cert = window.certificate
    if window.state is RenewalState.REVOKED:
        return Conflict(
            _(
                "Certificate %(serial)s was revoked (%(reason)s); a revoked certificate cannot "
                "be renewed. File a new application.",
                serial=cert.serial,
                reason=cert.revocation_reason or "",
            )
        )
    if window.state is RenewalState.RENEWED and window.successor is not None:
        return Conflict(
            _(
                "Certificate %(serial)s was already renewed by certificate %(successor)s; only "
                "the newest certificate can be renewed.",
                serial=cert.serial,
                successor=window.successor.serial,
            )
        )
    if window.state is RenewalState.PENDING and window.pending is not None:
        return Conflict(
            _(
                "A renewal of certificate %(serial)s is already under way (application "
                "%(application)s).",
                serial=cert.serial,
                application=window.pending.id,
            )
        )
    if window.state is RenewalState.NOT_DUE:
        return Conflict(
            _(
                "Certificate %(serial)s can be renewed from %(date)s (it expires on %(end)s).",
                serial=cert.serial,
                date=f"{window.opens_at:%Y-%m-%d}",
                end=f"{cert.not_after:%Y-%m-%d}",
            )
        )
    if window.state is RenewalState.PAST_GRACE:
        return Conflict(
            _(
                "Certificate %(serial)s expired on %(end)s, too long ago to renew online; "
                "file a new application (it is pre-filled from your employer record).",
                serial=cert.serial,
                end=f"{cert.not_after:%Y-%m-%d}",
            )
        )
    return None


def _spki_sha256(certificate: Certificate) -> str:
    if certificate.der is None:
        raise Conflict(_("Certificate %(serial)s has no stored DER.", serial=certificate.serial))
    key = x509.load_der_x509_certificate(certificate.der).public_key()
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _check_subject(checked: CheckedRequest, employer: Employer) -> None:
    """The CA takes only the key from a CSR; a CSR naming another organisation is refused."""
    named = [
        attribute.value
        for oid in (NameOID.ORGANIZATION_IDENTIFIER, NameOID.SERIAL_NUMBER)
        for attribute in checked.csr.subject.get_attributes_for_oid(oid)
    ]
    for value in named:
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        if text.strip().upper() != employer.registration_number:
            raise ValidationError(
                _(
                    "The request names another organisation (%(value)s); a renewal keeps the "
                    "subject of %(number)s. Leave the subject empty or use your own number.",
                    value=text[:64] + ("…" if len(text) > 64 else ""),
                    number=employer.registration_number,
                )
            )


def _review_reasons(employer: Employer, basis: RenewalBasis, today: dt.date) -> list[ReviewReason]:
    reasons: list[ReviewReason] = []
    if basis.approved_at is None:
        reasons.append(ReviewReason(ReviewCode.NO_APPROVAL))
    elif employer.updated_at > basis.approved_at:
        reasons.append(
            ReviewReason(ReviewCode.EMPLOYER_CHANGED, {"date": f"{employer.updated_at:%Y-%m-%d}"})
        )
    for document in expired_documents(basis.documents.values(), today):
        reasons.append(
            ReviewReason(
                ReviewCode.DOCUMENT_EXPIRED,
                {"document": document.doc_type.value, "date": f"{document.valid_until:%Y-%m-%d}"},
            )
        )
    return reasons


class _EventsBeforeCommit:
    """Audit events appended just before the next commit instead of at once.

    Appending an event takes the audit head's row lock, which every writer of the service
    queues on until its transaction ends. Appended when the renewal is approved, the lock would
    be held through the issuance's reads and reservation up to its commit; appended just
    before that commit, it is held for the commit alone (bench/renewal.py: 16 clients renewing
    at once queue on it). The events and their order are the same, in the same transaction.
    Each event names its actor; those of a batch of renewals go under one claim of the head.
    """

    def __init__(self, events: list[NewEvent], commit: applications.Commit) -> None:
        self._events = events
        self._commit = commit

    def append(self) -> None:
        if self._events:
            record_events("system", self._events)
        self._events = []

    def commit(self) -> None:
        self.append()
        self._commit()


@dataclass(frozen=True)
class RenewalPlan:
    """A renewal request checked against what was read: what to write, and whether it is
    issued at once (no reasons for review). Plain values, so that another thread (the
    process's renewal batch, ``renewal_batch``) can carry it out in its own session."""

    user_id: int
    actor: str
    language: str  # of the request: the history notes are written in it
    employer_id: int
    registration_number: str
    employer_updated_at: dt.datetime  # as read: a change since means "read again"
    certificate_id: int
    serial: str
    checked: CheckedRequest
    state: RenewalState
    supersede: bool
    reasons: tuple[ReviewReason, ...]  # why it needs review or documents (empty: at once)
    status: ApplicationStatus  # of the renewal application: approved, submitted or draft
    now: dt.datetime
    # The approved renewal whose issuance failed or died, resumed by this request (with this
    # request's key when it differs); None: a new renewal application.
    resume_id: int | None = None

    def reason_texts(self) -> list[str]:
        """The reasons for review in the request's language (its answer and audit event)."""
        with in_language(self.language):
            return [str(reason) for reason in self.reasons]


def plan_renewal(
    *,
    user: User,
    certificate: Certificate,
    csr: bytes,
    supersede: bool,
    contacts_confirmed: bool,
    settings: Settings,
    lineage: LineageIds | None = None,
) -> RenewalPlan:
    """Check a renewal of ``certificate`` with the key of ``csr``; writes nothing (it runs in a
    read transaction that never waits for SQLite's write lock). ``lineage``: as read with the
    certificate in this transaction (``renewal_target``), else read here.

    :raises Conflict: outside the window, revoked, already renewed or being renewed.
    :raises ValidationError: bad CSR, same key as before, another subject, details unconfirmed.
    :raises Forbidden: not a member of the employer, its mobile not confirmed, or an HR
        operator asking to revoke the old certificate (only the administrator revokes).
    :raises KeyBlocked: the key was revoked for keyCompromise (checked here only for a renewal
        that goes to review).
    """
    ensure_role(user, *EMPLOYER_MEMBERS)
    if supersede:
        ensure_role(user, Role.EMPLOYER_ADMIN)
    employer = employer_of(user)
    if not employer.active:
        raise Forbidden(_("Confirm your mobile number before renewing."))
    if certificate.employer_id != employer.id or certificate.kind is not CertificateKind.END_ENTITY:
        raise NotFound(
            _("You have no certificate with serial %(serial)s.", serial=certificate.serial)
        )
    now = utcnow()
    window = renewal_window(certificate, settings, now, lineage)
    stuck = window.stuck
    if stuck is not None:
        # Judged as if it were not pending: the window still decides (past grace: refused).
        window = replace(window, state=window.clock_state, pending=None)
    refusal = _refusal(window)
    if refusal is not None:
        raise refusal
    if window.state is RenewalState.GRACE and not contacts_confirmed:
        raise ValidationError(
            _(
                "Your certificate has expired: confirm that the administrator's mobile number "
                "and e-mail address on record are still current before renewing."
            )
        )
    checked = check_request(csr)
    if checked.public_key_sha256 == _spki_sha256(certificate):
        raise ValidationError(
            _(
                "The request carries the key of the certificate being renewed; a renewal needs "
                "a new key pair."
            )
        )
    _check_subject(checked, employer)
    facts = _PlanFacts(user, employer, certificate, checked, window.state, supersede, now)
    first_step = lineage.first_step if lineage is not None else lineage_step(certificate.id)
    if stuck is not None:
        return _resume_plan(facts, stuck, first_step)
    basis = renewal_basis(first_step)
    reasons = _review_reasons(employer, basis, now.date())
    if reasons:
        # A key once revoked for keyCompromise is never certified again: refused now rather
        # than after the review. A renewal issued at once is checked where it is written
        # (``renew_planned`` and issuance, under the write lock).
        refuse_blocked_key(db.session(), checked.public_key_sha256)
    documents_expired = bool(expired_documents(basis.documents.values(), now.date()))
    if not reasons:
        status = ApplicationStatus.APPROVED
    elif documents_expired:
        status = ApplicationStatus.DRAFT
    else:
        status = ApplicationStatus.SUBMITTED
    return facts.plan(reasons=reasons, status=status)


@dataclass(frozen=True)
class _PlanFacts:
    """What ``plan_renewal`` checked, from which a ``RenewalPlan`` is made."""

    user: User
    employer: Employer
    certificate: Certificate
    checked: CheckedRequest
    state: RenewalState
    supersede: bool
    now: dt.datetime

    def plan(
        self,
        *,
        reasons: Sequence[ReviewReason] = (),
        status: ApplicationStatus = ApplicationStatus.APPROVED,
        resume: Application | None = None,
    ) -> RenewalPlan:
        return RenewalPlan(
            user_id=self.user.id,
            actor=actor_of(self.user),
            language=current_language(),
            employer_id=self.employer.id,
            registration_number=self.employer.registration_number,
            employer_updated_at=self.employer.updated_at,
            certificate_id=self.certificate.id,
            serial=self.certificate.serial,
            checked=self.checked,
            state=self.state,
            supersede=self.supersede,
            reasons=tuple(reasons),
            status=status,
            now=self.now,
            resume_id=resume.id if resume is not None else None,
        )


def _resume_plan(
    facts: _PlanFacts, stuck: Application, first_step: LineageStep | None
) -> RenewalPlan:
    """The plan that resumes ``stuck``, the approved renewal without a certificate
    (``first_step``: of the certificate's lineage).

    :raises Conflict: another key than the one an officer approved.
    """
    if stuck.public_key_sha256 == facts.checked.public_key_sha256:
        # The same request again: the renewal was approved (without review, or by an officer)
        # for this very key, so it is issued as approved.
        return facts.plan(resume=stuck)
    if _review_reasons(facts.employer, renewal_basis(first_step), facts.now.date()):
        # An officer's approval is not carried over to a key the officer never saw.
        raise Conflict(
            _(
                "A renewal of certificate %(serial)s with another key was approved "
                "(application %(application)s) and waits for its certificate; send that "
                "key's certificate request again to have it issued.",
                serial=facts.certificate.serial,
                application=stuck.id,
            )
        )
    # A new request would be approved at once: the stuck renewal takes this key instead (it
    # holds the lineage's one open renewal).
    return facts.plan(resume=stuck)


def _renewal_application(plan: RenewalPlan, employer: Employer | None = None) -> Application:
    now = plan.now
    return Application(
        employer_id=plan.employer_id,
        # When loaded: the answer shows the employer without reading it again.
        **({"employer": employer} if employer is not None else {}),
        status=plan.status,
        key_source=KeySource.CSR,
        csr_der=plan.checked.der,
        key_description=plan.checked.key_description,
        public_key_sha256=plan.checked.public_key_sha256,
        created_by_id=plan.user_id,
        submitted_at=None if plan.status is ApplicationStatus.DRAFT else now,
        decided_at=now if plan.status is ApplicationStatus.APPROVED else None,
        renews_id=plan.certificate_id,
        # A renewal brings no documents of its own (it relies on the lineage's): known empty,
        # so the answer does not load the collection; its history holds what is written
        # (``record_histories`` adds the rows as written, not read back).
        documents=[],
        events=[],
    )


def _history_notes(plan: RenewalPlan) -> tuple[Note, Note]:
    """The history notes of a new renewal application (shown in the reader's language): the
    request's (by the employer), then the review's need or the approval (by the system)."""
    requested = Note(NoteCode.RENEWAL_REQUESTED, {"serial": plan.serial})
    if plan.reasons:
        return requested, Note(
            NoteCode.RENEWAL_NEEDS_REVIEW, {"reasons": [r.stored() for r in plan.reasons]}
        )
    return requested, Note(NoteCode.RENEWAL_APPROVED)


def _requested_event(plan: RenewalPlan, application: Application) -> NewEvent:
    """The ``renewal.requested`` audit event of a new renewal application (to append)."""
    return NewEvent(
        "renewal.requested",
        str(application.id),
        {
            "renews": plan.serial,
            "employer": plan.registration_number,
            "public_key_sha256": plan.checked.public_key_sha256,
            "state": plan.state.value,
            "supersede": plan.supersede,
            "review": plan.reason_texts(),
        },
        plan.actor,
    )


def _approved_event(application: Application) -> NewEvent:
    return NewEvent("application.approved", str(application.id), {"renewal": True}, "system")


def request_renewal(
    *,
    user: User,
    certificate: Certificate,
    csr: bytes,
    supersede: bool,
    contacts_confirmed: bool,
    token: Token,
    settings: Settings,
    commit: applications.Commit,
) -> RenewalOutcome:
    """Renew ``certificate`` with the key of ``csr``, checked and carried out in the caller's
    session (``plan_renewal``, then ``carry_out``)."""
    plan = plan_renewal(
        user=user,
        certificate=certificate,
        csr=csr,
        supersede=supersede,
        contacts_confirmed=contacts_confirmed,
        settings=settings,
    )
    return carry_out(plan, certificate=certificate, token=token, settings=settings, commit=commit)


def carry_out(
    plan: RenewalPlan,
    *,
    certificate: Certificate,
    token: Token,
    settings: Settings,
    commit: applications.Commit,
) -> RenewalOutcome:
    """Write the renewal ``plan`` made of ``certificate`` in this transaction.

    Issued at once when nothing needs review (commits inside ``issue_certificate``); else a
    renewal application waits for an officer (SUBMITTED) or for the employer's replacement
    documents (DRAFT). With ``supersede`` the old certificate is revoked as superseded once the
    new one is issued.

    :raises Conflict: another request renewed the certificate meanwhile.
    """
    if plan.resume_id is not None:
        return _resume(plan, certificate=certificate, token=token, settings=settings, commit=commit)
    application = _renewal_application(plan)
    try:
        with db.session.begin_nested():
            db.session.add(application)
            db.session.flush()
    except sa.exc.IntegrityError:
        raise Conflict(
            _(
                "A renewal of certificate %(serial)s was just requested by another request.",
                serial=plan.serial,
            )
        ) from None
    requested_note, second_note = _history_notes(plan)
    applications.record_history(application, plan.actor, requested_note)
    applications.record_history(application, plan.actor if plan.reasons else "system", second_note)
    requested = _requested_event(plan, application)
    if plan.reasons:
        record_events(plan.actor, [requested])
        return RenewalOutcome(application, None, plan.reason_texts())
    events = _EventsBeforeCommit([requested, _approved_event(application)], commit)
    issued = applications.issue_certificate(
        application=application,
        token=token,
        profile=applications.EmployerProfile.from_settings(settings),
        commit=events.commit,
        actor=plan.actor,
    )
    events.append()  # issuance committed nothing: the caller's boundary decides
    _supersede(plan, certificate, token, settings)
    return RenewalOutcome(application, issued, [])


def _supersede(
    plan: RenewalPlan, certificate: Certificate, token: Token, settings: Settings
) -> None:
    if plan.supersede:
        revoke_certificate(
            token=token,
            settings=settings,
            certificate=certificate,
            reason="superseded",
            invalidity_date=None,
            actor=plan.actor,
        )


def _resume(
    plan: RenewalPlan,
    *,
    certificate: Certificate,
    token: Token,
    settings: Settings,
    commit: applications.Commit,
) -> RenewalOutcome:
    """Issue the approved renewal whose issuance failed or died (``plan.resume_id``), with the
    plan's key. Issuance's own rules hold: a reservation still inside its signing window is
    left alone (409, "being signed right now"), an older one is burnt and a new serial
    reserved, and a concurrent request claiming it loses with a Conflict.

    Two resumes of one renewal at once (a client retrying after a timeout while its first
    request still runs): the application is read afresh and locked (PostgreSQL; SQLite's write
    lock already queues them), so the second finds what the first did. Issued meanwhile with
    this plan's key, it answers that certificate as its own, the idempotent answer a retry
    expects (the client holds the key it certifies), writing nothing: one "resumed" history
    row and audit event per resume that did the work. Issued with another key, or no longer
    approved: a Conflict, since that certificate is of no use to the key this request holds.

    :raises Conflict: being signed or issued by another request right now, or the renewal
        changed since the plan was made.
    """
    changed = Conflict(
        _("The renewal of certificate %(serial)s changed; try again.", serial=plan.serial)
    )
    # Not the session's copy: the plan may have been read before a concurrent resume committed.
    application = db.session.get(
        Application, plan.resume_id, with_for_update=True, populate_existing=True
    )
    if application is None or application.renews_id != plan.certificate_id:
        raise changed
    if application.status is ApplicationStatus.ISSUED:
        issued = _issued_meanwhile(application, plan)
        if issued is None:
            raise changed
        if plan.supersede:
            db.session.refresh(certificate)
            if certificate.revoked_at is None:
                _supersede(plan, certificate, token, settings)
        return RenewalOutcome(application, issued, [])
    if application.status is not ApplicationStatus.APPROVED:
        raise changed
    key_replaced = application.public_key_sha256 != plan.checked.public_key_sha256
    if key_replaced:
        applications.replace_approved_request(application, plan.checked, plan.now)
    resumed_note = NoteCode.RENEWAL_RESUMED_NEW_KEY if key_replaced else NoteCode.RENEWAL_RESUMED
    applications.record_history(application, plan.actor, Note(resumed_note))
    resumed = NewEvent(
        "renewal.resumed",
        str(application.id),
        {
            "renews": plan.serial,
            "public_key_sha256": plan.checked.public_key_sha256,
            "key_replaced": key_replaced,
            "supersede": plan.supersede,
        },
        plan.actor,
    )
    events = _EventsBeforeCommit([resumed], commit)
    issued = applications.issue_certificate(
        application=application,
        token=token,
        profile=applications.EmployerProfile.from_settings(settings),
        commit=events.commit,
        actor=plan.actor,
    )
    events.append()
    _supersede(plan, certificate, token, settings)
    return RenewalOutcome(application, issued, [])


def _issued_meanwhile(application: Application, plan: RenewalPlan) -> Certificate | None:
    """The certificate a concurrent resume of ``application`` (read afresh, issued) stored,
    when it certifies the plan's key and is still good; else None."""
    if application.certificate_id is None:
        return None
    issued = db.session.get(Certificate, application.certificate_id, populate_existing=True)
    if (
        issued is None
        or issued.status is not CertificateStatus.ISSUED
        or issued.revoked_at is not None
        or application.public_key_sha256 != plan.checked.public_key_sha256
    ):
        return None
    return issued


@dataclass(frozen=True)
class BatchRenewal:
    """What a batch did with one plan: the renewal application and its new certificate, or
    the error that refused it (its application then holds no certificate). The rows are
    loaded with what the answer shows (employer, history, certificate), to be read after the
    batch's session let them go, and ``delivery`` is ``delivery_pem`` of the certificate."""

    application: Application
    certificate: Certificate | None
    delivery: tuple[str, str] | None
    error: CAError | None


# What a batch reads again under the write lock, for all its plans in one query each: what may
# have changed since a plan was made (a revocation, another renewal, an employer record edited).
_RENEWAL_UNDER_WAY = (
    sa.select(Application.id)
    .where(
        Application.renews_id == Certificate.id, Application.status != ApplicationStatus.REJECTED
    )
    .exists()
)
_STILL_AS_PLANNED = sa.select(
    Certificate.id, Certificate.revoked_at, _RENEWAL_UNDER_WAY.label("under_way"), Employer
).join(Employer, Employer.id == Certificate.employer_id)


def renew_planned(
    plans: Sequence[RenewalPlan],
    *,
    token: Token,
    settings: Settings,
    commit: applications.Commit,
) -> list[BatchRenewal | None]:
    """Carry out renewal plans that are issued at once, together: their applications, history
    and events in the transaction that reserves their serials (one commit), one HSM signature
    each, then one commit storing every certificate (``issue_certificates``). One result per
    plan, in order; None where the plan must be made again and carried out one by one
    (``request_renewal``), because what it was made from changed (revoked, renewed, employer
    record or key blocked since) or because it asks to supersede: nothing was written for it,
    and the one-by-one path gives the exact refusal, or renews.

    Only plans without reasons for review belong here. The caller commits the end.
    """
    results: list[BatchRenewal | None] = [None] * len(plans)
    ids = [plan.certificate_id for plan in plans]
    current = {
        row.id: row for row in db.session.execute(_STILL_AS_PLANNED.where(Certificate.id.in_(ids)))
    }
    blocked = blocked_among(db.session(), [plan.checked.public_key_sha256 for plan in plans])
    chosen: list[tuple[int, RenewalPlan]] = []
    seen: set[int] = set()
    for index, plan in enumerate(plans):
        row = current.get(plan.certificate_id)
        unchanged = (
            row is not None
            and row.revoked_at is None
            and not row.under_way
            and row.Employer.active
            and row.Employer.updated_at == plan.employer_updated_at
        )
        if (
            unchanged
            and not plan.reasons
            and not plan.supersede
            and plan.certificate_id not in seen
            and plan.checked.public_key_sha256 not in blocked
        ):
            chosen.append((index, plan))
            seen.add(plan.certificate_id)
    if not chosen:
        return results
    created = [
        (index, plan, _renewal_application(plan, current[plan.certificate_id].Employer))
        for index, plan in chosen
    ]
    # One INSERT for all. An IntegrityError here (a renewal in another process): the caller
    # rolls back and carries the plans out one by one.
    applications.insert_applications([application for _index, _plan, application in created])
    notes = {application.id: _history_notes(plan) for _index, plan, application in created}
    by_employer = {application.id: plan.actor for _index, plan, application in created}
    news = [application for _index, _plan, application in created]
    applications.record_histories([(a, notes[a.id][0]) for a in news], "system", by_employer)
    applications.record_histories([(a, notes[a.id][1]) for a in news], "system")
    events: list[NewEvent] = []
    for _index, plan, application in created:
        events += [_requested_event(plan, application), _approved_event(application)]
    chain = _chain_pem()  # read in this transaction: nothing is read after the last commit
    before_commit = _EventsBeforeCommit(events, commit)
    issued = applications.issue_certificates(
        applications=[application for _index, _plan, application in created],
        token=token,
        profile=applications.EmployerProfile.from_settings(settings),
        commit=before_commit.commit,
        actor="system",
        actors=by_employer,
    )
    before_commit.append()  # when issuance committed nothing
    for (index, _plan, application), result in zip(created, issued, strict=True):
        certificate = result.certificate
        delivery = _delivery_pem(certificate, chain) if certificate is not None else None
        results[index] = BatchRenewal(application, certificate, delivery, result.error)
    return results


# The CA certificates a renewal's answer chains to (as ``service.chain_pem``: the issuing CA's
# and the root's current certificates), read in one query.
_CA_CERTIFICATES = (
    sa.select(Authority.slug, Certificate.der)
    .join(Certificate, Certificate.id == Authority.certificate_id)
    .where(Authority.slug.in_((ISSUING_SLUG, ROOT_SLUG)))
)


@lru_cache(maxsize=8)
def _pem(der: bytes) -> bytes:
    # A CA certificate is the same DER for years: converted once per worker.
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


def _chain_pem() -> bytes:
    """The issuing CA's and the root's current certificates as PEM (one query).

    :raises NotFound: the PKI is not initialised.
    """
    found = {slug: der for slug, der in db.session.execute(_CA_CERTIFICATES) if der is not None}
    if ISSUING_SLUG not in found or ROOT_SLUG not in found:
        raise NotFound(_("The certificate authorities are not initialised."))
    return _pem(found[ISSUING_SLUG]) + _pem(found[ROOT_SLUG])


def _delivery_pem(certificate: Certificate, chain: bytes) -> tuple[str, str]:
    if certificate.der is None:
        raise NotFound(_("Certificate %(serial)s is not issued yet.", serial=certificate.serial))
    pem = x509.load_der_x509_certificate(certificate.der).public_bytes(Encoding.PEM)
    return pem.decode(), (pem + chain).decode()


def delivery_pem(certificate: Certificate) -> tuple[str, str]:
    """An issued certificate as PEM, and with its chain (the bytes of ``service.chain_pem``).

    :raises NotFound: not stored yet, or the PKI is not initialised.
    """
    if certificate.der is None:
        raise NotFound(_("Certificate %(serial)s is not issued yet.", serial=certificate.serial))
    return _delivery_pem(certificate, _chain_pem())
