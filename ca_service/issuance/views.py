"""Employer portal (applications, documents, delivery), officer console (review), and the
public certificate status page. Views are thin: parse the form, call one service."""

from __future__ import annotations

import datetime as dt

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response as WerkzeugResponse

from ca_service.auth.access import require_role
from ca_service.auth.models import EMPLOYER_MEMBERS, Role, User
from ca_service.auth.service import actor_of
from ca_service.binding.models import TrustPurpose
from ca_service.binding.service import trusted_certificates
from ca_service.db import db, read_first
from ca_service.errors import CAError, ValidationError
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import service
from ca_service.issuance.documents import (
    content_disposition,
    document_response,
    document_store,
    read_upload,
)
from ca_service.issuance.forms import (
    ActionForm,
    ApproveForm,
    DocumentForm,
    NewApplicationForm,
    RejectForm,
    RequestForm,
    ValidityForm,
)
from ca_service.issuance.guided import REQUEST_STEP, SUBMIT_STEP
from ca_service.issuance.models import Application, ApplicationStatus, DocumentType, KeySource
from ca_service.issuance.pages import employer_page, officer_page
from ca_service.issuance.queue import (
    ApplicationKind,
    QueueFilter,
    QueueOrder,
    search_queue,
    status_choices,
)
from ca_service.issuance.seals import SealVerdict
from ca_service.issuance.service import OFFICERS
from ca_service.issuance.verdict_text import document_reason
from ca_service.qr import qr_svg_data_uri
from ca_service.revocation.blocked_keys import KeyBlocked
from ca_service.web import stateless

employer_bp = Blueprint("issuance_employer", __name__, url_prefix="/applications")
officer_bp = Blueprint("issuance_officer", __name__, url_prefix="/officer/applications")
public_bp = Blueprint("issuance_public", __name__)

Page = WerkzeugResponse | str | tuple[str, int]


def _user() -> User:
    user: User = current_user._get_current_object()
    return user


def issue_now(application: Application) -> None:
    """Issue (or re-issue after an HSM failure) the approved application's certificate."""
    service.issue_certificate(
        application=application,
        token=app_token(),
        profile=service.EmployerProfile.from_settings(settings_of(current_app)),
        commit=db.session.commit,
        actor=actor_of(_user()),
    )


# -- employer portal ------------------------------------------------------------------------


@employer_bp.get("/")
@require_role(*EMPLOYER_MEMBERS)
def index() -> Page:
    return render_template(
        "issuance/index.html",
        applications=service.applications_of(_user()),
        form=NewApplicationForm(),
    )


@employer_bp.post("/new")
@require_role(*EMPLOYER_MEMBERS)
def create() -> Page:
    form = NewApplicationForm()
    if not form.validate_on_submit():
        flash(_("Choose where the key is generated."), "error")
        return redirect(url_for(".index"))
    application = service.create_application(
        user=_user(), key_source=KeySource(form.key_source.data)
    )
    return redirect(url_for(".detail", application_id=application.id))


@employer_bp.get("/<int:application_id>")
@require_role(*EMPLOYER_MEMBERS)
def detail(application_id: int) -> Page:
    application = service.employer_application(user=_user(), application_id=application_id)
    return employer_page(application, step=request.args.get("step", "")[:40] or None)


@employer_bp.post("/<int:application_id>/documents")
@require_role(*EMPLOYER_MEMBERS)
def upload(application_id: int) -> Page:
    application = service.employer_application(user=_user(), application_id=application_id)
    form = DocumentForm()
    step = str(form.doc_type.data or "")[:40] or None
    if not form.validate_on_submit():
        flash(_("Choose the document type and a file."), "error")
        return employer_page(application, 400, step=step)
    limits = service.UploadLimits.from_settings(settings_of(current_app))
    try:
        document = service.upload_document(
            user=_user(),
            application=application,
            doc_type=DocumentType(form.doc_type.data),
            filename=form.file.data.filename or "",
            content=read_upload(form.file.data),
            detached_signature=read_upload(form.signature.data) or None,
            store=document_store(),
            anchors=trusted_certificates(TrustPurpose.SEAL),
            limits=limits,
        )
    except ValidationError as exc:
        flash(exc.message, "error")
        return employer_page(application, exc.status_code, step=step)
    flash(
        _(
            "“%(label)s” uploaded: %(verdict_detail)s",
            label=document.doc_type.label,
            verdict_detail=document_reason(document),
        ),
        "success" if document.verdict in (SealVerdict.VERIFIED, SealVerdict.UNSIGNED) else "error",
    )
    # Back to the same step: its verdict is shown there, with the way on to the next one.
    return redirect(url_for(".detail", application_id=application.id, step=document.doc_type.value))


