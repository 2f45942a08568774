"""Applications for an employer certificate, their sealed documents and status history."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from flask_babel import lazy_gettext
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ca_service.db import Base, created_at, enum_column, intpk, utcnow
from ca_service.employers.models import Employer
from ca_service.issuance.seals import SealReason, SealVerdict
from ca_service.models import Certificate


class ApplicationStatus(enum.StrEnum):
    DRAFT = "draft"  # the employer is still editing
    SUBMITTED = "submitted"  # read-only to the employer, in the officers' queue
    AWAITING_CONFIRMATION = "awaiting_confirmation"  # dual control: one officer approved
    APPROVED = "approved"  # issuance may run (and be retried after an HSM failure)
    ISSUED = "issued"
    REJECTED = "rejected"

    @property
    def label(self) -> str:
        """The status in words, in the current language."""
        return str(_STATUS_LABELS[self])


class KeySource(enum.StrEnum):
    CSR = "csr"  # the employer uploads a PKCS#10 request
    COUNTER = "counter"  # an officer generates the key on the employer's token at the counter


class DocumentType(enum.StrEnum):
    APPLICATION_FORM = "application_form"
    DECLARATION_FORM = "declaration_form"
    COMMITMENT_LETTER = "commitment_letter"
    BUSINESS_LICENCE = "business_licence"
    SOCIAL_SECURITY_REGISTRATION = "social_security_registration"
    LEGAL_REPRESENTATIVE_ID = "legal_representative_id"

    @property
    def label(self) -> str:
        return str(DOCUMENT_TITLES[self])

    @property
    def has_validity(self) -> bool:
        """Documents that expire: the officer records their end date."""
        return self in (DocumentType.BUSINESS_LICENCE, DocumentType.LEGAL_REPRESENTATIVE_ID)


DOCUMENT_TITLES = {
    DocumentType.APPLICATION_FORM: lazy_gettext("Certificate application form"),
    DocumentType.DECLARATION_FORM: lazy_gettext("Online-declaration application form"),
    DocumentType.COMMITMENT_LETTER: lazy_gettext("User commitment letter"),
    DocumentType.BUSINESS_LICENCE: lazy_gettext("Business licence (copy)"),
    DocumentType.SOCIAL_SECURITY_REGISTRATION: lazy_gettext(
        "Social-security registration certificate"
    ),
    DocumentType.LEGAL_REPRESENTATIVE_ID: lazy_gettext("Legal representative's ID"),
}


_STATUS_LABELS = {
    ApplicationStatus.DRAFT: lazy_gettext("draft"),
    ApplicationStatus.SUBMITTED: lazy_gettext("submitted"),
    ApplicationStatus.AWAITING_CONFIRMATION: lazy_gettext("awaiting confirmation"),
    ApplicationStatus.APPROVED: lazy_gettext("approved"),
    ApplicationStatus.ISSUED: lazy_gettext("issued"),
    ApplicationStatus.REJECTED: lazy_gettext("rejected"),
}

_SHOWN_STATES = {
    "revoked": lazy_gettext("certificate revoked"),
    "on_hold": lazy_gettext("certificate on hold"),
    "expired": lazy_gettext("certificate expired"),
}


class Application(Base):
    __tablename__ = "applications"

    id: Mapped[intpk]
    employer_id: Mapped[int] = mapped_column(sa.ForeignKey("employers.id"), index=True)
    status: Mapped[ApplicationStatus] = mapped_column(enum_column(ApplicationStatus), index=True)
    key_source: Mapped[KeySource] = mapped_column(enum_column(KeySource))
    csr_der: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    key_description: Mapped[str | None] = mapped_column(sa.String(40))
    public_key_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    created_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    submitted_at: Mapped[dt.datetime | None]
    # Dual control: the first approval, confirmed by a different officer.
    first_approver_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    decided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    decided_at: Mapped[dt.datetime | None]
    rejection_reason: Mapped[str | None] = mapped_column(sa.Text)
    # The one certificate this application yields (unique: a retried approval never issues
    # twice). Points at a PENDING row while the HSM signs.
    certificate_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("certificates.id"), unique=True
    )
    # A renewal: the certificate it replaces (its documents are those of the approval that
    # certificate came from). At most one open renewal per certificate (partial unique index).
    renews_id: Mapped[int | None] = mapped_column(sa.ForeignKey("certificates.id"))
    created_at: Mapped[created_at]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    employer: Mapped[Employer] = relationship()
    certificate: Mapped[Certificate | None] = relationship(foreign_keys=[certificate_id])
    documents: Mapped[list[Document]] = relationship(
        back_populates="application", order_by="Document.id"
    )
    events: Mapped[list[ApplicationEvent]] = relationship(order_by="ApplicationEvent.id")

    @property
    def certificate_state(self) -> str | None:
        """What became of the issued certificate now: ``valid``, ``on_hold``, ``revoked`` or
        ``expired``; None before issuance."""
        certificate = self.certificate
        if self.status is not ApplicationStatus.ISSUED or certificate is None:
            return None
        if certificate.revoked_at is not None:
            return "on_hold" if certificate.revocation_reason == "certificateHold" else "revoked"
        if certificate.not_after <= utcnow():
            return "expired"
        return "valid"

    @property
    def shown_status(self) -> str:
        """The status as a person reads it: an issued application whose certificate was
        revoked, put on hold or has expired says so instead of "issued"."""
        state = self.certificate_state
        if state in _SHOWN_STATES:
            return str(_SHOWN_STATES[state])
        return self.status.label

    __table_args__ = (
        sa.CheckConstraint(
            "status NOT IN ('issued') OR certificate_id IS NOT NULL", name="issued_has_certificate"
        ),
        sa.CheckConstraint(
            "status <> 'rejected' OR rejection_reason IS NOT NULL", name="rejected_has_reason"
        ),
        sa.Index(
            "uq_applications_open_renewal",
            "renews_id",
            unique=True,
            sqlite_where=sa.text("renews_id IS NOT NULL AND status <> 'rejected'"),
            postgresql_where=sa.text("renews_id IS NOT NULL AND status <> 'rejected'"),
        ),
    )

    def document(self, doc_type: DocumentType) -> Document | None:
        return next((d for d in self.documents if d.doc_type is doc_type), None)


class ApplicationEvent(Base):
    """One step of an application's status history, shown to the employer and the officer."""

    __tablename__ = "application_events"

    id: Mapped[intpk]
    application_id: Mapped[int] = mapped_column(sa.ForeignKey("applications.id"), index=True)
    status: Mapped[ApplicationStatus] = mapped_column(enum_column(ApplicationStatus))
    actor: Mapped[str] = mapped_column(sa.String(100))
    # What happened as a stable code with its facts, shown in the reader's language
    # (issuance/notes.py); None on rows written before revision 0012.
    note_code: Mapped[str | None] = mapped_column(sa.String(40))
    note_params: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    # What a person typed (an officer's reason or note), shown as typed; on rows from before
    # 0012, the whole note in English.
    note: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[created_at]


