"""A refused certificate is told in the language of whoever asks, although the verification
keeps things per process (the validated paths of the trust contexts, the retry state of a tax
CA whose CRL could not be fetched): the same certificate refused in Spanish, then English, then
Chinese gets each answer in its own language, with the same refusal code."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ca_service.db import utcnow
from tests.api.conftest import API, ApiEmployer, api_employer, error_of  # noqa: F401
from tests.auth.certificates import sign
from tests.binding.test_binding import TaxWorld, _refresh, bind, tax  # noqa: F401
from tests.issuance.conftest import make_employer  # noqa: F401  (used by api_employer)

LANGUAGES = {"es": "es-ES,es;q=0.9", "en": "en-GB,en;q=0.8", "zh_Hans": "zh-Hans,zh;q=0.9"}


def _tax_login(
    client: FlaskClient, certificate: x509.Certificate, key: Any, accept_language: str
) -> TestResponse:
    headers = {"Accept-Language": accept_language}
    nonce = client.post(f"{API}/auth/challenges", json={}, headers=headers).get_json()["challenge"]
    return client.post(
        f"{API}/auth/certificate",
        json={
            "challenge": nonce,
            "certificate": certificate.public_bytes(Encoding.PEM).decode(),
            "signature": sign(key, f"ca-service login challenge: {nonce}"),
        },
        headers=headers,
    )


def _bind(
    client: FlaskClient,
    employer: ApiEmployer,
    certificate: x509.Certificate,
    key: Any,
    accept_language: str,
) -> TestResponse:
    challenge = client.post(
        f"{API}/auth/challenges", json={"purpose": "bind"}, headers=employer.headers
    )
    nonce = challenge.get_json()["challenge"]
    return client.post(
        f"{API}/bindings",
        json={
            "challenge": nonce,
            "certificate": certificate.public_bytes(Encoding.PEM).decode(),
            "signature": sign(key, f"ca-service bind challenge: {nonce}"),
        },
        headers={"Accept-Language": accept_language},
    )


def _messages(ask: Callable[[str], TestResponse], code: str) -> dict[str, str]:
    """The refusal's message per language, asked in the order of LANGUAGES."""
    messages = {}
    for language, header in LANGUAGES.items():
        error = error_of(ask(header))
        assert error["code"] == code, (language, error)
        messages[language] = error["message"]
    return messages


def test_a_revoked_tax_certificate_is_refused_in_each_askers_language(
    client: FlaskClient,
    tax: TaxWorld,  # noqa: F811
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = tax.ca.issue(employer.account.number)
    assert bind(client, employer, certificate, key).status_code == 201
    # Signed in once: its path is validated and kept by this process.
    assert _tax_login(client, certificate, key, LANGUAGES["en"]).status_code == 201
    tax.revoked.append((certificate.serial_number, x509.ReasonFlags.key_compromise))
    tax.publish()
    _refresh(client, tax)

    messages = _messages(lambda header: _tax_login(client, certificate, key, header), "revoked")
    assert messages["es"].startswith("Este certificado tributario fue revocado el ")
    assert "(motivo: keyCompromise)" in messages["es"]
    assert "was revoked" not in messages["es"]
    assert messages["en"].startswith("This tax certificate was revoked on ")
    assert "(reason: keyCompromise)" in messages["en"]
    assert "revocado" not in messages["en"]
    assert messages["zh_Hans"].startswith("该税务证书已于 ")
    assert "被吊销\uff08原因\uff1akeyCompromise\uff09" in messages["zh_Hans"]
    # Dates in each language too (ISO in English, CLDR forms otherwise).
    year = str(utcnow().year)
    assert f" {year}-" in messages["en"]
    assert f" {year}," in messages["es"] or f" {year} " in messages["es"]
    assert f"{year}年" in messages["zh_Hans"]


def test_a_kept_crl_failure_is_told_in_each_askers_language(
    client: FlaskClient,
    tax: TaxWorld,  # noqa: F811
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    # The CA publishes only an out-of-date CRL: the first refusal fetches it and keeps why
    # the fetch did not help for RETRY_AFTER; the next ones are told that kept reason.
    employer = api_employer()
    certificate, key = tax.ca.issue(employer.account.number)
    tax.server.publish(
        "/intermediate.crl",
        tax.ca.crl(
            this_update=utcnow() - dt.timedelta(days=8),
            next_update=utcnow() - dt.timedelta(days=1),
        ),
    )
    fetches = len(tax.server.requests)

    messages = _messages(
        lambda header: _bind(client, employer, certificate, key, header), "revocation_unknown"
    )
    # One fetch for the first refusal only: the others were answered from the kept state.
    assert tax.server.requests[fetches:] == ["/intermediate.crl"]
    assert messages["es"].startswith(
        "No se puede comprobar la revocación de los certificados de la CA tributaria "
    )
    assert "también está desactualizada (nextUpdate" in messages["es"]
    assert messages["en"].startswith(
        "Certificates of the tax CA CN=Test Tax Bureau Issuing CA,O=Test Tax Bureau,C=CN cannot"
    )
    assert "is out of date too (nextUpdate" in messages["en"]
    assert "desactualizada" not in messages["en"]
    assert "无法检查税务 CA" in messages["zh_Hans"]
    assert "也已过期\uff08nextUpdate" in messages["zh_Hans"]
    assert "out of date" not in messages["zh_Hans"]
    assert "desactualizada" not in messages["zh_Hans"]
