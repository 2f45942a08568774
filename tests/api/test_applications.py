"""The employer's and the officer's calls when something is wrong: other employers' data,
bad CSRs and files, incomplete applications, decisions made twice, an HSM that fails."""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from flask.testing import FlaskClient

from hsm import HSMConfig, Token, find_softhsm_module
from tests.api.conftest import (
    API,
    ApiEmployer,
    bearer,
    error_of,
    new_application,
    put_csr,
    submitted_application,
    upload,
)
from tests.conftest import HsmEnv
from tests.issuance.conftest import software_csr
from tests.issuance.seal_factory import Authority, minimal_pdf


def weak_csr() -> bytes:
    # A deliberately weak key: the CA must refuse it.
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "weak")]))
        .sign(key, hashes.SHA256())
        .public_bytes(Encoding.PEM)
    )


def test_draft_checks(client: FlaskClient, api_employer: Callable[[], ApiEmployer]) -> None:
    employer, other = api_employer(), api_employer()
    application_id = new_application(client, employer.token)
    path = f"{API}/applications/{application_id}"

    # Another employer's application does not exist for them.
    for response in (
        client.get(path, headers=other.headers),
        put_csr(client, other.token, application_id, software_csr()),
        client.post(f"{path}/submit", headers=other.headers),
    ):
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"
    assert client.get(f"{API}/applications", headers=other.headers).get_json() == {
        "applications": []
    }

    bad_source = client.post(
        f"{API}/applications", json={"key_source": "usb"}, headers=employer.headers
    )
    assert bad_source.status_code == 400
    assert "'key_source' must be one of: csr, counter" in error_of(bad_source)["message"]

    malformed = put_csr(client, employer.token, application_id, b"-----BEGIN nonsense")
    assert malformed.status_code == 400
    assert "not a PKCS#10" in error_of(malformed)["message"]
    weak = put_csr(client, employer.token, application_id, weak_csr())
    assert weak.status_code == 400
    assert "1024 bits" in error_of(weak)["message"]
    wrong_type = client.put(
        f"{path}/csr", data=software_csr(), content_type="text/plain", headers=employer.headers
    )
    assert wrong_type.status_code == 415
    as_json = client.put(
        f"{path}/csr", json={"csr_pem": software_csr().decode()}, headers=employer.headers
    )
    assert as_json.status_code == 200, as_json.get_data(as_text=True)
    assert as_json.get_json()["key_description"] == "EC P-256"

    empty = upload(client, employer.token, application_id, "application_form", b"")
    assert empty.status_code == 400
    assert "empty" in error_of(empty)["message"]
    not_pdf = upload(client, employer.token, application_id, "application_form", b"hello")
    assert not_pdf.status_code == 400
    assert "not a PDF, PNG or JPEG" in error_of(not_pdf)["message"]
    bad_type = upload(client, employer.token, application_id, "passport", minimal_pdf())
    assert bad_type.status_code == 400
    assert "'doc_type'" in error_of(bad_type)["message"]
    no_file = client.post(
        f"{path}/documents",
        data={"doc_type": "application_form"},
        headers=employer.headers,
        content_type="multipart/form-data",
    )
    assert no_file.status_code == 400
    assert "'file'" in error_of(no_file)["message"]
    as_json_upload = client.post(
        f"{path}/documents", json={"doc_type": "application_form"}, headers=employer.headers
    )
    assert as_json_upload.status_code == 415

    incomplete = client.post(f"{path}/submit", headers=employer.headers)
    assert incomplete.status_code == 400
    assert "Before submitting, provide" in error_of(incomplete)["message"]
    no_certificate = client.get(f"{path}/certificate", headers=employer.headers)
    assert no_certificate.status_code == 404


