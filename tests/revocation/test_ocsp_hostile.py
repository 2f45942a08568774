"""Hostile OCSP requests, by POST and GET: damaged, truncated or random bodies get an OCSP
answer (malformedRequest, unauthorized, or a signed status) or a 4xx, never a 500."""

from __future__ import annotations

import base64
import datetime as dt

from cryptography.x509 import ocsp
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.revocation.conftest import MakeCertificate
from tests.revocation.ocsp_tools import OCSP_REQUEST, ca_certificates, ocsp_request

FUZZ = settings(
    max_examples=120,
    deadline=dt.timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


def _mutations(original: bytes) -> st.SearchStrategy[bytes]:
    flips = st.tuples(st.integers(0, len(original) - 1), st.integers(1, 255)).map(
        lambda f: original[: f[0]] + bytes([original[f[0]] ^ f[1]]) + original[f[0] + 1 :]
    )
    cuts = st.integers(0, len(original) - 1).map(lambda n: original[:n])
    splices = st.tuples(st.integers(0, len(original)), st.binary(min_size=1, max_size=40)).map(
        lambda s: original[: s[0]] + s[1] + original[s[0] :]
    )
    return st.one_of(flips, cuts, splices, st.binary(max_size=600))


def _answered(status: int, body: bytes) -> None:
    assert status < 500, body[:200]
    if status == 200:
        assert ocsp.load_der_ocsp_response(body).response_status in {
            ocsp.OCSPResponseStatus.SUCCESSFUL,
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
            ocsp.OCSPResponseStatus.UNAUTHORIZED,
        }


def test_damaged_requests_never_break_the_responder(
    app: Flask, make_certificate: MakeCertificate
) -> None:
    _root, issuing, _responder = ca_certificates(app)
    issued = make_certificate()
    original = ocsp_request(issued.certificate, issuing, nonce=b"0123456789abcdef")
    client = app.test_client()

    @FUZZ
    @given(_mutations(original))
    def check(body: bytes) -> None:
        posted = client.post("/ocsp", data=body, headers=OCSP_REQUEST)
        _answered(posted.status_code, posted.data)
        encoded = base64.b64encode(body).decode()
        fetched = client.get(f"/ocsp/{encoded}")
        _answered(fetched.status_code, fetched.data)

    check()
