"""Run the app under gunicorn from `ca-service serve`, optionally over TLS with client
certificates (asked for, not required: password sign-in keeps working without one)."""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from gunicorn.app.base import BaseApplication

from ca_service.app import create_app, settings_of
from ca_service.errors import ConfigurationError

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


def _tls_context(
    conf: Any,  # gunicorn's hook signature; the factory already applied it
    default_factory: Callable[[], ssl.SSLContext],
) -> ssl.SSLContext:
    pid = os.getpid()
    context = _contexts.get(pid)
    if context is None:  # two threads racing here build two equal contexts: harmless
        context = default_factory()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The handshake proves possession of the key and the chain; validity in time is the
        # app's decision (auth.verification), so that the owner of an expired certificate
        # gets the page that names the ways back in instead of a failed handshake.
        context.verify_flags |= _X509_V_FLAG_NO_CHECK_TIME
        _contexts[pid] = context
    return context


class _Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type information
    def __init__(self, options: dict[str, Any], *, tls: bool) -> None:
        self.options = options
        self.tls = tls
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask | PeerCertificate:
        # Each worker builds its own app after the fork: its own database pool and, lazily,
        # its own PKCS#11 library initialisation and sessions (hsm.Token checks the PID too).
        app = create_app()
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
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load the TLS certificate {tls.certfile} with the key {tls.keyfile} "
            f"(PEM, unencrypted key, matching the certificate): {exc}"
        ) from None


def run_gunicorn(
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    tls: TlsFiles | None = None,
    access_log: bool = True,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Validate the configuration once, then serve with ``workers`` forked processes of
    ``threads`` threads each (1: gunicorn's sync worker); over TLS when ``tls`` is given, asking
    each client for a certificate; one access-log line per request on stdout if
    ``access_log``.

    :raises ConfigurationError: for wrong settings or unusable TLS files.
    """
    app = create_app()  # fail fast in the master with a clear message, before forking
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        # Threads keep slow clients from holding a worker; one thread per worker is gunicorn's
        # sync worker, leaner per request (behind a buffering proxy slow clients are its job).
        "worker_class": "gthread" if threads > 1 else "sync",
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
            # in another way. A presented certificate that does not chain to ``ca_certs``
            # fails the handshake.
            cert_reqs=int(ssl.CERT_OPTIONAL),
            ssl_context=_tls_context,
        )
        if announce is not None:
            announce(f"TLS: client certificates accepted from the CAs in {client_ca}")
    _Gunicorn(options, tls=tls is not None).run()