@employer_bp.post("/<int:application_id>/request")
@require_role(*EMPLOYER_MEMBERS)
def attach_request(application_id: int) -> Page:
    application = service.employer_application(user=_user(), application_id=application_id)
    form = RequestForm()
    if not form.validate_on_submit():
        flash(_("Upload or paste a certificate request."), "error")
        return employer_page(application, 400, step=REQUEST_STEP)
    data = read_upload(form.file.data) if form.file.data else (form.pem.data or "").encode()
    try:
        checked = service.attach_request(user=_user(), application=application, data=data)
    except (ValidationError, KeyBlocked) as exc:
        flash(exc.message, "error")
        return employer_page(application, exc.status_code, step=REQUEST_STEP)
    flash(
        _(
            "Certificate request accepted (%(key_description)s).",
            key_description=checked.key_description,
        ),
        "success",
    )
    return redirect(url_for(".detail", application_id=application.id, step=SUBMIT_STEP))


@employer_bp.post("/<int:application_id>/submit")
@require_role(*EMPLOYER_MEMBERS)
def submit(application_id: int) -> Page:
    application = service.employer_application(user=_user(), application_id=application_id)
    if not ActionForm().validate_on_submit():
        flash(_("The form expired; reload the page and try again."), "error")
        return employer_page(application, 400, step=SUBMIT_STEP)
    try:
        service.submit_application(user=_user(), application=application)
    except ValidationError as exc:
        flash(exc.message, "error")
        return employer_page(application, exc.status_code, step=SUBMIT_STEP)
    flash(_("Submitted. An officer will review your application."), "success")
    return redirect(url_for(".detail", application_id=application.id))


@employer_bp.get("/<int:application_id>/documents/<int:document_id>")
@require_role(*EMPLOYER_MEMBERS)
def employer_document(application_id: int, document_id: int) -> Response:
    application = service.employer_application(user=_user(), application_id=application_id)
    return document_response(application, document_id)


_FORMAT_OF = {name: kind for kind, (name, _) in service.DOWNLOAD_FORMATS.items()}


@employer_bp.get(
    "/<int:application_id>/<any('certificate.pem','certificate.cer','chain.pem','certificate.p7b'):name>"
)
@require_role(*EMPLOYER_MEMBERS)
def download(application_id: int, name: str) -> Response:
    application = service.employer_application(user=_user(), application_id=application_id)
    download = service.certificate_download(application, _FORMAT_OF[name])
    response = Response(download.body, mimetype=download.mimetype)
    response.headers["Content-Disposition"] = content_disposition("attachment", download.filename)
    return response


@employer_bp.get("/<int:application_id>/notice")
@require_role(*EMPLOYER_MEMBERS)
def notice(application_id: int) -> Page:
    application = service.employer_application(user=_user(), application_id=application_id)
    certificate = service.certificate_of(application)
    row = service.certificate_row(application)
    verify_url = settings_of(current_app).public_base_url + url_for(
        "issuance_public.verify", serial=row.serial
    )
    return render_template(
        "issuance/notice.html",
        application=application,
        certificate=certificate,
        row=row,
        status=service.public_status(row.serial),
        verify_url=verify_url,
        qr=qr_svg_data_uri(verify_url),
    )


# -- officer console ------------------------------------------------------------------------


@officer_bp.get("/")
@require_role(*OFFICERS)
def queue() -> Page:
    filters = QueueFilter.parse(request.args)
    with read_first():
        page = search_queue(officer=_user(), filters=filters)
    return render_template(
        "issuance/queue.html",
        page=page,
        filters=filters,
        statuses=status_choices(),
        kinds=list(ApplicationKind),
        orders=list(QueueOrder),
    )


@officer_bp.get("/<int:application_id>")
@require_role(Role.RA_OFFICER)
def review(application_id: int) -> Page:
    return officer_page(service.officer_application(officer=_user(), application_id=application_id))


@officer_bp.get("/<int:application_id>/documents/<int:document_id>")
@require_role(Role.RA_OFFICER)
def officer_document(application_id: int, document_id: int) -> Response:
    application = service.officer_application(officer=_user(), application_id=application_id)
    # Shown in a frame of the review page, beside its seal verdict.
    return document_response(application, document_id, framed=True)


