"""Inputs the harnesses found (or limits they rely on), kept as plain tests through the app."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from flask.testing import FlaskClient

from ca_service.auth.verification import (
    MAX_CHAIN_BYTES,
    MAX_CHAIN_CERTIFICATES,
    CertificateRefused,
    Refusal,
    parse_chain,
)
from tests.fuzz.parsers import OCSP_SEEDS
from tests.issuance.test_hostile_parsers import CA

SHA1_OID = bytes.fromhex("2b0e03021a")


def _unknown_hash_request() -> bytes:
    der = OCSP_SEEDS[0]
    assert SHA1_OID in der
    return der.replace(SHA1_OID, bytes.fromhex("2b0e03021b"))  # 1.3.14.3.2.27: no hash known


def test_ocsp_request_with_an_unknown_certid_hash_is_malformed_not_a_500(
    client: FlaskClient,
) -> None:
    bad = _unknown_hash_request()
    posted = client.post("/ocsp", data=bad, headers={"Content-Type": "application/ocsp-request"})
    fetched = client.get("/ocsp/" + base64.b64encode(bad).decode())
    for response in (posted, fetched):
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        answer = ocsp.load_der_ocsp_response(response.get_data())
        assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize(
    "data",
    [
        b"-----BEGIN CERTIFICATE-----\n" + b"A" * MAX_CHAIN_BYTES,
        CA.certificate.public_bytes(Encoding.PEM) * (MAX_CHAIN_CERTIFICATES + 1),
    ],
    ids=["too-long", "too-many"],
)
def test_presented_chains_are_bounded(data: bytes) -> None:
    with pytest.raises(CertificateRefused) as caught:
        parse_chain(data)
    assert caught.value.refusal is Refusal.UNREADABLE
    # A chain within the limits still reads.
    assert len(parse_chain(CA.certificate.public_bytes(Encoding.PEM) * 2)) == 2
