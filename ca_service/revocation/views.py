"""CRLs and OCSP answers served from storage: the web process signs only OCSP answers that
need it (a nonce, an unknown serial, a certificate without a fresh stored response)."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from cryptography.x509 import ocsp
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from ca_service.db import db, read_first, utcnow
from ca_service.extensions import csrf, settings_of
from ca_service.hsm_access import app_token
from ca_service.revocation.answer_cache import AnswerCache
from ca_service.revocation.fastpath import OCSP_REQUEST, OCSP_RESPONSE, decode_get, get_headers
from ca_service.revocation.ocsp import (
    ANSWER_CACHE,
    MAX_REQUEST_BYTES,
    OCSPAnswer,
    answer_ocsp_request,
    response_lifetime,
    unsuccessful,
)
from ca_service.revocation.service import latest_crl
from ca_service.web import stateless
from hsm.errors import DuplicateKeyLabel, HSMError, KeyNotFound

bp = Blueprint("revocation", __name__)
log = logging.getLogger(__name__)


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


def _unavailable(what: str, exc: Exception) -> OCSPAnswer:
    """RFC 6960's answer while a dependency is down: an unsigned tryLater (a relying party
    asks again, or another responder), not an HTTP error page it cannot read. A missing key
    is a set-up fault, not an outage: internalError."""
    db.session.rollback()
    if isinstance(exc, KeyNotFound | DuplicateKeyLabel):
        log.error("OCSP: %s: %s", what, exc)
        return unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
    log.error("OCSP answered tryLater: %s: %s", what, exc)
    return unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)


def _answer(data: bytes) -> OCSPAnswer:
    lifetime = response_lifetime(settings_of(current_app))
    cache: AnswerCache = current_app.extensions[ANSWER_CACHE]
    generation = cache.generation
    try:
        with read_first():  # stored answers are read without queueing for SQLite's write lock
            answer = answer_ocsp_request(data, token=app_token(), lifetime=lifetime)
    except sa.exc.OperationalError as exc:
        return _unavailable("the database is unavailable", exc)
    except HSMError as exc:
        return _unavailable("the HSM cannot sign", exc)
    try:
        # Here, not at the request's boundary: the answer just signed is right whether or not
        # it is kept for the next request, so a failed commit must not turn it into an error.
        db.session.commit()
    except sa.exc.OperationalError as exc:
        db.session.rollback()
        log.warning("OCSP answer not stored (the database is unavailable): %s", exc.orig)
    # The fast path answers the next identical request from memory.
    cache.put(data, answer, generation)
    return answer


# The fast path (fastpath.py) answers most OCSP requests before they reach these views; these
# answer the rest, with the same responses.


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
    answer = _answer(decode_get(encoded))
    response = Response(answer.der, mimetype=OCSP_RESPONSE)
    response.headers.extend(get_headers(answer, utcnow()))
    response.make_conditional(request)
    return response
