"""The entries of a published CRL: exactly the issuer's unexpired revocations, each with its
date, reason and invalidity date, read in streamed batches."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask

from ca_service.authorities.service import ISSUING_SLUG, ROOT_SLUG, get_authority
from ca_service.db import db, utcnow
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.models import Certificate
from ca_service.revocation import service
from ca_service.revocation.service import (
    crl_lifetime,
    publish_crl,
    release_hold,
    revoke_certificate,
)
from tests.pki_tools import errors_only, pkilint_findings
from tests.revocation.conftest import MakeCertificate


def _publish(app: Flask, slug: str = ISSUING_SLUG) -> x509.CertificateRevocationList:
    row = publish_crl(
        token=app_token(),
        issuer=get_authority(slug),
        lifetime=crl_lifetime(settings_of(app), slug),
        actor="tests",
    )
    return x509.load_der_x509_crl(row.der)


def _revoke(app: Flask, certificate_id: int, reason: str, invalidity: dt.datetime | None) -> None:
    certificate = db.session.get(Certificate, certificate_id)
    assert certificate is not None
    revoke_certificate(
        token=app_token(),
        settings=settings_of(app),
        certificate=certificate,
        reason=reason,
        invalidity_date=invalidity,
        actor="tests",
    )


def _entries(crl: x509.CertificateRevocationList) -> dict[int, x509.RevokedCertificate]:
    return {entry.serial_number: entry for entry in crl}


def _insert_revoked(issuer_id: int, count: int, reason: str) -> list[int]:
    """Revoked rows of ``issuer_id`` straight into the table, as a bulk import would; their
    serials. The CRL reads the row's columns only, never its DER."""
    now = utcnow()
    serials = [secrets.randbits(159) | 1 << 158 for _ in range(count)]
    db.session.execute(
        sa.insert(Certificate),
        [
            {
                "issuer_id": issuer_id,
                "serial": format(serial, "x"),
                "kind": "end_entity",
                "status": "issued",
                "subject": "CN=imported",
                "not_before": now - dt.timedelta(days=1),
                "not_after": now + dt.timedelta(days=1),
                "der": b"\x30\x00",
                "revoked_at": now - dt.timedelta(minutes=i),
                "revocation_reason": reason,
            }
            for i, serial in enumerate(serials)
        ],
    )
    return serials


