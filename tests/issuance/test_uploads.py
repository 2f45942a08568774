"""Bad uploads and requests get a clear message and a 4xx; every seal verdict reaches the
employer's page; stored documents are served with the sniffed type, never the client's."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from flask.testing import FlaskClient

from ca_service.db import db
from ca_service.extensions import settings_of
from ca_service.issuance.models import Application, DocumentType
from tests.auth.flows import csrf_token
from tests.issuance.conftest import (
    EmployerAccount,
    MakeEmployer,
    employer_login,
    new_number,
    seal_for,
    software_csr,
)
from tests.issuance.seal_factory import (
    Authority,
    flip_byte,
    make_seal_ca,
    minimal_pdf,
    minimal_png,
    seal_pdf,
    sign_detached,
)
from tests.issuance.test_flow import attach_csr, new_application, submit, upload

LICENCE = DocumentType.BUSINESS_LICENCE


def post_raw_upload(
    client: FlaskClient, application_id: int, doc_type: DocumentType, content: bytes
) -> tuple[int, str]:
    """Upload with a hand-made multipart body: for large files the test client would spool a
    dict's file into a temporary file that it never closes (a ResourceWarning)."""
    path = f"/applications/{application_id}"
    boundary = "b0undary"
    fields = {"csrf_token": csrf_token(client, path), "doc_type": doc_type.value}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    body += content + f"\r\n--{boundary}--\r\n".encode()
    response = client.post(
        f"{path}/documents",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    return response.status_code, response.get_data(as_text=True)


@pytest.fixture
def draft(
    app: Flask, make_employer: MakeEmployer, trusted_seal_ca: Authority
) -> tuple[FlaskClient, int, EmployerAccount]:
    account = make_employer()
    client = employer_login(app.test_client(), account)
    return client, new_application(client), account


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"just some text, not a document\n", "is not a PDF, PNG or JPEG"),
        (b"%PDF-1.7\n this is not really a PDF", "Business licence"),
    ],
    ids=["empty", "text", "fake-pdf"],
)
def test_unusable_files_are_refused_with_a_reason(
    draft: tuple[FlaskClient, int, EmployerAccount], content: bytes, message: str
) -> None:
    client, application_id, _ = draft
    status, text = upload(client, application_id, LICENCE, content)
    assert status == 400
    assert message in text
    with client.application.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        assert application.documents == []


def test_a_document_above_the_limit_is_refused(
    app: Flask, draft: tuple[FlaskClient, int, EmployerAccount]
) -> None:
    app.extensions["ca_settings"] = settings_of(app).with_overrides(MAX_DOCUMENT_MB=1)
    client, application_id, _ = draft
    content = b"%PDF-1.7\n" + b"0" * 1_200_000
    status, text = post_raw_upload(client, application_id, LICENCE, content)
    assert status == 400
    assert "is 1.1 MB; the limit is 1 MB" in text
    # Just over the limit: enough decimals to differ from it.
    status, text = post_raw_upload(client, application_id, LICENCE, content[: 1048576 + 1])
    assert status == 400
    assert "is 1.000001 MB; the limit is 1 MB" in text


def test_a_request_body_above_the_upload_cap_is_a_413(
    draft: tuple[FlaskClient, int, EmployerAccount],
) -> None:
    client, application_id, _ = draft
    status, _ = post_raw_upload(client, application_id, LICENCE, b"\0" * (11 * 1024 * 1024))
    assert status == 413


