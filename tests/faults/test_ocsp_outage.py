"""OCSP while the database or the HSM is unavailable (issue #16, scope 2): the responder
answers an unsigned RFC 6960 OCSPResponse with status tryLater (HTTP 200, the OCSP content
type, not stored), which `openssl ocsp` reads as "Responder Error: trylater"; a database
fault at any statement of a signed answer gives either the answer or tryLater; requests
without a nonce are still answered from the pre-signed responses while only the HSM is away."""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from ca_service.revocation.fastpath import OCSP_RESPONSE
from hsm.token import RESCAN_INTERVAL
from tests.conftest import HsmEnv
from tests.hsm.support import token_away
from tests.pki_tools import write_pem
from tests.revocation.conftest import (  # noqa: F401  (make_certificate: a fixture)
    Issued,
    MakeCertificate,
    make_certificate,
)
from tests.revocation.ocsp_tools import OCSP_REQUEST, ca_certificates, ocsp_request
from tests.statements import database_down, failing_statement

MAX_STATEMENTS = 40


def _status(client: FlaskClient, body: bytes) -> ocsp.OCSPResponseStatus:
    response = client.post("/ocsp", data=body, headers=OCSP_REQUEST)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == OCSP_RESPONSE
    assert response.headers["Cache-Control"] == "no-store"
    return ocsp.load_der_ocsp_response(response.data).response_status


def _until_signed_again(client: FlaskClient, body: bytes) -> None:
    """Wait until the layer has found the token again (it rescans) and signs."""
    deadline = time.monotonic() + 20 * RESCAN_INTERVAL
    while _status(client, body) is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        assert time.monotonic() < deadline, "the token was not picked up again"
        time.sleep(RESCAN_INTERVAL / 4)


@contextmanager
def _served_here(app: Flask) -> Iterator[str]:
    """The test app behind a real HTTP server in this process (so that faults injected here
    reach it); its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _openssl_ocsp(
    base: str, tmp: Path, issued: Issued, issuing: x509.Certificate, *extra: str
) -> str:
    proc = subprocess.run(
        [
            "openssl",
            "ocsp",
            "-issuer",
            str(write_pem(tmp / "issuer.pem", [issuing])),
            "-cert",
            str(write_pem(tmp / "cert.pem", [issued.certificate])),
            "-url",
            f"{base}/ocsp",
            "-noverify",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return proc.stdout + proc.stderr


def test_database_down_answers_try_later(
    app: Flask,
    client: FlaskClient,
    make_certificate: MakeCertificate,  # noqa: F811
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    stored = ocsp_request(issued.certificate, issuing)
    with database_down(app) as tried:
        for body in (stored, ocsp_request(issued.certificate, issuing, nonce=b"n" * 16)):
            assert _status(client, body) is ocsp.OCSPResponseStatus.TRY_LATER
    assert tried
    assert _status(client, stored) is ocsp.OCSPResponseStatus.SUCCESSFUL


def test_a_database_fault_in_a_signed_answer_is_the_answer_or_try_later(
    app: Flask,
    client: FlaskClient,
    make_certificate: MakeCertificate,  # noqa: F811
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate(presign=False)  # signed live, and stored, at the request
    later = 0
    for n in range(1, MAX_STATEMENTS + 1):
        body = ocsp_request(issued.certificate, issuing, nonce=secrets.token_bytes(16))
        with failing_statement(app, n) as failed:
            status = _status(client, body)
        if not failed:
            assert status is ocsp.OCSPResponseStatus.SUCCESSFUL
            break
        # The fast path's own read failing only hands the request on to the view.
        assert status in (ocsp.OCSPResponseStatus.SUCCESSFUL, ocsp.OCSPResponseStatus.TRY_LATER)
        later += status is ocsp.OCSPResponseStatus.TRY_LATER
    else:
        pytest.fail(f"a signed OCSP answer ran more than {MAX_STATEMENTS} statements")
    assert later > 3, (n, later)


def test_hsm_away_answers_try_later_to_what_needs_a_signature(
    app: Flask,
    client: FlaskClient,
    make_certificate: MakeCertificate,  # noqa: F811
    hsm_env: HsmEnv,
    tmp_path: Path,
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    with token_away(hsm_env, tmp_path):
        nonce = ocsp_request(issued.certificate, issuing, nonce=b"n" * 16)
        assert _status(client, nonce) is ocsp.OCSPResponseStatus.TRY_LATER
        stored = ocsp_request(issued.certificate, issuing)
        assert _status(client, stored) is ocsp.OCSPResponseStatus.SUCCESSFUL
    _until_signed_again(client, nonce)


def test_openssl_reads_try_later_during_an_outage(
    app: Flask,
    make_certificate: MakeCertificate,  # noqa: F811
    hsm_env: HsmEnv,
    tmp_path: Path,
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    with _served_here(app) as base:
        assert "cert.pem: good" in _openssl_ocsp(base, tmp_path, issued, issuing)
        with database_down(app):
            for extra in ((), ("-no_nonce",)):
                output = _openssl_ocsp(base, tmp_path, issued, issuing, *extra)
                assert "Responder Error: trylater" in output, (extra, output)
        with token_away(hsm_env, tmp_path):
            output = _openssl_ocsp(base, tmp_path, issued, issuing)  # a nonce: to be signed
            assert "Responder Error: trylater" in output, output
            output = _openssl_ocsp(base, tmp_path, issued, issuing, "-no_nonce")
            assert "cert.pem: good" in output, output  # pre-signed, no HSM needed
    nonce = ocsp_request(issued.certificate, issuing, nonce=b"n" * 16)
    _until_signed_again(app.test_client(), nonce)
