"""Pre-signed OCSP responses (RFC 5019): served from storage without the HSM, re-signed on
revocation in the same transaction, refreshed before they lapse, re-signed after rotation."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from flask import Flask
from flask.testing import FlaskClient

from ca_service.authorities.service import (
    ISSUING_SLUG,
    PkiParameters,
    current_ocsp_responder,
    ensure_ocsp_responder,
    get_authority,
    load_certificate,
)
from ca_service.db import db, utcnow
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.models import Certificate
from ca_service.revocation import ocsp as responder_module
from ca_service.revocation.models import OCSPCertStatus, StoredOCSPResponse
from ca_service.revocation.service import release_hold, revoke_certificate
from tests.conftest import CliInvoke
from tests.revocation.conftest import Issued, MakeCertificate
from tests.revocation.ocsp_tools import (
    OCSP_REQUEST,
    ca_certificates,
    ocsp_request,
    openssl_ocsp,
)

SHA1 = hashes.SHA1()  # noqa: S303  (a CertID hash: it identifies, it does not protect)


def _stored(app: Flask, serial: str) -> dict[str, StoredOCSPResponse]:
    with app.app_context():
        rows = db.session.scalars(
            sa.select(StoredOCSPResponse).where(StoredOCSPResponse.serial == serial)
        ).all()
        for row in rows:
            db.session.expunge(row)
        return {row.hash_algorithm: row for row in rows}


def _post(client: FlaskClient, body: bytes) -> tuple[bytes, ocsp.OCSPResponse]:
    response = client.post("/ocsp", data=body, headers=OCSP_REQUEST)
    assert response.status_code == 200
    return response.data, ocsp.load_der_ocsp_response(response.data)


@pytest.fixture
def no_hsm_signing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt of the responder to sign live."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the responder tried to sign with the HSM")

    monkeypatch.setattr(responder_module, "_signer_for", refuse)


@pytest.mark.parametrize("algorithm", [SHA1, hashes.SHA256()])
def test_presigned_answer_comes_from_storage_without_the_hsm(
    app: Flask,
    client: FlaskClient,
    make_certificate: MakeCertificate,
    algorithm: hashes.HashAlgorithm,
    request: pytest.FixtureRequest,
) -> None:
    _, issuing, responder = ca_certificates(app)
    issued = make_certificate()
    stored = _stored(app, issued.serial)
    assert set(stored) == {"sha1", "sha256"}  # one response per CertID hash algorithm

    request.getfixturevalue("no_hsm_signing")
    der, answer = _post(client, ocsp_request(issued.certificate, issuing, algorithm))
    assert der == stored[algorithm.name].der
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == issued.certificate.serial_number
    assert isinstance(answer.hash_algorithm, type(algorithm))
    assert answer.certificates == [responder]


def test_nonce_requests_are_signed_live(
    app: Flask, client: FlaskClient, make_certificate: MakeCertificate
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    der, answer = _post(client, ocsp_request(issued.certificate, issuing, nonce=b"x" * 16))
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"x" * 16
    assert der != _stored(app, issued.serial)["sha1"].der


def test_missing_response_is_signed_once_and_stored(
    app: Flask, client: FlaskClient, make_certificate: MakeCertificate
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate(presign=False)
    assert _stored(app, issued.serial) == {}
    body = ocsp_request(issued.certificate, issuing)
    first, answer = _post(client, body)
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    stored = _stored(app, issued.serial)
    assert set(stored) == {"sha1"}
    assert stored["sha1"].der == first
    assert _post(client, body)[0] == first


def test_unknown_serial_is_not_stored(app: Flask, client: FlaskClient) -> None:
    _, issuing, responder = ca_certificates(app)
    # The issuing CA's CertID hashes (from a request about a certificate it issued), with a
    # serial it never issued.
    ours = ocsp.load_der_ocsp_request(ocsp_request(responder, issuing))
    unknown = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            issuer_name_hash=ours.issuer_name_hash,
            issuer_key_hash=ours.issuer_key_hash,
            serial_number=0x1234567,
            algorithm=SHA1,
        )
        .build()
    )
    _, answer = _post(client, unknown.public_bytes(Encoding.DER))
    assert answer.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert _stored(app, "1234567") == {}


def _revoke(app: Flask, issued: Issued, reason: str = "keyCompromise") -> None:
    with app.app_context():
        certificate = db.session.get(Certificate, issued.id)
        assert certificate is not None
        revoke_certificate(
            token=app_token(),
            settings=settings_of(app),
            certificate=certificate,
            reason=reason,
            invalidity_date=None,
            actor="tests",
        )
        db.session.commit()


def test_revocation_resigns_in_the_same_transaction(
    app: Flask, client: FlaskClient, make_certificate: MakeCertificate
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    _revoke(app, issued, "certificateHold")
    stored = _stored(app, issued.serial)
    assert {row.cert_status for row in stored.values()} == {OCSPCertStatus.REVOKED}
    for algorithm in (SHA1, hashes.SHA256()):
        der, answer = _post(client, ocsp_request(issued.certificate, issuing, algorithm))
        assert der == stored[algorithm.name].der
        assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
        assert answer.revocation_reason is x509.ReasonFlags.certificate_hold

    with app.app_context():
        certificate = db.session.get(Certificate, issued.id)
        assert certificate is not None
        release_hold(
            token=app_token(), settings=settings_of(app), certificate=certificate, actor="tests"
        )
        db.session.commit()
    _, answer = _post(client, ocsp_request(issued.certificate, issuing))
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD


def test_get_answer_has_etag_and_is_conditional(
    app: Flask, client: FlaskClient, make_certificate: MakeCertificate
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    encoded = base64.b64encode(ocsp_request(issued.certificate, issuing)).decode()
    first = client.get(f"/ocsp/{encoded}")
    assert first.status_code == 200
    assert first.data == _stored(app, issued.serial)["sha1"].der
    assert first.headers["ETag"]
    assert first.headers["Last-Modified"]
    assert first.cache_control.public
    assert first.cache_control.max_age is not None
    assert 0 < first.cache_control.max_age <= 3600
    again = client.get(f"/ocsp/{encoded}", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304

    _revoke(app, issued)  # re-signed: a new ETag, the old one no longer matches
    after = client.get(f"/ocsp/{encoded}", headers={"If-None-Match": first.headers["ETag"]})
    assert after.status_code == 200
    assert after.headers["ETag"] != first.headers["ETag"]


def _age_stored(app: Flask, remaining: dt.timedelta) -> None:
    """Make every stored response lapse in ``remaining`` (as if signed long ago)."""
    with app.app_context():
        db.session.execute(
            sa.update(StoredOCSPResponse).values(
                this_update=utcnow() - dt.timedelta(hours=1), next_update=utcnow() + remaining
            )
        )
        db.session.commit()


def test_lapsing_response_is_resigned_on_demand(
    app: Flask, client: FlaskClient, make_certificate: MakeCertificate
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    _age_stored(app, dt.timedelta(minutes=5))  # less than a quarter of the 1 h lifetime left
    der, answer = _post(client, ocsp_request(issued.certificate, issuing))
    assert answer.next_update_utc is not None
    assert answer.next_update_utc - utcnow() > dt.timedelta(minutes=50)
    assert _stored(app, issued.serial)["sha1"].der == der


def test_refresh_resigns_lapsing_and_fills_missing(
    app: Flask, cli: CliInvoke, make_certificate: MakeCertificate
) -> None:
    lapsing = make_certificate()
    fresh = make_certificate()
    missing = make_certificate(presign=False)
    _age_stored(app, dt.timedelta(minutes=20))
    with app.app_context():
        db.session.execute(
            sa.update(StoredOCSPResponse)
            .where(StoredOCSPResponse.serial == fresh.serial)
            .values(next_update=utcnow() + dt.timedelta(minutes=50))
        )
        db.session.commit()
    before = {s: _stored(app, s) for s in (lapsing.serial, fresh.serial)}

    result = cli("ocsp", "refresh")
    assert result.exit_code == 0, result.output
    assert "rotated" not in result.output

    lapsing_now = _stored(app, lapsing.serial)
    assert lapsing_now["sha1"].der != before[lapsing.serial]["sha1"].der
    assert lapsing_now["sha1"].next_update - utcnow() > dt.timedelta(minutes=50)
    assert _stored(app, fresh.serial)["sha1"].der == before[fresh.serial]["sha1"].der
    assert set(_stored(app, missing.serial)) == {"sha1", "sha256"}
    # The responder's own certificate is one of the issuing CA's too: filled in as well.
    _, _, responder = ca_certificates(app)
    assert set(_stored(app, format(responder.serial_number, "x"))) == {"sha1", "sha256"}


def _install_expiring_responder(app: Flask) -> Certificate:
    """Make the current responder one that expires tomorrow (the long-lived one revoked)."""
    with app.app_context():
        issuer = get_authority(ISSUING_SLUG)
        long_lived = current_ocsp_responder(issuer)
        assert long_lived is not None
        params = dataclasses.replace(PkiParameters.from_settings(settings_of(app)), ocsp_days=1)
        ensure_ocsp_responder(
            token=app_token(),
            issuer=issuer,
            params=params,
            commit=db.session.commit,
            actor="tests",
            force=True,
        )
        long_lived.revoked_at = utcnow()
        long_lived.revocation_reason = "superseded"
        db.session.commit()
        expiring = current_ocsp_responder(issuer)
        assert expiring is not None
        assert expiring.not_after - utcnow() <= dt.timedelta(days=1)
        db.session.expunge(expiring)
        return expiring


@pytest.mark.parametrize("command", [("ocsp", "refresh"), ("crl", "publish")])
def test_expiring_responder_is_rotated_and_responses_resigned(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    make_certificate: MakeCertificate,
    command: tuple[str, str],
) -> None:
    expiring = _install_expiring_responder(app)
    issued = make_certificate()
    assert _stored(app, issued.serial)["sha1"].responder_id == expiring.id

    result = cli(*command)
    assert result.exit_code == 0, result.output
    assert "rotated the OCSP responder" in result.output

    with app.app_context():
        current = current_ocsp_responder(get_authority(ISSUING_SLUG))
        assert current is not None
        assert current.id != expiring.id
        assert current.not_after - utcnow() > dt.timedelta(days=80)
        new_responder = load_certificate(current)
        current_id = current.id
    stored = _stored(app, issued.serial)
    assert {row.responder_id for row in stored.values()} == {current_id}
    _, issuing, _ = ca_certificates(app)
    _, answer = _post(client, ocsp_request(issued.certificate, issuing))
    assert answer.certificates == [new_responder]
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD

    again = cli(*command)  # the new responder is far from expiry: no second rotation
    assert "rotated" not in again.output


def test_openssl_sees_presigned_good_then_revoked_without_refresh(
    app: Flask, served: str, cli: CliInvoke, make_certificate: MakeCertificate, tmp_path: Path
) -> None:
    root, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    respout = tmp_path / "response.der"
    output = openssl_ocsp(
        served, tmp_path, issued.certificate, issuing, root, ("-no_nonce", "-respout", str(respout))
    )
    assert f"{tmp_path / 'cert.pem'}: good" in output
    assert respout.read_bytes() == _stored(app, issued.serial)["sha1"].der  # from storage

    result = cli("revoke", issued.serial, "--reason", "keyCompromise")
    assert result.exit_code == 0, result.output
    # A worker that answered "good" from memory may do so until it next checks the OCSP epoch
    # (OCSP_CHANGE_CHECK_MS, half a second).
    revoked_at = time.monotonic()
    while True:
        output = openssl_ocsp(
            served,
            tmp_path,
            issued.certificate,
            issuing,
            root,
            ("-no_nonce", "-respout", str(respout)),
        )
        if ": good" not in output:
            break
        assert time.monotonic() - revoked_at < 2.0, "still good a second after revocation"
    assert f"{tmp_path / 'cert.pem'}: revoked" in output
    assert "Reason: keyCompromise" in output
    assert respout.read_bytes() == _stored(app, issued.serial)["sha1"].der