def test_unattested_scan_blocks_approval_until_attested(
    client: FlaskClient,
    api_employer: Callable[[], ApiEmployer],
    officer_token: Callable[[], str],
    trusted_seal_ca: Authority,
) -> None:
    employer = api_employer()
    application_id = submitted_application(
        client, employer, trusted_seal_ca, unsigned=("commitment_letter",)
    )
    officer = bearer(officer_token())
    path = f"{API}/review/{application_id}"
    review = client.get(path, headers=officer).get_json()
    assert any("not attested" in b for b in review["approval_blockers"])

    refused = client.post(f"{path}/approve", headers=officer)
    assert refused.status_code == 400
    assert "paper seal is not attested" in error_of(refused)["message"]

    letter = next(d for d in review["documents"] if d["doc_type"] == "commitment_letter")
    sealed = next(d for d in review["documents"] if d["doc_type"] == "application_form")
    assert letter["verdict"] == "unsigned"
    not_a_scan = client.post(f"{path}/documents/{sealed['id']}/attest", headers=officer)
    assert not_a_scan.status_code == 409
    attested = client.post(f"{path}/documents/{letter['id']}/attest", headers=officer)
    assert attested.status_code == 200
    assert attested.get_json()["attested"] is True
    no_validity = client.put(
        f"{path}/documents/{letter['id']}/validity", json={"valid_until": None}, headers=officer
    )
    assert no_validity.status_code == 400  # a commitment letter does not expire
    bad_date = client.put(
        f"{path}/documents/{letter['id']}/validity",
        json={"valid_until": "31/12/2099"},
        headers=officer,
    )
    assert bad_date.status_code == 400
    assert "'valid_until'" in error_of(bad_date)["message"]

    approved = client.post(f"{path}/approve", headers=officer)
    assert approved.status_code == 200, approved.get_data(as_text=True)
    assert approved.get_json()["status"] == "issued"
    twice = client.post(f"{path}/approve", headers=officer)
    assert twice.status_code == 409
    assert error_of(twice)["code"] == "conflict"
    rejected_late = client.post(f"{path}/reject", json={"reason": "late"}, headers=officer)
    assert rejected_late.status_code == 409

    # The employer cannot change a submitted application.
    frozen = put_csr(client, employer.token, application_id, software_csr())
    assert frozen.status_code == 409


def test_rejection_needs_a_reason(
    client: FlaskClient,
    api_employer: Callable[[], ApiEmployer],
    officer_token: Callable[[], str],
    trusted_seal_ca: Authority,
) -> None:
    employer = api_employer()
    application_id = submitted_application(client, employer, trusted_seal_ca)
    officer = bearer(officer_token())
    path = f"{API}/review/{application_id}/reject"
    assert client.post(path, json={"reason": "  "}, headers=officer).status_code == 400
    assert client.post(path, headers=officer).status_code == 415
    response = client.post(path, json={"reason": "The licence is illegible."}, headers=officer)
    assert response.status_code == 200
    assert response.get_json()["status"] == "rejected"
    mine = client.get(f"{API}/applications/{application_id}", headers=employer.headers)
    assert mine.get_json()["rejection_reason"] == "The licence is illegible."
    queue = client.get(f"{API}/review?status=rejected", headers=officer).get_json()
    assert [a["id"] for a in queue["applications"]] == [application_id]
    assert client.get(f"{API}/review?status=draft", headers=officer).status_code == 400


def test_hsm_failure_on_approval_is_503_and_issue_retries(
    client: FlaskClient,
    api_employer: Callable[[], ApiEmployer],
    officer_token: Callable[[], str],
    trusted_seal_ca: Authority,
    hsm_env: HsmEnv,
) -> None:
    employer = api_employer()
    application_id = submitted_application(client, employer, trusted_seal_ca)
    officer = bearer(officer_token())
    path = f"{API}/review/{application_id}"

    # A real token that lacks the issuing CA's key: the HSM refuses to sign.
    label, pin = hsm_env.new_token("empty")
    module = find_softhsm_module()
    assert module
    app = client.application
    real = app.extensions["hsm_token"]
    empty = Token(HSMConfig(module_path=module, token_label=label, pin=pin, pool_size=1))
    app.extensions["hsm_token"] = empty
    try:
        response = client.post(f"{path}/approve", headers=officer)
    finally:
        app.extensions["hsm_token"] = real
        empty.close()
    assert response.status_code == 503
    assert error_of(response)["code"] == "service_unavailable"
    # The approval stands; issuance is retried with a new serial.
    assert client.get(path, headers=officer).get_json()["status"] == "approved"
    retried = client.post(f"{path}/issue", headers=officer)
    assert retried.status_code == 200, retried.get_data(as_text=True)
    assert retried.get_json()["status"] == "issued"
    serial = retried.get_json()["certificate"]["serial"]
    again = client.post(f"{path}/issue", headers=officer)  # idempotent
    assert again.get_json()["certificate"]["serial"] == serial
