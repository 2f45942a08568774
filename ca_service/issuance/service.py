"""Applications: drafting, documents and their seals, officer review, issuance, delivery.

Services take the acting user explicitly, check the role again (the view checked it first)
and only flush. The early commits are in ``issue_certificates``: the serials are reserved and
committed before the HSM signs, and the certificates are committed before anyone sees them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePath
from typing import Any, cast

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from flask_babel import gettext
from flask_babel import gettext as _
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from ca_service.audit.service import NewEvent, PendingEvents, record_event, record_events
from ca_service.auth.access import ensure_role
from ca_service.auth.models import EMPLOYER_MEMBERS, Role, User
from ca_service.auth.service import actor_of
from ca_service.authorities import profiles
from ca_service.authorities.service import (
    ISSUING_SLUG,
    ROOT_SLUG,
    current_certificate,
    get_authority,
    load_certificate,
)
from ca_service.authorities.signing import (
    Reservation,
    SignatureDiscarded,
    normalise_serial,
    reserve_serials,
    sign_reservation,
    store_signed_many,
)
from ca_service.config import Settings
from ca_service.db import db, pipelined, rows_changed, utcnow
from ca_service.dml import Write
from ca_service.employers.models import Employer
from ca_service.employers.service import employer_of
from ca_service.errors import (
    CAError,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    ValidationError,
    echoed,
)
from ca_service.i18n import format_utc_date, normalise_language
from ca_service.issuance.csr import CheckedRequest, check_request
from ca_service.issuance.expiry import DEFAULT_WARNING_DAYS
from ca_service.issuance.lineage import documents_of_record
from ca_service.issuance.models import (
    Application,
    ApplicationEvent,
    ApplicationStatus,
    Document,
    DocumentType,
    KeySource,
)
from ca_service.issuance.notes import Note, NoteCode
from ca_service.issuance.seals import SealVerdict, sniff_media_type, verify_seal
from ca_service.issuance.verdict_text import reason_text
from ca_service.models import Authority, Certificate, CertificateKind, CertificateStatus
from ca_service.outbox.service import (
    Notice,
    in_language,
    in_language_of,
    notify_contacts,
    notify_employer,
)
from ca_service.revocation.blocked_keys import (
    KeyBlocked,
    blocked_among,
    blocked_message,
    is_key_blocked,
    refuse_blocked_key,
    spki_sha256,
)
from ca_service.revocation.models import BlockedKey
from ca_service.storage import DocumentStore
from hsm import HSMError, KeyAlgorithm, Token

Commit = Callable[[], None]
OFFICERS = (Role.RA_OFFICER,)
DECISION_TEXT_LIMIT = 2000  # a rejection reason or an approval note, in characters
# A PENDING certificate younger than this may still be in the HSM: a retry waits for it.
SIGNING_GRACE = dt.timedelta(minutes=2)
_FILENAME_JUNK = re.compile(r"[^\w.\- ()]+")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(max_bytes=int(settings["MAX_DOCUMENT_MB"]) * 1024 * 1024)


@dataclass(frozen=True)
class EmployerProfile:
    """Issuance settings, passed in from configuration."""

    country: str
    validity_days: int
    non_repudiation: bool
    urls: profiles.PublicUrls
    # EXPIRY_WARNING_DAYS: a stored certificate is due for its first warning max() days early.
    warning_days: tuple[int, ...] = DEFAULT_WARNING_DAYS

    @classmethod
    def from_settings(cls, settings: Settings) -> EmployerProfile:
        return cls(
            country=str(settings["CA_COUNTRY"]),
            validity_days=int(settings["EMPLOYER_VALIDITY_DAYS"]),
            non_repudiation=bool(settings["EMPLOYER_NON_REPUDIATION"]),
            urls=profiles.PublicUrls(settings.public_base_url),
            warning_days=settings.warning_days,
        )


# -- employer side --------------------------------------------------------------------------


# inline(): no RETURNING of the new key (nothing reads it; queued in ``_mark_issued``).
_INSERT_APPLICATION_EVENT = sa.insert(cast("sa.Table", ApplicationEvent.__table__)).inline()
_INSERT_HISTORY = Write(_INSERT_APPLICATION_EVENT)
_APPLICATION_EVENT_CLASS = sa.inspect(ApplicationEvent).class_manager


def size_above(size: int, limit: int) -> str:
    """``size`` bytes in MB with just enough decimals to read as more than ``limit`` bytes
    (8.000001 MB, not 8.0 MB against a limit of 8 MB); in bytes when even six do not."""
    for decimals in range(1, 7):
        shown = f"{size / 1048576:.{decimals}f}"
        if float(shown) > limit / 1048576:
            return f"{shown} MB"
    return f"{size:,} bytes"


def record_history(application: Application, actor: str, note: Note) -> None:
    """Add a history row for the application's current status (written at once)."""
    _record_many([(application, note)], actor)


def record_histories(
    entries: Sequence[tuple[Application, Note]],
    actor: str,
    actors: Mapping[int, str] | None = None,
) -> None:
    """``record_history`` for several applications, in one statement (``actors``: the actor
    of an application by id, where it is not ``actor``)."""
    _record_many(entries, actor, actors)


def _record_many(
    entries: Sequence[tuple[Application, Note]],
    actor: str,
    actors: Mapping[int, str] | None = None,
) -> None:
    """``record_history`` for several applications, in one executemany (``actors``: the actor of an
    application by id, where it is not ``actor``)."""
    db.session.flush()  # the application rows and their status changes go first
    created_at = utcnow()
    rows = [
        {
            "application_id": application.id,
            "status": application.status,
            "actor": actors.get(application.id, actor) if actors else actor,
            "note_code": note.code.value,
            "note_params": dict(note.params) or None,
            "note": note.typed,
            "created_at": created_at,
        }
        for application, note in entries
    ]
    _INSERT_HISTORY.execute(db.session.connection(), rows)
    for (application, _unused), row in zip(entries, rows, strict=True):
        written = application.__dict__.get("events")
        if written is not None and all(event.id is None for event in written):
            # A history known to hold only what this transaction wrote (a new application
            # made with ``events=[]``): the rows are added as written, not read back. They
            # are for reading (an answer shows them), outside the session, without ids.
            event = _APPLICATION_EVENT_CLASS.new_instance()  # no constructor: no change events
            event.__dict__.update(row)
            set_committed_value(application, "events", [*written, event])
        else:
            db.session.expire(application, ["events"])  # reloaded with the new row when read


# Every column of an application, for ``insert_applications`` (one multi-row INSERT).
_APPLICATION_COLUMNS = tuple(
    column.key for column in cast("sa.Table", Application.__table__).columns if column.key != "id"
)
_INSERT_APPLICATIONS = sa.insert(cast("sa.Table", Application.__table__)).returning(
    cast("sa.Table", Application.__table__).c.id, sort_by_parameter_order=True
)


