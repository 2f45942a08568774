"""Tax-CA CRLs: checked against their anchor, never replaced by an older one, fetched over real
HTTP, and consulted per sign-in from a per-process cache that fails closed once out of date."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask

from ca_service.audit.models import AuditEvent
from ca_service.binding import tax_crls
from ca_service.binding.models import TaxCrl, TrustAnchor, TrustPurpose
from ca_service.binding.service import add_trust_anchor
from ca_service.binding.tax_crls import (
    CrlFetchFailed,
    CrlUnavailable,
    RevokedEntry,
    fetch_crl,
    refresh_all,
    revocation_of,
    store_crl,
)
from ca_service.config import Settings
from ca_service.db import db, read_first, utcnow
from ca_service.errors import ValidationError
from ca_service.extensions import settings_of
from tests.binding.conftest import CrlServer, TrustedTaxCA
from tests.binding.tax_ca import TaxCA, crl_pem
from tests.issuance.seal_factory import make_seal_ca

KEY_COMPROMISE = x509.ReasonFlags.key_compromise


def anchor_of(anchor_id: int) -> TrustAnchor:
    anchor = db.session.get(TrustAnchor, anchor_id)
    assert anchor is not None
    return anchor


def stored_crl(anchor_id: int) -> TaxCrl | None:
    return db.session.scalar(sa.select(TaxCrl).where(TaxCrl.anchor_id == anchor_id))


def crl_events() -> list[str]:
    return list(
        db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.action == "trust.crl_stored")
        )
    )


def settings(app: Flask, **overrides: Any) -> Settings:
    return settings_of(app).with_overrides(**overrides)


def lookup(app: Flask, anchor_id: int, serial: int, now: dt.datetime, **kw: Any) -> Any:
    """``revocation_of`` for the anchor, as a sign-in would call it."""
    return revocation_of(
        anchor=anchor_of(anchor_id),
        serial=serial,
        hint_urls=kw.pop("hint_urls", ()),
        settings=kw.pop("settings", settings_of(app)),
        now=now,
    )


# -- storing ---------------------------------------------------------------------------------


def test_stores_a_good_crl_and_finds_revoked_serials(
    app: Flask, trusted_tax_ca: TrustedTaxCA
) -> None:
    tax = trusted_tax_ca.ca
    revoked, _ = tax.issue("NTRCN-911100006000373411")
    held, _ = tax.issue("NTRCN-911100006000373412")
    good, _ = tax.issue("NTRCN-911100006000373413")
    now = utcnow()
    der = tax.crl(
        revoked=[
            (revoked.serial_number, KEY_COMPROMISE),
            (held.serial_number, x509.ReasonFlags.certificate_hold),
            (12345, None),
        ],
        number=7,
    )
    with app.app_context():
        row = store_crl(
            actor="tests",
            anchor=anchor_of(trusted_tax_ca.intermediate_id),
            der_or_pem=crl_pem(der),  # PEM is accepted; DER is what is kept
            source="upload:tests",
            now=now,
        )
        db.session.commit()
        assert row.der == der
        assert row.crl_number == "7"
        assert row.source == "upload:tests"
        assert row.fetched_at == now
        assert row.last_error is None
        assert now < row.next_update

        entry = lookup(app, trusted_tax_ca.intermediate_id, revoked.serial_number, now)
        assert isinstance(entry, RevokedEntry)
        assert entry.serial == revoked.serial_number
        assert entry.reason == "keyCompromise"
        assert entry.revoked_at < now
        held_entry = lookup(app, trusted_tax_ca.intermediate_id, held.serial_number, now)
        assert held_entry.reason == "certificateHold"
        assert lookup(app, trusted_tax_ca.intermediate_id, 12345, now).reason is None
        assert lookup(app, trusted_tax_ca.intermediate_id, good.serial_number, now) is None
        # The intermediate's CRL says nothing about the root's certificates.
        with pytest.raises(CrlUnavailable):
            lookup(app, trusted_tax_ca.root_id, tax.intermediate.serial_number, now)

        # The same CRL again (DER this time) changes nothing and is not a new audit event.
        store_crl(
            actor="tests",
            anchor=anchor_of(trusted_tax_ca.intermediate_id),
            der_or_pem=der,
            source="http://example.test/again.crl",
            now=now + dt.timedelta(minutes=5),
        )
        db.session.commit()
        assert crl_events() == ["trust.crl_stored"]
        again = stored_crl(trusted_tax_ca.intermediate_id)
        assert again is not None
        assert again.fetched_at == now + dt.timedelta(minutes=5)


def _crl_without_next_update(tax: TaxCA) -> bytes:
    tbs = asn1_crl.TbsCertList(
        {
            "version": "v2",
            "signature": {"algorithm": "sha256_ecdsa"},
            "issuer": asn1_x509.Name.load(tax.intermediate.subject.public_bytes()),
            "this_update": asn1_x509.Time(
                {"utc_time": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)}
            ),
        }
    )
    key = tax.intermediate_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = key.sign(tbs.dump(), ec.ECDSA(hashes.SHA256()))
    return asn1_crl.CertificateList(
        {
            "tbs_cert_list": tbs,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": signature,
        }
    ).dump()


def _crl_with_foreign_key_id(tax: TaxCA) -> bytes:
    other = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(tax.intermediate.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(other.public_key()), critical=False
        )
        .sign(other, hashes.SHA256())
        .public_bytes(Encoding.DER)
    )


def _delta_crl(tax: TaxCA) -> bytes:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(tax.intermediate.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(2), critical=False)
        .add_extension(x509.DeltaCRLIndicator(1), critical=True)
        .sign(tax.intermediate_key, hashes.SHA256())
        .public_bytes(Encoding.DER)
    )


REFUSALS: dict[str, tuple[Callable[[TaxCA], bytes], str]] = {
    "malformed": (lambda tax: b"\x30\x03\x02\x01\x01", "is not a certificate revocation list"),
    "text": (lambda tax: b"-----BEGIN X509 CRL-----\nnope\n-----END X509 CRL-----\n", "PEM or DER"),
    "another CA": (lambda tax: TaxCA("Other Bureau").crl(), "was issued by"),
    "another key": (
        lambda tax: tax.crl(signing_key=ec.generate_private_key(ec.SECP256R1())),
        "signature does not verify with the public key",
    ),
    "another key id": (_crl_with_foreign_key_id, "signed by another key than that of"),
    "the root's CRL": (lambda tax: tax.crl(issuer="root"), "was issued by"),
    "future": (
        lambda tax: tax.crl(this_update=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)),
        "is in the future",
    ),
    "no nextUpdate": (_crl_without_next_update, "has no nextUpdate"),
    "delta": (_delta_crl, "is a delta CRL"),
}


def test_rsa_tax_cas_work_alike(app: Flask) -> None:
    tax = TaxCA("RSA Bureau", key_kind="rsa")
    certificate, _ = tax.issue("91110000600037341X", attribute="serialNumber")
    now = utcnow()
    with app.app_context():
        anchor = add_trust_anchor(
            actor="tests", purpose=TrustPurpose.TAX, data=tax.intermediate_pem
        )
        store_crl(
            actor="tests",
            anchor=anchor,
            der_or_pem=tax.crl(revoked=[(certificate.serial_number, None)]),
            source="t",
            now=now,
        )
        entry = lookup(app, anchor.id, certificate.serial_number, now)
        assert entry.reason is None
        with pytest.raises(ValidationError, match="signature does not verify"):
            store_crl(
                actor="tests",
                anchor=anchor,
                der_or_pem=tax.crl(signing_key=tax.root_key),
                source="t",
                now=now,
            )


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refuses_crls_not_issued_by_the_anchor(
    app: Flask, trusted_tax_ca: TrustedTaxCA, case: str
) -> None:
    make, message = REFUSALS[case]
    data = make(trusted_tax_ca.ca)
    with app.app_context():
        with pytest.raises(ValidationError, match=message):
            store_crl(
                actor="tests",
                anchor=anchor_of(trusted_tax_ca.intermediate_id),
                der_or_pem=data,
                source="upload:tests",
                now=utcnow(),
            )
        assert stored_crl(trusted_tax_ca.intermediate_id) is None
        assert crl_events() == []


def test_refuses_a_crl_older_than_the_stored_one(app: Flask, trusted_tax_ca: TrustedTaxCA) -> None:
    tax = trusted_tax_ca.ca
    now = utcnow()
    newer = tax.crl(number=5, this_update=now - dt.timedelta(hours=1))
    lower_number = tax.crl(number=4, this_update=now - dt.timedelta(minutes=30))
    earlier = tax.crl(number=6, this_update=now - dt.timedelta(hours=2))
    same_identity = tax.crl(number=5, this_update=now - dt.timedelta(hours=1), revoked=[(9, None)])
    with app.app_context():
        anchor = anchor_of(trusted_tax_ca.intermediate_id)

        def store(data: bytes) -> TaxCrl:
            return store_crl(actor="tests", anchor=anchor, der_or_pem=data, source="t", now=now)

        store(newer)
        with pytest.raises(ValidationError, match=r"\(number 4\) is older than the stored one"):
            store(lower_number)
        with pytest.raises(ValidationError, match=r"\(thisUpdate .*\) is older than the stored"):
            store(earlier)
        with pytest.raises(ValidationError, match="same number and thisUpdate"):
            store(same_identity)
        row = stored_crl(anchor.id)
        assert row is not None
        assert row.der == newer


def test_crls_are_kept_for_tax_anchors_only(app: Flask) -> None:
    seal = make_seal_ca("Seal CA Without CRLs", now=dt.datetime.now(dt.UTC))
    with app.app_context():
        anchor = add_trust_anchor(
            actor="tests",
            purpose=TrustPurpose.SEAL,
            data=seal.certificate.public_bytes(Encoding.PEM),
        )
        with pytest.raises(ValidationError, match="CRLs are kept for tax anchors only"):
            store_crl(actor="tests", anchor=anchor, der_or_pem=b"x", source="t", now=utcnow())


def test_the_anchors_own_distribution_point_is_not_its_crl_url(app: Flask, tax_ca: TaxCA) -> None:
    # The intermediate's certificate names the root's CRL; the intermediate publishes elsewhere.
    with app.app_context():
        anchor = add_trust_anchor(
            actor="tests", purpose=TrustPurpose.TAX, data=tax_ca.intermediate_pem
        )
        assert anchor.crl_url is None


# -- fetching --------------------------------------------------------------------------------


def test_fetches_over_http_and_notes_failures(
    app: Flask, trusted_tax_ca: TrustedTaxCA, crl_server: CrlServer
) -> None:
    tax = trusted_tax_ca.ca
    url = crl_server.publish("/tax/intermediate.crl", tax.crl(number=1))
    now = utcnow()
    with app.app_context():
        anchor = anchor_of(trusted_tax_ca.intermediate_id)
        row = fetch_crl(actor="tests", anchor=anchor, url=url, timeout=5, now=now)
        db.session.commit()
        assert row.source == url
        assert row.crl_number == "1"

        crl_server.fail("/tax/intermediate.crl", 404)
        with pytest.raises(CrlFetchFailed, match="HTTP 404") as refused:
            fetch_crl(actor="tests", anchor=anchor, url=url, timeout=5, now=now)
        assert refused.value.status_code == 502
        assert tax.intermediate.subject.rfc4514_string() in refused.value.message
        db.session.commit()  # the failure is noted: flushed for the caller's boundary
        row = stored_crl(anchor.id)
        assert row is not None
        assert row.last_error is not None
        assert "HTTP 404" in row.last_error
        assert url in row.last_error
        assert row.crl_number == "1"  # the stored CRL stays

        crl_server.fail("/tax/intermediate.crl", 500)
        with pytest.raises(CrlFetchFailed, match="HTTP 500"):
            fetch_crl(actor="tests", anchor=anchor, url=url, timeout=5, now=now)

        hanging = crl_server.hang("/tax/slow.crl", seconds=30)
        started = time.monotonic()
        with pytest.raises(CrlFetchFailed, match=r"within 0\.5 seconds"):
            fetch_crl(actor="tests", anchor=anchor, url=hanging, timeout=0.5, now=now)
        assert time.monotonic() - started < 5

        crl_server.publish("/tax/junk.crl", b"<html>not a CRL</html>")
        with pytest.raises(CrlFetchFailed, match="not a certificate revocation list"):
            fetch_crl(
                actor="tests",
                anchor=anchor,
                url=crl_server.url("/tax/junk.crl"),
                timeout=5,
                now=now,
            )
        for bad in ("ftp://example.test/x.crl", "file:///etc/passwd", "ldap://x/cn=y"):
            with pytest.raises(CrlFetchFailed, match=r"only http:// and https://"):
                fetch_crl(actor="tests", anchor=anchor, url=bad, timeout=5, now=now)
        # A server that is not there.
        with pytest.raises(CrlFetchFailed, match="cannot connect"):
            fetch_crl(
                actor="tests",
                anchor=anchor,
                url=crl_server.base_url.rsplit(":", 1)[0] + ":9/x.crl",
                timeout=2,
                now=now,
            )

        crl_server.publish("/tax/intermediate.crl", tax.crl(number=2))
        row = fetch_crl(actor="tests", anchor=anchor, url=url, timeout=5, now=now)
        assert row.crl_number == "2"
        assert row.last_error is None


def test_a_lookup_fetches_a_missing_crl_once(
    app: Flask, trusted_tax_ca: TrustedTaxCA, crl_server: CrlServer
) -> None:
    tax = trusted_tax_ca.ca
    certificate, _ = tax.issue("NTRCN-911100006000373411")
    path = "/tax/intermediate.crl"
    url = crl_server.publish(path, tax.crl(revoked=[(certificate.serial_number, KEY_COMPROMISE)]))
    now = utcnow()
    with app.app_context():
        anchor_of(trusted_tax_ca.intermediate_id).crl_url = url
        db.session.commit()
        for _ in range(3):
            entry = lookup(app, trusted_tax_ca.intermediate_id, certificate.serial_number, now)
            assert entry.reason == "keyCompromise"
        assert crl_server.requests == [path]
        db.session.commit()
        row = stored_crl(trusted_tax_ca.intermediate_id)
        assert row is not None
        assert row.source == url
        assert crl_events() == ["trust.crl_stored"]


def test_without_a_crl_url_the_certificates_distribution_point_is_used(
    app: Flask, trusted_tax_ca: TrustedTaxCA, crl_server: CrlServer
) -> None:
    tax = trusted_tax_ca.ca
    url = crl_server.publish("/cdp/intermediate.crl", tax.crl())
    now = utcnow()
    with app.app_context():
        anchor_of(trusted_tax_ca.intermediate_id).crl_url = None
        assert (
            lookup(
                app,
                trusted_tax_ca.intermediate_id,
                77,
                now,
                hint_urls=["ldap://x", "http://[bad/x.crl", url],
            )
            is None
        )
        assert crl_server.requests == ["/cdp/intermediate.crl"]


def test_no_url_and_no_crl_fails_closed(app: Flask, trusted_tax_ca: TrustedTaxCA) -> None:
    with app.app_context():
        anchor_of(trusted_tax_ca.intermediate_id).crl_url = None
        with pytest.raises(CrlUnavailable) as refused:
            lookup(app, trusted_tax_ca.intermediate_id, 1, utcnow(), hint_urls=["ldap://x/y"])
    message = refused.value.message
    assert refused.value.status_code == 403
    assert trusted_tax_ca.ca.intermediate.subject.rfc4514_string() in message
    assert "revocation list (CRL) is missing" in message
    assert "no CRL URL is set" in message
    assert "refused until a CA administrator uploads a current CRL" in message


def test_a_stale_crl_serves_within_the_grace_period_then_fails_closed(
    app: Flask, trusted_tax_ca: TrustedTaxCA, crl_server: CrlServer
) -> None:
    tax = trusted_tax_ca.ca
    certificate, _ = tax.issue("NTRCN-911100006000373411")
    start = utcnow() - dt.timedelta(days=2)
    next_update = start + dt.timedelta(days=1)
    path = "/tax/intermediate.crl"
    url = crl_server.fail(path, 500)
    graced = settings(app, TAX_CRL_GRACE_HOURS=6, TAX_CRL_FETCH_SECONDS=2)
    with app.app_context():
        anchor = anchor_of(trusted_tax_ca.intermediate_id)
        anchor.crl_url = url
        store_crl(
            actor="tests",
            anchor=anchor,
            der_or_pem=tax.crl(
                revoked=[(certificate.serial_number, KEY_COMPROMISE)],
                this_update=start,
                next_update=next_update,
            ),
            source="upload:tests",
            now=start,
        )
        db.session.commit()
        serial = certificate.serial_number

        # Current: no fetch.
        assert (
            lookup(app, anchor.id, serial, next_update, settings=graced).reason == "keyCompromise"
        )
        assert crl_server.requests == []

        # Out of date, the fetch fails, within the grace period: the stale CRL still answers.
        late = next_update + dt.timedelta(hours=1)
        assert lookup(app, anchor.id, serial, late, settings=graced).reason == "keyCompromise"
        assert lookup(app, anchor.id, 5, late, settings=graced) is None
        assert crl_server.requests == [path]  # one failed fetch, then the retry pause
        db.session.commit()
        row = stored_crl(anchor.id)
        assert row is not None
        assert row.last_error is not None
        assert "HTTP 500" in row.last_error

        # Beyond the grace period: every certificate of this CA is refused.
        too_late = next_update + dt.timedelta(hours=7)
        with pytest.raises(CrlUnavailable) as refused:
            lookup(app, anchor.id, 5, too_late, settings=graced)
        message = refused.value.message
        assert anchor.subject in message
        assert f"out of date since {next_update:%Y-%m-%d %H:%M} UTC" in message
        assert "HTTP 500" in message
        # Without a grace period, right after nextUpdate.
        with pytest.raises(CrlUnavailable):
            lookup(
                app,
                anchor.id,
                5,
                late + tax_crls.RETRY_AFTER,
                settings=settings(app, TAX_CRL_GRACE_HOURS=0),
            )

        # The CA publishes again: the next lookup after the retry pause fetches it.
        crl_server.publish(path, tax.crl(this_update=utcnow() - dt.timedelta(minutes=1)))
        recovered = utcnow() + dt.timedelta(hours=1)
        assert lookup(app, anchor.id, serial, recovered, settings=graced) is None


def test_a_fetched_crl_that_is_out_of_date_too_does_not_help(
    app: Flask, trusted_tax_ca: TrustedTaxCA, crl_server: CrlServer
) -> None:
    tax = trusted_tax_ca.ca
    start = utcnow() - dt.timedelta(days=3)
    url = crl_server.publish(
        "/tax/old.crl", tax.crl(this_update=start, next_update=start + dt.timedelta(days=1))
    )
    with app.app_context():
        anchor_of(trusted_tax_ca.intermediate_id).crl_url = url
        with pytest.raises(CrlUnavailable, match="is out of date too"):
            lookup(app, trusted_tax_ca.intermediate_id, 1, utcnow())


# -- the cache -------------------------------------------------------------------------------


def test_lookups_do_not_parse_the_crl_again(
    app: Flask, trusted_tax_ca: TrustedTaxCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    tax = trusted_tax_ca.ca
    revoked = list(range(1000, 6000))
    der = tax.crl(revoked=[(serial, KEY_COMPROMISE) for serial in revoked])
    now = utcnow()
    with app.app_context():
        store_crl(
            actor="tests",
            anchor=anchor_of(trusted_tax_ca.intermediate_id),
            der_or_pem=der,
            source="t",
            now=now,
        )
        db.session.commit()

    parses = []
    real = tax_crls._revoked_entries

    def counting(crl: x509.CertificateRevocationList) -> Any:
        parses.append(1)
        return real(crl)

    monkeypatch.setattr(tax_crls, "_revoked_entries", counting)
    with app.app_context():
        anchor = anchor_of(trusted_tax_ca.intermediate_id)
        # This process's CPU time, not the wall clock: the machine may be busy with others.
        started = time.process_time()
        for serial in range(500, 2500):
            revocation_of(
                anchor=anchor, serial=serial, hint_urls=(), settings=settings_of(app), now=now
            )
        elapsed = time.process_time() - started
    assert parses == []  # store_crl left the parsed CRL in this process's cache
    # A generous bound (one SELECT and a dict lookup each): parsing per call would take minutes.
    assert elapsed < 2, f"2000 lookups took {elapsed:.2f} s of CPU"

    # Another process (a new app) parses it once, however many threads ask at the same time.
    from ca_service.app import create_app

    other = create_app(app.extensions["ca_settings"].values)
    errors: list[BaseException] = []
    found: list[Any] = []

    def sign_ins() -> None:
        try:
            with other.app_context(), read_first():
                anchor = anchor_of(trusted_tax_ca.intermediate_id)
                for serial in (999, 1000, 5999, 6000):
                    entry = revocation_of(
                        anchor=anchor,
                        serial=serial,
                        hint_urls=(),
                        settings=settings_of(other),
                        now=now,
                    )
                    found.append((serial, entry is not None))
                db.session.rollback()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=sign_ins) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with other.app_context():
        db.session.remove()
        db.engine.dispose()
    assert errors == []
    assert parses == [1]
    assert sorted(found) == sorted([(999, False), (1000, True), (5999, True), (6000, False)] * 8)


def test_a_newer_crl_replaces_the_cached_one(
    app: Flask, trusted_tax_ca: TrustedTaxCA, tmp_path: Any, cli: Any
) -> None:
    tax = trusted_tax_ca.ca
    certificate, _ = tax.issue("NTRCN-911100006000373411")
    serial = certificate.serial_number
    now = utcnow()
    with app.app_context():
        anchor = anchor_of(trusted_tax_ca.intermediate_id)
        store_crl(actor="tests", anchor=anchor, der_or_pem=tax.crl(), source="t", now=now)
        db.session.commit()
        assert lookup(app, anchor.id, serial, now) is None

        # Stored in this process: seen at once.
        store_crl(
            actor="tests",
            anchor=anchor,
            der_or_pem=tax.crl(revoked=[(serial, x509.ReasonFlags.certificate_hold)]),
            source="t",
            now=now,
        )
        db.session.commit()
        assert lookup(app, anchor.id, serial, now).reason == "certificateHold"

    # Stored by another process (the CLI builds its own app): seen at the next lookup.
    later = tmp_path / "later.crl"
    later.write_bytes(tax.crl(revoked=[(serial, KEY_COMPROMISE)]))
    uploaded = cli("trust", "crl", "upload", str(trusted_tax_ca.intermediate_id), str(later))
    assert uploaded.exit_code == 0, uploaded.output
    with app.app_context():
        assert lookup(app, trusted_tax_ca.intermediate_id, serial, utcnow()).reason == (
            "keyCompromise"
        )


def test_a_crl_with_the_same_this_update_and_a_higher_number_is_seen(
    app: Flask, trusted_tax_ca: TrustedTaxCA, tmp_path: Any, cli: Any
) -> None:
    # Sign-ins tell the stored CRLs of an anchor apart by thisUpdate and cRLNumber together:
    # a CA may reissue its CRL within the same second, with a new number only.
    tax = trusted_tax_ca.ca
    certificate, _ = tax.issue("NTRCN-911100006000373411")
    serial = certificate.serial_number
    this_update = utcnow() - dt.timedelta(minutes=1)
    with app.app_context():
        anchor = anchor_of(trusted_tax_ca.intermediate_id)
        first = tax.crl(this_update=this_update, number=7)
        store_crl(actor="tests", anchor=anchor, der_or_pem=first, source="t", now=utcnow())
        db.session.commit()
        assert lookup(app, anchor.id, serial, utcnow()) is None

    # Stored by another process (the CLI builds its own app), so nothing here is told.
    reissued = tmp_path / "reissued.crl"
    reissued.write_bytes(
        tax.crl(this_update=this_update, number=8, revoked=[(serial, KEY_COMPROMISE)])
    )
    uploaded = cli("trust", "crl", "upload", str(trusted_tax_ca.intermediate_id), str(reissued))
    assert uploaded.exit_code == 0, uploaded.output
    with app.app_context():
        entry = lookup(app, trusted_tax_ca.intermediate_id, serial, utcnow())
        assert entry is not None
        assert entry.reason == "keyCompromise"


# -- cron ------------------------------------------------------------------------------------


def test_refresh_all_reports_each_anchor(
    app: Flask, trusted_tax_ca: TrustedTaxCA, crl_server: CrlServer
) -> None:
    tax = trusted_tax_ca.ca
    root_url = crl_server.publish("/tax/root.crl", tax.crl(issuer="root"))
    broken_url = crl_server.fail("/tax/intermediate.crl", 503)
    now = utcnow()
    with app.app_context():
        anchor_of(trusted_tax_ca.root_id).crl_url = root_url
        anchor_of(trusted_tax_ca.intermediate_id).crl_url = broken_url
        other = add_trust_anchor(
            actor="tests", purpose=TrustPurpose.TAX, data=TaxCA("Manual Bureau").root_pem
        )
        disabled = add_trust_anchor(
            actor="tests",
            purpose=TrustPurpose.TAX,
            data=TaxCA("Old Bureau").root_pem,
            crl_url=crl_server.url("/old.crl"),
        )
        disabled.enabled = False
        results = refresh_all(actor="tests", settings=settings_of(app), now=now)
        manual_id = other.id
        db.session.commit()
    by_anchor = {r.anchor_id: r for r in results}
    assert set(by_anchor) == {trusted_tax_ca.root_id, trusted_tax_ca.intermediate_id, manual_id}
    assert by_anchor[trusted_tax_ca.root_id].outcome == "fetched"
    assert by_anchor[trusted_tax_ca.intermediate_id].outcome == "failed"
    assert "HTTP 503" in (by_anchor[trusted_tax_ca.intermediate_id].error or "")
    assert by_anchor[manual_id].outcome == "skipped"
    assert "/old.crl" not in crl_server.requests
