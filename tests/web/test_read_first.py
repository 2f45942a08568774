"""Public read paths (CRL, OCSP from storage, /verify) do not queue behind a writer on SQLite:
their transactions begin DEFERRED, while everything else begins IMMEDIATE."""

from __future__ import annotations

import base64
import sqlite3
import time

import pytest
from cryptography.x509 import ocsp
from flask import Flask
from flask.testing import FlaskClient

from tests.revocation.conftest import MakeCertificate, make_certificate  # noqa: F401  (fixture)
from tests.revocation.ocsp_tools import OCSP_REQUEST, ca_certificates, ocsp_request


def test_crl_is_served_while_another_connection_holds_the_write_lock(
    app: Flask, client: FlaskClient, app_overrides: dict[str, object]
) -> None:
    url = str(app_overrides["DATABASE_URL"])
    if not url.startswith("sqlite:///"):
        pytest.skip("PostgreSQL reads never wait for writers")
    writer = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=1)
    try:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a long issuance would
        started = time.monotonic()
        response = client.get("/pki/crl/employer.crl")
        assert response.status_code == 200
        assert time.monotonic() - started < 2  # no wait for the 15-second busy timeout
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_stored_ocsp_answers_are_served_while_another_connection_holds_the_write_lock(
    app: Flask,
    client: FlaskClient,
    app_overrides: dict[str, object],
    make_certificate: MakeCertificate,  # noqa: F811
) -> None:
    url = str(app_overrides["DATABASE_URL"])
    if not url.startswith("sqlite:///"):
        pytest.skip("PostgreSQL reads never wait for writers")
    issued = make_certificate(presign=True)
    _root, issuing, _responder = ca_certificates(app)
    request = ocsp_request(issued.certificate, issuing)
    writer = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=1)
    try:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a long issuance would
        started = time.monotonic()
        posted = client.post("/ocsp", data=request, headers=OCSP_REQUEST)
        encoded = base64.b64encode(request).decode()
        got = client.get(f"/ocsp/{encoded}")
        assert time.monotonic() - started < 2  # no wait for the 15-second busy timeout
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    for response in (posted, got):
        assert response.status_code == 200
        answer = ocsp.load_der_ocsp_response(response.data)
        assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