def test_each_seal_verdict_is_shown_to_the_employer(
    draft: tuple[FlaskClient, int, EmployerAccount], trusted_seal_ca: Authority
) -> None:
    client, application_id, account = draft
    seal = seal_for(trusted_seal_ca, account.number)
    signed = seal_pdf(minimal_pdf(b"licence"), seal)
    other = seal_for(trusted_seal_ca, new_number(), organisation="Somebody Else Ltd")
    rogue = seal_for(make_seal_ca("Rogue", now=dt.datetime.now(dt.UTC)), account.number)
    png = minimal_png()
    cases = {
        DocumentType.APPLICATION_FORM: (signed, None, "verified"),
        DocumentType.DECLARATION_FORM: (flip_byte(signed, b"licence"), None, "tampered"),
        DocumentType.COMMITMENT_LETTER: (
            seal_pdf(minimal_pdf(), other),
            None,
            "other organisation",
        ),
        DocumentType.BUSINESS_LICENCE: (seal_pdf(minimal_pdf(), rogue), None, "untrusted signer"),
        DocumentType.SOCIAL_SECURITY_REGISTRATION: (
            png,
            sign_detached(png, seal, signing_time=dt.datetime.now(dt.UTC)),
            "verified",
        ),
        DocumentType.LEGAL_REPRESENTATIVE_ID: (png, None, "needs officer attestation"),
    }
    for doc_type, (content, signature, verdict) in cases.items():
        status, text = upload(client, application_id, doc_type, content, signature=signature)
        assert status == 302, text
        assert verdict in text, (doc_type, text)
    # Tampered, foreign and untrusted documents stop the submission, each named.
    assert attach_csr(client, application_id, software_csr())[0] == 302
    status, text = submit(client, application_id)
    assert status == 400
    for name in ("Online-declaration", "User commitment letter", "Business licence"):
        assert name in text


def test_documents_are_served_with_the_sniffed_type_and_no_active_content(
    draft: tuple[FlaskClient, int, EmployerAccount],
) -> None:
    client, application_id, _ = draft
    status, _ = upload(client, application_id, LICENCE, minimal_png(), filename="<script>.pdf")
    assert status == 302
    with client.application.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        document = application.documents[0]
        assert document.filename == "_script_.pdf"
    response = client.get(f"/applications/{application_id}/documents/{document.id}")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_chinese_file_name_is_served_with_a_latin1_safe_header(
    draft: tuple[FlaskClient, int, EmployerAccount],
) -> None:
    client, application_id, _ = draft
    status, _ = upload(client, application_id, LICENCE, minimal_png(), filename="营业执照.png")
    assert status == 302
    with client.application.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        document_id = application.documents[0].id
    response = client.get(f"/applications/{application_id}/documents/{document_id}")
    header = response.headers["Content-Disposition"]
    header.encode("latin-1")  # what a WSGI server can send
    assert "filename*=UTF-8''%E8%90%A5%E4%B8%9A%E6%89%A7%E7%85%A7.png" in header


def _rsa_csr(bits: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")])
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(key, hashes.SHA256())
        .public_bytes(Encoding.PEM)
    )


def _badly_signed_csr() -> bytes:
    der = x509.load_pem_x509_csr(software_csr()).public_bytes(Encoding.DER)
    return der[:-3] + bytes([der[-3] ^ 0xFF]) + der[-2:]


@pytest.mark.parametrize(
    ("csr", "message"),
    [
        (b"-----BEGIN CERTIFICATE REQUEST-----\nnonsense\n", "not a PKCS#10 certificate request"),
        (_rsa_csr(1024), "use at least 2048"),
        (software_csr(ec.SECP521R1()), "use P-256 or P-384"),
        (_badly_signed_csr(), "signature does not verify"),
    ],
    ids=["malformed", "rsa-1024", "p-521", "bad-signature"],
)
def test_bad_certificate_requests_are_refused(
    draft: tuple[FlaskClient, int, EmployerAccount], csr: bytes, message: str
) -> None:
    client, application_id, _ = draft
    path = f"/applications/{application_id}"
    response = client.post(
        f"{path}/request",
        data={"csrf_token": csrf_token(client, path), "file": (io.BytesIO(csr), "req.csr")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_a_submitted_application_is_read_only(
    app: Flask, make_employer: MakeEmployer, trusted_seal_ca: Authority
) -> None:
    from tests.issuance.test_flow import complete_application

    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = complete_application(client, account, trusted_seal_ca)
    status, text = upload(client, application_id, LICENCE, minimal_png())
    assert status == 409
    assert "cannot be changed" in text
