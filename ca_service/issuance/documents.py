"""Application documents over HTTP: the app's document store, reading an upload, and serving a
stored document. Shared by the web portal, the officer console and the JSON API."""

from __future__ import annotations

from urllib.parse import quote

from flask import Response, current_app
from werkzeug.datastructures import FileStorage

from ca_service.extensions import settings_of
from ca_service.issuance import service
from ca_service.issuance.models import Application
from ca_service.storage import DocumentStore


def document_store() -> DocumentStore:
    """The document store of the current app (CA_DOCUMENT_DIR)."""
    return DocumentStore(settings_of(current_app).document_dir)


def read_upload(upload: FileStorage | None, limit: int) -> bytes:
    """An uploaded file's bytes, all of them: the request body is capped (MAX_UPLOAD_MB), and
    a file over ``limit`` is refused with its real size."""
    if upload is None:
        return b""
    return upload.stream.read()


def content_disposition(kind: str, filename: str) -> str:
    """A Content-Disposition header for any file name: an ASCII fallback and the UTF-8 name
    (RFC 6266 / RFC 8187), since WSGI servers only send Latin-1 header values."""
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def document_response(application: Application, document_id: int) -> Response:
    """A stored document, with the type sniffed at upload (never the client's)."""
    document = service.document_of(application, document_id)
    content = document_store().get(document.sha256)
    response = Response(content, mimetype=document.media_type)
    response.headers["Content-Disposition"] = content_disposition("inline", document.filename)
    response.headers["Cache-Control"] = "private, no-store"
    # Shown inside the review page (same origin only) and never allowed to run anything.
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; img-src 'self'; frame-ancestors 'self'"
    )
    return response
