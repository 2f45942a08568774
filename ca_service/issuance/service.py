"""Applications: drafting, documents and their seals, officer review, issuance, delivery.

Services take the acting user explicitly, check the role again (the view checked it first)
and only flush. The early commits are in ``issue_certificate``: the serial is reserved and
committed before the HSM signs, and the certificate is committed before anyone sees it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePath
from typing import Any, cast

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from sqlalchemy.orm.attributes import set_committed_value

from ca_service.audit.service import record_event
from ca_service.auth.access import ensure_role
from ca_service.auth.models import Role, User
from ca_service.auth.service import actor_of
from ca_service.authorities import profiles
from ca_service.authorities.service import (
    ISSUING_SLUG,
    ROOT_SLUG,
    current_certificate,
    get_authority,
    load_certificate,
)
from ca_service.authorities.signing import normalise_serial, reserve_serial, sign_reserved
from ca_service.config import Settings
from ca_service.db import db, rows_changed, utcnow
from ca_service.employers.models import Employer
from ca_service.employers.service import employer_of
from ca_service.errors import Conflict, Forbidden, NotFound, ServiceUnavailable, ValidationError
from ca_service.issuance.csr import CheckedRequest, check_request
from ca_service.issuance.models import (
    Application,
    ApplicationEvent,
    ApplicationStatus,
    Document,
    DocumentType,
    KeySource,
)
from ca_service.issuance.seals import SealVerdict, sniff_media_type, verify_seal
from ca_service.models import Authority, Certificate, CertificateKind, CertificateStatus
from ca_service.outbox.service import notify_contact, notify_employer
from ca_service.storage import DocumentStore
from hsm import HSMError, KeyAlgorithm, Token

Commit = Callable[[], None]
OFFICERS = (Role.RA_OFFICER,)
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

    @classmethod
    def from_settings(cls, settings: Settings) -> EmployerProfile:
        return cls(
            country=str(settings["CA_COUNTRY"]),
            validity_days=int(settings["EMPLOYER_VALIDITY_DAYS"]),
            non_repudiation=bool(settings["EMPLOYER_NON_REPUDIATION"]),
            urls=profiles.PublicUrls(settings.public_base_url),
        )


# -- employer side --------------------------------------------------------------------------


_INSERT_APPLICATION_EVENT = sa.insert(cast("sa.Table", ApplicationEvent.__table__))


def _record(application: Application, actor: str, note: str | None = None) -> None:
    """Add a history row for the application's current status (written at once)."""
    db.session.flush()  # the application row and its status change go first
    db.session.connection().execute(
        _INSERT_APPLICATION_EVENT,
        {
            "application_id": application.id,
            "status": application.status,
            "actor": actor,
            "note": note,
            "created_at": utcnow(),
        },
    )
    db.session.expire(application, ["events"])  # reloaded with the new row when next read


def _active_employer(user: User) -> Employer:
    ensure_role(user, Role.EMPLOYER_ADMIN)
    employer = employer_of(user)
    if not employer.active:
        raise Forbidden("Confirm your mobile number before applying.")
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
    _record(application, actor_of(user), "Draft created.")
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
        raise NotFound(f"You have no application {application_id}.")
    return application


def _editable(application: Application) -> None:
    if application.status is not ApplicationStatus.DRAFT:
        raise Conflict(
            f"Application {application.id} is {application.status.value.replace('_', ' ')}; "
            "a submitted application cannot be changed."
        )


