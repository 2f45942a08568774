"""Run the app under gunicorn from `ca-service serve`, optionally over TLS with client
certificates (asked for, not required: password sign-in keeps working without one)."""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import functools
import gc
import io
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import sqlalchemy as sa
from a2wsgi.wsgi import Body, build_environ
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from gunicorn.app.base import BaseApplication
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from ca_service.app import create_app
from ca_service.errors import ConfigurationError, echoed
from ca_service.extensions import settings_of
from ca_service.hsm_access import check_login
from ca_service.revocation.fastpath import OcspAsgi, OcspFastPath, read_body

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

CLIENT_CA_BUNDLE = "tls-client-cas.pem"  # under VAR_DIR


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate and key, and whom client certificates must chain to."""

    certfile: Path
    keyfile: Path
    # PEM CA certificates; None: generate <VAR_DIR>/tls-client-cas.pem from the database.
    client_ca: Path | None = None


class PeerCertificate:
    """WSGI middleware: the client certificate of the TLS connection as ``SSL_CLIENT_CERT``
    (PEM), where Werkzeug's dev server and mod_wsgi put it too. gunicorn leaves it out.

    It comes from the socket only: whatever the environ held under that name is dropped first
    (gunicorn maps request headers to ``HTTP_*`` keys, so a client cannot set it anyway).
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ.pop("SSL_CLIENT_CERT", None)
        sock = environ.get("gunicorn.socket")
        if isinstance(sock, ssl.SSLSocket):
            der = sock.getpeercert(binary_form=True)
            if der:  # None or b"" when the client presented no certificate
                environ["SSL_CLIENT_CERT"] = ssl.DER_cert_to_PEM_cert(der)
        return self.app(environ, start_response)


# gunicorn calls its ssl_context hook for every connection; each worker builds the context
# once instead (certificate, key and CA bundle read at the worker's start).
_contexts: dict[int, ssl.SSLContext] = {}
_X509_V_FLAG_NO_CHECK_TIME = 0x200000  # OpenSSL's flag; Python's ssl has no name for it
_SSL_VERIFY_PEER = 0x01  # OpenSSL's SSL_VERIFY_PEER: ask for a certificate, do not require one

# OpenSSL's verify callback: int (*)(int preverify_ok, X509_STORE_CTX *store).
_VerifyCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def _accept_chain(preverify_ok: int, store: int | None) -> int:
    # Whatever OpenSSL thinks of the chain (unknown CA, wrong EKU, expired), the handshake
    # goes on: the CertificateVerify message still proves the client holds the key, and the
    # app's verification core (auth.verification) decides, with a reason the person can read.
    return 1


# Kept alive for the life of the process: OpenSSL holds a bare pointer to it.
_ACCEPT_CHAIN = _VerifyCallback(_accept_chain)


def _accept_any_client_certificate(context: ssl.SSLContext) -> None:
    """Ask for a client certificate and accept any one whose key the client proves to hold.

    Python's ssl has no verify callback, so it is set on the context's ``SSL_CTX`` through
    the libssl that ``_ssl`` is linked with. The ``SSL_CTX *`` is the first field after the
    object header of CPython's ``PySSLContext``; the verify mode and options read back
    through it confirm that layout before anything is written.

    :raises ConfigurationError: if the context's layout is not the one expected.
    """
    import _ssl

    libssl = ctypes.CDLL(_ssl.__file__)  # its symbols resolve to the libssl it links
    get_mode = libssl.SSL_CTX_get_verify_mode
    get_mode.restype, get_mode.argtypes = ctypes.c_int, [ctypes.c_void_p]
    get_options = libssl.SSL_CTX_get_options
    get_options.restype, get_options.argtypes = ctypes.c_uint64, [ctypes.c_void_p]
    set_verify = libssl.SSL_CTX_set_verify
    set_verify.restype = None
    set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VerifyCallback]
    context.verify_mode = ssl.CERT_OPTIONAL
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if (
        not pointer
        or get_mode(pointer) != _SSL_VERIFY_PEER
        or get_options(pointer) != int(context.options)
    ):
        raise ConfigurationError(
            "cannot set the TLS client-certificate callback on this Python's ssl module"
        )
    set_verify(pointer, _SSL_VERIFY_PEER, _ACCEPT_CHAIN)


