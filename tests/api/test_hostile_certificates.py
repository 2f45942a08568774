"""Certificates a client controls (login, binding, renewal CSRs) with key parameters the
cryptography library cannot load: a clear 400, never a 500."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from flask.testing import FlaskClient

from tests.api.conftest import API, ApiEmployer

P256 = bytes.fromhex("06082A8648CE3D030107")
UNKNOWN_CURVE = bytes.fromhex("06082A8648CE3D030108")  # 1.2.840.10045.3.1.8: no such curve


def _unknown_curve_certificate() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Unknown Curve Co")])
    now = dt.datetime.now(dt.UTC)
    der = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
        .public_bytes(Encoding.DER)
    )
    assert der.count(P256) == 1
    patched = x509.load_der_x509_certificate(der.replace(P256, UNKNOWN_CURVE))
    return patched.public_bytes(Encoding.PEM).decode()


def _challenge(client: FlaskClient, purpose: str, headers: dict[str, str] | None = None) -> str:
    response = client.post(f"{API}/auth/challenges", json={"purpose": purpose}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    nonce: str = response.get_json()["challenge"]
    return nonce


@pytest.mark.parametrize("purpose", ["login", "bind"])
def test_a_certificate_with_an_unknown_curve_is_refused(
    client: FlaskClient, api_employer: Callable[[], ApiEmployer], purpose: str
) -> None:
    headers = api_employer().headers if purpose == "bind" else None
    path = f"{API}/auth/certificate" if purpose == "login" else f"{API}/bindings"
    response = client.post(
        path,
        json={
            "challenge": _challenge(client, purpose, headers),
            "certificate": _unknown_curve_certificate(),
            "signature": base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode(),
        },
        headers=headers,
    )
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    assert response.get_json()["error"]["message"]