def _non_utc_session() -> None:
    """Make the database session's own time zone anything but UTC (PostgreSQL): the entries'
    dates must not depend on it."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text("SET LOCAL TimeZone = 'Asia/Shanghai'"))


def test_entries_carry_date_reason_and_invalidity_date(
    app: Flask, tmp_path: Path, make_certificate: MakeCertificate
) -> None:
    compromised, superseded, unspecified, held, released, expired, valid = (
        make_certificate(presign=False) for _ in range(7)
    )
    invalid_since = dt.datetime(2024, 5, 1, 8, 30, 15, tzinfo=dt.UTC)
    with app.app_context():
        _revoke(app, compromised.id, "keyCompromise", invalid_since)
        _revoke(app, superseded.id, "superseded", None)
        _revoke(app, unspecified.id, "unspecified", None)
        _revoke(app, held.id, "certificateHold", None)
        _revoke(app, released.id, "certificateHold", None)
        _revoke(app, expired.id, "affiliationChanged", None)
        taken_off = db.session.get(Certificate, released.id)
        assert taken_off is not None
        release_hold(
            token=app_token(), settings=settings_of(app), certificate=taken_off, actor="tests"
        )
        # Expired since yesterday: RFC 5280 lets a CRL drop it, and ours does.
        db.session.execute(
            sa.update(Certificate)
            .where(Certificate.id == expired.id)
            .values(
                not_before=utcnow() - dt.timedelta(days=30),
                not_after=utcnow() - dt.timedelta(days=1),
            )
        )
        db.session.commit()
        revoked = {
            row.serial_number: row
            for row in db.session.scalars(
                sa.select(Certificate).where(
                    Certificate.id.in_([compromised.id, superseded.id, unspecified.id, held.id])
                )
            )
        }

        _non_utc_session()
        crl = _publish(app)
        entries = _entries(crl)
        assert set(entries) == set(revoked)
        for serial, entry in entries.items():
            assert entry.revocation_date_utc == revoked[serial].revoked_at

        def reason(issued_serial: int) -> x509.ReasonFlags | None:
            extensions = entries[issued_serial].extensions
            try:
                return extensions.get_extension_for_class(x509.CRLReason).value.reason
            except x509.ExtensionNotFound:
                return None

        assert reason(compromised.certificate.serial_number) is x509.ReasonFlags.key_compromise
        assert reason(superseded.certificate.serial_number) is x509.ReasonFlags.superseded
        assert reason(held.certificate.serial_number) is x509.ReasonFlags.certificate_hold
        # RFC 5280 §5.3.1: unspecified is expressed by leaving the reason out.
        assert reason(unspecified.certificate.serial_number) is None
        dated = entries[compromised.certificate.serial_number].extensions.get_extension_for_class(
            x509.InvalidityDate
        )
        assert dated.value.invalidity_date_utc == invalid_since
        assert not dated.critical
        for issued in (superseded, unspecified, held):
            with pytest.raises(x509.ExtensionNotFound):
                entries[issued.certificate.serial_number].extensions.get_extension_for_class(
                    x509.InvalidityDate
                )
        assert valid.certificate.serial_number not in entries

        # End-entity revocations stay off the root's CRL (its scope is CA certificates).
        assert _entries(_publish(app, ROOT_SLUG)) == {}
        db.session.rollback()

    findings = pkilint_findings(
        "lint_crl", crl.public_bytes(Encoding.DER), tmp_path, extra=["-t", "CRL", "-p", "PKIX"]
    )
    assert errors_only(findings) == [], findings


@pytest.mark.parametrize("chunked", [True, False], ids=["chunks", "single-rows"])
def test_entries_across_many_batches(
    app: Flask, monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    # Rows arrive in batches of _ROW_BATCH; a small one makes 23 rows cross several. Without
    # chunks (libpq before 17) PostgreSQL streams them one by one.
    monkeypatch.setattr(service, "_ROW_BATCH", 4)
    if not chunked:
        monkeypatch.setattr(psycopg.capabilities, "has_stream_chunked", lambda check=False: False)
    with app.app_context():
        issuer = get_authority(ISSUING_SLUG)
        serials = _insert_revoked(issuer.id, 23, "cessationOfOperation")
        crl = _publish(app)
        assert set(_entries(crl)) == set(serials)
        assert all(
            entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
            is x509.ReasonFlags.cessation_of_operation
            for entry in crl
        )
        db.session.rollback()


def test_bad_row_fails_publication_and_leaves_the_session_usable(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "_ROW_BATCH", 2)
    with app.app_context():
        issuer = get_authority(ISSUING_SLUG)
        # Stored first, so that (the rows coming in table order) the stream stops long before
        # its end, with rows still on their way.
        (bad,) = _insert_revoked(issuer.id, 1, "removeFromCRL")  # only a delta CRL may say so
        _insert_revoked(issuer.id, 30, "superseded")
        with pytest.raises(
            ValueError, match=f"certificate {bad:x}: unknown revocation reason"
        ) as failure:
            _publish(app)
        # The error is still held here, as an error handler holds it while the request rolls
        # back: the stopped query must be over already, or the rollback would wait for ever.
        driver = db.session.connection().connection.driver_connection
        busy = (
            isinstance(driver, psycopg.Connection)
            and driver.info.transaction_status is psycopg.pq.TransactionStatus.ACTIVE
        )
        del failure  # frees the stream if it was left open, so that the test fails, not hangs
        assert not busy
        db.session.rollback()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Certificate))


def test_database_error_mid_stream_is_sqlalchemys(app: Flask) -> None:
    with app.app_context():
        if db.session.get_bind().dialect.name != "postgresql":
            pytest.skip("PostgreSQL rows are read with psycopg directly")
        issuer = get_authority(ISSUING_SLUG)
        _insert_revoked(issuer.id, 5, "superseded")
        # PostgreSQL stores an infinite date; Python has no datetime for it, so psycopg fails
        # while loading that row.
        (infinite,) = _insert_revoked(issuer.id, 1, "superseded")
        db.session.execute(
            sa.update(Certificate)
            .where(Certificate.serial == format(infinite, "x"))
            .values(revoked_at=sa.literal_column("'infinity'::timestamptz"))
        )
        with pytest.raises(sa.exc.DataError) as failure:
            _publish(app)
        assert isinstance(failure.value.orig, psycopg.DataError)
        del failure
        db.session.rollback()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Certificate))


def test_large_crl_is_stored_with_lz4_where_the_server_has_it(app: Flask) -> None:
    with app.app_context():
        if db.session.get_bind().dialect.name != "postgresql":
            pytest.skip("a PostgreSQL storage setting")
        methods = db.session.scalar(
            sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
        )
        issuer = get_authority(ISSUING_SLUG)
        _insert_revoked(issuer.id, 300, "keyCompromise")  # some 15 kB: stored compressed
        row = publish_crl(
            token=app_token(),
            issuer=issuer,
            lifetime=crl_lifetime(settings_of(app), ISSUING_SLUG),
            actor="tests",
        )
        stored = db.session.scalar(
            sa.text("SELECT pg_column_compression(der) FROM crls WHERE id = :id"), {"id": row.id}
        )
        assert stored == ("lz4" if "lz4" in methods else "pglz")
        assert len(x509.load_der_x509_crl(row.der)) == 300
        db.session.rollback()