def attach_request(*, user: User, application: Application, data: bytes) -> CheckedRequest:
    """Check a CSR and keep its public key on the draft; flushes.

    :raises ValidationError: malformed, badly signed or weak-keyed request.
    """
    ensure_role(user, Role.EMPLOYER_ADMIN)
    _editable(application)
    if application.key_source is KeySource.COUNTER:
        raise Conflict("This application's key is generated at the counter; no request needed.")
    checked = check_request(data)
    _set_request(application, checked)
    _record(
        application, actor_of(user), f"Certificate request attached ({checked.key_description})."
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
    ensure_role(user, Role.EMPLOYER_ADMIN)
    _editable(application)
    if not content:
        raise ValidationError(f"The file for “{doc_type.label}” is empty.")
    for blob, what in ((content, "file"), (detached_signature or b"", "signature file")):
        if len(blob) > limits.max_bytes:
            raise ValidationError(
                f"The {what} for “{doc_type.label}” is {len(blob) / 1048576:.1f} MB; "
                f"the limit is {limits.max_bytes // 1048576} MB."
            )
    media_type = sniff_media_type(content)
    if media_type is None:
        raise ValidationError(
            f"The file for “{doc_type.label}” is not a PDF, PNG or JPEG (judged by its content, "
            "not its name)."
        )
    employer = application.employer
    result = verify_seal(
        content=content,
        detached_signature=detached_signature or None,
        registration_number=employer.registration_number,
        anchors=anchors,
    )
    if result.verdict is SealVerdict.INVALID_FILE:
        raise ValidationError(f"“{doc_type.label}”: {result.detail}")
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
    missing = [f"“{t.label}”" for t in DocumentType if application.document(t) is None]
    problems = [
        f"“{d.doc_type.label}” ({d.verdict.value.replace('_', ' ')}: upload it again)"
        for d in application.documents
        if d.verdict not in (SealVerdict.VERIFIED, SealVerdict.UNSIGNED)
    ]
    if application.key_source is KeySource.CSR and application.csr_der is None:
        missing.append("the certificate request (CSR)")
    return missing + problems


def submit_application(*, user: User, application: Application) -> Application:
    """Hand the draft to the officers; it becomes read-only. Flushes.

    :raises ValidationError: listing what is missing or unacceptable.
    """
    ensure_role(user, Role.EMPLOYER_ADMIN)
    _editable(application)
    missing = missing_for_submission(application)
    if missing:
        raise ValidationError("Before submitting, provide: " + "; ".join(missing) + ".")
    application.status = ApplicationStatus.SUBMITTED
    application.submitted_at = utcnow()
    db.session.flush()
    _record(application, actor_of(user), "Submitted for review.")
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


def review_queue(
    *, officer: User, status: ApplicationStatus | None = None, search: str = ""
) -> list[Application]:
    """Applications for review, oldest first; ``search`` matches number or legal name."""
    ensure_role(officer, *OFFICERS)
    query = (
        sa.select(Application)
        .join(Employer)
        .where(Application.status != ApplicationStatus.DRAFT)
        .order_by(Application.submitted_at, Application.id)
        .limit(500)
    )
    if status is not None:
        query = query.where(Application.status == status)
    if search.strip():
        pattern = f"%{search.strip().lower()}%"
        query = query.where(
            sa.or_(
                sa.func.lower(Employer.registration_number).like(pattern),
                sa.func.lower(Employer.legal_name).like(pattern),
            )
        )
    return list(db.session.scalars(query))


def officer_application(*, officer: User, application_id: int) -> Application:
    """An application an officer may see.

    :raises NotFound: no such application (or a draft, which is the employer's own).
    """
    ensure_role(officer, *OFFICERS)
    application = db.session.get(Application, application_id)
    if application is None or application.status is ApplicationStatus.DRAFT:
        raise NotFound(f"There is no submitted application {application_id}.")
    return application


def _may_act(officer: User, application: Application) -> None:
    ensure_role(officer, *OFFICERS)
    if officer.employer_id is not None and officer.employer_id == application.employer_id:
        raise Forbidden("You belong to this employer; another officer must handle its application.")


def _under_review(application: Application) -> None:
    if application.status not in (
        ApplicationStatus.SUBMITTED,
        ApplicationStatus.AWAITING_CONFIRMATION,
    ):
        raise Conflict(
            f"Application {application.id} is already {application.status.value.replace('_', ' ')}."
        )


def document_of(application: Application, document_id: int) -> Document:
    document = next((d for d in application.documents if d.id == document_id), None)
    if document is None:
        raise NotFound(f"Application {application.id} has no document {document_id}.")
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
            f"“{document.doc_type.label}” is {document.verdict.value.replace('_', ' ')}; only "
            "unsigned scans are attested."
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
        raise ValidationError(f"“{document.doc_type.label}” has no validity end date.")
    document.valid_until = valid_until
    db.session.flush()
    return document


def approval_blockers(application: Application, today: dt.date | None = None) -> list[str]:
    """Why the application cannot be approved yet (empty: it can)."""
    today = today or utcnow().date()
    blockers = [f"“{t.label}” is missing" for t in DocumentType if application.document(t) is None]
    for d in application.documents:
        if not d.acceptable:
            blockers.append(
                f"“{d.doc_type.label}” is {d.verdict.value.replace('_', ' ')}"
                + (
                    " and its paper seal is not attested"
                    if d.verdict is SealVerdict.UNSIGNED
                    else ""
                )
            )
        if d.valid_until is not None and d.valid_until < today:
            blockers.append(f"“{d.doc_type.label}” expired on {d.valid_until:%Y-%m-%d}")
    if application.key_source is KeySource.CSR and application.csr_der is None:
        blockers.append("there is no certificate request")
    return blockers


def approve_application(
    *, officer: User, application: Application, dual_control: bool
) -> Application:
    """Approve (or, under dual control, confirm another officer's approval); flushes.

    The status moves by a conditional UPDATE, so of two officers approving at once only one
    succeeds; the other gets a Conflict.

    :raises ValidationError: documents missing, unverified or unattested.
    :raises Conflict: already decided, or the same officer confirming their own approval.
    """
    _may_act(officer, application)
    _under_review(application)
    blockers = approval_blockers(application)
    if blockers:
        raise ValidationError("Cannot approve: " + "; ".join(blockers) + ".")
    current = application.status
    if dual_control and current is ApplicationStatus.SUBMITTED:
        target = ApplicationStatus.AWAITING_CONFIRMATION
    else:
        target = ApplicationStatus.APPROVED
    if (
        current is ApplicationStatus.AWAITING_CONFIRMATION
        and application.first_approver_id == officer.id
    ):
        raise Conflict("Dual control: a different officer must confirm your approval.")
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
        raise Conflict(f"Application {application.id} was decided by someone else just now.")
    db.session.refresh(application)
    note = (
        "Approved; waiting for a second officer's confirmation."
        if target is ApplicationStatus.AWAITING_CONFIRMATION
        else "Approved."
    )
    _record(application, actor_of(officer), note)
    action = (
        "application.first_approval"
        if target is ApplicationStatus.AWAITING_CONFIRMATION
        else "application.approved"
    )
    record_event(actor_of(officer), action, str(application.id), _evidence(application))
    return application


def reject_application(*, officer: User, application: Application, reason: str) -> Application:
    """Reject with a reason the employer sees; flushes."""
    _may_act(officer, application)
    _under_review(application)
    reason = reason.strip()
    if not reason:
        raise ValidationError("Give the employer a reason for the rejection.")
    if len(reason) > 2000:
        raise ValidationError("Keep the reason under 2,000 characters.")
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
        raise Conflict(f"Application {application.id} was decided by someone else just now.")
    db.session.refresh(application)
    _record(application, actor_of(officer), f"Rejected: {reason}")
    record_event(
        actor_of(officer),
        "application.rejected",
        str(application.id),
        {**_evidence(application), "reason": reason},
    )
    notify_employer(
        application.employer,
        subject=f"Certificate application {application.id} rejected",
        body=f"Your certificate application {application.id} was rejected.\n\nReason: {reason}\n"
        "You can file a new application with corrected documents.",
        dedupe_key=f"application:{application.id}:rejected",
    )
    return application


# -- issuance -------------------------------------------------------------------------------


_applications = cast("sa.Table", Application.__table__)
_certificates = cast("sa.Table", Certificate.__table__)
_employers = cast("sa.Table", Employer.__table__)
_authorities = cast("sa.Table", Authority.__table__)

# Issuance runs these for every certificate. They are statements on the tables, built once:
# the ORM's unit of work (change tracking, flush planning, re-reading rows after the first
# commit) and building statements per call cost more than the round trips themselves
# (bench/issuance.py). The ORM objects the caller holds are kept in step with
# ``set_committed_value``, without re-reading what was just written.

# What issuance reads, in one round trip: the employer's names and addresses, and the issuing
# CA with its current certificate.
_ISSUANCE_FACTS = (
    sa.select(
        _employers.c.legal_name,
        _employers.c.registration_number,
        _employers.c.email,
        _employers.c.mobile,
        _authorities.c.id.label("issuer_id"),
        _authorities.c.key_label,
        _authorities.c.key_algorithm,
        _certificates.c.der.label("issuer_der"),
    )
    .select_from(_employers)
    .join(_authorities, _authorities.c.slug == ISSUING_SLUG)
    .join(_certificates, _certificates.c.id == _authorities.c.certificate_id)
    .where(_employers.c.id == sa.bindparam("employer_id"))
)
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


@dataclass(frozen=True)
class _IssuanceFacts:
    legal_name: str
    registration_number: str
    email: str
    mobile: str
    issuer_id: int
    issuer_key_label: str
    issuer_algorithm: KeyAlgorithm
    issuer_certificate: x509.Certificate


@lru_cache(maxsize=8)
def _parsed_certificate(der: bytes) -> x509.Certificate:
    # The issuing CA's certificate is the same DER for months; parse it once per worker.
    return x509.load_der_x509_certificate(der)


def _issuance_facts(employer_id: int) -> _IssuanceFacts:
    """:raises NotFound: when the PKI is not initialised."""
    row = db.session.connection().execute(_ISSUANCE_FACTS, {"employer_id": employer_id}).first()
    if row is None or row.issuer_der is None:
        raise NotFound(f"no certificate authority {ISSUING_SLUG!r}; run `ca-service init`")
    return _IssuanceFacts(
        legal_name=row.legal_name,
        registration_number=row.registration_number,
        email=row.email,
        mobile=row.mobile,
        issuer_id=row.issuer_id,
        issuer_key_label=row.key_label,
        issuer_algorithm=KeyAlgorithm(row.key_algorithm),
        issuer_certificate=_parsed_certificate(row.issuer_der),
    )


def _changed(statement: sa.Executable, parameters: dict[str, Any]) -> int:
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
    if row.status is CertificateStatus.PENDING and now - row.created_at < SIGNING_GRACE:
        raise Conflict(
            f"The certificate for application {application.id} is being signed right now; "
            "try again in a minute."
        )
    if row.status is CertificateStatus.PENDING:
        # The serial stays burnt, never reused. Conditional: a signature stored meanwhile wins.
        failed = _changed(
            _FAIL_RESERVATION, {"reserved_id": row.id, "status": CertificateStatus.FAILED}
        )
        if failed != 1:
            raise Conflict(
                f"The certificate for application {application.id} was stored just now; "
                "reload the application."
            )
        _set_loaded(row, status=CertificateStatus.FAILED)
    released = _changed(
        _RELEASE_APPLICATION,
        {"application_id": application.id, "reserved_id": row.id, "certificate_id": None},
    )
    if released != 1:
        raise Conflict(f"Application {application.id} is being issued by another request.")
    _set_loaded(application, certificate_id=None, certificate=None)


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
    # The caller's pending changes are written before issuance reads and claims rows.
    db.session.flush()
    # Between the two commits this function holds every object it needs and changes them
    # itself, so re-reading them all after the first commit (the session's default) would
    # only cost round trips.
    session = db.session()
    expire_on_commit, session.expire_on_commit = session.expire_on_commit, False
    try:
        return _issue_certificate(
            application=application, token=token, profile=profile, commit=commit, actor=actor
        )
    finally:
        session.expire_on_commit = expire_on_commit


def _issue_certificate(
    *,
    application: Application,
    token: Token,
    profile: EmployerProfile,
    commit: Commit,
    actor: str,
) -> Certificate:
    if application.status is ApplicationStatus.ISSUED and application.certificate is not None:
        return application.certificate
    if application.status is not ApplicationStatus.APPROVED:
        raise Conflict(
            f"Application {application.id} is {application.status.value.replace('_', ' ')}, "
            "not approved."
        )
    if application.csr_der is None:
        raise Conflict(
            f"Application {application.id} has no public key yet (counter provisioning)."
        )
    public_key = x509.load_der_x509_csr(application.csr_der).public_key()
    now = utcnow()
    facts = _issuance_facts(application.employer_id)
    existing = application.certificate
    if existing is not None and existing.status is CertificateStatus.ISSUED:
        _mark_issued(application, existing, facts, actor)  # stored, status not yet moved
        commit()
        return existing
    _release_stale_reservation(application, now)
    issuer_cert = facts.issuer_certificate
    not_after = min(now + dt.timedelta(days=profile.validity_days), issuer_cert.not_valid_after_utc)
    subject = profiles.employer_subject(
        country=profile.country,
        legal_name=facts.legal_name,
        registration_number=facts.registration_number,
    )
    row = reserve_serial(
        issuer_id=facts.issuer_id,
        kind=CertificateKind.END_ENTITY,
        subject=subject,
        not_before=now,
        not_after=not_after,
        employer_id=application.employer_id,
    )
    claimed = _changed(
        _CLAIM_APPLICATION,
        {"application_id": application.id, "certificate_id": row.id, "updated_at": now},
    )
    if claimed != 1:
        db.session.expunge(row)  # its INSERT is rolled back with the request
        raise Conflict(f"Application {application.id} is being issued by another request.")
    _set_loaded(application, certificate_id=row.id, certificate=row, updated_at=now)
    # The reservation is not audited on its own: the issued (or signing_failed) event names
    # the serial, and `reconcile` audits what a crash left pending.
    # Early commit: the serial and the pending row must exist before the HSM signs.
    commit()
    builder = profiles.employer_builder(
        subject=subject,
        public_key=public_key,
        issuer=issuer_cert,
        issuer_slug=ISSUING_SLUG,
        urls=profile.urls,
        non_repudiation=profile.non_repudiation,
    )
    try:
        sign_reserved(
            row,
            builder,
            token=token,
            issuer_key_label=facts.issuer_key_label,
            issuer_algorithm=facts.issuer_algorithm,
        )
    except HSMError as exc:
        db.session.rollback()
        failed = db.session.get(Certificate, row.id)
        refreshed = db.session.get(Application, application.id)
        if failed is not None and refreshed is not None:
            failed.status = CertificateStatus.FAILED
            refreshed.certificate_id = None
            record_event(
                actor,
                "certificate.signing_failed",
                failed.serial,
                {"application": application.id, "error": type(exc).__name__},
            )
            # Committed although the request fails: the burnt serial and the released
            # application must persist so a retry can issue.
            commit()
        raise ServiceUnavailable(
            "The HSM could not sign the certificate. The application stays approved; retry "
            "the issuance in a moment."
        ) from exc
    _mark_issued(application, row, facts, actor)
    commit()
    return row


def _mark_issued(
    application: Application, row: Certificate, facts: _IssuanceFacts, actor: str
) -> None:
    now = utcnow()
    moved = _changed(
        _MARK_ISSUED,
        {
            "application_id": application.id,
            "issued_id": row.id,
            "status": ApplicationStatus.ISSUED,
            "updated_at": now,
        },
    )
    if moved != 1:
        raise Conflict(f"Application {application.id} was changed by someone else just now.")
    _set_loaded(application, status=ApplicationStatus.ISSUED, updated_at=now)
    _record(application, actor, f"Certificate issued (serial {row.serial}).")
    record_event(
        actor,
        "certificate.issued",
        row.serial,
        {
            "application": application.id,
            "employer": facts.registration_number,
            "sha256": row.fingerprint_sha256,
            "not_after": row.not_after,
        },
    )
    notify_contact(
        email=facts.email,
        mobile=facts.mobile,
        subject="Your organisation certificate is ready",
        body=f"The certificate for application {application.id} was issued: serial {row.serial}, "
        f"valid until {row.not_after:%Y-%m-%d}.\nDownload it from your application page.",
        dedupe_key=f"certificate:{row.id}:issued",
    )


def provision_request(*, application: Application, checked: CheckedRequest, actor: str) -> None:
    """Counter provisioning: the key generated on the employer's token gives the public key."""
    if application.key_source is not KeySource.COUNTER:
        raise Conflict(f"Application {application.id} brings its own certificate request.")
    if application.status is not ApplicationStatus.APPROVED:
        raise Conflict(
            f"Application {application.id} is {application.status.value.replace('_', ' ')}, "
            "not approved."
        )
    if application.csr_der is not None:
        raise Conflict(f"Application {application.id} already has a key from the counter.")
    _set_request(application, checked)
    _record(application, actor, f"Key generated at the counter ({checked.key_description}).")


# -- delivery -------------------------------------------------------------------------------


def certificate_of(application: Application) -> x509.Certificate:
    """The issued certificate of an application.

    :raises NotFound: before issuance.
    """
    row = application.certificate
    if application.status is not ApplicationStatus.ISSUED or row is None or row.der is None:
        raise NotFound(f"Application {application.id} has no certificate yet.")
    return x509.load_der_x509_certificate(row.der)


def certificate_row(application: Application) -> Certificate:
    """The issued certificate's row.

    :raises NotFound: before issuance.
    """
    row = application.certificate
    if application.status is not ApplicationStatus.ISSUED or row is None:
        raise NotFound(f"Application {application.id} has no certificate yet.")
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
    raise NotFound(f"No download {kind!r}.")


def certificate_download(application: Application, kind: str) -> Download:
    """The issued certificate in one of DOWNLOAD_FORMATS, with its file name.

    :raises NotFound: before issuance, or for an unknown format.
    """
    certificate = certificate_of(application)
    if kind not in DOWNLOAD_FORMATS:
        raise NotFound(f"No download {kind!r}.")
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
        raise NotFound("That is not a certificate serial number.")
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
        raise NotFound(f"No employer certificate has the serial {serial}.")
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
