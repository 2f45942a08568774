"""Helpers of the TLS client-certificate tests: a server certificate for 127.0.0.1 from a
throwaway CA (and the ``server_tls`` fixture of it, shared by tests/auth and tests/browser), key
files, `ca-service serve` as a subprocess (plain or TLS) and HTTPS calls."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import free_port, process_env
from tests.issuance.seal_factory import make_seal_ca
from tests.pki_tools import write_pem

LOOPBACK = "127.0.0.1"


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class KeyPair:
    """A certificate file (PEM, leaf first) and its key file, as a TLS client loads them."""

    cert_file: Path
    key_file: Path


def key_pair(
    directory: Path,
    name: str,
    key: ec.EllipticCurvePrivateKey,
    certificates: Sequence[x509.Certificate],
) -> KeyPair:
    return KeyPair(
        cert_file=write_pem(directory / f"{name}.crt", certificates),
        key_file=write_key(directory / f"{name}.key", key),
    )


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate for 127.0.0.1 and the throwaway CA a client trusts it by."""

    ca_file: Path
    server: KeyPair

    def client_context(self, identity: KeyPair | None = None) -> ssl.SSLContext:
        """What a careful client uses: verifies the server; presents ``identity`` if given."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if identity is not None:
            context.load_cert_chain(str(identity.cert_file), str(identity.key_file))
        return context


def make_server_tls(directory: Path) -> ServerTls:
    """A throwaway software CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca = make_seal_ca("Test TLS Server CA", now=now)  # any small software CA will do
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address(LOOPBACK))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return ServerTls(
        ca_file=write_pem(directory / "server-ca.pem", [ca.certificate]),
        server=key_pair(directory, "server", key, [certificate]),
    )


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ServerTls:
    """The server certificate of the module's `ca-service serve --tls`."""
    return make_server_tls(tmp_path_factory.mktemp("server-tls"))


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes
    cookies: tuple[str, ...]  # "name=value" of each Set-Cookie, to send back as a browser does

    def json(self) -> Any:
        return json.loads(self.body)


def _reply(response: http.client.HTTPResponse) -> Reply:
    pairs = response.getheaders()
    cookies = tuple(v.split(";", 1)[0] for k, v in pairs if k.lower() == "set-cookie")
    return Reply(response.status, dict(pairs), response.read(), cookies)


def https_call(
    port: int,
    method: str,
    path: str,
    *,
    context: ssl.SSLContext,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One request over a new TLS connection to 127.0.0.1:``port`` (no redirects followed)."""
    connection = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=30)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        return _reply(connection.getresponse())
    finally:
        connection.close()


def http_call(
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One plain-HTTP request to 127.0.0.1:``port``."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        return _reply(connection.getresponse())
    finally:
        connection.close()


SERVE = (sys.executable, "-m", "ca_service", "serve")


def serve_environment(
    overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a `ca-service` subprocess on the test database and token, with
    ``environ`` (raw variables) on top."""
    env = process_env(dict(overrides))
    env.update(environ or {})
    return env


@dataclass(frozen=True)
class Served:
    base_url: str
    port: int
    log: Path


@contextmanager
def serve_process(
    overrides: Mapping[str, Any],
    log: Path,
    *,
    tls: ServerTls | None = None,
    environ: Mapping[str, str] | None = None,
    workers: int = 1,
) -> Iterator[Served]:
    """`ca-service serve` (with ``--tls`` when ``tls`` is given) on a free loopback port, on
    the test database and token, like the shared ``served`` fixture; stopped at the end."""
    port = free_port()
    env = serve_environment(overrides, environ)
    args = [*SERVE, "--port", str(port)]
    args += ["--workers", str(workers)]
    if tls is not None:
        args += ["--tls", "--tls-cert", str(tls.server.cert_file)]
        args += ["--tls-key", str(tls.server.key_file)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_until_ready(port, tls, proc, log)
        scheme = "https" if tls is not None else "http"
        yield Served(base_url=f"{scheme}://{LOOPBACK}:{port}", port=port, log=log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_until_ready(
    port: int, tls: ServerTls | None, proc: subprocess.Popen[bytes], log: Path
) -> None:
    for _ in range(150):
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {log.read_text()}")
        try:
            if tls is not None:
                reply = https_call(port, "GET", "/auth/login", context=tls.client_context())
            else:
                reply = http_call(port, "GET", "/auth/login")
        except OSError:
            time.sleep(0.1)
            continue
        if reply.status == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"server did not start: {log.read_text()}")
