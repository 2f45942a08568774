"""`ca-client renew` end to end against a running `ca-service serve` (gunicorn, two workers):
the key on the employer's SoftHSM "UKey" or in a key file signs in, a new key is made beside it
and the new certificate is written beside that; --if-due outside the window, an expired, a
revoked certificate and one sent to an officer each end with their own exit status.

The server runs on the real clock, so certificates are issued in the past (an injected clock
in this process, where the test issues them): a year's certificate issued 340 days ago is in
the 60-day window, one issued 370 days ago has expired but is within the grace period.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask

from ca_client.errors import EXIT_FAILED, EXIT_NOT_DUE, EXIT_PENDING
from ca_client.keys import public_key_fingerprint
from ca_service.db import db, utcnow
from ca_service.issuance.models import (
    Application,
)
from ca_service.models import Certificate
from ca_service.revocation.blocked_keys import spki_sha256
from ca_service.revocation.models import BlockedKey
from hsm import KeyNotFound, Token
from tests.api.conftest import request_token, token_of
from tests.auth.flows import MakeOfficer
from tests.client.conftest import ClientRun, UKey
from tests.client.support import assert_fails_cleanly
from tests.conftest import CliInvoke, serving
from tests.faults.test_crash import DYING
from tests.issuance.conftest import (  # noqa: F401  (make_employer, make_officer: fixtures)
    EmployerAccount,
    Issued,
    MakeEmployer,
    issue_employer_certificate,
    make_employer,
    make_officer,
)

PASSPHRASE = "correct horse battery staple"
TODAY = f"{dt.datetime.now(dt.UTC):%Y%m%d}"


@pytest.fixture
def officer_id(app: Flask, make_officer: MakeOfficer) -> int:  # noqa: F811
    return int(make_officer().user.id)


def _ukey_certificate(
    app: Flask,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    account: EmployerAccount,
    tmp_path: Path,
    *,
    days_ago: int,
    officer_id: int | None,
    algorithm: str = "ec-p256",
) -> Issued:
    """A key made by ca-client on the UKey, its certificate stored beside it and written to
    ``tmp_path/employer.pem``."""
    made = run("keygen", "--token-label", ukey.label, "--algorithm", algorithm, "--csr", "-")
    assert made.exit_code == 0, made.output
    old = issue_employer_certificate(
        app,
        account,
        officer_id,
        key=ukey_token.private_key("employer-key"),
        days_ago=days_ago,
    )
    path = tmp_path / "employer.pem"
    path.write_bytes(old.certificate.public_bytes(Encoding.PEM))
    stored = run("import-cert", str(path), "--token-label", ukey.label)
    assert stored.exit_code == 0, stored.output
    return old


def _renewal_info(served: str, serial: str) -> dict[str, Any]:
    url = f"{served}/api/v1/certificates/{serial}/renewal-info"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310  (loopback)
        info: dict[str, Any] = json.loads(response.read())
    return info


def _openssl_verify(served: str, path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`openssl verify` of the certificate file ca-client wrote (the certificate, then its
    intermediate CA) against the CA's root as published at /pki/."""
    work = tmp_path / "openssl"
    work.mkdir(exist_ok=True)
    root = work / "root.pem"
    with urllib.request.urlopen(f"{served}/pki/ca/root.pem", timeout=10) as response:  # noqa: S310
        root.write_bytes(response.read())
    leaf = work / "leaf-only.pem"
    certificates = x509.load_pem_x509_certificates(path.read_bytes())
    leaf.write_bytes(certificates[0].public_bytes(Encoding.PEM))
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-purpose",
            "sslclient",
            "-CAfile",
            str(root),
            "-untrusted",
            str(path),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def _row(app: Flask, serial: str) -> Certificate:
    with app.app_context():
        row = db.session.scalar(sa.select(Certificate).where(Certificate.serial == serial))
        assert row is not None
        db.session.expunge(row)
        return row


def _files(tmp_path: Path) -> set[str]:
    """The files in the test's directory but the server's log."""
    return {p.name for p in tmp_path.iterdir()} - {"server.log", "openssl"}


