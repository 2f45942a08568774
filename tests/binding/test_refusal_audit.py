"""Refused bindings and unbindings that matter for security stay on the audit record although
the request fails and its boundary rolls back: through the API, the web pages (a TLS client
certificate on the connection) and the service."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth.models import Role, User
from ca_service.binding import bindings
from ca_service.binding.models import CertificateBinding
from ca_service.db import db, utcnow
from ca_service.errors import Forbidden
from tests.api.conftest import (  # noqa: F401  (fixtures used by name)
    API,
    ApiEmployer,
    api_employer,
    error_of,
)
from tests.auth.certificates import sign
from tests.auth.conftest import MakeOfficer
from tests.auth.flows import csrf_token
from tests.binding.tax_ca import TaxCA
from tests.binding.test_binding import (  # noqa: F401  (tax: a fixture used by name)
    TaxWorld,
    _refresh,
    bind,
    bind_challenge,
    tax,
)
from tests.issuance.conftest import (  # noqa: F401
    EmployerAccount,
    employer_login,
    make_employer,
)


def events(app: Flask, action: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(actor, target, details) of the committed events of ``action``, oldest first."""
    with app.app_context():
        rows = db.session.execute(
            sa.select(AuditEvent.actor, AuditEvent.target, AuditEvent.details)
            .where(AuditEvent.action == action)
            .order_by(AuditEvent.seq)
        ).all()
    return [(actor, target, json.loads(details)) for actor, target, details in rows]


def bindings_of(app: Flask, employer_id: int) -> int:
    with app.app_context():
        return len(
            db.session.scalars(
                sa.select(CertificateBinding.id).where(
                    CertificateBinding.employer_id == employer_id
                )
            ).all()
        )