def _form_problem(form: ApproveForm | RejectForm) -> str:
    """What is wrong with a decision form: its first field error, else an expired form."""
    for name, errors in form.errors.items():
        if name != "csrf_token" and errors:
            return str(errors[0])  # a message, or a lazy one from the form's validators
    return str(_("The form expired or is incomplete; reload the page and try again."))


def _officer_action(application_id: int, form_ok: bool) -> Application:
    application = service.officer_application(officer=_user(), application_id=application_id)
    if not form_ok:
        raise ValidationError(
            _("The form expired or is incomplete; reload the page and try again.")
        )
    return application


@officer_bp.post("/<int:application_id>/documents/<int:document_id>/attest")
@require_role(Role.RA_OFFICER)
def attest(application_id: int, document_id: int) -> Page:
    application = _officer_action(application_id, ActionForm().validate_on_submit())
    document = service.attest_paper_seal(
        officer=_user(), application=application, document_id=document_id
    )
    flash(_("Paper seal on “%(label)s” attested.", label=document.doc_type.label), "success")
    return redirect(url_for(".review", application_id=application_id))


@officer_bp.post("/<int:application_id>/documents/<int:document_id>/validity")
@require_role(Role.RA_OFFICER)
def validity(application_id: int, document_id: int) -> Page:
    form = ValidityForm()
    application = _officer_action(application_id, form.validate_on_submit())
    valid_until: dt.date | None = form.valid_until.data
    service.set_document_validity(
        officer=_user(), application=application, document_id=document_id, valid_until=valid_until
    )
    flash(_("Validity recorded."), "success")
    return redirect(url_for(".review", application_id=application_id))


@officer_bp.post("/<int:application_id>/approve")
@require_role(Role.RA_OFFICER)
def approve(application_id: int) -> Page:
    form = ApproveForm()
    application = service.officer_application(officer=_user(), application_id=application_id)
    if not form.validate_on_submit():
        flash(_form_problem(form), "error")
        return officer_page(application, 400)
    try:
        service.approve_application(
            officer=_user(),
            application=application,
            dual_control=bool(settings_of(current_app)["DUAL_CONTROL"]),
            note=form.note.data or "",
        )
    except ValidationError as exc:
        flash(exc.message, "error")
        return officer_page(application, exc.status_code)
    return _after_approval(application)


def _after_approval(application: Application) -> Page:
    if application.status is ApplicationStatus.AWAITING_CONFIRMATION:
        flash(
            _("Approved. A second officer must confirm before the certificate is issued."),
            "success",
        )
    elif application.key_source is KeySource.COUNTER:
        flash(
            _(
                "Approved. Provision the employer's token at the counter with `ca-service token "
                "provision --application %(id)s`.",
                id=application.id,
            ),
            "success",
        )
    else:
        issue_now(application)
        flash(_("Approved and issued."), "success")
    return redirect(url_for(".review", application_id=application.id))


@officer_bp.post("/<int:application_id>/issue")
@require_role(Role.RA_OFFICER)
def issue(application_id: int) -> Page:
    application = _officer_action(application_id, ActionForm().validate_on_submit())
    issue_now(application)
    flash(_("Certificate issued."), "success")
    return redirect(url_for(".review", application_id=application_id))


@officer_bp.post("/<int:application_id>/reject")
@require_role(Role.RA_OFFICER)
def reject(application_id: int) -> Page:
    form = RejectForm()
    application = service.officer_application(officer=_user(), application_id=application_id)
    if not form.validate_on_submit():
        flash(_form_problem(form), "error")
        return officer_page(application, 400)
    try:
        service.reject_application(
            officer=_user(), application=application, reason=form.reason.data or ""
        )
    except ValidationError as exc:
        flash(exc.message, "error")
        return officer_page(application, exc.status_code)
    flash(_("Rejected; the employer is notified."), "success")
    return redirect(url_for(".review", application_id=application_id))


# -- public ---------------------------------------------------------------------------------


@public_bp.get("/verify/<serial>")
@stateless
def verify(serial: str) -> Page:
    try:
        with read_first():
            status = service.public_status(serial)
    except CAError as exc:
        return render_template("issuance/verify.html", status=None, error=exc.message), 404
    return render_template("issuance/verify.html", status=status, error=None)