def test_renew_on_the_token_inside_the_window(
    app: Flask,
    served: str,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    officer_id: int,
    tmp_path: Path,
) -> None:
    old = _ukey_certificate(
        app, run, ukey, ukey_token, make_employer(), tmp_path, days_ago=340, officer_id=officer_id
    )
    old_fingerprint = public_key_fingerprint(ukey_token.public_key("employer-key"))
    # A certificate file that exists is never overwritten: refused before anything is made.
    taken = run(
        "renew",
        "--url",
        served,
        "--token-label",
        ukey.label,
        "--out",
        str(tmp_path / "employer.pem"),
    )
    assert_fails_cleanly(taken, f"{tmp_path / 'employer.pem'} exists already")
    with pytest.raises(KeyNotFound):
        ukey_token.find_key(f"employer-key-{TODAY}")
    result = run(
        "renew",
        "--url",
        served,
        "--token-label",
        ukey.label,
        "--certificate",
        str(tmp_path / "employer.pem"),
        "--if-due",
    )
    assert result.exit_code == 0, result.output
    new_label = f"employer-key-{TODAY}"
    target = tmp_path / f"{new_label}.cert.pem"
    assert f"written to {target}" in result.stdout
    assert f"generated ec-p256 key {new_label!r}" in result.stderr
    assert f"renew it in its turn with --key-label {new_label}" in result.stdout

    # A new certificate for a new key of the same type, on the same token beside that key.
    new = x509.load_pem_x509_certificates(target.read_bytes())[0]
    new_serial = format(new.serial_number, "x")
    assert new_serial != old.serial
    assert new.public_key() == ukey_token.public_key(new_label)
    assert public_key_fingerprint(new.public_key()) != old_fingerprint
    assert ukey_token.certificate(new_label) == new.public_bytes(Encoding.DER)
    assert ukey_token.find_key(new_label).key_id != ukey_token.find_key("employer-key").key_id
    # The old key and certificate stay, and the old one stays valid until it expires.
    assert ukey_token.certificate("employer-key") == old.certificate.public_bytes(Encoding.DER)
    assert _row(app, old.serial).revoked_at is None
    proc = _openssl_verify(served, target, tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout

    # The service knows the lineage.
    assert _row(app, new_serial).renews_id == old.certificate_id
    info = _renewal_info(served, old.serial)
    assert info["state"] == "renewed"
    assert info["renewed_by"] == new_serial

    # Once renewed, the old certificate is not renewed again; nothing new is made or written.
    before = _files(tmp_path)
    again = run(
        "renew",
        "--url",
        served,
        "--token-label",
        ukey.label,
        "--certificate",
        str(tmp_path / "employer.pem"),
        "--new-key-label",
        "another",
    )
    assert_fails_cleanly(again, f"already renewed by certificate {new_serial}")
    assert _files(tmp_path) == before
    with pytest.raises(KeyNotFound):
        ukey_token.find_key("another")


def test_if_due_outside_the_window_does_nothing(
    app: Flask,
    served: str,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    officer_id: int,
    tmp_path: Path,
) -> None:
    old = _ukey_certificate(
        app, run, ukey, ukey_token, make_employer(), tmp_path, days_ago=0, officer_id=officer_id
    )
    before = _files(tmp_path)
    # The certificate stored on the token is the one renewed when --certificate is left out.
    result = run("renew", "--url", served, "--token-label", ukey.label, "--if-due")
    assert result.exit_code == EXIT_NOT_DUE, result.output
    opens = dt.datetime.fromisoformat(
        _renewal_info(served, old.serial)["suggested_window"]["start"]
    )
    assert f"not due: certificate {old.serial} can be renewed from {opens:%Y-%m-%d %H:%M}" in (
        result.stdout
    )
    assert "error" not in result.output
    assert _files(tmp_path) == before
    with pytest.raises(KeyNotFound):
        ukey_token.find_key(f"employer-key-{TODAY}")
    # Without --if-due, asking for it is a failure.
    refused = run("renew", "--url", served, "--token-label", ukey.label)
    assert_fails_cleanly(refused, "can be renewed from", EXIT_FAILED)
    with pytest.raises(KeyNotFound):
        ukey_token.find_key(f"employer-key-{TODAY}")


def test_an_expired_certificate_cannot_sign_in_so_the_way_is_the_browser_or_an_api_token(
    app: Flask,
    served: str,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    officer_id: int,
    tmp_path: Path,
) -> None:
    account = make_employer()
    old = _ukey_certificate(
        app, run, ukey, ukey_token, account, tmp_path, days_ago=370, officer_id=officer_id
    )
    assert old.certificate.not_valid_after_utc < dt.datetime.now(dt.UTC)
    before = _files(tmp_path)
    result = run("renew", "--url", served, "--token-label", ukey.label, "--if-due")
    assert_fails_cleanly(result, "can no longer sign you in: renew it in your browser at")
    assert f"http://ca.test/renewal/{old.serial}" in result.stderr
    assert "password and the code sent by SMS" in result.stderr
    assert _files(tmp_path) == before
    with pytest.raises(KeyNotFound):
        ukey_token.find_key(f"employer-key-{TODAY}")

    # Signed in by password + SMS code (the API's token), after confirming the details.
    api_token = token_of(request_token(app.test_client(), account.username, account.password))
    env = {"RENEW_TOKEN": api_token}
    options = ["--url", served, "--token-label", ukey.label, "--api-token-env", "RENEW_TOKEN"]
    unconfirmed = run("renew", *options, "--out", str(tmp_path / "new.pem"), env=env)
    assert_fails_cleanly(unconfirmed, "then add --contacts-confirmed")
    renewed = run(
        "renew", *options, "--contacts-confirmed", "--out", str(tmp_path / "new.pem"), env=env
    )
    assert renewed.exit_code == 0, renewed.output
    new = x509.load_pem_x509_certificates((tmp_path / "new.pem").read_bytes())[0]
    assert new.public_key() == ukey_token.public_key(f"employer-key-{TODAY}")
    assert _row(app, format(new.serial_number, "x")).renews_id == old.certificate_id


def test_a_revoked_certificate_is_refused(
    app: Flask,
    served: str,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    officer_id: int,
    tmp_path: Path,
) -> None:
    old = _ukey_certificate(
        app, run, ukey, ukey_token, make_employer(), tmp_path, days_ago=340, officer_id=officer_id
    )
    with app.app_context():
        row = db.session.get(Certificate, old.certificate_id)
        assert row is not None
        row.revoked_at = utcnow()
        row.revocation_reason = "cessationOfOperation"
        db.session.commit()
    before = _files(tmp_path)
    result = run("renew", "--url", served, "--token-label", ukey.label, "--if-due")
    assert_fails_cleanly(result, f"certificate {old.serial} was revoked")
    assert _files(tmp_path) == before
    with pytest.raises(KeyNotFound):
        ukey_token.find_key(f"employer-key-{TODAY}")


def test_past_the_grace_period_a_new_application_is_needed(
    app: Flask,
    served: str,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    officer_id: int,
    tmp_path: Path,
) -> None:
    old = _ukey_certificate(
        app, run, ukey, ukey_token, make_employer(), tmp_path, days_ago=460, officer_id=officer_id
    )
    result = run("renew", "--url", served, "--token-label", ukey.label, "--if-due")
    assert_fails_cleanly(result, f"certificate {old.serial} expired on")
    assert "too long ago to renew online: file a new application" in result.stderr
    with pytest.raises(KeyNotFound):
        ukey_token.find_key(f"employer-key-{TODAY}")


def test_renew_again_after_the_worker_died_resumes_with_the_key_left_on_the_token(
    app: Flask,
    app_overrides: dict[str, Any],
    cli: CliInvoke,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    officer_id: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server's worker is SIGKILLed after the HSM signed the renewal (tests/faults):
    ca-client fails and says which new key it left; once the reservation is reconciled, the
    same command renews with that key, and the lineage has exactly one successor."""
    old = _ukey_certificate(
        app, run, ukey, ukey_token, make_employer(), tmp_path, days_ago=340, officer_id=officer_id
    )
    marker = tmp_path / "die-once"
    marker.touch()
    monkeypatch.setenv("FAULT_MARKER", str(marker))
    new_label = f"employer-key-{TODAY}"
    certificate = str(tmp_path / "employer.pem")
    with serving(
        app_overrides,
        tmp_path / "server.log",
        "--worker",
        "threads",
        program=(str(DYING), "after-sign"),
    ) as (base, _server):
        renew = ("renew", "--url", base, "--token-label", ukey.label, "--certificate", certificate)
        first = run(*renew)
        assert not marker.exists()  # the worker died at the chosen point
        assert first.exit_code == EXIT_FAILED, first.output
        assert f"the new key {new_label!r} stays on token {ukey.label!r}" in first.output
        assert "Traceback" not in first.output

        reconciled = cli("reconcile", "--older-than-minutes", "0")
        assert reconciled.exit_code == 0, reconciled.output
        second = run(*renew)
        assert second.exit_code == 0, second.output
        assert f"reusing key {new_label!r}" in second.stderr
    new = x509.load_pem_x509_certificates((tmp_path / f"{new_label}.cert.pem").read_bytes())[0]
    assert new.public_key() == ukey_token.public_key(new_label)
    assert ukey_token.certificate(new_label) == new.public_bytes(Encoding.DER)
    with app.app_context():
        successors = db.session.scalars(
            sa.select(Certificate.status)
            .where(Certificate.renews_id == old.certificate_id)
            .order_by(Certificate.id)
        ).all()
    assert [s.value for s in successors] == ["failed", "issued"]


def test_a_renewal_for_an_officer_exits_4_and_keeps_the_new_key(
    app: Flask,
    served: str,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    tmp_path: Path,
) -> None:
    old = _ukey_certificate(
        app, run, ukey, ukey_token, make_employer(), tmp_path, days_ago=340, officer_id=None
    )
    options = ["--url", served, "--token-label", ukey.label, "--if-due", "--algorithm", "ec-p384"]
    result = run("renew", *options, "--out", str(tmp_path / "new.pem"))
    assert result.exit_code == EXIT_PENDING, result.output
    assert "needs review:" in result.stdout
    assert "  - no officer approval was found for this certificate" in result.stdout
    match = re.search(r"application (\d+), submitted", result.stdout)
    assert match, result.stdout
    assert not (tmp_path / "new.pem").exists()
    new_label = f"employer-key-{TODAY}"
    assert ukey_token.find_key(new_label).algorithm.value == "ec-p384"
    assert ukey_token.certificate(new_label) is None
    with app.app_context():
        application = db.session.get(Application, int(match.group(1)))
        assert application is not None
        assert application.renews_id == old.certificate_id
    # The next run (a timer) sees the renewal waiting: exit 4 again, nothing more made.
    again = run("renew", *options)
    assert again.exit_code == EXIT_PENDING, again.output
    assert "already waits for review" in again.stdout


def test_a_refusal_after_the_key_was_made_says_which_key_is_left(
    app: Flask,
    served: str,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    officer_id: int,
    tmp_path: Path,
) -> None:
    old = _ukey_certificate(
        app, run, ukey, ukey_token, make_employer(), tmp_path, days_ago=340, officer_id=officer_id
    )
    # A key left on the token under the new label by an earlier attempt is used again; this
    # one was revoked for keyCompromise once, so the service refuses it.
    new_label = f"employer-key-{TODAY}"
    made = run("keygen", "--token-label", ukey.label, "--key-label", new_label, "--csr", "-")
    assert made.exit_code == 0, made.output
    with app.app_context():
        db.session.add(
            BlockedKey(
                spki_sha256=spki_sha256(ukey_token.public_key(new_label)),
                certificate_id=old.certificate_id,
                reason="keyCompromise",
                blocked_at=utcnow(),
            )
        )
        db.session.commit()
    before = _files(tmp_path)
    result = run(
        "renew", "--url", served, "--token-label", ukey.label, "--out", str(tmp_path / "n.pem")
    )
    assert_fails_cleanly(result, f"the new key {new_label!r} stays on token {ukey.label!r}")
    assert f"reusing key {new_label!r}" in result.stderr
    assert _files(tmp_path) == before  # no certificate file, not even a half-written one
    assert ukey_token.certificate(new_label) is None


def test_renew_a_key_file_with_supersede(
    app: Flask,
    served: str,
    run: ClientRun,
    make_employer: MakeEmployer,  # noqa: F811
    officer_id: int,
    tmp_path: Path,
) -> None:
    env = {"CA_CLIENT_PASSPHRASE": PASSPHRASE}
    key_file = tmp_path / "key.p8"
    made = run("keygen", "--key-file", str(key_file), "--algorithm", "rsa-2048", env=env)
    assert made.exit_code == 0, made.output
    key = serialization.load_pem_private_key(key_file.read_bytes(), PASSPHRASE.encode())
    old = issue_employer_certificate(app, make_employer(), officer_id, key=key, days_ago=340)
    certificate_file = tmp_path / "employer.pem"
    certificate_file.write_bytes(old.certificate.public_bytes(Encoding.PEM))
    options = ["--url", served, "--key-file", str(key_file), "--certificate", str(certificate_file)]

    no_passphrase = run("renew", *options)
    assert_fails_cleanly(no_passphrase, "no key-file passphrase")
    assert _files(tmp_path) == {"key.p8", "employer.pem"}

    result = run("renew", *options, "--supersede", env=env)
    assert result.exit_code == 0, result.output
    new_key_file = tmp_path / f"key-{TODAY}.p8"
    target = tmp_path / f"key-{TODAY}.cert.pem"
    assert _files(tmp_path) == {"key.p8", "employer.pem", new_key_file.name, target.name}
    assert new_key_file.stat().st_mode & 0o777 == 0o600
    assert f"renew it in its turn with --key-file {new_key_file} --certificate {target}" in (
        result.stdout
    )
    new_key = serialization.load_pem_private_key(new_key_file.read_bytes(), PASSPHRASE.encode())
    new = x509.load_pem_x509_certificates(target.read_bytes())[0]
    assert new.public_key() == new_key.public_key()
    assert new.public_key() != key.public_key()
    assert new.public_key().key_size == 2048  # type: ignore[union-attr]
    proc = _openssl_verify(served, target, tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert _row(app, format(new.serial_number, "x")).renews_id == old.certificate_id
    assert _row(app, old.serial).revocation_reason == "superseded"
    assert f"certificate {old.serial} was revoked as superseded" in result.stdout


def test_bad_input_gives_one_error_line(
    served: str, run: ClientRun, ukey: UKey, tmp_path: Path
) -> None:
    missing = run(
        "renew", "--url", served, "--key-file", str(tmp_path / "k"), "--certificate", "nope.pem"
    )
    assert_fails_cleanly(missing, "cannot read nope.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    unreadable = run(
        "renew", "--url", served, "--token-label", ukey.label, "--certificate", str(garbage)
    )
    assert_fails_cleanly(unreadable, "is not an X.509 certificate")
    assert run("keygen", "--token-label", ukey.label, "--csr", "-").exit_code == 0
    wrong_pin = run(
        "renew", "--url", served, "--token-label", ukey.label, env={"CA_CLIENT_PIN": "0000"}
    )
    assert_fails_cleanly(wrong_pin, "PIN")
    no_key = run("renew", "--url", served)
    assert_fails_cleanly(no_key, "give either --token-label", 2)
    same_key = run(
        "renew",
        "--url",
        served,
        "--key-file",
        str(tmp_path / "key.p8"),
        "--new-key-file",
        str(tmp_path / "." / "key.p8"),
        "--certificate",
        str(garbage),
    )
    assert_fails_cleanly(same_key, "names the old key", 2)