def insert_applications(new: Sequence[Application]) -> None:
    """Write new (transient) applications in one multi-row INSERT and put them in the session
    as if loaded, every column set (``created_at`` and ``updated_at`` default to now), the
    relationships given to the constructor kept as loaded. What the ORM's flush of the same
    objects does, without its unit of work (a renewal batch writes one per renewal).

    :raises sa.exc.IntegrityError: as the flush would (the caller rolls back).
    """
    if not new:
        return
    db.session.flush()  # the caller's pending changes go first, as with a flush
    now = utcnow()
    values: list[dict[str, Any]] = []
    for application in new:
        # Straight into the transient object's state, without attribute events: the values
        # the constructor set, and the unset columns as None (loaded as None, not expired).
        state = application.__dict__
        row = {name: state.get(name) for name in _APPLICATION_COLUMNS}
        for name in ("created_at", "updated_at"):
            if row[name] is None:
                row[name] = now
        state.update(row)
        values.append(row)
    ids = db.session.connection().execute(_INSERT_APPLICATIONS, values).scalars().all()
    for application, application_id in zip(new, ids, strict=True):
        application.__dict__["id"] = application_id
        make_transient_to_detached(application)  # what is set counts as loaded, unchanged
        db.session.add(application)


def _active_employer(user: User) -> Employer:
    ensure_role(user, *EMPLOYER_MEMBERS)
    employer = employer_of(user)
    if not employer.active:
        raise Forbidden(_("Confirm your mobile number before applying."))
    return employer


def create_application(*, user: User, key_source: KeySource) -> Application:
    """A new draft for the user's employer; flushes."""
    employer = _active_employer(user)
    application = Application(
        employer_id=employer.id,
        status=ApplicationStatus.DRAFT,
        key_source=key_source,
        created_by_id=user.id,
    )
    db.session.add(application)
    db.session.flush()
    record_history(application, actor_of(user), Note(NoteCode.DRAFT_CREATED))
    record_event(
        actor_of(user),
        "application.created",
        str(application.id),
        {"employer": employer.registration_number, "key_source": key_source.value},
    )
    return application


def applications_of(user: User) -> list[Application]:
    """The user's employer's applications, newest first."""
    employer = _active_employer(user)
    return list(
        db.session.scalars(
            sa.select(Application)
            .where(Application.employer_id == employer.id)
            .order_by(Application.id.desc())
        )
    )


def employer_application(*, user: User, application_id: int) -> Application:
    """An application of the user's own employer.

    :raises NotFound: also for another employer's application (its existence is not revealed).
    """
    employer = _active_employer(user)
    application = db.session.get(Application, application_id)
    if application is None or application.employer_id != employer.id:
        raise NotFound(
            _("You have no application %(application_id)s.", application_id=application_id)
        )
    return application


def _editable(application: Application) -> None:
    if application.status is not ApplicationStatus.DRAFT:
        raise Conflict(
            _(
                "Application %(id)s is %(status)s; a submitted application cannot be changed.",
                id=application.id,
                status=application.status.label,
            )
        )


def attach_request(*, user: User, application: Application, data: bytes) -> CheckedRequest:
    """Check a CSR and keep its public key on the draft; flushes.

    :raises ValidationError: malformed, badly signed or weak-keyed request.
    """
    ensure_role(user, *EMPLOYER_MEMBERS)
    _editable(application)
    if application.key_source is KeySource.COUNTER:
        raise Conflict(_("This application's key is generated at the counter; no request needed."))
    checked = check_request(data)
    refuse_blocked_key(db.session(), checked.public_key_sha256)
    _set_request(application, checked)
    record_history(
        application,
        actor_of(user),
        Note(NoteCode.REQUEST_ATTACHED, {"key": checked.key_description}),
    )
    return checked


def _set_request(application: Application, checked: CheckedRequest) -> None:
    application.csr_der = checked.der
    application.key_description = checked.key_description
    application.public_key_sha256 = checked.public_key_sha256
    db.session.flush()


def _clean_filename(filename: str) -> str:
    name = PurePath(filename.replace("\\", "/")).name
    return _FILENAME_JUNK.sub("_", name)[:150] or "document"


def upload_document(
    *,
    user: User,
    application: Application,
    doc_type: DocumentType,
    filename: str,
    content: bytes,
    detached_signature: bytes | None,
    store: DocumentStore,
    anchors: Sequence[x509.Certificate],
    limits: UploadLimits,
) -> Document:
    """Store a document (replacing one of the same type) with its seal verdict; flushes.

    :raises ValidationError: empty, oversize or not a PDF/PNG/JPEG.
    """
    ensure_role(user, *EMPLOYER_MEMBERS)
    _editable(application)
    if not content:
        raise ValidationError(_("The file for “%(label)s” is empty.", label=doc_type.label))
    for blob, what in ((content, _("file")), (detached_signature or b"", _("signature file"))):
        if len(blob) > limits.max_bytes:
            raise ValidationError(
                gettext(
                    "The %(what)s for “%(label)s” is %(size)s; the limit is %(limit)s MB.",
                    what=what,
                    label=doc_type.label,
                    size=size_above(len(blob), limits.max_bytes),
                    limit=f"{limits.max_bytes / 1048576:g}",
                )
            )
    media_type = sniff_media_type(content)
    if media_type is None:
        raise ValidationError(
            _(
                "The file for “%(label)s” is not a PDF, PNG or JPEG (judged by its content, not "
                "its name).",
                label=doc_type.label,
            )
        )
    employer = application.employer
    result = verify_seal(
        content=content,
        detached_signature=detached_signature or None,
        registration_number=employer.registration_number,
        anchors=anchors,
    )
    if result.verdict is SealVerdict.INVALID_FILE:
        raise ValidationError(
            _(
                "“%(label)s”: %(detail)s",
                label=doc_type.label,
                detail=reason_text(result.reason, subject=result.signer_subject),
            )
        )
    sha256 = store.put(content)
    signature_sha256 = store.put(detached_signature) if detached_signature else None
    existing = application.document(doc_type)
    if existing is not None:
        db.session.delete(existing)
        db.session.flush()
        db.session.expire(application, ["documents"])
    document = Document(
        application_id=application.id,
        doc_type=doc_type,
        filename=_clean_filename(filename),
        media_type=media_type,
        size=len(content),
        sha256=sha256,
        signature_sha256=signature_sha256,
        verdict=result.verdict,
        verdict_detail=result.detail[:1000],
        verdict_reason=result.reason,
        signer_subject=result.signer_subject,
        signed_at=result.signed_at,
    )
    db.session.add(document)
    db.session.flush()
    db.session.expire(application, ["documents"])
    record_event(
        actor_of(user),
        "application.document_uploaded",
        str(application.id),
        {"type": doc_type.value, "sha256": sha256, "verdict": result.verdict.value},
    )
    return document


