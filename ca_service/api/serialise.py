"""JSON shapes of the API's resources: one function per resource, dates as ISO 8601 UTC."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ca_service.employers.models import Employer
from ca_service.issuance import service
from ca_service.issuance.models import Application, ApplicationStatus, Document
from ca_service.issuance.notes import event_note
from ca_service.issuance.verdict_text import document_reason, reason_of
from ca_service.models import Certificate

JSON = dict[str, Any]


def timestamp(value: dt.datetime | None) -> str | None:
    """``2026-01-02T03:04:05Z`` (Flask's default would be an HTTP date)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def employer_json(employer: Employer) -> JSON:
    return {
        "id": employer.id,
        "registration_number": employer.registration_number,
        "legal_name": employer.legal_name,
        "mobile": employer.mobile,
        "email": employer.email,
        "mobile_confirmed": employer.mobile_confirmed_at is not None,
        "created_at": timestamp(employer.created_at),
    }


def document_json(document: Document) -> JSON:
    return {
        "id": document.id,
        "doc_type": document.doc_type.value,
        "label": document.doc_type.label,
        "filename": document.filename,
        "media_type": document.media_type,
        "size": document.size,
        "sha256": document.sha256,
        "signature_sha256": document.signature_sha256,
        "verdict": document.verdict.value,
        "detail": document.verdict_detail,
        "verdict_reason": reason_of(document).value,
        "verdict_message": document_reason(document),
        "signer_subject": document.signer_subject,
        "signed_at": timestamp(document.signed_at),
        "attested": document.attested_at is not None,
        "attested_at": timestamp(document.attested_at),
        "valid_until": document.valid_until.isoformat() if document.valid_until else None,
        "acceptable": document.acceptable,
        "uploaded_at": timestamp(document.created_at),
    }


def certificate_json(row: Certificate) -> JSON:
    return {
        "serial": row.serial,
        "subject": row.subject,
        "not_before": timestamp(row.not_before),
        "not_after": timestamp(row.not_after),
        "sha256": row.fingerprint_sha256,
        "revoked_at": timestamp(row.revoked_at),
        "revocation_reason": row.revocation_reason,
    }


def application_json(application: Application, *, detail: bool = True) -> JSON:
    """An application; ``detail`` adds documents, history and what is missing (lists leave
    them out: a queue of hundreds would load every document and event)."""
    row = application.certificate
    issued = application.status is ApplicationStatus.ISSUED and row is not None
    body: JSON = {
        "id": application.id,
        "status": application.status.value,
        "key_source": application.key_source.value,
        "employer": {
            "registration_number": application.employer.registration_number,
            "legal_name": application.employer.legal_name,
        },
        "key_description": application.key_description,
        "public_key_sha256": application.public_key_sha256,
        "created_at": timestamp(application.created_at),
        "submitted_at": timestamp(application.submitted_at),
        "decided_at": timestamp(application.decided_at),
        "rejection_reason": application.rejection_reason,
        "certificate": certificate_json(row) if issued and row is not None else None,
    }
    if detail:
        body["documents"] = [document_json(d) for d in application.documents]
        body["missing"] = (
            service.missing_for_submission(application)
            if application.status is ApplicationStatus.DRAFT
            else []
        )
        body["history"] = [
            {
                "status": event.status.value,
                "actor": event.actor,
                "note": event_note(event) or None,
                "note_code": event.note_code,
                "at": timestamp(event.created_at),
            }
            for event in application.events
        ]
    return body


def public_status_json(status: service.PublicStatus) -> JSON:
    return {
        "serial": status.serial,
        "subject": status.subject,
        "issuer": status.issuer,
        "not_before": timestamp(status.not_before),
        "not_after": timestamp(status.not_after),
        "status": status.status,
        "revoked_at": timestamp(status.revoked_at),
        "revocation_reason": status.revocation_reason,
        "sha256": status.sha256,
    }
