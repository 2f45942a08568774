"""The guided application page: a step per document in order, the seal verdict right after an
upload, the checklist of what is missing, submit refused while incomplete, translated steps."""

from __future__ import annotations

import io
import re

from flask import Flask
from flask.testing import FlaskClient

from ca_service.issuance.models import DocumentType
from tests.auth.flows import csrf_token
from tests.issuance.conftest import MakeEmployer, employer_login, seal_for, sealed_documents
from tests.issuance.seal_factory import Authority, minimal_pdf, seal_pdf
from tests.issuance.test_flow import new_application, submit

MISSING = re.compile(r'<ul class="checklist" id="missing">(.*?)</ul>', re.S)


def _upload(client: FlaskClient, application_id: int, doc_type: DocumentType, pdf: bytes) -> str:
    path = f"/applications/{application_id}"
    response = client.post(
        f"{path}/documents",
        data={
            "csrf_token": csrf_token(client, path),
            "doc_type": doc_type.value,
            "file": (io.BytesIO(pdf), "doc.pdf"),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    assert f"step={doc_type.value}" in response.headers["Location"]
    return client.get(response.headers["Location"]).get_data(as_text=True)


def _missing(page: str) -> int:
    match = MISSING.search(page)
    return 0 if match is None else match.group(1).count("<li>")


def test_guided_flow(
    app: Flask, client: FlaskClient, make_employer: MakeEmployer, trusted_seal_ca: Authority
) -> None:
    account = make_employer()
    employer_login(client, account)
    application_id = new_application(client)
    page = client.get(f"/applications/{application_id}").get_data(as_text=True)
    positions = [page.index(f"step={t.value}") for t in DocumentType]
    assert positions == sorted(positions)
    assert "Step 1 of 8" in page
    assert 'aria-current="step">Certificate application form' in page
    assert account.legal_name in page  # pre-filled from the employer record
    assert _missing(page) == 7  # six documents and the CSR

    documents = sealed_documents(trusted_seal_ca, account.number)
    page = _upload(
        client,
        application_id,
        DocumentType.APPLICATION_FORM,
        documents[DocumentType.APPLICATION_FORM],
    )
    verdict = page[page.index('id="verdict"') :]
    assert "Valid seal of" in verdict[:2000]
    assert _missing(page) == 6

    other = seal_for(trusted_seal_ca, "91350100M000100Y7X"[:18], organisation="Other Co")
    page = _upload(
        client, application_id, DocumentType.DECLARATION_FORM, seal_pdf(minimal_pdf(), other)
    )
    verdict = page[page.index('id="verdict"') :][:2000]
    assert "not to your organisation" in verdict
    assert "cannot be submitted as it is" in verdict

    status, text = submit(client, application_id)
    assert status == 400
    assert "Before submitting, provide" in text
    assert re.search(r"<button type=\"submit\" disabled", text)

    es = client.get(f"/applications/{application_id}", headers={"Accept-Language": "es"})
    assert "Paso " in es.get_data(as_text=True)
    zh = client.get(f"/applications/{application_id}", headers={"Accept-Language": "zh-CN"})
    assert "核对并提交" in zh.get_data(as_text=True)


def test_another_employer_gets_404(
    app: Flask, client: FlaskClient, make_employer: MakeEmployer
) -> None:
    employer_login(client, make_employer())
    application_id = new_application(client)
    stranger = app.test_client()
    employer_login(stranger, make_employer())
    assert stranger.get(f"/applications/{application_id}?step=submit").status_code == 404