def _tls_context(
    conf: Any,  # gunicorn's hook signature; the factory already applied it
    default_factory: Callable[[], ssl.SSLContext],
) -> ssl.SSLContext:
    pid = os.getpid()
    context = _contexts.get(pid)
    if context is None:  # two threads racing here build two equal contexts: harmless
        context = default_factory()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The handshake proves possession of the key; the chain, the key usage and validity
        # in time are the app's decision (auth.verification), so that the owner of an
        # expired, unknown or wrongly made certificate hears why instead of a failed
        # handshake.
        context.verify_flags |= _X509_V_FLAG_NO_CHECK_TIME
        _accept_any_client_certificate(context)
        _contexts[pid] = context
    return context


class _CoalescingTransport(asyncio.Transport):
    """A transport whose writes made in one event-loop iteration leave in one system call.

    uvicorn writes a response's head and its body separately, and uvloop sends each write at
    once: two system calls and two TCP segments for every small answer, the largest part of
    what an OCSP answer from memory costs. Joined at the end of the iteration, they go as one;
    the order of writes, closing and flow control are unchanged (everything else is the real
    transport's).
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():  # else the client went away: nobody to tell
                self._transport.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    # The rest is the real transport's.
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()


class _HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a ``_CoalescingTransport``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport has the methods of asyncio.Transport, not the class.
        super().connection_made(_CoalescingTransport(cast(asyncio.Transport, transport), self.loop))


class EventLoopWorker(UvicornWorker):  # type: ignore[misc]  # subclasses gunicorn's Worker
    """gunicorn worker running uvicorn's event loop (uvloop, httptools' C parser where
    installed): connections are accepted and parsed without Python per byte, remembered OCSP
    answers are sent from the loop (``revocation.fastpath.OcspAsgi``), and everything else runs
    in the worker's thread pool through the WSGI bridge.

    Whose address a request comes from stays the app's decision (``TRUSTED_PROXIES``), not
    uvicorn's: it must not rewrite the client address from X-Forwarded-For.
    """

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": _HttpProtocol,
        "ws": "none",
        "proxy_headers": False,
        "server_header": False,
        "lifespan": "off",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.access_log = bool(self.cfg.accesslog)


# A request body up to this size is read in the event loop before the app runs: the thread
# then reads it from memory instead of asking the loop for each part. Larger bodies, and bodies
# of unknown length (chunked), are read from the loop as the app asks for them.
PREREAD_BYTES = 64 * 1024
# The response bytes a thread collects before it starts handing them to the loop piece by
# piece (a large download); anything smaller leaves in one hand-off when the app returns.
BUFFER_BYTES = 256 * 1024


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    length = None
    for name, value in headers:
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None  # repeated or malformed: the streamed path, as before
            length = int(value)
    return length


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


class _Exchange:
    """One request's response as the app's thread produces it (PEP 3333's start_response and
    write), collected in memory and handed to the loop once, unless it grows beyond
    BUFFER_BYTES: then it is sent piece by piece, each piece waiting for the loop (flow
    control stays the server's)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        self.loop = loop
        self.send = send
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.streaming = False  # the head (and some of the body) went to the loop already

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            if self.streaming:  # PEP 3333: too late to replace the head
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.headers is not None:
            raise AssertionError("start_response called twice without exc_info")
        self.status = int(status.split(" ", 1)[0])
        self.headers = [
            (name.strip().encode("latin-1").lower(), value.strip().encode("latin-1"))
            for name, value in headers
        ]
        return self.write

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.streaming:
            self._send_now({"type": "http.response.body", "body": bytes(data), "more_body": True})
            return
        self.chunks.append(bytes(data))
        self.size += len(data)
        if self.size > BUFFER_BYTES:
            self._start_streaming()

    def _start_streaming(self) -> None:
        if self.headers is None:
            raise AssertionError("the app wrote a body before start_response")
        self.streaming = True
        self._send_now(
            {"type": "http.response.start", "status": self.status, "headers": self.headers}
        )
        body, self.chunks, self.size = b"".join(self.chunks), [], 0
        self._send_now({"type": "http.response.body", "body": body, "more_body": True})

    def _send_now(self, message: dict[str, Any]) -> None:
        asyncio.run_coroutine_threadsafe(_awaited(self.send(message)), self.loop).result()

    def run(self, app: WSGIApplication, environ: WSGIEnvironment) -> None:
        """Call the app in a worker thread and collect (or stream) its answer."""
        iterable = app(environ, self.start_response)
        try:
            for chunk in iterable:
                self.write(chunk)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
        if self.headers is None:
            raise AssertionError("the app returned without calling start_response")


class WsgiBridge:
    """ASGI app running a WSGI app in a pool of ``threads`` threads.

    In place of a2wsgi's ``WSGIMiddleware``, which passes every part of a request and of its
    answer between the thread and the loop by a round trip (a thread hand-off and a wake-up of
    the loop each: the head, each body part, the end), the largest cost of a small API answer
    outside its view. Here a small request's body is read in the loop first, and the thread
    hands back the whole answer when the app returns: one hand-off each way. Large or
    chunked bodies and large answers still stream (``PREREAD_BYTES``, ``BUFFER_BYTES``); the
    environ is a2wsgi's (``build_environ``), and the app runs in a copy of the loop's context
    as there.
    """

    def __init__(self, app: WSGIApplication, threads: int) -> None:
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="WSGI")

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":  # lifespan is off and websockets "none" in the worker
            raise ValueError(f"the WSGI bridge serves HTTP only, not {scope['type']!r}")
        loop = asyncio.get_running_loop()
        length = _content_length(scope["headers"])
        body: Any
        if length is not None and length <= PREREAD_BYTES:
            data = await read_body(receive)
            if data is None:
                return  # the client went away before sending its request: nobody to answer
            body = io.BytesIO(data)
        else:
            body = Body(loop, cast(Any, receive))  # a2wsgi's TypedDicts, unused here
        environ = cast("WSGIEnvironment", build_environ(cast(Any, scope), body))
        exchange = _Exchange(loop, send)
        context = contextvars.copy_context()
        await loop.run_in_executor(
            self.executor, functools.partial(context.run, exchange.run, self.app, environ)
        )
        if exchange.streaming:
            await send({"type": "http.response.body", "body": b"".join(exchange.chunks)})
            return
        await send(
            {"type": "http.response.start", "status": exchange.status, "headers": exchange.headers}
        )
        await send({"type": "http.response.body", "body": b"".join(exchange.chunks)})


