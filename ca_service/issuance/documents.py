"""Application documents over HTTP: the app's document store, reading an upload, and serving a
stored document. Shared by the web portal, the officer console and the JSON API."""

from __future__ import annotations

import re
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


def read_upload(upload: FileStorage | None) -> bytes:
    """An uploaded file's bytes, all of them: the request body is capped (MAX_UPLOAD_MB), so
    this is bounded, and whoever checks the file refuses one that is too large with its real
    size (``upload_document``, ``check_request``)."""
    if upload is None:
        return b""
    return upload.stream.read()


# What a browser may show in place: the types the upload sniffer accepts. Any other stored type
# (none today) is sent as a download and never shown or framed.
INLINE_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg"})
_UNSAFE_IN_FALLBACK = re.compile(r"[^A-Za-z0-9._\- ()]")
_UNSAFE_IN_NAME = re.compile(r'[\x00-\x1f\x7f"\\/]')


def content_disposition(kind: str, filename: str) -> str:
    """A Content-Disposition header for any file name: an ASCII fallback and the UTF-8 name
    (RFC 6266 / RFC 8187), since WSGI servers only send Latin-1 header values. Control
    characters, quotes and path separators never reach either form."""
    name = _UNSAFE_IN_NAME.sub("_", filename).strip(". ") or "document"
    fallback = _UNSAFE_IN_FALLBACK.sub("_", name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def document_response(
    application: Application, document_id: int, *, framed: bool = False
) -> Response:
    """A stored document, with the type sniffed at upload (never the client's).

    PDFs and images are shown in place (``inline``); with ``framed`` the officer's review page
    (same origin only) may show them in a frame. Anything else is a download that no page may
    frame. Either way the document may run nothing and load nothing but itself.
    """
    document = service.document_of(application, document_id)
    content = document_store().get(document.sha256)
    inline = document.media_type in INLINE_TYPES
    response = Response(content, mimetype=document.media_type)
    response.headers["Content-Disposition"] = content_disposition(
        "inline" if inline else "attachment", document.filename
    )
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    ancestors = "'self'" if framed and inline else "'none'"
    response.headers["X-Frame-Options"] = "SAMEORIGIN" if framed and inline else "DENY"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; img-src 'self'; frame-ancestors {ancestors}"
    )
    return response
