"""End to end through the JSON API only: register, confirm the SMS code from the outbox, get a
token, apply with sealed PDFs and a CSR, an officer approves (issued at once), the employer
downloads the certificate in every format, and the public status says valid."""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from flask import Flask
from flask.testing import FlaskClient

from ca_service.db import db
from ca_service.issuance.models import DocumentType
from ca_service.outbox.models import Channel, OutboxMessage
from tests.api.conftest import (
    API,
    bearer,
    error_of,
    put_csr,
    request_token,
    token_of,
    upload,
)
from tests.issuance.conftest import new_number, sealed_documents, software_csr
from tests.issuance.seal_factory import Authority

CODE = re.compile(r"code is (\d{6})")
MOBILE = "+8613800138000"
PASSWORD = "a long enough password"


def sms_code(app: Flask, mobile: str) -> str:
    """The newest code sent by SMS to ``mobile`` (read from the outbox table)."""
    with app.app_context():
        body = db.session.scalar(
            sa.select(OutboxMessage.body)
            .where(OutboxMessage.channel == Channel.SMS, OutboxMessage.recipient == mobile)
            .order_by(OutboxMessage.id.desc())
        )
    match = CODE.search(body or "")
    assert match, body
    return match.group(1)


def test_whole_flow_through_the_api(
    app: Flask,
    client: FlaskClient,
    trusted_seal_ca: Authority,
    officer_token: Callable[[], str],
) -> None:
    number = new_number()
    response = client.post(
        f"{API}/employers",
        json={
            "registration_number": number,
            "legal_name": "Fujian Example Trading Co., Ltd.",
            "administrator_name": "Li Hua",
            "mobile": "+86 138 0013 8000",
            "email": "hr@example.test",
            "password": PASSWORD,
        },
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    registered = response.get_json()
    assert registered["username"] == number
    assert registered["employer"]["mobile_confirmed"] is False
    assert "confirm-mobile" in registered["next"]
    assert "Set-Cookie" not in response.headers  # the API never starts a browser session

    # No token before the mobile number is confirmed; a new code can be asked for.
    refused = request_token(client, number, PASSWORD)
    assert refused.status_code == 403
    assert "confirm your mobile number" in error_of(refused)["message"].lower()
    resent = client.post(
        f"{API}/employers/resend-code", json={"username": number, "password": PASSWORD}
    )
    assert resent.status_code == 202, resent.get_data(as_text=True)
    confirmed = client.post(
        f"{API}/employers/confirm-mobile",
        json={"username": number, "password": PASSWORD, "code": sms_code(app, MOBILE)},
    )
    assert confirmed.status_code == 200, confirmed.get_data(as_text=True)
    assert confirmed.get_json()["employer"]["mobile_confirmed"] is True

    token = token_of(request_token(client, number, PASSWORD))
    headers = bearer(token)
    created = client.post(f"{API}/applications", json={"key_source": "csr"}, headers=headers)
    assert created.status_code == 201, created.get_data(as_text=True)
    application_id = created.get_json()["id"]
    assert created.headers["Location"].endswith(f"{API}/applications/{application_id}")
    assert created.get_json()["status"] == "draft"
    assert len(created.get_json()["missing"]) == 7  # six documents and the CSR

    for doc_type, pdf in sealed_documents(trusted_seal_ca, number).items():
        response = upload(client, token, application_id, doc_type.value, pdf)
        assert response.status_code == 201, response.get_data(as_text=True)
        document = response.get_json()
        assert document["verdict"] == "verified"
        assert document["doc_type"] == doc_type.value
        assert len(document["sha256"]) == 64
        assert document["signed_at"].endswith("Z")
    response = put_csr(client, token, application_id, software_csr())
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["key_description"] == "EC P-256"
    submitted = client.post(f"{API}/applications/{application_id}/submit", headers=headers)
    assert submitted.status_code == 200, submitted.get_data(as_text=True)
    assert submitted.get_json()["status"] == "submitted"
    assert submitted.get_json()["missing"] == []

    officer = bearer(officer_token())
    queue = client.get(f"{API}/review?status=submitted&q={number[-6:]}", headers=officer)
    assert [a["id"] for a in queue.get_json()["applications"]] == [application_id]
    review = client.get(f"{API}/review/{application_id}", headers=officer).get_json()
    assert review["approval_blockers"] == []
    assert len(review["documents"]) == len(DocumentType)
    licence = next(d for d in review["documents"] if d["doc_type"] == "business_licence")
    response = client.put(
        f"{API}/review/{application_id}/documents/{licence['id']}/validity",
        json={"valid_until": "2099-12-31"},
        headers=officer,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["valid_until"] == "2099-12-31"

    approved = client.post(f"{API}/review/{application_id}/approve", headers=officer)
    assert approved.status_code == 200, approved.get_data(as_text=True)
    body = approved.get_json()
    assert body["status"] == "issued"
    serial = body["certificate"]["serial"]
    assert [e["status"] for e in body["history"]][-2:] == ["approved", "issued"]

    detail = client.get(f"{API}/applications/{application_id}", headers=headers).get_json()
    assert detail["status"] == "issued"
    assert detail["certificate"]["serial"] == serial
    # History notes in the caller's language, with the stable code beside them.
    chinese = client.get(
        f"{API}/applications/{application_id}", headers={**headers, "Accept-Language": "zh-CN"}
    ).get_json()
    issued = chinese["history"][-1]
    assert issued["note_code"] == "issued"
    assert issued["note"] == f"证书已签发（序列号 {serial}）。"  # noqa: RUF001 (Chinese punctuation)
    assert detail["history"][-1]["note"] == f"Certificate issued (serial {serial})."

    pem = client.get(f"{API}/applications/{application_id}/certificate", headers=headers)
    assert pem.status_code == 200
    assert pem.mimetype == "application/x-pem-file"
    assert f"{serial}-certificate.pem" in pem.headers["Content-Disposition"]
    certificate = x509.load_pem_x509_certificate(pem.data)
    assert format(certificate.serial_number, "x") == serial
    subject = certificate.subject
    assert subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_IDENTIFIER)[0].value == number
    der = client.get(f"{API}/applications/{application_id}/certificate?format=der", headers=headers)
    assert der.mimetype == "application/pkix-cert"
    assert x509.load_der_x509_certificate(der.data) == certificate
    chain = x509.load_pem_x509_certificates(
        client.get(
            f"{API}/applications/{application_id}/certificate?format=chain", headers=headers
        ).data
    )
    p7b = client.get(f"{API}/applications/{application_id}/certificate?format=p7b", headers=headers)
    assert p7b.mimetype == "application/pkcs7-mime"
    assert chain[0] == certificate
    assert len(chain) == 3
    assert set(pkcs7.load_der_pkcs7_certificates(p7b.data)) == set(chain)
    bad_format = client.get(
        f"{API}/applications/{application_id}/certificate?format=zip", headers=headers
    )
    assert bad_format.status_code == 400
    assert "format" in error_of(bad_format)["message"]

    status = client.get(f"{API}/certificates/{serial}/status")
    assert status.status_code == 200
    assert status.get_json()["status"] == "valid"
    assert status.get_json()["sha256"] == body["certificate"]["sha256"]

    # The token ends when revoked; the audit log has both ends of its life.
    assert client.delete(f"{API}/auth/token", headers=headers).status_code == 204
    assert client.get(f"{API}/applications", headers=headers).status_code == 401
    from ca_service.audit.models import AuditEvent

    with app.app_context():
        actions = set(db.session.scalars(sa.select(AuditEvent.action)))
    assert {"api.token_created", "api.token_revoked", "certificate.issued"} <= actions