def event_loop_app(app: Flask, threads: int) -> Any:
    """The ASGI app of an event-loop worker: the OCSP memory in front of the WSGI app, which
    runs in ``threads`` threads."""

    fastpath = app.wsgi_app
    if not isinstance(fastpath, OcspFastPath):
        raise TypeError("create_app installs the OCSP fast path as app.wsgi_app")
    return OcspAsgi(fastpath, WsgiBridge(app, threads))


class _Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type information
    def __init__(self, options: dict[str, Any], *, tls: bool, event_loop: bool) -> None:
        self.options = options
        self.tls = tls
        self.event_loop = event_loop
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn >= 24 listens for gunicornc at one path per user ($HOME/.gunicorn), which
            # a second server on the host would take over; nothing here uses it.
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        # Each worker builds its own app after the fork: its own database pool and, lazily,
        # its own PKCS#11 library initialisation and sessions (hsm.Token checks the PID too).
        app = create_app()
        # What the app holds from now on (modules, configuration, engines) is never garbage:
        # out of the collector's sight, it no longer makes every full collection walk it.
        gc.collect()
        gc.freeze()
        if self.event_loop:
            return event_loop_app(app, int(self.options["threads"]))
        return PeerCertificate(app) if self.tls else app


def client_ca_certificates() -> list[x509.Certificate]:
    """Whom TLS accepts client certificates from: our root and issuing CA certificates and
    every enabled tax-bureau trust anchor (needs an app context)."""
    from ca_service.binding.models import TrustPurpose
    from ca_service.binding.service import trusted_certificates
    from ca_service.db import db
    from ca_service.models import Certificate, CertificateKind, CertificateStatus

    ours = db.session.scalars(
        sa.select(Certificate.der)
        .where(
            Certificate.kind.in_((CertificateKind.ROOT_CA, CertificateKind.ISSUING_CA)),
            Certificate.status == CertificateStatus.ISSUED,
        )
        .order_by(Certificate.id)
    )
    certificates = [x509.load_der_x509_certificate(der) for der in ours if der]
    certificates += trusted_certificates(TrustPurpose.TAX)
    unique = {c.fingerprint(hashes.SHA256()): c for c in certificates}
    return list(unique.values())


