"""CRLs and OCSP answers served from storage: the web process signs only OCSP answers that
need it (a nonce, an unknown serial, a certificate without a fresh stored response)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from urllib.parse import unquote

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from ca_service.app import csrf, settings_of
from ca_service.db import read_first, utcnow
from ca_service.hsm_access import app_token
from ca_service.revocation.ocsp import (
    MAX_REQUEST_BYTES,
    OCSPAnswer,
    answer_ocsp_request,
    response_lifetime,
)
from ca_service.revocation.service import latest_crl
from ca_service.web import stateless

bp = Blueprint("revocation", __name__)
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"


@bp.get("/pki/crl/<slug>.crl")
@stateless
def crl(slug: str) -> Response:
    with read_first():
        row = latest_crl(slug)
    response = Response(row.der, mimetype="application/pkix-crl")
    response.headers["Content-Disposition"] = f'inline; filename="{slug}.crl"'
    response.set_etag(f"{slug}-{row.number}")
    response.last_modified = row.this_update
    remaining = max(0, int((row.next_update - utcnow()).total_seconds()))
    response.cache_control.public = True
    response.cache_control.max_age = remaining
    response.expires = row.next_update
    response.make_conditional(request)
    return response


def _answer(data: bytes) -> OCSPAnswer:
    lifetime = response_lifetime(settings_of(current_app))
    with read_first():  # stored answers are read without queueing for SQLite's write lock
        return answer_ocsp_request(data, token=app_token(), lifetime=lifetime)


@bp.post("/ocsp")
@stateless
@csrf.exempt  # type: ignore[untyped-decorator]  # a machine endpoint for relying parties
def ocsp_post() -> Response:
    if request.mimetype != OCSP_REQUEST:
        raise UnsupportedMediaType(f"send the DER request as {OCSP_REQUEST}")
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        raise RequestEntityTooLarge(f"OCSP requests are at most {MAX_REQUEST_BYTES} bytes")
    data = request.stream.read(MAX_REQUEST_BYTES + 1)
    if len(data) > MAX_REQUEST_BYTES:
        raise RequestEntityTooLarge(f"OCSP requests are at most {MAX_REQUEST_BYTES} bytes")
    response = Response(_answer(data).der, mimetype=OCSP_RESPONSE)
    response.cache_control.no_store = True  # RFC 5019 §5: POST answers are not cached
    return response


@bp.get("/ocsp/<path:encoded>")
@stateless
def ocsp_get(encoded: str) -> Response:
    if len(encoded) > MAX_REQUEST_BYTES * 2:
        raise RequestEntityTooLarge("OCSP request too large")
    try:
        data = base64.b64decode(unquote(encoded), validate=True)
    except (binascii.Error, ValueError):
        data = b""  # answered as malformedRequest below, like any undecodable request
    answer = _answer(data)
    response = Response(answer.der, mimetype=OCSP_RESPONSE)
    if answer.next_update is not None:
        # RFC 5019 §6: GET answers may be cached until nextUpdate; the ETag is the response's
        # digest, the same from every worker, and changes when it is re-signed.
        remaining = max(0, int((answer.next_update - utcnow()).total_seconds()))
        response.cache_control.public = True
        response.cache_control.no_transform = True
        response.cache_control.must_revalidate = True
        response.cache_control.max_age = remaining
        response.expires = answer.next_update
        if answer.this_update is not None:
            response.last_modified = answer.this_update
        response.set_etag(hashlib.sha256(answer.der).hexdigest()[:32])
        response.make_conditional(request)
    return response
