"""The OCSP fast path: WSGI middleware that answers OCSP requests before Flask sees them.

Most OCSP traffic is the same few requests again and again, and each answer is already signed
(stored, or remembered by this worker: ``answer_cache``). Routing, sessions, the login manager,
CSRF and the rate limiter cost far more than finding such an answer, so this layer answers
``POST /ocsp`` and ``GET /ocsp/<base64>`` itself when it can do so without signing: from memory,
else from storage with one read on a plain connection. Before answering from memory it asks
the database for the OCSP epoch, at most every ``OCSP_CHANGE_CHECK_MS``, and forgets what it
remembers when the epoch moved. Everything else — a nonce, an unknown or unstored serial, a
wrong content type, an oversize body, a conditional GET, a database that fails — goes on to the
Flask views unchanged, which answer it (signing when needed) and teach the memory. The
responses are the same whichever layer answers.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import io
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote

import sqlalchemy as sa
from flask import Flask
from werkzeug.http import http_date

from ca_service.app import settings_of
from ca_service.db import db, read_first, utcnow
from ca_service.revocation.answer_cache import AnswerCache
from ca_service.revocation.ocsp import (
    ANSWER_CACHE,
    MAX_REQUEST_BYTES,
    OCSPAnswer,
    answer_from_storage,
    ocsp_epoch,
    response_lifetime,
)
from ca_service.web import SECURITY_HEADERS

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
_GET_PREFIX = "/ocsp/"
# Conditional GETs are left to Werkzeug (304 handling lives there).
_CONDITIONAL = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_MATCH", "HTTP_RANGE")


def get_headers(answer: OCSPAnswer, now: dt.datetime) -> list[tuple[str, str]]:
    """RFC 5019 §6: a GET answer may be cached until its nextUpdate. The ETag is the
    response's digest, the same from every worker, and changes when it is re-signed."""
    if answer.next_update is None:
        return []
    remaining = max(0, int((answer.next_update - now).total_seconds()))
    headers = [
        ("Cache-Control", f"public, no-transform, must-revalidate, max-age={remaining}"),
        ("Expires", http_date(answer.next_update)),
        ("ETag", f'"{hashlib.sha256(answer.der).hexdigest()[:32]}"'),
    ]
    if answer.this_update is not None:
        headers.append(("Last-Modified", http_date(answer.this_update)))
    return headers


def decode_get(encoded: str) -> bytes:
    """The DER request of ``GET /ocsp/<encoded>`` (URL-encoded base64, RFC 6960 A.1); b"" when
    it does not decode (answered malformedRequest like any undecodable request)."""
    try:
        return base64.b64decode(unquote(encoded), validate=True)
    except (binascii.Error, ValueError):
        return b""


class OcspFastPath:
    """Answer OCSP requests that need no signature without entering Flask (see the module)."""

    def __init__(self, app: Flask, downstream: WSGIApplication) -> None:
        self.app = app
        self.downstream = downstream
        self.cache: AnswerCache = app.extensions[ANSWER_CACHE]
        settings = settings_of(app)
        self.lifetime = response_lifetime(settings)
        self.check_interval = int(settings["OCSP_CHANGE_CHECK_MS"]) / 1000
        self._engine: sa.Engine | None = None
        self._epoch: int | None = None
        self._next_check = 0.0

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
        if method == "POST" and path == "/ocsp":
            data = self._post_body(environ)
        elif method == "GET" and path.startswith(_GET_PREFIX):
            data = self._get_body(environ, path)
        else:
            return self.downstream(environ, start_response)
        if data is None or not self._up_to_date():
            return self.downstream(environ, start_response)
        answer = self.cache.get(data) or self._from_storage(data)
        if answer is None:
            return self.downstream(environ, start_response)
        headers = [("Content-Type", OCSP_RESPONSE), ("Content-Length", str(len(answer.der)))]
        if method == "GET":
            headers += get_headers(answer, utcnow())
        else:
            headers.append(("Cache-Control", "no-store"))  # RFC 5019 §5: POST is not cached
        headers += SECURITY_HEADERS
        start_response("200 OK", headers)
        return [answer.der]

    def _post_body(self, environ: WSGIEnvironment) -> bytes | None:
        content_type = environ.get("CONTENT_TYPE", "")
        length = environ.get("CONTENT_LENGTH", "")
        if content_type.split(";", 1)[0].strip().lower() != OCSP_REQUEST or not length.isdigit():
            return None  # the view answers 415 (or reads a chunked body)
        size = int(length)
        if size > MAX_REQUEST_BYTES:
            return None  # the view answers 413
        data: bytes = environ["wsgi.input"].read(size)
        # The view reads the body again if we pass the request on.
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        return data

    def _get_body(self, environ: WSGIEnvironment, path: str) -> bytes | None:
        if any(name in environ for name in _CONDITIONAL):
            return None
        encoded = path[len(_GET_PREFIX) :]
        if not encoded or len(encoded) > MAX_REQUEST_BYTES * 2:
            return None  # the view answers 404 / 413
        return decode_get(encoded)

    def _up_to_date(self) -> bool:
        """Forget remembered answers if the OCSP epoch moved (asked at most every
        ``check_interval``). False when the database cannot say: the views answer then."""
        now = time.monotonic()
        if now < self._next_check:
            return True
        try:
            with read_first(), self._engine_of().connect() as connection:
                epoch = ocsp_epoch(connection)
        except sa.exc.SQLAlchemyError:
            self.cache.clear()
            return False
        if epoch != self._epoch:
            self.cache.clear()
            self._epoch = epoch
        self._next_check = now + self.check_interval
        return True

    def _from_storage(self, data: bytes) -> OCSPAnswer | None:
        """An answer that needs no signature, read on a plain connection; remembered."""
        generation = self.cache.generation
        try:
            with read_first(), self._engine_of().connect() as connection:
                answer = answer_from_storage(connection, data, lifetime=self.lifetime)
        except sa.exc.SQLAlchemyError:
            return None  # the view tries again, and answers an error page if it must
        if answer is not None:
            self.cache.put(data, answer, generation)
        return answer

    def _engine_of(self) -> sa.Engine:
        # Looked up at the first request, after gunicorn forked this worker.
        if self._engine is None:
            with self.app.app_context():
                self._engine = db.engine
        return self._engine