class Document(Base):
    """An uploaded document: content lives in the content-addressed store under its SHA-256."""

    __tablename__ = "documents"

    id: Mapped[intpk]
    application_id: Mapped[int] = mapped_column(sa.ForeignKey("applications.id"), index=True)
    doc_type: Mapped[DocumentType] = mapped_column(enum_column(DocumentType))
    filename: Mapped[str] = mapped_column(sa.String(200))
    media_type: Mapped[str] = mapped_column(sa.String(50))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(sa.String(64))
    signature_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    verdict: Mapped[SealVerdict] = mapped_column(enum_column(SealVerdict))
    verdict_detail: Mapped[str] = mapped_column(sa.String(1000))  # English, the technical record
    # The detail as a stable code, shown translated; None on documents uploaded before 0010.
    verdict_reason: Mapped[SealReason | None] = mapped_column(enum_column(SealReason))
    signer_subject: Mapped[str | None] = mapped_column(sa.String(1000))
    signed_at: Mapped[dt.datetime | None]
    # End of validity of documents that expire (business licence, legal representative's ID),
    # entered by the reviewing officer.
    valid_until: Mapped[dt.date | None] = mapped_column(sa.Date)
    attested_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    attested_at: Mapped[dt.datetime | None]
    created_at: Mapped[created_at]

    application: Mapped[Application] = relationship(back_populates="documents")

    __table_args__ = (
        sa.UniqueConstraint("application_id", "doc_type", name="uq_documents_application_type"),
        sa.CheckConstraint("size > 0", name="size_positive"),
    )

    @property
    def acceptable(self) -> bool:
        """Verified by its seal, or an unsigned paper-sealed scan an officer attested."""
        return self.verdict is SealVerdict.VERIFIED or (
            self.verdict is SealVerdict.UNSIGNED and self.attested_at is not None
        )