def serial(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


def test_another_organisations_certificate_is_audited_and_the_challenge_stays_usable(
    app: Flask,
    client: FlaskClient,
    tax: TaxWorld,  # noqa: F811
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer, other = api_employer(), api_employer()
    certificate, key = tax.ca.issue(other.account.number)
    nonce = bind_challenge(client, employer)
    answer = {
        "challenge": nonce,
        "certificate": tax.pem(certificate),
        "signature": sign(key, f"ca-service bind challenge: {nonce}"),
    }
    response = client.post(f"{API}/bindings", json=answer)
    assert response.status_code == 403
    assert error_of(response)["code"] == "other_organisation"
    ((actor, target, details),) = events(app, "binding.refused")
    assert actor == f"user:{employer.account.username}"
    assert target == employer.account.number
    assert details["reason"] == "other_organisation"
    assert details["registration_number"] == other.account.number
    assert details["method"] == "challenge"
    assert details["serial"] == serial(certificate)
    assert bindings_of(app, employer.account.employer_id) == 0
    # Nothing else of the refused request was kept: the challenge was not used up.
    own, own_key = tax.ca.issue(employer.account.number)
    answer |= {
        "certificate": tax.pem(own),
        "signature": sign(own_key, f"ca-service bind challenge: {nonce}"),
    }
    assert client.post(f"{API}/bindings", json=answer).status_code == 201


def test_a_certificate_bound_to_another_employer_is_audited(
    app: Flask,
    client: FlaskClient,
    tax: TaxWorld,  # noqa: F811
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    first, second = api_employer(), api_employer()
    certificate, key = tax.ca.issue(first.account.number)
    first_binding = bind(client, first, certificate, key).get_json()["id"]
    response = bind(client, second, certificate, key)
    assert response.status_code == 409
    ((actor, target, details),) = events(app, "binding.refused")
    assert (actor, target) == (f"user:{second.account.username}", second.account.number)
    assert details["reason"] == "bound_to_another_employer"
    assert details["binding_id"] == first_binding
    # Binding it again to its own employer is a harmless mistake, not on the record.
    assert bind(client, first, certificate, key).status_code == 409
    assert len(events(app, "binding.refused")) == 1


def test_a_challenge_of_a_disabled_account_is_audited(
    app: Flask,
    client: FlaskClient,
    tax: TaxWorld,  # noqa: F811
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = tax.ca.issue(employer.account.number)
    nonce = bind_challenge(client, employer)
    with app.app_context():
        user = db.session.get(User, employer.account.user_id)
        assert user is not None
        user.disabled = True
        db.session.commit()
    response = client.post(
        f"{API}/bindings",
        json={
            "challenge": nonce,
            "certificate": tax.pem(certificate),
            "signature": sign(key, f"ca-service bind challenge: {nonce}"),
        },
    )
    assert response.status_code == 403
    ((actor, target, details),) = events(app, "binding.refused")
    assert (actor, target) == (f"user:{employer.account.username}", employer.account.username)
    assert details["reason"] == "account_disabled"
    assert details["serial"] == serial(certificate)


def tls_bind(
    app: Flask, account: EmployerAccount, certificate: x509.Certificate
) -> tuple[int, str]:
    """Post the page's TLS binding with ``certificate`` as this connection's client
    certificate (as the TLS server passes it on); the status and the page."""
    browser = employer_login(app.test_client(), account)
    token = csrf_token(browser, "/account/bindings/")
    response = browser.post(
        "/account/bindings/tls",
        data={"csrf_token": token},
        environ_base={"SSL_CLIENT_CERT": certificate.public_bytes(Encoding.PEM).decode()},
    )
    return response.status_code, response.get_data(as_text=True)


def test_the_web_pages_tls_binding_audits_its_refusals(
    app: Flask,
    tax: TaxWorld,  # noqa: F811
    make_employer: Callable[..., EmployerAccount],  # noqa: F811
) -> None:
    account, other = make_employer(), make_employer()
    # Another organisation's certificate: refused in the binding service.
    certificate, _key = tax.ca.issue(other.number)
    status, page = tls_bind(app, account, certificate)
    assert status == 403
    assert other.number in page
    ((actor, target, details),) = events(app, "binding.refused")
    assert (actor, target) == (f"user:{account.username}", account.number)
    assert (details["reason"], details["method"]) == ("other_organisation", "tls")
    # An untrusted issuer: refused by certificate verification, audited there.
    forged, _key = TaxCA(name="Forged Tax Bureau").issue(account.number)
    status, page = tls_bind(app, account, forged)
    assert status == 403
    assert "Forged Tax Bureau" in page
    refused = [d for _a, _t, d in events(app, "auth.certificate_refused")]
    assert [(d["refusal"], d["method"], d["serial"]) for d in refused] == [
        ("untrusted_issuer", "bind:tls", serial(forged))
    ]
    assert bindings_of(app, account.employer_id) == 0
    # A revoked one, likewise.
    revoked, _key = tax.ca.issue(account.number)
    tax.revoked.append((revoked.serial_number, x509.ReasonFlags.key_compromise))
    tax.publish()
    _refresh(app.test_client(), tax)
    status, _page = tls_bind(app, account, revoked)
    assert status == 403
    refused = [d for _a, _t, d in events(app, "auth.certificate_refused")]
    assert [(d["refusal"], d["serial"]) for d in refused][-1] == ("revoked", serial(revoked))
    assert bindings_of(app, account.employer_id) == 0


def test_unbinding_another_employers_binding_is_audited(
    app: Flask,
    client: FlaskClient,
    tax: TaxWorld,  # noqa: F811
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    owner, other = api_employer(), api_employer()
    certificate, key = tax.ca.issue(owner.account.number)
    binding_id = bind(client, owner, certificate, key).get_json()["id"]
    # Through the API ...
    response = client.delete(f"{API}/bindings/{binding_id}", headers=other.headers)
    assert response.status_code == 404
    # ... and through the account page.
    browser = employer_login(app.test_client(), other.account)
    token = csrf_token(browser, "/account/bindings/")
    page = browser.post(f"/account/bindings/{binding_id}/unbind", data={"csrf_token": token})
    assert page.status_code == 404
    refusals = events(app, "binding.unbind_refused")
    assert len(refusals) == 2
    for actor, target, details in refusals:
        assert (actor, target) == (f"user:{other.account.username}", owner.account.number)
        assert details == {
            "reason": "another_employers_binding",
            "binding_id": binding_id,
            "serial": serial(certificate),
            "issuer": certificate.issuer.rfc4514_string(),
        }
    with app.app_context():
        row = db.session.get(CertificateBinding, binding_id)
        assert row is not None
        assert row.unbound_at is None
    # A binding that does not exist is not worth a record.
    assert client.delete(f"{API}/bindings/999999", headers=other.headers).status_code == 404
    assert len(events(app, "binding.unbind_refused")) == 2


def test_a_role_that_may_not_unbind_is_audited(
    app: Flask,
    client: FlaskClient,
    tax: TaxWorld,  # noqa: F811
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
    make_officer: MakeOfficer,
) -> None:
    owner = api_employer()
    certificate, key = tax.ca.issue(owner.account.number)
    binding_id = bind(client, owner, certificate, key).get_json()["id"]
    auditor = make_officer(Role.AUDITOR)
    with app.test_request_context():
        user = db.session.get(User, auditor.user.id)
        assert user is not None
        with pytest.raises(Forbidden):
            bindings.unbind(user=user, binding_id=binding_id, now=utcnow())
        db.session.rollback()  # what the request's boundary does
    ((actor, target, details),) = events(app, "binding.unbind_refused")
    assert (actor, target) == (f"user:{auditor.user.username}", owner.account.number)
    assert details["reason"] == "role"


def test_the_web_pages_tls_refusals_name_the_signed_in_administrator(
    app: Flask,
    tax: TaxWorld,  # noqa: F811
    make_employer: Callable[..., EmployerAccount],  # noqa: F811
) -> None:
    account = make_employer()
    forged, _key = TaxCA(name="Forged Tax Bureau").issue(account.number)
    status, _page = tls_bind(app, account, forged)
    assert status == 403
    ((actor, _target, details),) = events(app, "auth.certificate_refused")
    # Signed in on the account page: the record says who presented it, not "anonymous".
    assert actor == f"user:{account.username}"
    assert (details["refusal"], details["method"]) == ("untrusted_issuer", "bind:tls")


UNREADABLE = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


def test_an_unreadable_tls_client_certificate_on_the_account_page_is_audited(
    app: Flask,
    tax: TaxWorld,  # noqa: F811
    make_employer: Callable[..., EmployerAccount],  # noqa: F811
) -> None:
    account = make_employer()
    browser = employer_login(app.test_client(), account)
    environ = {"SSL_CLIENT_CERT": UNREADABLE}
    # The page itself still shows (with the button that says why it is refused).
    page = browser.get("/account/bindings/", environ_base=environ)
    assert page.status_code == 200
    assert "Bind the certificate my browser presented" in page.get_data(as_text=True)
    assert events(app, "auth.certificate_refused") == []  # looking is not refused
    token = csrf_token(browser, "/account/bindings/")
    response = browser.post(
        "/account/bindings/tls", data={"csrf_token": token}, environ_base=environ
    )
    assert response.status_code == 403
    text = response.get_data(as_text=True)
    assert "not a readable X.509 certificate" in text
    assert "ca-client bind" in text  # the account page, with its challenge
    ((actor, target, details),) = events(app, "auth.certificate_refused")
    assert (actor, target) == (f"user:{account.username}", "-")
    assert details == {
        "refusal": "unreadable",
        "method": "bind:tls",
        "issuer": None,
        "serial": None,
    }
    assert bindings_of(app, account.employer_id) == 0


def _check_found_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The binding's check for a live binding finds none, once: as when it ran just before a
    concurrent binding of the same certificate committed (the unique index then says no)."""
    real = bindings._live
    missed = [True]

    def before_the_other_committed(fingerprint: str) -> CertificateBinding | None:
        if missed:
            missed.clear()
            return None
        return real(fingerprint)

    monkeypatch.setattr(bindings, "_live", before_the_other_committed)


def test_a_binding_that_loses_the_race_to_another_employers_is_audited(
    app: Flask,
    client: FlaskClient,
    tax: TaxWorld,  # noqa: F811
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loser, winner = api_employer(), api_employer()
    certificate, key = tax.ca.issue(loser.account.number)
    winning = bind(client, loser, certificate, key).get_json()["id"]
    with app.app_context():
        # A certificate carrying the loser's number bound to another employer's account (an
        # employer record since re-registered): the only way another employer wins the race.
        row = db.session.get(CertificateBinding, winning)
        assert row is not None
        row.employer_id = winner.account.employer_id
        db.session.commit()
    _check_found_nothing(monkeypatch)
    response = bind(client, loser, certificate, key)
    assert response.status_code == 409
    # The answer of a request that came second: where it is bound, not "try again".
    assert "another employer's account" in error_of(response)["message"]
    ((actor, target, details),) = events(app, "binding.refused")
    assert (actor, target) == (f"user:{loser.account.username}", loser.account.number)
    assert details["reason"] == "bound_to_another_employer"
    assert details["binding_id"] == winning
    assert details["concurrent"] is True
    assert details["serial"] == serial(certificate)
    assert bindings_of(app, loser.account.employer_id) == 0


def test_two_binds_of_one_certificate_at_once_by_the_same_employer_are_audited(
    app: Flask,
    tax: TaxWorld,  # noqa: F811
    make_employer: Callable[..., EmployerAccount],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = make_employer()
    certificate, _key = tax.ca.issue(account.number)
    assert tls_bind(app, account, certificate)[0] == 302
    _check_found_nothing(monkeypatch)
    status, page = tls_bind(app, account, certificate)
    assert status == 409
    assert "just bound by another request" in page
    ((actor, target, details),) = events(app, "binding.refused")
    assert (actor, target) == (f"user:{account.username}", account.number)
    assert details["reason"] == "bound_concurrently"
    assert (details["method"], details["serial"]) == ("tls", serial(certificate))
    assert isinstance(details["binding_id"], int)
    assert bindings_of(app, account.employer_id) == 1
