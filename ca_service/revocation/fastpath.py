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

Under the event-loop worker (``ca-service serve``'s default) ``OcspAsgi`` goes one step further
out: it answers from the same memory inside the event loop, so that a remembered answer costs
no thread, no WSGI environ and no Python HTTP parsing; whatever it cannot answer from memory
goes on, through the WSGI bridge, to ``OcspFastPath`` and Flask.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import io
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import sqlalchemy as sa
from flask import Flask
from werkzeug.http import http_date

from ca_service.db import db, read_first, utcnow
from ca_service.extensions import settings_of
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
    from collections.abc import Awaitable, Callable, MutableMapping

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    # ASGI 3 (https://asgi.readthedocs.io/): what the event-loop worker calls.
    AsgiMessage = MutableMapping[str, Any]
    AsgiReceive = Callable[[], Awaitable[AsgiMessage]]
    AsgiSend = Callable[[AsgiMessage], Awaitable[None]]
    AsgiApp = Callable[[MutableMapping[str, Any], AsgiReceive, AsgiSend], Awaitable[None]]

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


def response_headers(method: str, answer: OCSPAnswer) -> list[tuple[str, str]]:
    """The headers of a 200 answer to ``method`` (POST or GET), as the views send them."""
    headers = [("Content-Type", OCSP_RESPONSE), ("Content-Length", str(len(answer.der)))]
    if method == "GET":
        headers += get_headers(answer, utcnow())
    else:
        headers.append(("Cache-Control", "no-store"))  # RFC 5019 §5: POST is not cached
    headers += SECURITY_HEADERS
    return headers


def post_size(content_type: str, length: str) -> int | None:
    """The size of a POST body this layer reads, or None to leave the request to the view:
    a wrong content type (415), a body without a length (chunked) or too large (413)."""
    if content_type.split(";", 1)[0].strip().lower() != OCSP_REQUEST or not length.isdigit():
        return None
    size = int(length)
    return size if size <= MAX_REQUEST_BYTES else None


def get_request(path: str) -> bytes | None:
    """The DER request of ``GET /ocsp/<encoded>``, or None to leave it to the view (404, 413)."""
    encoded = path[len(_GET_PREFIX) :]
    if not encoded or len(encoded) > MAX_REQUEST_BYTES * 2:
        return None
    return decode_get(encoded)


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
        if data is None or not self.up_to_date():
            return self.downstream(environ, start_response)
        answer = self.cache.get(data) or self._from_storage(data)
        if answer is None:
            return self.downstream(environ, start_response)
        start_response("200 OK", response_headers(method, answer))
        return [answer.der]

    def check_due(self, ahead: float = 0.0) -> bool:
        """Whether the epoch must be asked before the memory may answer again (or will have
        to be within ``ahead`` seconds)."""
        return time.monotonic() + ahead >= self._next_check

    def _post_body(self, environ: WSGIEnvironment) -> bytes | None:
        size = post_size(environ.get("CONTENT_TYPE", ""), environ.get("CONTENT_LENGTH", ""))
        if size is None:
            return None
        data: bytes = environ["wsgi.input"].read(size)
        # The view reads the body again if we pass the request on.
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        return data

    def _get_body(self, environ: WSGIEnvironment, path: str) -> bytes | None:
        if any(name in environ for name in _CONDITIONAL):
            return None
        return get_request(path)

    def up_to_date(self, ahead: float = 0.0) -> bool:
        """Forget remembered answers if the OCSP epoch moved (asked at most every
        ``check_interval``, or ``ahead`` seconds sooner). False when the database cannot say:
        the views answer then."""
        now = time.monotonic()
        if now + ahead < self._next_check:
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


# The ASGI names of the headers that make a GET conditional (see _CONDITIONAL).
_CONDITIONAL_HEADERS = frozenset({b"if-none-match", b"if-modified-since", b"if-match", b"range"})


class OcspAsgi:
    """ASGI: answer remembered OCSP answers in the event loop; pass everything else on.

    ``fastpath`` is the WSGI layer inside ``downstream`` (the WSGI app behind an ASGI bridge):
    its memory and its epoch checks are shared, so a request that this layer passes on — a
    miss, an epoch check that is due, anything not an OCSP request — is answered exactly as
    before and teaches the memory for the next one.
    """

    def __init__(self, fastpath: OcspFastPath, downstream: AsgiApp) -> None:
        self.fastpath = fastpath
        self.downstream = downstream
        self._check: asyncio.Future[bool] | None = None
        # POST headers depend on the body's length alone: encoded once per length.
        self._post_headers: dict[int, list[tuple[bytes, bytes]]] = {}

    async def _up_to_date(self) -> bool:
        """``OcspFastPath.up_to_date`` without blocking the loop: one check at a time runs in
        a thread, started half the interval early so that it is back before the memory is due
        even when the thread waits long for the interpreter (the loop keeps it busy under
        load); requests wait for it only once the memory is due."""
        fastpath = self.fastpath
        ahead = fastpath.check_interval / 2
        if not fastpath.check_due(ahead):
            return True
        if self._check is None:
            loop = asyncio.get_running_loop()
            check = loop.run_in_executor(None, fastpath.up_to_date, ahead)
            check.add_done_callback(self._checked)
            self._check = check
        if not fastpath.check_due():
            return True  # the early check runs; what it will confirm is still current
        return await asyncio.shield(self._check)

    def _checked(self, check: asyncio.Future[bool]) -> None:
        if self._check is check:
            self._check = None

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: AsgiReceive, send: AsgiSend
    ) -> None:
        if scope["type"] != "http":
            await self.downstream(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        body: bytes | None = None
        data: bytes | None = None
        if method == "POST" and path == "/ocsp":
            if _post_size(scope["headers"]) is not None:
                body = await read_body(receive)
                if body is None:
                    return  # the client went away: nobody to answer
                data = body
        elif (
            method == "GET"
            and path.startswith(_GET_PREFIX)
            and not any(name in _CONDITIONAL_HEADERS for name, _ in scope["headers"])
        ):
            data = get_request(path)
        answer = None
        if data and await self._up_to_date():
            answer = self.fastpath.cache.get(data)
        if answer is None:
            if body is not None:
                receive = _replay(body, receive)
            await self.downstream(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": self._headers(method, answer)}
        )
        await send({"type": "http.response.body", "body": answer.der})

    def _headers(self, method: str, answer: OCSPAnswer) -> list[tuple[bytes, bytes]]:
        headers = self._post_headers.get(len(answer.der)) if method == "POST" else None
        if headers is None:
            headers = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in response_headers(method, answer)
            ]
            if method == "POST" and len(self._post_headers) < 1000:
                self._post_headers[len(answer.der)] = headers
        return headers


def _post_size(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """``post_size`` of an ASGI request's headers."""
    content_type = length = b""
    for name, value in headers:  # a repeated header: the last one, no matter
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            length = value
    return post_size(content_type.decode("latin-1"), length.decode("latin-1"))


async def read_body(receive: AsgiReceive) -> bytes | None:
    """The request body (the server holds it to its Content-Length, which the caller
    bounded: ``post_size`` here, ``serving.PREREAD_BYTES`` in the WSGI bridge); None if the
    client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: AsgiReceive) -> AsgiReceive:
    """``receive`` for the next layer: the body already read, then what the client sends."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> AsgiMessage:
        return pending.pop() if pending else await receive()

    return replayed
