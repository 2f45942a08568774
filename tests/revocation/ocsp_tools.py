"""OCSP helpers shared by the revocation tests: the CA certificates, requests, `openssl ocsp`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from flask import Flask

from ca_service.authorities.service import (
    ISSUING_SLUG,
    ROOT_SLUG,
    current_ocsp_responder,
    get_authority,
    load_certificate,
)
from tests.pki_tools import write_pem

OCSP_REQUEST = {"Content-Type": "application/ocsp-request"}


def ca_certificates(app: Flask) -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    """(root, issuing CA, current OCSP responder) certificates."""
    with app.app_context():
        root = get_authority(ROOT_SLUG).certificate
        issuing = get_authority(ISSUING_SLUG).certificate
        responder = current_ocsp_responder(get_authority(ISSUING_SLUG))
        assert root is not None
        assert issuing is not None
        assert responder is not None
        return load_certificate(root), load_certificate(issuing), load_certificate(responder)


def ocsp_request(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    algorithm: hashes.HashAlgorithm | None = None,
    nonce: bytes | None = None,
) -> bytes:
    # SHA-1 CertIDs are what RFC 5019 clients send; they identify, they do not protect.
    default = hashes.SHA1()  # noqa: S303
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or default)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def openssl_ocsp(
    url: str,
    tmp: Path,
    cert: x509.Certificate,
    issuing: x509.Certificate,
    root: x509.Certificate,
    extra: tuple[str, ...] = (),
) -> str:
    proc = subprocess.run(
        [
            "openssl",
            "ocsp",
            "-issuer",
            str(write_pem(tmp / "issuer.pem", [issuing])),
            "-cert",
            str(write_pem(tmp / "cert.pem", [cert])),
            "-CAfile",
            str(write_pem(tmp / "root.pem", [root])),
            "-verify_other",
            str(write_pem(tmp / "other.pem", [issuing])),
            "-url",
            f"{url}/ocsp",
            "-resp_text",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Response verify OK" in proc.stderr + proc.stdout
    return proc.stdout


def assert_same_headers(ours: dict[str, str], theirs: dict[str, str], what: str) -> None:
    """Two answers' headers are the same, but for a max-age one apart: it counts down to the
    nextUpdate, so answers made a second apart differ by one."""
    ours, theirs = dict(ours), dict(theirs)
    age, their_age = _max_age(ours), _max_age(theirs)
    assert abs(age - their_age) <= 1, what
    assert (age < 0) == (their_age < 0), what
    assert ours == theirs, what


def _max_age(headers: dict[str, str]) -> int:
    """The Cache-Control max-age of ``headers``, which it removes from them (-1: none)."""
    head, found, seconds = headers.get("cache-control", "").rpartition("max-age=")
    if not found:
        return -1
    headers["cache-control"] = head
    return int(seconds)