def missing_for_submission(application: Application) -> list[str]:
    """What the employer must still provide, in words."""
    documents = documents_of_record(application)
    present = {d.doc_type for d in documents}
    missing = [f"“{t.label}”" for t in DocumentType if t not in present]
    problems = [
        _(
            "“%(document)s” (%(verdict)s: upload it again)",
            document=d.doc_type.label,
            verdict=d.verdict.label,
        )
        for d in documents
        if d.verdict not in (SealVerdict.VERIFIED, SealVerdict.UNSIGNED)
    ]
    today = utcnow().date()
    problems += [
        _(
            "a current “%(document)s” (the one on record expired on %(date)s)",
            document=d.doc_type.label,
            date=format_utc_date(d.valid_until),
        )
        for d in documents
        if d.valid_until is not None and d.valid_until < today
    ]
    if application.key_source is KeySource.CSR and application.csr_der is None:
        missing.append(_("the certificate request (CSR)"))
    return missing + problems


def submit_application(*, user: User, application: Application) -> Application:
    """Hand the draft to the officers; it becomes read-only. Flushes.

    :raises ValidationError: listing what is missing or unacceptable.
    """
    ensure_role(user, *EMPLOYER_MEMBERS)
    _editable(application)
    missing = missing_for_submission(application)
    if missing:
        raise ValidationError(
            _("Before submitting, provide: %(missing)s.", missing="; ".join(missing))
        )
    application.status = ApplicationStatus.SUBMITTED
    application.submitted_at = utcnow()
    db.session.flush()
    record_history(application, actor_of(user), Note(NoteCode.SUBMITTED))
    record_event(
        actor_of(user), "application.submitted", str(application.id), _evidence(application)
    )
    return application


def _evidence(application: Application) -> dict[str, object]:
    """What a decision relies on: every document's SHA-256 and the key."""
    return {
        "employer": application.employer.registration_number,
        "documents": {d.doc_type.value: d.sha256 for d in application.documents},
        "detached_signatures": {
            d.doc_type.value: d.signature_sha256
            for d in application.documents
            if d.signature_sha256
        },
        "public_key_sha256": application.public_key_sha256,
    }


# -- officer side ---------------------------------------------------------------------------


def officer_application(*, officer: User, application_id: int) -> Application:
    """An application an officer may see.

    :raises NotFound: no such application (or a draft, which is the employer's own).
    """
    ensure_role(officer, *OFFICERS)
    application = db.session.get(Application, application_id)
    if application is None or application.status is ApplicationStatus.DRAFT:
        raise NotFound(
            _(
                "There is no submitted application %(application_id)s.",
                application_id=application_id,
            )
        )
    return application


def _may_act(officer: User, application: Application) -> None:
    ensure_role(officer, *OFFICERS)
    if officer.employer_id is not None and officer.employer_id == application.employer_id:
        raise Forbidden(
            _("You belong to this employer; another officer must handle its application.")
        )


def _under_review(application: Application) -> None:
    if application.status not in (
        ApplicationStatus.SUBMITTED,
        ApplicationStatus.AWAITING_CONFIRMATION,
    ):
        raise Conflict(
            _(
                "Application %(id)s is already %(status)s.",
                id=application.id,
                status=application.status.label,
            )
        )


def document_of(application: Application, document_id: int) -> Document:
    document = next((d for d in application.documents if d.id == document_id), None)
    if document is None:
        raise NotFound(
            _(
                "Application %(id)s has no document %(document_id)s.",
                id=application.id,
                document_id=document_id,
            )
        )
    return document


def attest_paper_seal(*, officer: User, application: Application, document_id: int) -> Document:
    """The officer saw the paper seal on an unsigned scan; flushes.

    :raises Conflict: the document is not an unsigned scan, or the review is over.
    """
    _may_act(officer, application)
    _under_review(application)
    document = document_of(application, document_id)
    if document.verdict is not SealVerdict.UNSIGNED:
        raise Conflict(
            _(
                "“%(label)s” is %(verdict)s; only unsigned scans are attested.",
                label=document.doc_type.label,
                verdict=document.verdict.label,
            )
        )
    if document.attested_at is None:
        document.attested_at = utcnow()
        document.attested_by_id = officer.id
        db.session.flush()
        record_event(
            actor_of(officer),
            "application.seal_attested",
            str(application.id),
            {"type": document.doc_type.value, "sha256": document.sha256},
        )
    return document


def set_document_validity(
    *, officer: User, application: Application, document_id: int, valid_until: dt.date | None
) -> Document:
    """Record when a business licence or ID expires; flushes."""
    _may_act(officer, application)
    _under_review(application)
    document = document_of(application, document_id)
    if not document.doc_type.has_validity:
        raise ValidationError(
            _("“%(label)s” has no validity end date.", label=document.doc_type.label)
        )
    document.valid_until = valid_until
    db.session.flush()
    return document


def approval_blockers(application: Application, today: dt.date | None = None) -> list[str]:
    """Why the application cannot be approved yet (empty: it can)."""
    today = today or utcnow().date()
    documents = documents_of_record(application)
    present = {d.doc_type for d in documents}
    blockers = [
        _("“%(document)s” is missing", document=t.label) for t in DocumentType if t not in present
    ]
    for d in documents:
        if not d.acceptable:
            blockers.append(
                _(
                    "“%(document)s” is unsigned and its paper seal is not attested",
                    document=d.doc_type.label,
                )
                if d.verdict is SealVerdict.UNSIGNED
                else _(
                    "“%(document)s” is %(verdict)s",
                    document=d.doc_type.label,
                    verdict=d.verdict.label,
                )
            )
        if d.valid_until is not None and d.valid_until < today:
            blockers.append(
                _(
                    "“%(document)s” expired on %(date)s",
                    document=d.doc_type.label,
                    date=format_utc_date(d.valid_until),
                )
            )
    if application.key_source is KeySource.CSR and application.csr_der is None:
        blockers.append(_("there is no certificate request"))
    # Blocked after the request was attached: the officer sees it before approving.
    if application.public_key_sha256 is not None and is_key_blocked(
        db.session(), application.public_key_sha256
    ):
        blockers.append(blocked_message())
    return blockers