def write_client_ca_bundle(path: Path, certificates: list[x509.Certificate]) -> None:
    """Write ``certificates`` as one PEM file, atomically (a worker never reads half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as sink:
            sink.write(b"".join(c.public_bytes(Encoding.PEM) for c in certificates))
            sink.flush()
            os.fsync(sink.fileno())
        os.chmod(tmp, 0o644)  # public certificates, nothing secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _generated_bundle(app: Flask) -> Path:
    from ca_service.db import db

    path = settings_of(app).var_dir / CLIENT_CA_BUNDLE
    with app.app_context():
        try:
            certificates = client_ca_certificates()
        finally:
            db.session.remove()
            db.engine.dispose()  # no pooled connection may cross the fork into the workers
    if not certificates:
        raise ConfigurationError(
            "there is no CA certificate to accept client certificates from: run "
            "`ca-service init` first, or pass --tls-client-ca"
        )
    write_client_ca_bundle(path, certificates)
    return path


def _no_password() -> bytes:
    return b""  # never prompt for a key passphrase on the terminal


def _check_tls_files(tls: TlsFiles, client_ca: Path) -> None:
    """Load the files once in the master, so a mistake fails at start-up with a clear message
    instead of in every worker at the first connection."""
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load the client CA certificates {client_ca}: {exc}"
        ) from None
    try:
        context.load_cert_chain(str(tls.certfile), str(tls.keyfile), password=_no_password)
        _accept_any_client_certificate(context)  # fails here, not in every worker
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load the TLS certificate {tls.certfile} with the key {tls.keyfile} "
            f"(PEM, unencrypted key, matching the certificate): {exc}"
        ) from None


# How a worker process serves (`ca-service serve --worker`).
EVENT_LOOP, THREADS, SYNC = "event-loop", "threads", "sync"
WORKER_KINDS = (EVENT_LOOP, THREADS, SYNC)


def run_gunicorn(
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    worker: str | None = None,
    tls: TlsFiles | None = None,
    access_log: bool = True,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Validate the configuration once, then serve with ``workers`` forked processes of the
    ``worker`` kind: ``event-loop`` (the default without TLS; the app runs in ``threads``
    threads), ``threads`` (gunicorn's gthread, ``threads`` each; the default with TLS) or
    ``sync`` (one request at a time, for behind a buffering proxy); over TLS when ``tls`` is
    given, asking each client for a certificate; one access-log line per request on stdout if
    ``access_log``.

    :raises ConfigurationError: for wrong settings or unusable TLS files.
    """
    worker = worker or (THREADS if tls is not None else EVENT_LOOP)
    if worker not in WORKER_KINDS:
        raise ConfigurationError(f"unknown worker kind {echoed(worker)}: one of {WORKER_KINDS}")
    if worker == EVENT_LOOP and tls is not None:
        # The app reads the client certificate from gunicorn's socket (PeerCertificate);
        # uvicorn does not hand it to the app.
        raise ConfigurationError("TLS client certificates need --worker threads (or sync)")
    app = create_app()  # fail fast in the master with a clear message, before forking
    check_login(app)  # a wrong PIN stops here, offered to the token once
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        # gunicorn would make a sync worker with several threads a gthread one.
        "threads": 1 if worker == SYNC else threads,
        "worker_class": {EVENT_LOOP: EventLoopWorker, THREADS: "gthread", SYNC: "sync"}[worker],
        "accesslog": "-" if access_log else None,
        "timeout": 60,
    }
    if tls is not None:
        client_ca = tls.client_ca or _generated_bundle(app)
        _check_tls_files(tls, client_ca)
        options.update(
            certfile=str(tls.certfile),
            keyfile=str(tls.keyfile),
            ca_certs=str(client_ca),
            # Asked for, not required: without one a client gets no SSL_CLIENT_CERT and signs
            # in another way. Any presented certificate completes the handshake
            # (_accept_any_client_certificate); the app says why it refuses one.
            cert_reqs=int(ssl.CERT_OPTIONAL),
            ssl_context=_tls_context,
        )
        if announce is not None:
            announce(f"TLS: client certificates accepted from the CAs in {client_ca}")
    _Gunicorn(options, tls=tls is not None, event_loop=worker == EVENT_LOOP).run()
