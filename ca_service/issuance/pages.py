"""The application pages, as the issuance views render them and as the revocation views
re-render them when a revocation form (included on them) has an error."""

from __future__ import annotations

from flask import current_app, render_template

from ca_service.extensions import settings_of
from ca_service.issuance import service
from ca_service.issuance.forms import (
    ActionForm,
    ApproveForm,
    DocumentForm,
    RejectForm,
    RequestForm,
    ValidityForm,
)
from ca_service.issuance.guided import guided_application
from ca_service.issuance.lineage import documents_of_record
from ca_service.issuance.models import Application, DocumentType
from ca_service.issuance.verdict_text import document_reason


def employer_page(
    application: Application, status: int = 200, *, step: str | None = None
) -> tuple[str, int]:
    """The employer's application page, with its forms: a draft as the guided flow, showing
    ``step`` (a step key) or else the first step not done yet."""
    missing = service.missing_for_submission(application)
    limits = service.UploadLimits.from_settings(settings_of(current_app))
    return (
        render_template(
            "issuance/application.html",
            application=application,
            document_form=DocumentForm(),
            request_form=RequestForm(),
            action=ActionForm(),
            missing=missing,
            guided=guided_application(application, chosen=step, missing=missing),
            max_document_mb=f"{limits.max_bytes / 1048576:g}",
            document_reason=document_reason,
            document_types=list(DocumentType),
        ),
        status,
    )


def officer_page(application: Application, status: int = 200) -> tuple[str, int]:
    """The officer's review page of an application, with the decision forms."""
    return (
        render_template(
            "issuance/review.html",
            application=application,
            documents=documents_of_record(application),
            action=ActionForm(),
            approve_form=ApproveForm(),
            reject_form=RejectForm(),
            validity_form=ValidityForm(),
            blockers=service.approval_blockers(application),
            dual_control=bool(settings_of(current_app)["DUAL_CONTROL"]),
            document_reason=document_reason,
        ),
        status,
    )
