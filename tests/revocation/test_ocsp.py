"""The OCSP responder: RFC 6960 answers, checked by the `openssl ocsp` client over real HTTP."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import CliInvoke
from tests.pki_tools import errors_only, pkilint_findings
from tests.revocation.ocsp_tools import (
    OCSP_REQUEST,
    ca_certificates,
    ocsp_request,
    openssl_ocsp,
)


def _post(client: FlaskClient, body: bytes) -> ocsp.OCSPResponse:
    response = client.post("/ocsp", data=body, headers=OCSP_REQUEST)
    assert response.status_code == 200
    assert response.mimetype == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.data)


@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256()])  # noqa: S303  (CertID)
def test_good_answer_matches_certid_and_verifies(
    app: Flask, client: FlaskClient, algorithm: hashes.HashAlgorithm
) -> None:
    _, issuing, responder = ca_certificates(app)
    answer = _post(client, ocsp_request(responder, issuing, algorithm, nonce=b"n" * 16))
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == responder.serial_number
    assert isinstance(answer.hash_algorithm, type(algorithm))
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    # Signed by the delegated responder, which the issuing CA certified.
    signer = answer.certificates[0]
    assert signer == responder
    public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert answer.signature_hash_algorithm is not None
    public.verify(
        answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm)
    )


def test_get_is_cacheable(app: Flask, client: FlaskClient) -> None:
    _, issuing, responder = ca_certificates(app)
    encoded = base64.b64encode(ocsp_request(responder, issuing)).decode()
    response = client.get(f"/ocsp/{encoded}")
    assert response.status_code == 200
    assert response.cache_control.max_age is not None
    assert 0 < response.cache_control.max_age <= 3600
    answer = ocsp.load_der_ocsp_response(response.data)
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD


@pytest.mark.parametrize("body", [b"", b"\x30\x03\x02\x01", b"not an ocsp request at all"])
def test_malformed_requests(client: FlaskClient, body: bytes) -> None:
    assert _post(client, body).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_truncated_request(app: Flask, client: FlaskClient) -> None:
    _, issuing, responder = ca_certificates(app)
    body = ocsp_request(responder, issuing)[:-5]
    assert _post(client, body).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    garbage = client.get("/ocsp/%%%not-base64")
    assert garbage.status_code == 200
    status = ocsp.load_der_ocsp_response(garbage.data).response_status
    assert status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_oversize_and_wrong_content_type(client: FlaskClient) -> None:
    assert client.post("/ocsp", data=b"\x30" * 9000, headers=OCSP_REQUEST).status_code == 413
    wrong = client.post("/ocsp", data=b"\x30\x00", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 415


def test_ca_we_do_not_serve_is_unauthorized(app: Flask, client: FlaskClient) -> None:
    root, issuing, _ = ca_certificates(app)
    # The issuing CA's own status: its issuer (the root) has no delegated responder here.
    answer = _post(client, ocsp_request(issuing, root))
    assert answer.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_response_passes_pkilint(app: Flask, client: FlaskClient, tmp_path: Path) -> None:
    _, issuing, responder = ca_certificates(app)
    response = client.post("/ocsp", data=ocsp_request(responder, issuing), headers=OCSP_REQUEST)
    findings = pkilint_findings("lint_ocsp_response", response.data, tmp_path)
    assert errors_only(findings) == [], findings


def _impostor(issuing: x509.Certificate) -> x509.Certificate:
    """A certificate claiming our issuing CA's name but signed by another key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "impostor")]))
        .issuer_name(issuing.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_openssl_client_good_revoked_unknown(
    app: Flask, served: str, cli: CliInvoke, tmp_path: Path
) -> None:
    root, issuing, responder = ca_certificates(app)
    assert f"{tmp_path / 'cert.pem'}: good" in openssl_ocsp(
        served, tmp_path, responder, issuing, root
    )
    assert f"{tmp_path / 'cert.pem'}: unknown" in openssl_ocsp(
        served, tmp_path, _impostor(issuing), issuing, root
    )

    # The only end-entity certificate so far is the responder's own: revoke it as after a key
    # compromise; a revoked responder refuses to sign (tryLater) until a new one is rotated in.
    revoked = cli("revoke", format(responder.serial_number, "x"), "--reason", "keyCompromise")
    assert revoked.exit_code == 0, revoked.output
    assert cli("ocsp", "rotate").exit_code == 0
    output = openssl_ocsp(served, tmp_path, responder, issuing, root)
    assert f"{tmp_path / 'cert.pem'}: revoked" in output
    assert "Reason: keyCompromise" in output
