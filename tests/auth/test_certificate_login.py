"""Certificate login with our own employer certificates: the signed-challenge transport
(API token, and a browser completed by a signature made elsewhere), and the verification
core's refusals, each with its own message."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth import verification
from ca_service.auth.models import LoginChallenge, User
from ca_service.auth.verification import (
    CertificateRefused,
    Refusal,
    account_for,
    verify_certificate,
)
from ca_service.authorities.service import ISSUING_SLUG, get_authority
from ca_service.db import db, utcnow
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.models import Certificate, CertificateKind
from ca_service.revocation.service import find_certificate, revoke_certificate
from tests.api.conftest import API, bearer, error_of
from tests.auth.certificates import (  # noqa: F401  (fixtures used by name)
    AgencyCertificate,
    IssueFor,
    agency_certificate,
    sign,
)
from tests.binding.tax_ca import TaxCA
from tests.issuance.conftest import make_employer  # noqa: F401

NONCE = re.compile(r"--challenge ([A-Za-z0-9_-]{40,})")


def new_challenge(client: FlaskClient) -> str:
    response = client.post(f"{API}/auth/challenges", json={"purpose": "login"})
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body["to_sign"] == f"ca-service login challenge: {body['challenge']}"
    nonce: str = body["challenge"]
    return nonce


def answer(client: FlaskClient, nonce: str, pem: str, signature: str):  # type: ignore[no-untyped-def]
    return client.post(
        f"{API}/auth/certificate",
        json={"challenge": nonce, "certificate": pem, "signature": signature},
    )


def test_signed_challenge_gives_an_api_token(
    app: Flask,
    client: FlaskClient,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued: AgencyCertificate = agency_certificate()
    nonce = new_challenge(client)
    response = answer(
        client, nonce, issued.pem, sign(issued.key, f"ca-service login challenge: {nonce}")
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body["username"] == issued.account.username
    listed = client.get(f"{API}/applications", headers=bearer(body["token"]))
    assert listed.status_code == 200, listed.get_data(as_text=True)
    with app.app_context():
        actions = db.session.scalars(sa.select(AuditEvent.action)).all()
    assert "auth.certificate_accepted" in actions
    assert "auth.login" in actions


def test_replayed_challenge_is_refused(client: FlaskClient, agency_certificate: IssueFor) -> None:  # noqa: F811
    issued = agency_certificate()
    nonce = new_challenge(client)
    signature = sign(issued.key, f"ca-service login challenge: {nonce}")
    assert answer(client, nonce, issued.pem, signature).status_code == 201
    again = answer(client, nonce, issued.pem, signature)
    assert again.status_code == 403
    error = error_of(again)
    assert error["code"] == "challenge_unusable"
    assert "already used" in error["message"]


def test_signature_over_another_nonce_is_refused(
    app: Flask,
    client: FlaskClient,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    nonce, other = new_challenge(client), new_challenge(client)
    response = answer(
        client, nonce, issued.pem, sign(issued.key, f"ca-service login challenge: {other}")
    )
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "bad_signature"
    assert "another challenge or with another key" in error["message"]
    # The refused attempt is on the record, and the challenge is still usable.
    with app.app_context():
        refused = db.session.scalar(
            sa.select(AuditEvent).where(AuditEvent.action == "auth.certificate_refused")
        )
        assert refused is not None
    good = answer(
        client, nonce, issued.pem, sign(issued.key, f"ca-service login challenge: {nonce}")
    )
    assert good.status_code == 201


def test_a_signature_of_the_bind_purpose_does_not_log_in(
    client: FlaskClient,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    nonce = new_challenge(client)
    response = answer(
        client, nonce, issued.pem, sign(issued.key, f"ca-service bind challenge: {nonce}")
    )
    assert error_of(response)["code"] == "bad_signature"


def test_another_key_cannot_answer_for_the_certificate(
    client: FlaskClient,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    nonce = new_challenge(client)
    thief = ec.generate_private_key(ec.SECP256R1())
    response = answer(
        client, nonce, issued.pem, sign(thief, f"ca-service login challenge: {nonce}")
    )
    assert error_of(response)["code"] == "bad_signature"


def test_expired_challenge_is_refused(
    app: Flask,
    client: FlaskClient,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    nonce = new_challenge(client)
    with app.app_context():
        db.session.execute(
            sa.update(LoginChallenge).values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )
        db.session.commit()
    response = answer(
        client, nonce, issued.pem, sign(issued.key, f"ca-service login challenge: {nonce}")
    )
    error = error_of(response)
    assert (error["code"], response.status_code) == ("challenge_unusable", 403)
    assert "expired" in error["message"]


def test_unknown_challenge_malformed_certificate_and_signature(
    client: FlaskClient,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    nonce = new_challenge(client)
    unknown = answer(client, "x" * 43, issued.pem, sign(issued.key, "whatever"))
    assert error_of(unknown)["code"] == "challenge_unusable"
    garbage = answer(client, nonce, "-----BEGIN CERTIFICATE-----\nAAAA\n", "AAAA")
    assert (garbage.status_code, error_of(garbage)["code"]) == (403, "unreadable")
    not_base64 = answer(client, nonce, issued.pem, "%%%")
    assert not_base64.status_code == 400
    assert "base64" in error_of(not_base64)["message"]
    missing = client.post(f"{API}/auth/certificate", json={"challenge": nonce})
    assert missing.status_code == 400
    wrong_type = client.post(f"{API}/auth/certificate", data="x", content_type="text/plain")
    assert wrong_type.status_code == 415


def test_revoked_certificate_cannot_log_in_at_once(
    app: Flask,
    client: FlaskClient,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    with app.app_context():
        row = find_certificate(get_authority(ISSUING_SLUG), issued.serial)
        revoke_certificate(
            certificate=row,
            reason="keyCompromise",
            invalidity_date=None,
            actor="test",
            token=app_token(),
            settings=settings_of(app),
        )
        db.session.commit()
    nonce = new_challenge(client)
    response = answer(
        client, nonce, issued.pem, sign(issued.key, f"ca-service login challenge: {nonce}")
    )
    error = error_of(response)
    assert (response.status_code, error["code"]) == (403, "revoked")
    assert "revoked on" in error["message"]
    assert "keyCompromise" in error["message"]


def test_untrusted_issuer_is_refused(client: FlaskClient) -> None:
    # A tax CA that is not a trust anchor here: nobody we trust.
    leaf, key = TaxCA().issue("91350100M000100Y43")
    nonce = new_challenge(client)
    response = answer(
        client,
        nonce,
        leaf.public_bytes(Encoding.PEM).decode(),
        sign(key, f"ca-service login challenge: {nonce}"),
    )
    error = error_of(response)
    assert error["code"] == "untrusted_issuer"
    assert "not a certificate authority trusted for signing in" in error["message"]


def test_expired_and_not_yet_valid_say_so(app: Flask, agency_certificate: IssueFor) -> None:  # noqa: F811
    issued = agency_certificate()
    leaf = issued.certificate
    with app.app_context():
        settings = settings_of(app)
        with pytest.raises(CertificateRefused) as expired:
            verify_certificate(
                [leaf], settings=settings, now=leaf.not_valid_after_utc + dt.timedelta(seconds=1)
            )
        assert expired.value.refusal is Refusal.EXPIRED
        # The way back in is named.
        assert "password and an SMS code" in expired.value.message
        assert "tax-bureau certificate bound to your account" in expired.value.message
        assert "renew" in expired.value.message
        with pytest.raises(CertificateRefused) as early:
            verify_certificate(
                [leaf], settings=settings, now=leaf.not_valid_before_utc - dt.timedelta(seconds=1)
            )
        assert early.value.refusal is Refusal.NOT_YET_VALID
        verified = verify_certificate([leaf], settings=settings, now=utcnow())
        user, binding_id = account_for(verified)
        assert (user.username, binding_id) == (issued.account.username, None)
        assert user.employer_id == issued.account.employer_id
        # The sign-in reads only the columns it uses; the others load when first read.
        users = User.__table__.c
        assert user.email == db.session.scalar(
            sa.select(users.email).where(users.id == issued.account.user_id)
        )


def test_a_revoked_issuing_ca_is_seen_when_the_trust_material_is_read_again(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = agency_certificate()
    # Every sign-in reads our CA certificates again (as if TRUST_CACHE_SECONDS had passed).
    monkeypatch.setattr(verification, "TRUST_CACHE_SECONDS", 0.0)
    with app.app_context():
        settings = settings_of(app)
        verify_certificate([issued.certificate], settings=settings, now=utcnow())
        # Another process revokes the issuing CA (nothing is invalidated in this one): the
        # remembered path through it is not used again.
        db.session.execute(
            sa.update(Certificate)
            .where(Certificate.kind == CertificateKind.ISSUING_CA)
            .values(revoked_at=utcnow(), revocation_reason="cACompromise")
        )
        db.session.commit()
        with pytest.raises(CertificateRefused) as refusal:
            verify_certificate([issued.certificate], settings=settings, now=utcnow())
        assert refusal.value.refusal is Refusal.UNTRUSTED


def test_browser_signed_in_by_a_signature_made_elsewhere(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    browser, signer, stranger = app.test_client(), app.test_client(), app.test_client()
    page = browser.get("/auth/certificate")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'http-equiv="refresh"' in text
    assert "data:image/svg+xml" in text
    match = NONCE.search(text)
    assert match, text
    nonce = match.group(1)
    # Reloading keeps the same challenge until it is answered.
    assert nonce in browser.get("/auth/certificate").get_data(as_text=True)
    done = answer(
        signer, nonce, issued.pem, sign(issued.key, f"ca-service login challenge: {nonce}")
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    assert done.get_json()["signed_in"] == "browser"
    # Another browser gets its own challenge and is not signed in.
    assert stranger.get("/auth/certificate").status_code == 200
    assert stranger.get("/auth/home").status_code == 302
    signed_in = browser.get("/auth/certificate")
    assert signed_in.status_code == 302
    assert signed_in.headers["Location"].endswith("/auth/home")
    home = browser.get("/auth/home")
    assert home.status_code == 200
    # Picked up once: the challenge cannot sign in a second time.
    with app.app_context():
        row = db.session.scalar(
            sa.select(LoginChallenge).where(LoginChallenge.used_at.is_not(None))
        )
        assert row is not None
        assert row.picked_up_at is not None


def test_tls_button_without_a_client_certificate(client: FlaskClient) -> None:
    from tests.auth.flows import post_form

    response = post_form(client, "/auth/certificate/tls", {}, token_from="/auth/certificate")
    assert response.status_code == 400
    assert "presented no client certificate" in response.get_data(as_text=True)


def test_an_answer_the_browser_never_picked_up_does_not_sign_it_in_later(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    browser, signer = app.test_client(), app.test_client()
    match = NONCE.search(browser.get("/auth/certificate").get_data(as_text=True))
    assert match
    nonce = match.group(1)
    message = f"ca-service login challenge: {nonce}"
    assert answer(signer, nonce, issued.pem, sign(issued.key, message)).status_code == 200
    with app.app_context():
        db.session.execute(
            sa.update(LoginChallenge).values(expires_at=utcnow() - dt.timedelta(hours=1))
        )
        db.session.commit()
    late = browser.get("/auth/certificate")
    assert late.status_code == 200  # a new challenge, not a sign-in
    assert nonce not in late.get_data(as_text=True)
    assert browser.get("/auth/home").status_code == 302
