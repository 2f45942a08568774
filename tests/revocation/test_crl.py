"""CRLs: served from storage, linted, numbered uniquely, and honoured by `openssl verify`."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from flask.testing import FlaskClient

from ca_service.authorities.service import (
    ISSUING_SLUG,
    ROOT_SLUG,
    current_ocsp_responder,
    get_authority,
    load_certificate,
)
from ca_service.config import Settings
from ca_service.db import db
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.models import Certificate
from ca_service.revocation.models import PendingCRL, PublishedCRL
from ca_service.revocation.service import crl_lifetime, publish_crl, revoke_certificate
from tests.conftest import CliInvoke
from tests.pki_tools import errors_only, openssl_verify, pkilint_findings
from tests.revocation.conftest import MakeCertificate


def _ca(app: Flask, slug: str) -> x509.Certificate:
    with app.app_context():
        row = get_authority(slug).certificate
        assert row is not None
        return load_certificate(row)


def _responder(app: Flask) -> tuple[str, x509.Certificate]:
    """The OCSP responder certificate: a real end-entity certificate of the issuing CA."""
    with app.app_context():
        row = current_ocsp_responder(get_authority(ISSUING_SLUG))
        assert row is not None
        return row.serial, load_certificate(row)


def _fetch(client: FlaskClient, slug: str) -> x509.CertificateRevocationList:
    response = client.get(f"/pki/crl/{slug}.crl")
    assert response.status_code == 200
    assert response.mimetype == "application/pkix-crl"
    return x509.load_der_x509_crl(response.data)


@pytest.mark.parametrize("slug", [ROOT_SLUG, ISSUING_SLUG])
def test_served_crl_is_signed_scoped_and_cacheable(
    app: Flask, client: FlaskClient, slug: str
) -> None:
    crl = _fetch(client, slug)
    issuer = _ca(app, slug)
    assert crl.issuer == issuer.subject
    assert crl.is_signature_valid(issuer.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number >= 1
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert idp.critical
    assert idp.value.only_contains_ca_certs is (slug == ROOT_SLUG)
    assert idp.value.only_contains_user_certs is (slug != ROOT_SLUG)
    assert crl.next_update_utc is not None
    with app.app_context():
        expected = crl_lifetime(settings_of(app), slug)
    assert crl.next_update_utc - crl.last_update_utc == expected

    first = client.get(f"/pki/crl/{slug}.crl")
    assert first.headers["Cache-Control"].startswith("public")
    assert first.headers["Last-Modified"]
    again = client.get(f"/pki/crl/{slug}.crl", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(("slug", "kind"), [(ROOT_SLUG, "ARL"), (ISSUING_SLUG, "CRL")])
def test_crl_passes_pkilint(client: FlaskClient, tmp_path: Path, slug: str, kind: str) -> None:
    der = client.get(f"/pki/crl/{slug}.crl").data
    findings = pkilint_findings("lint_crl", der, tmp_path, extra=["-t", kind, "-p", "PKIX"])
    assert errors_only(findings) == [], findings


def test_unknown_crl_is_404(client: FlaskClient) -> None:
    assert client.get("/pki/crl/nope.crl").status_code == 404


def test_revocation_seen_by_openssl_crl_check(
    app: Flask, client: FlaskClient, cli: CliInvoke, tmp_path: Path
) -> None:
    root, issuing = _ca(app, ROOT_SLUG), _ca(app, ISSUING_SLUG)
    serial, responder = _responder(app)

    def verify() -> tuple[int, str]:
        crls = [_fetch(client, ROOT_SLUG), _fetch(client, ISSUING_SLUG)]
        crl_file = tmp_path / "crls.pem"
        crl_file.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in crls))
        proc = openssl_verify(
            tmp_path,
            responder,
            roots=[root],
            intermediates=[issuing],
            extra=["-crl_check_all", "-CRLfile", str(crl_file)],
        )
        return proc.returncode, proc.stdout + proc.stderr

    code, output = verify()
    assert code == 0, output

    result = cli("revoke", serial, "--reason", "keyCompromise")
    assert result.exit_code == 0, result.output
    code, output = verify()
    assert code != 0
    assert "certificate revoked" in output

    crl = _fetch(client, ISSUING_SLUG)
    entry = crl.get_revoked_certificate_by_serial_number(responder.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise

    again = cli("revoke", serial, "--reason", "superseded")
    assert again.exit_code == 1
    assert "already revoked" in again.output


def test_hold_can_become_permanent(app: Flask, cli: CliInvoke) -> None:
    serial, _ = _responder(app)
    assert cli("revoke", serial, "--reason", "certificateHold").exit_code == 0
    assert cli("revoke", serial, "--reason", "certificateHold").exit_code == 1
    assert cli("revoke", serial, "--reason", "cessationOfOperation").exit_code == 0


def test_revoke_unknown_serial(cli: CliInvoke) -> None:
    result = cli("revoke", "abcdef", "--reason", "superseded")
    assert result.exit_code == 1
    assert "no certificate with serial abcdef" in result.output


def test_crl_numbers_increase(app: Flask, cli: CliInvoke, client: FlaskClient) -> None:
    before = _fetch(client, ISSUING_SLUG).extensions.get_extension_for_class(x509.CRLNumber)
    assert cli("crl", "publish").exit_code == 0
    after = _fetch(client, ISSUING_SLUG).extensions.get_extension_for_class(x509.CRLNumber)
    assert after.value.crl_number == before.value.crl_number + 1


def test_concurrent_publishers_never_share_a_number(app: Flask) -> None:
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            with app.app_context():
                publish_crl(
                    token=app_token(),
                    issuer=get_authority(ISSUING_SLUG),
                    lifetime=crl_lifetime(settings_of(app), ISSUING_SLUG),
                    actor="tests",
                )
                db.session.commit()
        except BaseException as exc:  # re-raised below in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with app.app_context():
        issuer_id = get_authority(ISSUING_SLUG).id
        numbers = list(
            db.session.scalars(
                sa.select(PublishedCRL.number).where(PublishedCRL.issuer_id == issuer_id)
            )
        )
    assert len(numbers) == len(set(numbers))
    assert len(numbers) >= 5  # the baseline CRL and four more


def _coalescing(app: Flask, seconds: int) -> Settings:
    settings = settings_of(app)
    return Settings(values={**settings.values, "CRL_COALESCE_SECONDS": seconds})


def _crl_count(issuer_id: int) -> int:
    return int(
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(PublishedCRL)
            .where(PublishedCRL.issuer_id == issuer_id)
        )
        or 0
    )


def test_burst_of_revocations_coalesces_crls(
    app: Flask, cli: CliInvoke, client: FlaskClient, make_certificate: MakeCertificate
) -> None:
    issued = [make_certificate(presign=False) for _ in range(50)]
    with app.app_context():
        settings = _coalescing(app, 60)
        issuer_id = get_authority(ISSUING_SLUG).id
        before = _crl_count(issuer_id)
        published = 0
        for one in issued:  # one transaction each, as 50 separate requests would be
            certificate = db.session.get(Certificate, one.id)
            assert certificate is not None
            change = revoke_certificate(
                token=app_token(),
                settings=settings,
                certificate=certificate,
                reason="keyCompromise",
                invalidity_date=None,
                actor="tests",
            )
            published += change.crl is not None
            db.session.commit()
        assert _crl_count(issuer_id) - before == published
        assert published <= 1  # at most the first, when the newest CRL was old enough
        assert db.session.get(PendingCRL, issuer_id) is not None

    result = cli("crl", "publish", "--pending")
    assert result.exit_code == 0, result.output
    crl = _fetch(client, ISSUING_SLUG)
    listed = {entry.serial_number for entry in crl}
    assert {one.certificate.serial_number for one in issued} <= listed
    with app.app_context():
        assert db.session.get(PendingCRL, issuer_id) is None
    nothing = cli("crl", "publish", "--pending")
    assert nothing.exit_code == 0
    assert nothing.output == ""


def test_revocation_after_the_interval_publishes_at_once(
    app: Flask, make_certificate: MakeCertificate
) -> None:
    first, second = make_certificate(presign=False), make_certificate(presign=False)
    with app.app_context():
        changes = []
        for one in (first, second):
            certificate = db.session.get(Certificate, one.id)
            assert certificate is not None
            changes.append(
                revoke_certificate(
                    token=app_token(),
                    settings=_coalescing(app, 0),
                    certificate=certificate,
                    reason="superseded",
                    invalidity_date=None,
                    actor="tests",
                )
            )
            db.session.commit()
        assert all(change.crl is not None for change in changes)
        assert db.session.get(PendingCRL, get_authority(ISSUING_SLUG).id) is None


def test_watch_worker_publishes_pending(
    app: Flask, cli: CliInvoke, client: FlaskClient, make_certificate: MakeCertificate
) -> None:
    issued = make_certificate(presign=False)
    with app.app_context():
        certificate = db.session.get(Certificate, issued.id)
        assert certificate is not None
        issuer = get_authority(ISSUING_SLUG)
        revoke_certificate(
            token=app_token(),
            settings=_coalescing(app, 3600),
            certificate=certificate,
            reason="affiliationChanged",
            invalidity_date=None,
            actor="tests",
        )
        db.session.commit()
        # A CRL published within the hour (the session's first): the revocation waits.
        assert db.session.get(PendingCRL, issuer.id) is not None

    result = cli("crl", "publish", "--watch", "1", "--rounds", "2")
    assert result.exit_code == 0, result.output
    assert result.output.count("CRL #") == 1  # the second round finds nothing pending
    crl = _fetch(client, ISSUING_SLUG)
    assert crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number)
