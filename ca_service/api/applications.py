"""The employer administrator's applications: draft, documents, CSR, submission, delivery."""

from __future__ import annotations

from flask import Response, current_app, jsonify, make_response, request, url_for
from werkzeug.datastructures import FileStorage

from ca_service.api import schemas
from ca_service.api.auth import bearer_user
from ca_service.api.http import (
    JSON,
    bp,
    choice,
    created,
    json_body,
    require_mimetype,
    text_field,
)
from ca_service.api.serialise import application_json, document_json
from ca_service.api.spec import EMPLOYER, Reply, documented
from ca_service.auth.models import EMPLOYER_MEMBERS, User
from ca_service.binding.models import TrustPurpose
from ca_service.binding.service import trusted_certificates
from ca_service.errors import ValidationError, echoed
from ca_service.extensions import settings_of
from ca_service.issuance import service
from ca_service.issuance.csr import MAX_CSR_BYTES
from ca_service.issuance.documents import document_store
from ca_service.issuance.models import Application, DocumentType, KeySource

PKCS10 = "application/pkcs10"
_CERTIFICATE_FORMATS = {
    "application/x-pem-file": {"type": "string"},
    "application/pkix-cert": {"type": "string", "contentMediaType": "application/pkix-cert"},
    "application/pkcs7-mime": {"type": "string", "contentMediaType": "application/pkcs7-mime"},
}


def _employer() -> User:
    return bearer_user(*EMPLOYER_MEMBERS)


def _own(user: User, application_id: int) -> Application:
    return service.employer_application(user=user, application_id=application_id)


def _read(upload: FileStorage | None, limit: int) -> bytes:
    """An uploaded file's bytes, all of them: the request body is capped (MAX_UPLOAD_MB), and
    the service refuses a file over ``limit`` with its real size."""
    return upload.stream.read() if upload is not None else b""


@bp.get("/applications")
@documented(
    tag=EMPLOYER,
    responses={200: Reply(schemas.ApplicationList, "Applications without their details.")},
    errors=(401, 403),
)
def list_applications() -> Response:
    """The employer's applications, newest first."""
    user = _employer()
    return jsonify(
        applications=[application_json(a, detail=False) for a in service.applications_of(user)]
    )


@bp.post("/applications")
@documented(
    tag=EMPLOYER,
    body=schemas.NewApplication,
    responses={201: Reply(schemas.Application, "The new draft.")},
    errors=(400, 401, 403, 415),
)
def create_application() -> Response:
    """Start a draft application."""
    user = _employer()
    data = json_body(schemas.NewApplication)
    key_source = choice(text_field(data, "key_source"), "key_source", (k.value for k in KeySource))
    application = service.create_application(user=user, key_source=KeySource(key_source))
    return created(
        application_json(application),
        url_for(".get_application", application_id=application.id),
    )


@bp.get("/applications/<int:application_id>")
@documented(
    tag=EMPLOYER,
    responses={200: Reply(schemas.Application, "The application.")},
    errors=(401, 403, 404),
)
def get_application(application_id: int) -> JSON:
    """An application with its documents, history and what is missing."""
    return application_json(_own(_employer(), application_id))


@bp.put("/applications/<int:application_id>/csr")
@documented(
    tag=EMPLOYER,
    body={
        PKCS10: {"type": "string", "contentMediaType": PKCS10, "description": "PEM or DER."},
        "application/json": schemas.CsrJson,
    },
    responses={200: Reply(schemas.Application, "The application with the key described.")},
    errors=(400, 401, 403, 404, 409, 413, 415),
)
def put_csr(application_id: int) -> JSON:
    """Attach the PKCS#10 certificate request (PEM or DER) to a draft."""
    user = _employer()
    application = _own(user, application_id)
    if require_mimetype(PKCS10, "application/json") == PKCS10:
        data = request.get_data(cache=False)
    else:
        data = text_field(json_body(schemas.CsrJson), "csr_pem").encode()
    if len(data) > MAX_CSR_BYTES:
        raise ValidationError("The certificate request is too large (64 KiB at most).")
    service.attach_request(user=user, application=application, data=data)
    return application_json(application)


@bp.post("/applications/<int:application_id>/documents")
@documented(
    tag=EMPLOYER,
    body={"multipart/form-data": schemas.DocumentUpload},
    responses={201: Reply(schemas.Document, "The stored document with its seal verdict.")},
    errors=(400, 401, 403, 404, 409, 413, 415),
)
def upload_document(application_id: int) -> Response:
    """Upload a sealed document (replaces one of the same type)."""
    user = _employer()
    application = _own(user, application_id)
    require_mimetype("multipart/form-data")
    unknown = sorted(
        (set(request.form) - {"doc_type"}) | (set(request.files) - {"file", "signature"})
    )
    if unknown:
        raise ValidationError(
            f"Unknown form field(s): {', '.join(echoed(name) for name in unknown[:10])}."
        )
    doc_type = choice(request.form.get("doc_type", ""), "doc_type", (t.value for t in DocumentType))
    upload = request.files.get("file")
    if upload is None:
        raise ValidationError("The form field 'file' (the document) is required.")
    signature = request.files.get("signature")
    limits = service.UploadLimits.from_settings(settings_of(current_app))
    document = service.upload_document(
        user=user,
        application=application,
        doc_type=DocumentType(doc_type),
        filename=upload.filename or "",
        content=_read(upload, limits.max_bytes),
        detached_signature=_read(signature, limits.max_bytes) or None,
        store=document_store(),
        anchors=trusted_certificates(TrustPurpose.SEAL),
        limits=limits,
    )
    return make_response(document_json(document), 201)


@bp.post("/applications/<int:application_id>/submit")
@documented(
    tag=EMPLOYER,
    responses={200: Reply(schemas.Application, "The submitted application.")},
    errors=(400, 401, 403, 404, 409),
)
def submit_application(application_id: int) -> JSON:
    """Submit the draft for review; it becomes read-only."""
    user = _employer()
    application = _own(user, application_id)
    service.submit_application(user=user, application=application)
    return application_json(application)


@bp.get("/applications/<int:application_id>/certificate")
@documented(
    tag=EMPLOYER,
    query=schemas.DownloadQuery,
    responses={200: Reply(None, "The certificate.", media=_CERTIFICATE_FORMATS)},
    errors=(400, 401, 403, 404),
)
def download_certificate(application_id: int) -> Response:
    """Download the issued certificate."""
    application = _own(_employer(), application_id)
    kind = choice(request.args.get("format", "pem"), "format", service.DOWNLOAD_FORMATS)
    download = service.certificate_download(application, kind)
    response = Response(download.body, mimetype=download.mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{download.filename}"'
    return response
