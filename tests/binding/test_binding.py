"""Binding tax-bureau certificates (proof of possession by a signed challenge), and logging in
with a bound one, against a test tax CA (root + intermediate) whose CRLs the app fetches from a
real HTTP server. Every refusal has its own code and message."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ca_service.audit.models import AuditEvent
from ca_service.auth import verification
from ca_service.auth.verification import CertificateRefused, Refusal, verify_certificate
from ca_service.binding.models import CertificateBinding, TrustAnchor, TrustPurpose
from ca_service.binding.service import add_trust_anchor
from ca_service.config import Settings
from ca_service.db import db, utcnow
from ca_service.extensions import settings_of
from ca_service.outbox.models import OutboxMessage
from tests.api.conftest import (  # noqa: F401  (fixtures used by name)
    API,
    ApiEmployer,
    api_employer,
    bearer,
    error_of,
)
from tests.auth.certificates import (  # noqa: F401  (fixture used by name)
    IssueFor,
    agency_certificate,
    sign,
)
from tests.auth.flows import csrf_token
from tests.binding.conftest import CrlServer, StaffClient
from tests.binding.tax_ca import TaxCA
from tests.conftest import CliInvoke
from tests.issuance.conftest import (  # noqa: F401
    EmployerAccount,
    employer_login,
    make_employer,
)


@dataclasses.dataclass
class TaxWorld:
    """A tax CA trusted by the app, publishing its CRLs on ``server``."""

    ca: TaxCA
    server: CrlServer
    revoked: list[tuple[int, x509.ReasonFlags | None]] = dataclasses.field(default_factory=list)

    def publish(self, **crl_options: Any) -> None:
        """Publish fresh CRLs of both CAs (the intermediate's lists ``revoked``)."""
        self.server.publish("/root.crl", self.ca.crl(issuer="root"))
        self.server.publish(
            "/intermediate.crl", self.ca.crl(revoked=list(self.revoked), **crl_options)
        )

    def pem(self, certificate: x509.Certificate) -> str:
        return certificate.public_bytes(Encoding.PEM).decode()


@pytest.fixture
def tax(app: Flask, crl_server: CrlServer) -> TaxWorld:
    world = TaxWorld(TaxCA(crl_base_url=crl_server.base_url), crl_server)
    world.publish()
    with app.app_context():
        for pem, url in (
            (world.ca.root_pem, world.ca.root_crl_url),
            (world.ca.intermediate_pem, world.ca.intermediate_crl_url),
        ):
            add_trust_anchor(actor="tests", purpose=TrustPurpose.TAX, data=pem, crl_url=url)
        db.session.commit()
    return world


def bind_challenge(client: FlaskClient, employer: ApiEmployer) -> str:
    response = client.post(
        f"{API}/auth/challenges", json={"purpose": "bind"}, headers=employer.headers
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    nonce: str = response.get_json()["challenge"]
    return nonce


def bind(
    client: FlaskClient, employer: ApiEmployer, certificate: x509.Certificate, key: Any
) -> TestResponse:
    nonce = bind_challenge(client, employer)
    return client.post(
        f"{API}/bindings",
        json={
            "challenge": nonce,
            "certificate": certificate.public_bytes(Encoding.PEM).decode(),
            "signature": sign(key, f"ca-service bind challenge: {nonce}"),
        },
    )


def tax_login(client: FlaskClient, certificate: x509.Certificate, key: Any) -> TestResponse:
    nonce = client.post(f"{API}/auth/challenges", json={}).get_json()["challenge"]
    return client.post(
        f"{API}/auth/certificate",
        json={
            "challenge": nonce,
            "certificate": certificate.public_bytes(Encoding.PEM).decode(),
            "signature": sign(key, f"ca-service login challenge: {nonce}"),
        },
    )


Refused = Callable[[TestResponse, str], str]


def refused(response: TestResponse, code: str) -> str:
    """The message of a refusal with ``code`` (403 unless the code says otherwise)."""
    error = error_of(response)
    assert error["code"] == code, error
    return error["message"]


def test_bind_then_log_in_with_the_tax_certificate(
    app: Flask,
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = tax.ca.issue(employer.account.number)
    bound = bind(client, employer, certificate, key)
    assert bound.status_code == 201, bound.get_data(as_text=True)
    body = bound.get_json()
    assert body["serial"] == format(certificate.serial_number, "x")
    assert body["issuer"] == certificate.issuer.rfc4514_string()
    assert len(body["fingerprint_sha256"]) == len(body["spki_sha256"]) == 64
    listed = client.get(f"{API}/bindings", headers=employer.headers).get_json()["bindings"]
    assert [b["id"] for b in listed] == [body["id"]]

    login = tax_login(client, certificate, key)
    assert login.status_code == 201, login.get_data(as_text=True)
    assert login.get_json()["username"] == employer.account.username
    with app.app_context():
        notices = db.session.scalars(
            sa.select(OutboxMessage.channel).where(OutboxMessage.subject.like("Tax certificate%"))
        ).all()
        assert sorted(str(n) for n in notices) == ["email", "sms"]
        actions = set(db.session.scalars(sa.select(AuditEvent.action)))
        assert {"binding.bound", "auth.certificate_accepted"} <= actions


def test_binding_the_same_certificate_twice(
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = tax.ca.issue(employer.account.number)
    assert bind(client, employer, certificate, key).status_code == 201
    again = bind(client, employer, certificate, key)
    assert again.status_code == 409
    assert "already bound to your account" in error_of(again)["message"]


def test_certificate_bound_to_another_employer(
    app: Flask,
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    first, second = api_employer(), api_employer()
    certificate, key = tax.ca.issue(first.account.number)
    assert bind(client, first, certificate, key).status_code == 201
    response = bind(client, second, certificate, key)
    assert response.status_code == 409
    assert "bound to another employer" in error_of(response)["message"]


def test_another_organisations_number(
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer, other = api_employer(), api_employer()
    certificate, key = tax.ca.issue(other.account.number)
    message = refused(bind(client, employer, certificate, key), "other_organisation")
    assert other.account.number in message
    assert employer.account.number in message


def test_untrusted_tax_issuer(
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = TaxCA(name="Forged Tax Bureau").issue(employer.account.number)
    message = refused(bind(client, employer, certificate, key), "untrusted_issuer")
    assert "Forged Tax Bureau" in message


def test_expired_and_not_yet_valid_tax_certificates(
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    now = utcnow()
    old, key = tax.ca.issue(
        employer.account.number,
        not_before=now - dt.timedelta(days=400),
        not_after=now - dt.timedelta(days=1),
    )
    assert "expired on" in refused(bind(client, employer, old, key), "expired")
    future, key = tax.ca.issue(
        employer.account.number,
        not_before=now + dt.timedelta(days=2),
        not_after=now + dt.timedelta(days=300),
    )
    assert "not valid yet" in refused(bind(client, employer, future, key), "not_yet_valid")


def test_wrong_extended_key_usage(
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    server_only, key = tax.ca.issue(employer.account.number, eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    assert "clientAuth" in refused(bind(client, employer, server_only, key), "wrong_key_usage")
    no_signing, key = tax.ca.issue(employer.account.number, key_usage_digital_signature=False)
    message = refused(bind(client, employer, no_signing, key), "wrong_key_usage")
    assert "digitalSignature" in message


def test_revoked_by_crl_before_binding_and_after(
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    revoked, key = tax.ca.issue(employer.account.number)
    tax.revoked.append((revoked.serial_number, x509.ReasonFlags.key_compromise))
    tax.publish()
    # The stored CRL is still current: a fresh CRL is only fetched once it is out of date,
    # so refresh it the way an administrator (or cron) does.
    _refresh(client, tax)
    assert "keyCompromise" in refused(bind(client, employer, revoked, key), "revoked")

    bound, key = tax.ca.issue(employer.account.number)
    assert bind(client, employer, bound, key).status_code == 201
    assert tax_login(client, bound, key).status_code == 201
    tax.revoked.append((bound.serial_number, x509.ReasonFlags.cessation_of_operation))
    tax.publish()
    _refresh(client, tax)
    message = refused(tax_login(client, bound, key), "revoked")
    assert "tax certificate was revoked" in message


def test_a_crl_stored_by_another_process_refuses_the_next_tax_login(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    tmp_path: Path,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = tax.ca.issue(employer.account.number)
    assert bind(client, employer, certificate, key).status_code == 201
    assert tax_login(client, certificate, key).status_code == 201
    # The CLI builds its own app: to this one's caches it is another process.
    with app.app_context():
        issuing = db.session.scalar(
            sa.select(TrustAnchor.id).where(TrustAnchor.subject.contains("Issuing"))
        )
    revoking = tmp_path / "revoking.crl"
    revoking.write_bytes(
        tax.ca.crl(revoked=[(certificate.serial_number, x509.ReasonFlags.key_compromise)])
    )
    uploaded = cli("trust", "crl", "upload", str(issuing), str(revoking))
    assert uploaded.exit_code == 0, uploaded.output
    message = refused(tax_login(client, certificate, key), "revoked")
    assert "keyCompromise" in message


def _refresh(client: FlaskClient, tax: TaxWorld) -> None:
    from ca_service.binding.tax_crls import refresh_all

    app: Flask = client.application
    with app.app_context():
        results = refresh_all(actor="tests", settings=settings_of(app), now=utcnow())
        db.session.commit()
    assert all(r.error is None for r in results), results


def test_stale_crl_fails_closed(
    app: Flask,
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = tax.ca.issue(employer.account.number)
    assert bind(client, employer, certificate, key).status_code == 201
    # A week later (past the CRL's nextUpdate, no grace configured) the tax CA's
    # distribution point is down: its certificates are refused, not waved through.
    tax.server.fail("/intermediate.crl", 503)
    tax.server.fail("/root.crl", 503)
    later = utcnow() + dt.timedelta(days=7, hours=1)
    with app.app_context(), pytest.raises(CertificateRefused) as refusal:
        verify_certificate([certificate], settings=settings_of(app), now=later)
    assert refusal.value.refusal is Refusal.REVOCATION_UNKNOWN
    assert "cannot be checked for revocation" in refusal.value.message
    assert "out of date since" in refusal.value.message


def test_a_crl_already_out_of_date_when_fetched_fails_closed(
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = tax.ca.issue(employer.account.number)
    tax.server.publish(
        "/intermediate.crl",
        tax.ca.crl(
            this_update=utcnow() - dt.timedelta(days=8),
            next_update=utcnow() - dt.timedelta(days=1),
        ),
    )
    message = refused(bind(client, employer, certificate, key), "revocation_unknown")
    assert "Test Tax Bureau Issuing CA" in message


def test_unbound_certificate_cannot_log_in(
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = tax.ca.issue(employer.account.number)
    message = refused(tax_login(client, certificate, key), "not_bound")
    assert "bind it from your account page" in message
    bound = bind(client, employer, certificate, key).get_json()
    gone = client.delete(f"{API}/bindings/{bound['id']}", headers=employer.headers)
    assert gone.status_code == 200
    assert gone.get_json()["unbound_at"] is not None
    refused(tax_login(client, certificate, key), "not_bound")
    # Rebinding after an unbind is allowed (the old row stays as history).
    assert bind(client, employer, certificate, key).status_code == 201


def test_other_employers_cannot_unbind(
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer, other = api_employer(), api_employer()
    certificate, key = tax.ca.issue(employer.account.number)
    bound = bind(client, employer, certificate, key).get_json()
    response = client.delete(f"{API}/bindings/{bound['id']}", headers=other.headers)
    assert response.status_code == 404


def test_bind_challenge_needs_an_administrator_token(client: FlaskClient) -> None:
    response = client.post(f"{API}/auth/challenges", json={"purpose": "bind"})
    assert response.status_code == 401


def test_number_attribute_is_configuration(app: Flask, tax: TaxWorld) -> None:
    certificate, _ = tax.ca.issue("91350100M000100Y43", attribute="serialNumber")
    prefixed, _ = tax.ca.issue("NTRCN-91350100M000100Y43")
    with app.app_context():
        settings = settings_of(app)
        default = verify_certificate([prefixed], settings=settings, now=utcnow())
        assert default.registration_number == "91350100M000100Y43"
        assert (
            verify_certificate([certificate], settings=settings, now=utcnow()).registration_number
            is None
        )
        by_serial = Settings({**settings.values, "TAX_NUMBER_ATTRIBUTE": "serialNumber"})
        verified = verify_certificate([certificate], settings=by_serial, now=utcnow())
        assert verified.registration_number == "91350100M000100Y43"
        by_oid = Settings({**settings.values, "TAX_NUMBER_ATTRIBUTE": "2.5.4.5"})
        assert verify_certificate([certificate], settings=by_oid, now=utcnow()).registration_number


def _counting_validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The subjects of the leaves whose path is validated from now on (not remembered)."""
    validated: list[str] = []
    real = verification._validate

    def counting(leaf: x509.Certificate, *args: Any) -> Any:
        validated.append(leaf.subject.rfc4514_string())
        return real(leaf, *args)

    monkeypatch.setattr(verification, "_validate", counting)
    return validated


def test_validated_paths_are_kept_while_the_anchors_stay_the_same(
    app: Flask, tax: TaxWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate, _ = tax.ca.issue("91350100M000100Y43")
    validated = _counting_validations(monkeypatch)
    # Every sign-in reads the anchors again (as if TRUST_CACHE_SECONDS had passed each time).
    monkeypatch.setattr(verification, "TRUST_CACHE_SECONDS", 0.0)
    with app.app_context():
        settings = settings_of(app)
        verify_certificate([certificate], settings=settings, now=utcnow())
        verify_certificate([certificate], settings=settings, now=utcnow())
        assert len(validated) == 1
        # Another process disables the root (nothing is invalidated in this one): the path
        # built through it is not remembered past the next reading of the anchors; the
        # intermediate, still enabled, is now the anchor a new path ends at.
        db.session.execute(
            sa.update(TrustAnchor).where(TrustAnchor.subject.contains("Root")).values(enabled=False)
        )
        db.session.commit()
        verified = verify_certificate([certificate], settings=settings, now=utcnow())
        assert len(validated) == 2
        assert verified.chain == (certificate, tax.ca.intermediate)
        # And the intermediate too: nothing trusted issues the certificate.
        db.session.execute(
            sa.update(TrustAnchor)
            .where(TrustAnchor.subject.contains("Issuing"))
            .values(enabled=False)
        )
        db.session.commit()
        with pytest.raises(CertificateRefused) as refusal:
            verify_certificate([certificate], settings=settings, now=utcnow())
        assert refusal.value.refusal is Refusal.UNTRUSTED


def test_a_changed_crl_url_is_used_once_the_anchors_are_read_again(
    app: Flask, tax: TaxWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate, _ = tax.ca.issue("91350100M000100Y43")
    monkeypatch.setattr(verification, "TRUST_CACHE_SECONDS", 0.0)
    with app.app_context():
        settings = settings_of(app)
        verify_certificate([certificate], settings=settings, now=utcnow())
        # A week later the stored CRL is out of date and the CA publishes elsewhere, listing the
        # certificate; another process set the anchor's new CRL URL.
        later = utcnow() + dt.timedelta(days=7, hours=1)
        moved = tax.server.publish(
            "/moved.crl",
            tax.ca.crl(
                revoked=[(certificate.serial_number, x509.ReasonFlags.key_compromise)],
                this_update=later,
            ),
        )
        tax.server.fail("/intermediate.crl", 404)
        db.session.execute(
            sa.update(TrustAnchor)
            .where(TrustAnchor.subject.contains("Issuing"))
            .values(crl_url=moved)
        )
        db.session.commit()
        with pytest.raises(CertificateRefused) as refusal:
            verify_certificate([certificate], settings=settings, now=later)
        assert refusal.value.refusal is Refusal.REVOKED
    assert tax.server.requests[-1] == "/moved.crl"


def test_disabled_anchor_is_no_longer_trusted(app: Flask, tax: TaxWorld) -> None:
    from ca_service.binding.service import list_anchors, set_anchor_enabled

    certificate, _ = tax.ca.issue("91350100M000100Y43")
    with app.app_context():
        verify_certificate([certificate], settings=settings_of(app), now=utcnow())
        # The issuing CA disabled, its root still trusted: the root does not vouch for
        # what the intermediate issues once the intermediate itself is no longer trusted.
        issuing = next(a for a in list_anchors(TrustPurpose.TAX) if "Issuing" in a.subject)
        set_anchor_enabled(actor="tests", anchor_id=issuing.id, enabled=False)
        db.session.commit()
        with pytest.raises(CertificateRefused) as refusal:
            verify_certificate([certificate], settings=settings_of(app), now=utcnow())
        assert refusal.value.refusal is Refusal.UNTRUSTED


def test_web_pages_bind_list_and_unbind(
    app: Flask,
    tax: TaxWorld,
    make_employer: Callable[..., EmployerAccount],  # noqa: F811
    staff_client: StaffClient,
) -> None:
    from ca_service.auth.models import Role

    account = make_employer()
    browser = employer_login(app.test_client(), account)
    page = browser.get("/account/bindings/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "ca-client bind" in text
    assert "presented no client certificate" in text
    nonce = text.split("--challenge ", 1)[1].split(" ", 1)[0]
    certificate, key = tax.ca.issue(account.number)
    signer = app.test_client()
    bound = signer.post(
        f"{API}/bindings",
        json={
            "challenge": nonce,
            "certificate": tax.pem(certificate),
            "signature": sign(key, f"ca-service bind challenge: {nonce}"),
        },
    )
    assert bound.status_code == 201, bound.get_data(as_text=True)
    assert format(certificate.serial_number, "x") in browser.get("/account/bindings/").get_data(
        as_text=True
    )
    # TLS binding without a certificate on the connection.
    token = csrf_token(browser, "/account/bindings/")
    no_tls = browser.post("/account/bindings/tls", data={"csrf_token": token})
    assert no_tls.status_code == 400
    # An officer finds and unbinds it.
    officer = staff_client(Role.RA_OFFICER)
    found = officer.get(f"/officer/bindings/?number={account.number}")
    assert found.status_code == 200
    assert format(certificate.serial_number, "x") in found.get_data(as_text=True)
    binding_id = bound.get_json()["id"]
    token = csrf_token(officer, f"/officer/bindings/?number={account.number}")
    done = officer.post(
        f"/officer/bindings/{binding_id}/unbind",
        data={"csrf_token": token, "number": account.number},
    )
    assert done.status_code == 302
    with app.app_context():
        row = db.session.get(CertificateBinding, binding_id)
        assert row is not None
        assert row.unbound_by is not None
        assert row.unbound_by.startswith("user:")
    # Employers cannot use the officer page.
    assert browser.get("/officer/bindings/").status_code == 403


def test_an_expired_agency_certificate_owner_gets_back_in_with_the_bound_tax_certificate(
    app: Flask,
    client: FlaskClient,
    tax: TaxWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    from ca_service.auth.verification import account_for

    employer = api_employer()
    account = employer.account
    ours = agency_certificate(account=account)
    certificate, key = tax.ca.issue(account.number, not_after=utcnow() + dt.timedelta(days=1000))
    assert bind(client, employer, certificate, key).status_code == 201
    # A day after our certificate expired (the tax CA has published fresh CRLs meanwhile).
    later = ours.certificate.not_valid_after_utc + dt.timedelta(days=1)
    tax.server.publish("/root.crl", tax.ca.crl(issuer="root", this_update=later))
    tax.server.publish("/intermediate.crl", tax.ca.crl(this_update=later))
    with app.app_context():
        settings = settings_of(app)
        with pytest.raises(CertificateRefused) as expired:
            verify_certificate([ours.certificate], settings=settings, now=later)
        assert expired.value.refusal is Refusal.EXPIRED
        assert "tax-bureau certificate bound to your account" in expired.value.message
        user, binding_id = account_for(
            verify_certificate([certificate], settings=settings, now=later)
        )
        assert user.username == account.username
        assert binding_id is not None
