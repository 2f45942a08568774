"""Fixtures of the API tests: bearer tokens for employers and officers, a submitted
application, all made through the API itself (accounts come from the shared factories)."""

from __future__ import annotations

import io
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.auth.conftest import make_officer  # noqa: F401  (fixture re-exported)
from tests.auth.flows import MakeOfficer, code_at, load_user, sms_code_for
from tests.issuance.conftest import (  # noqa: F401  (fixtures re-exported)
    EmployerAccount,
    MakeEmployer,
    make_employer,
    seal_ca,
    sealed_documents,
    software_csr,
    trusted_seal_ca,
)
from tests.issuance.seal_factory import Authority, minimal_pdf

API = "/api/v1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: TestResponse) -> dict[str, str]:
    """The JSON error body of a failed call (never an HTML page)."""
    assert response.is_json, (response.status_code, response.get_data(as_text=True)[:300])
    error: dict[str, str] = response.get_json()["error"]
    return error


def token_call(client: FlaskClient, **fields: str) -> TestResponse:
    """One POST /auth/token with these fields, as sent."""
    return client.post(f"{API}/auth/token", json=fields)


def request_token(
    client: FlaskClient, username: str, password: str, totp_code: str | None = None
) -> TestResponse:
    """Ask for a token as a client program would. An employer administrator's first call
    answers 401 ``sms_code_required`` (the code goes out by SMS); the call is then repeated
    with the code read from the outbox. Other answers are returned as they are."""
    fields = {"username": username, "password": password}
    if totp_code is not None:
        fields["totp_code"] = totp_code
    response = token_call(client, **fields)
    if response.status_code == 401 and error_of(response)["code"] == "sms_code_required":
        user = load_user(client.application, username)
        response = token_call(client, **fields, sms_code=sms_code_for(client.application, user.id))
    return response


def token_of(response: TestResponse) -> str:
    assert response.status_code == 201, response.get_data(as_text=True)
    token: str = response.get_json()["token"]
    return token


@dataclass(frozen=True)
class ApiEmployer:
    account: EmployerAccount
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@pytest.fixture
def api_employer(client: FlaskClient, make_employer: MakeEmployer) -> Callable[[], ApiEmployer]:  # noqa: F811
    """A registered, mobile-confirmed employer administrator with a bearer token."""

    def make() -> ApiEmployer:
        account = make_employer()
        return ApiEmployer(
            account, token_of(request_token(client, account.username, account.password))
        )

    return make


@pytest.fixture
def officer_token(client: FlaskClient, make_officer: MakeOfficer) -> Callable[[], str]:  # noqa: F811
    """A bearer token of a new RA officer (password + TOTP)."""

    def make() -> str:
        officer = make_officer()
        response = request_token(
            client, officer.user.username, officer.password, code_at(officer.seed)
        )
        return token_of(response)

    return make


def upload(
    client: FlaskClient,
    token: str,
    application_id: int,
    doc_type: str,
    content: bytes,
    *,
    filename: str = "doc.pdf",
    extra: dict[str, Any] | None = None,
) -> TestResponse:
    data: dict[str, Any] = {"doc_type": doc_type, "file": (io.BytesIO(content), filename)}
    return client.post(
        f"{API}/applications/{application_id}/documents",
        data={**data, **(extra or {})},
        headers=bearer(token),
        content_type="multipart/form-data",
    )


def new_application(client: FlaskClient, token: str, key_source: str = "csr") -> int:
    response = client.post(
        f"{API}/applications", json={"key_source": key_source}, headers=bearer(token)
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    application_id: int = response.get_json()["id"]
    return application_id


def put_csr(client: FlaskClient, token: str, application_id: int, pem: bytes) -> TestResponse:
    return client.put(
        f"{API}/applications/{application_id}/csr",
        data=pem,
        content_type="application/pkcs10",
        headers=bearer(token),
    )


def submitted_application(
    client: FlaskClient,
    employer: ApiEmployer,
    ca: Authority,
    *,
    unsigned: Collection[str] = (),
) -> int:
    """An application with six documents (sealed, or unsigned scans for ``unsigned`` types) and
    a CSR, submitted through the API."""
    application_id = new_application(client, employer.token)
    for doc_type, pdf in sealed_documents(ca, employer.account.number).items():
        content = minimal_pdf(b"paper-sealed scan") if doc_type.value in unsigned else pdf
        response = upload(client, employer.token, application_id, doc_type.value, content)
        assert response.status_code == 201, response.get_data(as_text=True)
    response = put_csr(client, employer.token, application_id, software_csr())
    assert response.status_code == 200, response.get_data(as_text=True)
    response = client.post(f"{API}/applications/{application_id}/submit", headers=employer.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return application_id
