"""The RA officer's review: queue, application with its blockers, attestation, validity,
approval (issuing at once, as the console does), rejection and the issuance retry."""

from __future__ import annotations

from typing import Any

from flask import current_app, request, url_for

from ca_service.api import schemas
from ca_service.api.auth import bearer_user
from ca_service.api.http import JSON, bp, date_field, json_body, text_field
from ca_service.api.serialise import application_json, document_json
from ca_service.api.spec import OFFICER, Reply, documented
from ca_service.auth.models import Role, User
from ca_service.auth.service import actor_of
from ca_service.db import db
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import queue, service
from ca_service.issuance.models import Application, ApplicationStatus, KeySource

_REVIEW = {200: Reply(schemas.Review, "The application as the officer sees it.")}


def _officer() -> User:
    return bearer_user(Role.RA_OFFICER)


def _application(officer: User, application_id: int) -> Application:
    return service.officer_application(officer=officer, application_id=application_id)


def _review_json(application: Application) -> JSON:
    return {
        **application_json(application),
        "approval_blockers": service.approval_blockers(application)
        if application.status
        in (ApplicationStatus.SUBMITTED, ApplicationStatus.AWAITING_CONFIRMATION)
        else [],
        "dual_control": bool(settings_of(current_app)["DUAL_CONTROL"]),
    }


def _issue(officer: User, application: Application) -> None:
    # The same call as the console's issue_now, with the API's acting officer.
    service.issue_certificate(
        application=application,
        token=app_token(),
        profile=service.EmployerProfile.from_settings(settings_of(current_app)),
        commit=db.session.commit,
        actor=actor_of(officer),
    )


@bp.get("/review")
@documented(
    tag=OFFICER,
    query=schemas.ReviewQuery,
    responses={200: Reply(schemas.ReviewPage, "One page of applications without their details.")},
    errors=(400, 401, 403),
)
def review_queue() -> JSON:
    """The officers' queue, a page at a time, searched and filtered as in the web console.

    Without parameters: the applications still to decide (submitted or awaiting
    confirmation), oldest first, 25 a page. `next` and `previous` are the links to the
    neighbouring pages (null at the ends).
    """
    officer = _officer()
    filters = queue.QueueFilter.parse(request.args)
    page_size = queue.PAGE_SIZE
    found = queue.search_queue(officer=officer, filters=filters, page_size=page_size)

    def link(page: int) -> str:
        args: dict[str, Any] = {**filters.query_args(), "page": page}
        return url_for(".review_queue", **args)

    return {
        "applications": [application_json(a, detail=False) for a in found.applications],
        "total": found.total,
        "page": found.page,
        "pages": found.pages,
        "page_size": page_size,
        "next": link(found.page + 1) if found.page < found.pages else None,
        "previous": link(min(found.page - 1, found.pages)) if found.page > 1 else None,
        "counts": found.counts,
    }


@bp.get("/review/<int:application_id>")
@documented(tag=OFFICER, responses=_REVIEW, errors=(401, 403, 404))
def review_application(application_id: int) -> JSON:
    """An application with its approval blockers."""
    return _review_json(_application(_officer(), application_id))


@bp.post("/review/<int:application_id>/documents/<int:document_id>/attest")
@documented(
    tag=OFFICER,
    responses={200: Reply(schemas.Document, "The attested document.")},
    errors=(401, 403, 404, 409),
)
def attest_document(application_id: int, document_id: int) -> JSON:
    """Attest the paper seal on an unsigned scan."""
    officer = _officer()
    application = _application(officer, application_id)
    document = service.attest_paper_seal(
        officer=officer, application=application, document_id=document_id
    )
    return document_json(document)


@bp.put("/review/<int:application_id>/documents/<int:document_id>/validity")
@documented(
    tag=OFFICER,
    body=schemas.Validity,
    responses={200: Reply(schemas.Document, "The document.")},
    errors=(400, 401, 403, 404, 409, 415),
)
def set_document_validity(application_id: int, document_id: int) -> JSON:
    """Record when a business licence or ID expires (null: no end date)."""
    officer = _officer()
    application = _application(officer, application_id)
    valid_until = date_field(json_body(schemas.Validity), "valid_until")
    document = service.set_document_validity(
        officer=officer,
        application=application,
        document_id=document_id,
        valid_until=valid_until,
    )
    return document_json(document)


@bp.post("/review/<int:application_id>/approve")
@documented(tag=OFFICER, responses=_REVIEW, errors=(400, 401, 403, 404, 409, 503))
def approve_application(application_id: int) -> JSON:
    """Approve; a CSR application is issued at once unless dual control waits for a second
    officer."""
    officer = _officer()
    application = _application(officer, application_id)
    service.approve_application(
        officer=officer,
        application=application,
        dual_control=bool(settings_of(current_app)["DUAL_CONTROL"]),
    )
    # As the console: a confirmed approval of a CSR application issues at once; dual control
    # waits for the second officer; a counter application waits for `ca-service token provision`.
    if application.status is ApplicationStatus.APPROVED and application.key_source is KeySource.CSR:
        _issue(officer, application)
    return _review_json(application)


@bp.post("/review/<int:application_id>/reject")
@documented(
    tag=OFFICER, body=schemas.Rejection, responses=_REVIEW, errors=(400, 401, 403, 404, 409, 415)
)
def reject_application(application_id: int) -> JSON:
    """Reject with a reason the employer sees."""
    officer = _officer()
    application = _application(officer, application_id)
    reason = text_field(json_body(schemas.Rejection), "reason")
    service.reject_application(officer=officer, application=application, reason=reason)
    return _review_json(application)


@bp.post("/review/<int:application_id>/issue")
@documented(tag=OFFICER, responses=_REVIEW, errors=(401, 403, 404, 409, 503))
def issue_application(application_id: int) -> JSON:
    """Issue the approved application's certificate (retry after an HSM failure)."""
    officer = _officer()
    application = _application(officer, application_id)
    _issue(officer, application)
    return _review_json(application)