def approve_application(
    *, officer: User, application: Application, dual_control: bool, note: str = ""
) -> Application:
    """Approve (or, under dual control, confirm another officer's approval); flushes.
    ``note`` (optional) goes into the history the employer sees and the audit event.

    The status moves by a conditional UPDATE, so of two officers approving at once only one
    succeeds; the other gets a Conflict.

    :raises ValidationError: documents missing, unverified or unattested.
    :raises Conflict: already decided, or the same officer confirming their own approval.
    """
    _may_act(officer, application)
    _under_review(application)
    note = note.strip()
    if len(note) > DECISION_TEXT_LIMIT:
        raise ValidationError(_("Keep the note under 2,000 characters."))
    blockers = approval_blockers(application)
    if blockers:
        raise ValidationError(_("Cannot approve: %(blockers)s.", blockers="; ".join(blockers)))
    current = application.status
    if dual_control and current is ApplicationStatus.SUBMITTED:
        target = ApplicationStatus.AWAITING_CONFIRMATION
    else:
        target = ApplicationStatus.APPROVED
    if (
        current is ApplicationStatus.AWAITING_CONFIRMATION
        and application.first_approver_id == officer.id
    ):
        raise Conflict(_("Dual control: a different officer must confirm your approval."))
    now = utcnow()
    values: dict[str, object] = {"status": target, "updated_at": now}
    if target is ApplicationStatus.AWAITING_CONFIRMATION:
        values["first_approver_id"] = officer.id
    else:
        values.update(decided_by_id=officer.id, decided_at=now)
    moved = rows_changed(
        sa.update(Application)
        .where(Application.id == application.id, Application.status == current)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if moved != 1:
        raise Conflict(
            _("Application %(id)s was decided by someone else just now.", id=application.id)
        )
    db.session.refresh(application)
    summary = (
        NoteCode.FIRST_APPROVAL
        if target is ApplicationStatus.AWAITING_CONFIRMATION
        else NoteCode.APPROVED
    )
    record_history(application, actor_of(officer), Note(summary, typed=note or None))
    action = (
        "application.first_approval"
        if target is ApplicationStatus.AWAITING_CONFIRMATION
        else "application.approved"
    )
    evidence = _evidence(application)
    record_event(
        actor_of(officer),
        action,
        str(application.id),
        {**evidence, "note": note} if note else evidence,
    )
    return application


def reject_application(*, officer: User, application: Application, reason: str) -> Application:
    """Reject with a reason the employer sees; flushes."""
    _may_act(officer, application)
    _under_review(application)
    reason = reason.strip()
    if not reason:
        raise ValidationError(_("Give the employer a reason for the rejection."))
    if len(reason) > DECISION_TEXT_LIMIT:
        raise ValidationError(_("Keep the reason under 2,000 characters."))
    current = application.status
    now = utcnow()
    moved = rows_changed(
        sa.update(Application)
        .where(Application.id == application.id, Application.status == current)
        .values(
            status=ApplicationStatus.REJECTED,
            rejection_reason=reason,
            decided_by_id=officer.id,
            decided_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if moved != 1:
        raise Conflict(
            _("Application %(id)s was decided by someone else just now.", id=application.id)
        )
    db.session.refresh(application)
    record_history(application, actor_of(officer), Note(NoteCode.REJECTED, typed=reason))
    record_event(
        actor_of(officer),
        "application.rejected",
        str(application.id),
        {**_evidence(application), "reason": reason},
    )
    with in_language_of(application.employer):
        notify_employer(
            application.employer,
            subject=_("Certificate application %(id)s rejected", id=application.id),
            body=_(
                "Your certificate application %(id)s was rejected.\n\nReason: %(reason)s\n"
                "You can file a new application with corrected documents.",
                id=application.id,
                reason=reason,
            ),
            dedupe_key=f"application:{application.id}:rejected",
        )
    return application


# -- issuance -------------------------------------------------------------------------------


_applications = cast("sa.Table", Application.__table__)
_certificates = cast("sa.Table", Certificate.__table__)
_employers = cast("sa.Table", Employer.__table__)
_authorities = cast("sa.Table", Authority.__table__)
_blocked_keys = cast("sa.Table", BlockedKey.__table__)

# Issuance runs these for every certificate. They are statements on the tables, built once:
# the ORM's unit of work (change tracking, flush planning, re-reading rows after the first
# commit) and building statements per call cost more than the round trips themselves
# (bench/issuance.py). The ORM objects the caller holds are kept in step with
# ``set_committed_value``, without re-reading what was just written.


# What issuance reads, in one round trip: the employers' names and addresses, the issuing CA
# with its current certificate, and how many of the keys to certify are blocked (on every
# row; when any is, ``blocked_among`` says which).
def _facts_query(one: bool) -> sa.Select[Any]:
    """``_ISSUANCE_FACTS``; with ``one``, for one employer and one key (one by one), without
    expanding IN lists: compiled once and run on the cursor (see ca_service.dml)."""
    employers = (
        _employers.c.id == sa.bindparam("employer_id")
        if one
        else _employers.c.id.in_(sa.bindparam("employer_ids", expanding=True))
    )
    keys = (
        _blocked_keys.c.spki_sha256 == sa.bindparam("key_hash")
        if one
        else _blocked_keys.c.spki_sha256.in_(sa.bindparam("key_hashes", expanding=True))
    )
    return (
        sa.select(
            _employers.c.id.label("employer_id"),
            _employers.c.legal_name,
            _employers.c.registration_number,
            _employers.c.email,
            _employers.c.mobile,
            _employers.c.language,
            _authorities.c.id.label("issuer_id"),
            _authorities.c.key_label,
            _authorities.c.key_algorithm,
            _certificates.c.der.label("issuer_der"),
            sa.select(sa.func.count())
            .select_from(_blocked_keys)
            .where(keys)
            .scalar_subquery()
            .label("blocked"),
        )
        .select_from(_employers)
        .join(_authorities, _authorities.c.slug == ISSUING_SLUG)
        .join(_certificates, _certificates.c.id == _authorities.c.certificate_id)
        .where(employers)
    )


_ISSUANCE_FACTS = _facts_query(one=False)
_ONE_ISSUANCE_FACTS = Write(_facts_query(one=True))
_FACTS_KEYS = tuple(_ISSUANCE_FACTS.selected_columns.keys())
# Claim the application for a reservation: of two concurrent issuances only one matches.
_CLAIM_APPLICATION = _applications.update().where(
    _applications.c.id == sa.bindparam("application_id"),
    _applications.c.certificate_id.is_(None),
    _applications.c.status == ApplicationStatus.APPROVED,
)
# Release a reservation whose signing failed or never finished (only the one we looked at).
_RELEASE_APPLICATION = _applications.update().where(
    _applications.c.id == sa.bindparam("application_id"),
    _applications.c.certificate_id == sa.bindparam("reserved_id"),
)
_FAIL_RESERVATION = _certificates.update().where(
    _certificates.c.id == sa.bindparam("reserved_id"),
    _certificates.c.status == CertificateStatus.PENDING,
)
# Approved -> issued, only with the certificate this issuance stored.
_MARK_ISSUED = _applications.update().where(
    _applications.c.id == sa.bindparam("application_id"),
    _applications.c.certificate_id == sa.bindparam("issued_id"),
    _applications.c.status == ApplicationStatus.APPROVED,
)

# Run for every certificate: compiled once (see ca_service.dml).
_CLAIM = Write(_CLAIM_APPLICATION)
_MARK = Write(_MARK_ISSUED)


@dataclass(frozen=True)
class _IssuanceFacts:
    legal_name: str
    registration_number: str
    email: str
    mobile: str
    language: str
    issuer_id: int
    issuer_key_label: str
    issuer_algorithm: KeyAlgorithm
    issuer_certificate: x509.Certificate


@lru_cache(maxsize=8)
def _parsed_certificate(der: bytes) -> x509.Certificate:
    # The issuing CA's certificate is the same DER for months; parse it once per worker.
    return x509.load_der_x509_certificate(der)


def _issuance_facts(
    employer_ids: set[int], key_hashes: set[str]
) -> tuple[dict[int, _IssuanceFacts], bool]:
    """The facts for each employer, by id, and whether any of the keys (SPKI hashes) is
    blocked.

    :raises NotFound: when the PKI is not initialised.
    """
    connection = db.session.connection()
    rows: Sequence[Mapping[Any, Any]]
    if len(employer_ids) == 1 and len(key_hashes) == 1:
        ((employer_id,), (key_hash,)) = (employer_ids, key_hashes)
        rows = [
            dict(zip(_FACTS_KEYS, row, strict=True))
            for row in _ONE_ISSUANCE_FACTS.rows(
                connection, {"employer_id": employer_id, "key_hash": key_hash}
            )
        ]
    else:
        parameters = {"employer_ids": list(employer_ids), "key_hashes": list(key_hashes)}
        rows = connection.execute(_ISSUANCE_FACTS, parameters).mappings().all()
    any_blocked = any(row["blocked"] for row in rows)
    facts = {
        row["employer_id"]: _IssuanceFacts(
            legal_name=row["legal_name"],
            registration_number=row["registration_number"],
            email=row["email"],
            mobile=row["mobile"],
            language=row["language"],
            issuer_id=row["issuer_id"],
            issuer_key_label=row["key_label"],
            issuer_algorithm=KeyAlgorithm(row["key_algorithm"]),
            issuer_certificate=_parsed_certificate(row["issuer_der"]),
        )
        for row in rows
        if row["issuer_der"] is not None
    }
    if employer_ids and not facts:
        raise NotFound(f"no certificate authority {ISSUING_SLUG!r}; run `ca-service init`")
    return facts, any_blocked


def _changed(statement: sa.Executable, parameters: dict[str, Any] | list[dict[str, Any]]) -> int:
    """Rows an UPDATE changed (summed over an executemany's parameter sets)."""
    result = db.session.connection().execute(statement, parameters)
    return int(cast("sa.CursorResult[Any]", result).rowcount)


def _set_loaded(instance: object, **values: object) -> None:
    """Record values a statement just wrote on an object the session holds, as if loaded."""
    for name, value in values.items():
        set_committed_value(instance, name, value)


def _release_stale_reservation(application: Application, now: dt.datetime) -> None:
    row = application.certificate
    if row is None:
        return
    stored_meanwhile = Conflict(
        _(
            "The certificate for application %(id)s was stored just now; reload the application.",
            id=application.id,
        )
    )
    if row.status is CertificateStatus.ISSUED:
        # Read after the application (another transaction stored it in between): never
        # released, the application is issued now.
        raise stored_meanwhile
    if row.status is CertificateStatus.PENDING and now - row.created_at < SIGNING_GRACE:
        raise Conflict(
            _(
                "The certificate for application %(id)s is being signed right now; try again in "
                "a minute.",
                id=application.id,
            )
        )
    if row.status is CertificateStatus.PENDING:
        # The serial stays burnt, never reused. Conditional: a signature stored meanwhile wins.
        failed = _changed(
            _FAIL_RESERVATION, {"reserved_id": row.id, "status": CertificateStatus.FAILED}
        )
        if failed != 1:
            raise stored_meanwhile
        _set_loaded(row, status=CertificateStatus.FAILED)
    released = _changed(
        _RELEASE_APPLICATION,
        {"application_id": application.id, "reserved_id": row.id, "certificate_id": None},
    )
    if released != 1:
        raise Conflict(
            _("Application %(id)s is being issued by another request.", id=application.id)
        )
    _set_loaded(application, certificate_id=None, certificate=None)


# An approved application takes another key only while no reservation holds it.
_REPLACE_REQUEST = _applications.update().where(
    _applications.c.id == sa.bindparam("application_id"),
    _applications.c.certificate_id.is_(None),
    _applications.c.status == ApplicationStatus.APPROVED,
)


def replace_approved_request(
    application: Application, checked: CheckedRequest, now: dt.datetime
) -> None:
    """Give an approved application whose issuance failed (or died) the key of ``checked``
    (a renewal resumed by the employer with a new key; the caller checked the key). A stale
    reservation is burnt first, as before any retry of issuance.

    :raises Conflict: its certificate is being signed or was issued meanwhile.
    """
    _release_stale_reservation(application, now)
    values = {
        "csr_der": checked.der,
        "key_description": checked.key_description,
        "public_key_sha256": checked.public_key_sha256,
        "updated_at": now,
    }
    if _changed(_REPLACE_REQUEST.values(**values), {"application_id": application.id}) != 1:
        raise Conflict(
            _("Application %(id)s is being issued by another request.", id=application.id)
        )
    _set_loaded(application, **values)


@dataclass(frozen=True)
class Issued:
    """What ``issue_certificates`` did for one application: its certificate, or why none."""

    application_id: int
    certificate: Certificate | None
    error: CAError | None


@dataclass
class _ToSign:
    """An application on its way through a batch: checked, then reserved, then signed."""

    application: Application
    facts: _IssuanceFacts
    public_key: CertificatePublicKeyTypes
    subject: x509.Name
    not_after: dt.datetime
    row: Certificate | None = None
    signed: x509.Certificate | None = None

    @property
    def reserved(self) -> Certificate:
        if self.row is None:
            raise RuntimeError("not reserved yet")
        return self.row


def issue_certificate(
    *,
    application: Application,
    token: Token,
    profile: EmployerProfile,
    commit: Commit,
    actor: str,
) -> Certificate:
    """Issue the one certificate of an approved application; a retry returns the same one.

    Commits twice, on purpose: the reserved serial and pending row before the HSM signs (an
    irreversible step), and the stored certificate before anyone sees it. If the HSM fails the
    pending row is marked failed and committed, the application stays approved, and a retry
    issues with a new serial.

    OCSP responses for the new certificate are not signed here: the responder signs and stores
    one on the first request for a certificate without a stored response, and
    `ca-service ocsp refresh` signs the missing ones.

    :raises Conflict: not approved, or being issued by a concurrent request.
    :raises ServiceUnavailable: the HSM failed; retry later.
    """
    (issued,) = issue_certificates(
        applications=[application], token=token, profile=profile, commit=commit, actor=actor
    )
    if issued.error is not None:
        raise issued.error
    if issued.certificate is None:
        raise RuntimeError("issuance returned neither a certificate nor an error")
    return issued.certificate


def issue_certificates(
    *,
    applications: Sequence[Application],
    token: Token,
    profile: EmployerProfile,
    commit: Commit,
    actor: str,
    actors: Mapping[int, str] | None = None,
) -> list[Issued]:
    """Issue the certificates of approved applications together, one result per application
    (in the order given; an application given twice is issued once). ``actors`` names the
    actor of an application by id where it is not ``actor`` (a batch of renewals by several
    employers).

    The contract of ``issue_certificate`` holds for every certificate, with the commits shared:
    one commit reserves every serial and pending row before the HSM signs any of them, and one
    stores every certificate (with its history row, audit event and notices) before anyone sees
    one. So a batch costs about as many round trips to the database as one certificate
    (`ca-service issue` and bench/issuance.py). An application that cannot be issued (not
    approved, no key yet, claimed by a concurrent request, its reservation marked failed while
    the HSM signed) gets its error and does not stop the others; if the HSM fails, the
    certificates signed before stay issued and the rest are released as after a failure of
    ``issue_certificate``.

    :raises NotFound: when the PKI is not initialised.
    :raises Conflict: when an application changed status while its certificate was signed
        (nothing of the batch's second transaction is kept; the caller rolls back).
    """
    # The caller's pending changes are written before issuance reads and claims rows.
    db.session.flush()
    # Between the commits this function holds every object it needs and changes them itself,
    # so re-reading them all after the first commit (the session's default) would only cost
    # round trips.
    session = db.session()
    expire_on_commit, session.expire_on_commit = session.expire_on_commit, False
    try:
        unique = list({application.id: application for application in applications}.values())
        results = _issue_certificates(
            unique, token=token, profile=profile, commit=commit, actor=actor, actors=actors or {}
        )
        return [results[application.id] for application in unique]
    finally:
        session.expire_on_commit = expire_on_commit


def _issue_certificates(
    applications: list[Application],
    *,
    token: Token,
    profile: EmployerProfile,
    commit: Commit,
    actor: str,
    actors: Mapping[int, str],
) -> dict[int, Issued]:
    results: dict[int, Issued] = {}
    now = utcnow()
    # The keys of those that may be signed, parsed once; whether any is blocked is read with
    # the facts (checked on the key about to be signed, whatever the row says).
    public_keys = {
        application.id: x509.load_der_x509_csr(application.csr_der).public_key()
        for application in applications
        if application.status is ApplicationStatus.APPROVED and application.csr_der is not None
    }
    hashes = {application_id: spki_sha256(key) for application_id, key in public_keys.items()}
    facts, any_blocked = _issuance_facts(
        {application.employer_id for application in applications}, set(hashes.values())
    )
    stored_before: list[tuple[Application, Certificate]] = []
    to_sign: list[_ToSign] = []
    for application in applications:
        try:
            checked = _checked_for_issuance(
                application,
                facts[application.employer_id],
                profile,
                now,
                public_keys.get(application.id),
            )
        except Conflict as exc:
            results[application.id] = Issued(application.id, None, exc)
            continue
        if isinstance(checked, _ToSign):
            to_sign.append(checked)
        elif application.status is ApplicationStatus.ISSUED:
            results[application.id] = Issued(application.id, checked, None)
        else:
            stored_before.append((application, checked))  # stored, status not yet moved
    if any_blocked:
        to_sign = _refuse_blocked_keys(to_sign, hashes, results)
    if not to_sign and not stored_before:
        return results  # issuance wrote nothing: the caller's boundary commits or rolls back
    if to_sign:
        to_sign = _reserve(to_sign, now, results)
        # The reservations are not audited on their own: the issued (or signing_failed) events
        # name the serials, and `reconcile` audits what a crash left pending.
        # Early commit: the serials and the pending rows must exist before the HSM signs.
        commit()
    signed, unsigned, failure = _sign_all(to_sign, token, profile)
    if failure is not None:
        _release_unsigned(unsigned, failure, actor, actors, results)
    for item in _store(signed, profile.warning_days):
        results[item.application.id] = Issued(
            item.application.id, None, SignatureDiscarded(item.reserved.serial)
        )
    stored = stored_before + [
        (item.application, item.reserved) for item in signed if item.application.id not in results
    ]
    if stored:
        _mark_issued(stored, facts, actor, actors)
    commit()
    for application, row in stored:
        results[application.id] = Issued(application.id, row, None)
    return results


def _refuse_blocked_keys(
    to_sign: list[_ToSign], hashes: Mapping[int, str], results: dict[int, Issued]
) -> list[_ToSign]:
    """Those whose key (SPKI hash by application id) is not blocked; the others get KeyBlocked
    in ``results``. Checked on the key about to be signed and before anything is reserved,
    whatever the row says: the key may have been blocked after its request was attached. One
    query for the batch, run only when the facts say some key is blocked."""
    blocked = blocked_among(db.session(), (hashes[item.application.id] for item in to_sign))
    if not blocked:
        return to_sign
    kept = []
    for item in to_sign:
        if hashes[item.application.id] in blocked:
            error = KeyBlocked(blocked_message())
            results[item.application.id] = Issued(item.application.id, None, error)
        else:
            kept.append(item)
    return kept


def _checked_for_issuance(
    application: Application,
    facts: _IssuanceFacts,
    profile: EmployerProfile,
    now: dt.datetime,
    public_key: CertificatePublicKeyTypes | None,
) -> _ToSign | Certificate:
    """What issuance does for this application: sign a new certificate, or return the one
    already stored. Releases a stale reservation (written at once).

    :raises Conflict: when the application cannot be issued now.
    """
    if application.status is ApplicationStatus.ISSUED and application.certificate is not None:
        return application.certificate
    if application.status is not ApplicationStatus.APPROVED:
        raise Conflict(
            _(
                "Application %(id)s is %(status)s, not approved.",
                id=application.id,
                status=application.status.label,
            )
        )
    if application.csr_der is None or public_key is None:
        raise Conflict(
            _("Application %(id)s has no public key yet (counter provisioning).", id=application.id)
        )
    existing = application.certificate
    if existing is not None and existing.status is CertificateStatus.ISSUED:
        return existing
    _release_stale_reservation(application, now)
    return _ToSign(
        application=application,
        facts=facts,
        public_key=public_key,
        subject=profiles.employer_subject(
            country=profile.country,
            legal_name=facts.legal_name,
            registration_number=facts.registration_number,
        ),
        not_after=min(
            now + dt.timedelta(days=profile.validity_days),
            facts.issuer_certificate.not_valid_after_utc,
        ),
    )


def _reserve(to_sign: list[_ToSign], now: dt.datetime, results: dict[int, Issued]) -> list[_ToSign]:
    """Reserve a serial and pending row for each and claim its application; returns those
    claimed (the others get a Conflict in ``results``)."""
    rows = reserve_serials(
        issuer_id=to_sign[0].facts.issuer_id,  # the issuing CA, the same on every row
        kind=CertificateKind.END_ENTITY,
        reservations=[
            Reservation(
                subject=item.subject,
                not_before=now,
                not_after=item.not_after,
                employer_id=item.application.employer_id,
                renews_id=item.application.renews_id,
            )
            for item in to_sign
        ],
    )
    claims = [
        {"application_id": item.application.id, "certificate_id": row.id, "updated_at": now}
        for item, row in zip(to_sign, rows, strict=True)
    ]
    connection = db.session.connection()
    claimed = _CLAIM.rowcount(connection, claims)
    lost: list[Certificate] = []
    if claimed != len(claims):
        # A concurrent request claimed some of them since we read them: which ones?
        holders = {
            row.id: row.certificate_id
            for row in connection.execute(
                sa.select(_applications.c.id, _applications.c.certificate_id).where(
                    _applications.c.id.in_([c["application_id"] for c in claims])
                )
            )
        }
        lost = [
            row
            for item, row in zip(to_sign, rows, strict=True)
            if holders.get(item.application.id) != row.id
        ]
    if lost:
        # Never committed and never signed: these rows go as if never inserted.
        connection.execute(
            sa.delete(_certificates).where(_certificates.c.id.in_([row.id for row in lost]))
        )
    kept: list[_ToSign] = []
    for item, row in zip(to_sign, rows, strict=True):
        if row in lost:
            db.session.expunge(row)
            results[item.application.id] = Issued(
                item.application.id,
                None,
                Conflict(
                    _(
                        "Application %(id)s is being issued by another request.",
                        id=item.application.id,
                    )
                ),
            )
            continue
        item.row = row
        _set_loaded(item.application, certificate_id=row.id, certificate=row, updated_at=now)
        kept.append(item)
    return kept


def _sign_all(
    to_sign: list[_ToSign], token: Token, profile: EmployerProfile
) -> tuple[list[_ToSign], list[_ToSign], HSMError | None]:
    """Sign each reserved certificate in the HSM: (signed, not signed, the HSM's failure).
    Stops at the first failure: an HSM that failed once is not asked again for the rest."""
    for index, item in enumerate(to_sign):
        builder = profiles.employer_builder(
            subject=item.subject,
            public_key=item.public_key,
            issuer=item.facts.issuer_certificate,
            issuer_slug=ISSUING_SLUG,
            urls=profile.urls,
            non_repudiation=profile.non_repudiation,
        )
        try:
            item.signed = sign_reservation(
                item.reserved,
                builder,
                token=token,
                issuer_key_label=item.facts.issuer_key_label,
                issuer_algorithm=item.facts.issuer_algorithm,
            )
        except HSMError as exc:
            return to_sign[:index], to_sign[index:], exc
    return to_sign, [], None


def _release_unsigned(
    unsigned: list[_ToSign],
    failure: HSMError,
    actor: str,
    actors: Mapping[int, str],
    results: dict[int, Issued],
) -> None:
    """After an HSM failure: burn the serials not signed and leave the applications approved,
    so that a retry issues with new serials (committed with the rest of the batch)."""
    _changed(
        _FAIL_RESERVATION,
        [{"reserved_id": i.reserved.id, "status": CertificateStatus.FAILED} for i in unsigned],
    )
    _changed(
        _RELEASE_APPLICATION,
        [
            {
                "application_id": i.application.id,
                "reserved_id": i.reserved.id,
                "certificate_id": None,
            }
            for i in unsigned
        ],
    )
    events = []
    for item in unsigned:
        _set_loaded(item.reserved, status=CertificateStatus.FAILED)
        _set_loaded(item.application, certificate_id=None, certificate=None)
        events.append(
            NewEvent(
                "certificate.signing_failed",
                item.reserved.serial,
                {"application": item.application.id, "error": type(failure).__name__},
                actors.get(item.application.id),
            )
        )
        error = signing_failed_error()
        error.__cause__ = failure
        results[item.application.id] = Issued(item.application.id, None, error)
    record_events(actor, events)


def signing_failed_error() -> ServiceUnavailable:
    """The refusal when the HSM failed to sign, in the current language (a batch signed in
    another thread is answered in each request's own)."""
    return ServiceUnavailable(
        _(
            "The HSM could not sign the certificate. The application stays approved; retry "
            "the issuance in a moment."
        )
    )


def _store(signed: list[_ToSign], warning_days: tuple[int, ...]) -> list[_ToSign]:
    """Store the signed certificates; returns those whose reservation was marked failed
    meanwhile (their signatures are discarded)."""
    refused = store_signed_many(
        [(item.reserved, cast("x509.Certificate", item.signed)) for item in signed],
        warning_days=warning_days,
    )
    return [item for item in signed if item.reserved in refused]


def _mark_issued(
    stored: list[tuple[Application, Certificate]],
    facts: dict[int, _IssuanceFacts],
    actor: str,
    actors: Mapping[int, str],
) -> None:
    """Move the applications to issued with their stored certificates: history, audit events
    and notices, each kind in one statement.

    :raises Conflict: when an application was changed meanwhile (the caller rolls back).
    """
    now = utcnow()
    # Checked before anything is written (and before the audit log's lock is taken).
    events = PendingEvents(
        actor,
        [
            NewEvent(
                "certificate.issued",
                row.serial,
                {
                    "application": application.id,
                    "employer": facts[application.employer_id].registration_number,
                    "sha256": row.fingerprint_sha256,
                    "not_after": row.not_after,
                },
                actors.get(application.id),
            )
            for application, row in stored
        ],
    )
    # The status change, the history rows, the notices and the audit log's lock in one round
    # trip (PostgreSQL), written as if the status change succeeded: when it did not, the
    # caller rolls back.
    for application, _unused in stored:
        _set_loaded(application, status=ApplicationStatus.ISSUED, updated_at=now)
    with pipelined(len(stored)) as pipeline:
        moved = _MARK.queue(
            db.session.connection(),
            [
                {
                    "application_id": application.id,
                    "issued_id": row.id,
                    "status": ApplicationStatus.ISSUED,
                    "updated_at": now,
                }
                for application, row in stored
            ],
            queued=pipeline.queued,
        )
        _record_many(
            [
                (application, Note(NoteCode.ISSUED, {"serial": row.serial}))
                for application, row in stored
            ],
            actor,
            actors,
        )
        notify_contacts(
            _issued_notice(application, row, facts[application.employer_id])
            for application, row in stored
        )
        # Last: reading the head's row sends it with everything queued before it.
        events.lock_head()
    if moved() != len(stored):
        for application, _unused in stored:
            _set_loaded(application, status=ApplicationStatus.APPROVED)
        names = ", ".join(str(application.id) for application, _unused in stored)
        raise Conflict(
            _("Application %(ids)s was changed by someone else just now.", ids=names)
            if len(stored) == 1
            else _(
                "One of the applications %(ids)s was changed by someone else just now.", ids=names
            )
        )
    events.append()


def _issued_notice(application: Application, row: Certificate, facts: _IssuanceFacts) -> Notice:
    language = normalise_language(facts.language)
    subject, body = _issued_texts(language)
    return Notice(
        email=facts.email,
        mobile=facts.mobile,
        subject=subject,
        body=body
        % {
            "id": application.id,
            "serial": row.serial,
            "date": _utc_date_in(language, _utc_day(row.not_after)),
        },
        dedupe_key=f"certificate:{row.id}:issued",
    )


# The issued notice's texts per language, and its dates: translated once per worker, not in a
# ``force_locale`` block for every certificate (a tenth of one-by-one issuance's CPU time).
@lru_cache(maxsize=8)
def _issued_texts(language: str) -> tuple[str, str]:
    """The subject and the body template (``%``-formatted with id, serial and date)."""
    with in_language(language):
        return _("Your organisation certificate is ready"), _(
            "The certificate for application %(id)s was issued: serial %(serial)s, valid "
            "until %(date)s.\nDownload it from your application page."
        )


def _utc_day(moment: dt.datetime) -> dt.date:
    # A naive datetime is UTC (as the database keeps it on SQLite).
    return (moment if moment.tzinfo is None else moment.astimezone(dt.UTC)).date()


@lru_cache(maxsize=64)
def _utc_date_in(language: str, day: dt.date) -> str:
    with in_language(language):
        return format_utc_date(day)


def applications_by_id(ids: Sequence[int]) -> list[Application]:
    """The applications with these ids that exist (for an operator's command)."""
    return list(db.session.scalars(sa.select(Application).where(Application.id.in_(ids))))


def awaiting_issuance(*, after_id: int = 0, limit: int = 50) -> list[Application]:
    """Approved applications with a public key and no issued certificate, by id, after
    ``after_id``: what `ca-service issue --all-approved` works through (an HSM outage leaves
    approvals behind)."""
    return list(
        db.session.scalars(
            sa.select(Application)
            .where(
                Application.status == ApplicationStatus.APPROVED,
                Application.csr_der.is_not(None),
                Application.id > after_id,
            )
            .order_by(Application.id)
            .limit(limit)
        )
    )


def provision_request(*, application: Application, checked: CheckedRequest, actor: str) -> None:
    """Counter provisioning: the key generated on the employer's token gives the public key."""
    if application.key_source is not KeySource.COUNTER:
        raise Conflict(
            _("Application %(id)s brings its own certificate request.", id=application.id)
        )
    if application.status is not ApplicationStatus.APPROVED:
        raise Conflict(
            _(
                "Application %(id)s is %(status)s, not approved.",
                id=application.id,
                status=application.status.label,
            )
        )
    if application.csr_der is not None:
        raise Conflict(
            _("Application %(id)s already has a key from the counter.", id=application.id)
        )
    refuse_blocked_key(db.session(), checked.public_key_sha256)
    _set_request(application, checked)
    record_history(application, actor, Note(NoteCode.COUNTER_KEY, {"key": checked.key_description}))


# -- delivery -------------------------------------------------------------------------------


def certificate_of(application: Application) -> x509.Certificate:
    """The issued certificate of an application.

    :raises NotFound: before issuance.
    """
    row = application.certificate
    if application.status is not ApplicationStatus.ISSUED or row is None or row.der is None:
        raise NotFound(_("Application %(id)s has no certificate yet.", id=application.id))
    return x509.load_der_x509_certificate(row.der)


def certificate_row(application: Application) -> Certificate:
    """The issued certificate's row.

    :raises NotFound: before issuance.
    """
    row = application.certificate
    if application.status is not ApplicationStatus.ISSUED or row is None:
        raise NotFound(_("Application %(id)s has no certificate yet.", id=application.id))
    return row


def chain_of(certificate: x509.Certificate) -> list[x509.Certificate]:
    """The certificate, its issuing CA and the root."""
    return [
        certificate,
        load_certificate(current_certificate(get_authority(ISSUING_SLUG))),
        load_certificate(current_certificate(get_authority(ROOT_SLUG))),
    ]


def chain_pem(certificate: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in chain_of(certificate))


def pkcs7_bundle(certificate: x509.Certificate) -> bytes:
    """A degenerate PKCS#7 (certificates only, DER), as Windows and Java import it."""
    return pkcs7.serialize_certificates(chain_of(certificate), Encoding.DER)


# Download format -> (file name after the serial, media type); the web and the API offer these.
DOWNLOAD_FORMATS = {
    "pem": ("certificate.pem", "application/x-pem-file"),
    "der": ("certificate.cer", "application/pkix-cert"),
    "chain": ("chain.pem", "application/x-pem-file"),
    "p7b": ("certificate.p7b", "application/pkcs7-mime"),
}


@dataclass(frozen=True)
class Download:
    body: bytes
    mimetype: str
    filename: str


def delivery_bytes(certificate: x509.Certificate, kind: str) -> bytes:
    """The certificate as 'pem', 'der', 'chain' (PEM) or 'p7b'."""
    if kind == "pem":
        return certificate.public_bytes(Encoding.PEM)
    if kind == "der":
        return certificate.public_bytes(Encoding.DER)
    if kind == "chain":
        return chain_pem(certificate)
    if kind == "p7b":
        return pkcs7_bundle(certificate)
    raise NotFound(_("No download %(kind)s.", kind=echoed(kind)))


def certificate_download(application: Application, kind: str) -> Download:
    """The issued certificate in one of DOWNLOAD_FORMATS, with its file name.

    :raises NotFound: before issuance, or for an unknown format.
    """
    certificate = certificate_of(application)
    if kind not in DOWNLOAD_FORMATS:
        raise NotFound(_("No download %(kind)s.", kind=echoed(kind)))
    name, mimetype = DOWNLOAD_FORMATS[kind]
    serial = certificate_row(application).serial
    return Download(delivery_bytes(certificate, kind), mimetype, f"{serial}-{name}")


@dataclass(frozen=True)
class PublicStatus:
    """What `/verify/<serial>` shows: nothing that the certificate itself does not."""

    serial: str
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    status: str  # valid, revoked, expired, not yet valid
    revoked_at: dt.datetime | None
    revocation_reason: str | None
    sha256: str


def public_status(serial: str, now: dt.datetime | None = None) -> PublicStatus:
    """The status of an employer certificate by serial.

    :raises NotFound: when the issuing CA never issued that serial.
    """
    normalised = normalise_serial(serial)
    if not re.fullmatch(r"[0-9a-f]{1,40}", normalised):
        raise NotFound(_("That is not a certificate serial number."))
    issuer = get_authority(ISSUING_SLUG)
    row = db.session.scalar(
        sa.select(Certificate).where(
            Certificate.issuer_id == issuer.id,
            Certificate.serial == normalised,
            Certificate.status == CertificateStatus.ISSUED,
            Certificate.kind == CertificateKind.END_ENTITY,
        )
    )
    if row is None or row.der is None or row.fingerprint_sha256 is None:
        raise NotFound(_("No employer certificate has the serial %(serial)s.", serial=serial))
    now = now or utcnow()
    if row.revoked_at is not None:
        status = "revoked"
    elif now > row.not_after:
        status = "expired"
    elif now < row.not_before:
        status = "not yet valid"
    else:
        status = "valid"
    return PublicStatus(
        serial=row.serial,
        subject=row.subject,
        issuer=issuer.name,
        not_before=row.not_before,
        not_after=row.not_after,
        status=status,
        revoked_at=row.revoked_at,
        revocation_reason=row.revocation_reason,
        sha256=row.fingerprint_sha256,
    )
