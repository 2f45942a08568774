"""End to end through the web pages: register, confirm the SMS code from the outbox, apply
with sealed PDFs, officer approves, certificate issued, verified by openssl and pkilint."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.db import db
from ca_service.issuance.models import Application, ApplicationStatus, Document, DocumentType
from ca_service.outbox.models import OutboxMessage
from tests.auth.flows import csrf_token, location, post_form
from tests.conftest import CliInvoke
from tests.issuance.conftest import (
    EmployerAccount,
    MakeEmployer,
    employer_login,
    new_number,
    sealed_documents,
    software_csr,
)
from tests.issuance.seal_factory import Authority
from tests.pki_tools import errors_only, openssl_verify, pkilint_findings

CODE = re.compile(r"code is (\d{6})")


def _sms_code(cli: CliInvoke, mobile: str) -> str:
    result = cli("outbox", "list", "--to", mobile)
    assert result.exit_code == 0, result.output
    match = CODE.search(result.output)
    assert match, result.output
    return match.group(1)


def register(client: FlaskClient, number: str, **overrides: str) -> tuple[int, str]:
    data = {
        "registration_number": number,
        "legal_name": "Fujian Example Trading Co., Ltd.",
        "legal_representative_id": "",
        "administrator_name": "Li Hua",
        "mobile": "+86 138 0013 8000",
        "email": "hr@example.test",
        "password": "a long enough password",
        "confirm": "a long enough password",
        **overrides,
    }
    response = post_form(client, "/employers/register", data)
    return response.status_code, response.get_data(as_text=True)


def upload(
    client: FlaskClient,
    application_id: int,
    doc_type: DocumentType,
    content: bytes,
    *,
    filename: str = "doc.pdf",
    signature: bytes | None = None,
) -> tuple[int, str]:
    path = f"/applications/{application_id}"
    data: dict[str, object] = {
        "csrf_token": csrf_token(client, path),
        "doc_type": doc_type.value,
        "file": (io.BytesIO(content), filename),
    }
    if signature is not None:
        data["signature"] = (io.BytesIO(signature), filename + ".p7s")
    response = client.post(f"{path}/documents", data=data, content_type="multipart/form-data")
    text = response.get_data(as_text=True)
    if response.status_code == 302:
        text = client.get(path).get_data(as_text=True)
    return response.status_code, text


def new_application(client: FlaskClient, key_source: str = "csr") -> int:
    response = post_form(
        client, "/applications/new", {"key_source": key_source}, token_from="/applications/"
    )
    return int(location(response).rsplit("/", 1)[1])


def attach_csr(client: FlaskClient, application_id: int, pem: bytes) -> tuple[int, str]:
    path = f"/applications/{application_id}"
    response = client.post(
        f"{path}/request",
        data={"csrf_token": csrf_token(client, path), "pem": pem.decode()},
    )
    return response.status_code, response.get_data(as_text=True)


def submit(client: FlaskClient, application_id: int) -> tuple[int, str]:
    path = f"/applications/{application_id}"
    response = client.post(f"{path}/submit", data={"csrf_token": csrf_token(client, path)})
    return response.status_code, response.get_data(as_text=True)


def officer_post(client: FlaskClient, application_id: int, action: str, **data: str) -> int:
    path = f"/officer/applications/{application_id}"
    response = client.post(
        f"{path}/{action}", data={"csrf_token": csrf_token(client, path), **data}
    )
    return response.status_code


def complete_application(
    client: FlaskClient, account: EmployerAccount, ca: Authority, csr: bytes | None = None
) -> int:
    """A submitted application with six sealed PDFs and a CSR."""
    application_id = new_application(client)
    for doc_type, pdf in sealed_documents(ca, account.number).items():
        status, text = upload(client, application_id, doc_type, pdf)
        assert status == 302, text
    status, text = attach_csr(client, application_id, csr or software_csr())
    assert status == 302, text
    status, text = submit(client, application_id)
    assert status == 302, text
    return application_id


def test_whole_flow_in_the_browser_pages(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    trusted_seal_ca: Authority,
    officer_client: Callable[..., FlaskClient],
    tmp_path: Path,
) -> None:
    number = new_number()
    status, text = register(client, number)
    assert status == 302, text
    # Not signed in until the mobile number is confirmed with the code from the outbox.
    assert client.get("/applications/").status_code == 302
    code = _sms_code(cli, "+8613800138000")
    response = post_form(client, "/auth/confirm-mobile", {"code": code})
    assert location(response) == "/auth/home"

    account = EmployerAccount(0, 0, number, "", number, "")
    application_id = complete_application(client, account, trusted_seal_ca)
    page = client.get(f"/applications/{application_id}").get_data(as_text=True)
    assert "submitted" in page
    assert page.count("verified") >= 6
    assert "Submit for review" not in page  # read-only now

    officer = officer_client()
    queue = officer.get("/officer/applications/").get_data(as_text=True)
    assert f"/officer/applications/{application_id}" in queue
    assert officer_post(officer, application_id, "approve") == 302

    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        assert application.status is ApplicationStatus.ISSUED
        serial = application.certificate.serial if application.certificate else ""
        notices = db.session.scalars(
            sa.select(OutboxMessage.channel).where(OutboxMessage.dedupe_key.like("certificate:%"))
        ).all()
    assert sorted(c.value for c in notices) == ["email", "sms"]
    # The decision's audit event names every document it relied on by SHA-256.
    with app.app_context():
        approved = db.session.scalar(
            sa.select(AuditEvent.details).where(AuditEvent.action == "application.approved")
        )
        hashes = set(
            db.session.scalars(
                sa.select(Document.sha256).where(Document.application_id == application_id)
            )
        )
    assert approved is not None
    assert set(json.loads(approved)["documents"].values()) == hashes
    assert len(hashes) == len(DocumentType)

    # Delivery: PEM, DER, chain, PKCS#7, all the same certificate.
    pem = client.get(f"/applications/{application_id}/certificate.pem")
    assert pem.status_code == 200
    certificate = x509.load_pem_x509_certificate(pem.data)
    der = client.get(f"/applications/{application_id}/certificate.cer").data
    assert x509.load_der_x509_certificate(der) == certificate
    chain = x509.load_pem_x509_certificates(
        client.get(f"/applications/{application_id}/chain.pem").data
    )
    bundle = pkcs7.load_der_pkcs7_certificates(
        client.get(f"/applications/{application_id}/certificate.p7b").data
    )
    assert chain[0] == certificate
    assert len(chain) == 3
    assert set(bundle) == set(chain)

    # The subject comes from the registration, never from the CSR.
    subject = certificate.subject
    assert subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_IDENTIFIER)[0].value == number
    assert subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)[0].value == number
    assert "ignored" not in subject.rfc4514_string()
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]

    # openssl chains it to the root (as a TLS client certificate); pkilint finds no error.
    root, issuing = chain[2], chain[1]
    proc = openssl_verify(
        tmp_path,
        certificate,
        roots=[root],
        intermediates=[issuing],
        extra=["-purpose", "sslclient"],
    )
    assert proc.returncode == 0, proc.stderr
    assert errors_only(pkilint_findings("lint_pkix_cert", der, tmp_path)) == []

    # The public status page and the printable notice with its QR code.
    verify = client.get(f"/verify/{serial}")
    assert verify.status_code == 200
    assert "Valid" in verify.get_data(as_text=True)
    assert "Set-Cookie" not in verify.headers
    notice = client.get(f"/applications/{application_id}/notice").get_data(as_text=True)
    assert f"http://ca.test/verify/{serial}" in notice
    assert "data:image/svg+xml;base64," in notice


def test_the_certificate_is_not_shown_to_another_employer(
    app: Flask,
    make_employer: MakeEmployer,
    trusted_seal_ca: Authority,
    officer_client: Callable[..., FlaskClient],
) -> None:
    owner, other = make_employer(), make_employer()
    owner_client = employer_login(app.test_client(), owner)
    application_id = complete_application(owner_client, owner, trusted_seal_ca)
    assert officer_post(officer_client(), application_id, "approve") == 302
    intruder = employer_login(app.test_client(), other)
    for path in ("", "/certificate.pem", "/notice", "/documents/1"):
        assert intruder.get(f"/applications/{application_id}{path}").status_code == 404
