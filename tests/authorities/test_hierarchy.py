"""The CA hierarchy made by `ca-service init`: profiles, idempotency, the public repository."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from flask import Flask
from flask.testing import FlaskClient

from ca_service.authorities.service import ISSUING_SLUG, ROOT_SLUG, current_ocsp_responder
from ca_service.db import db
from ca_service.models import Authority, Certificate, CertificateKind
from tests.conftest import CliInvoke, HsmEnv
from tests.pki_tools import errors_only, openssl_verify, pkilint_findings


def _hierarchy(app: Flask) -> dict[str, x509.Certificate]:
    with app.app_context():
        out = {}
        for slug in (ROOT_SLUG, ISSUING_SLUG):
            authority = db.session.scalar(sa.select(Authority).where(Authority.slug == slug))
            assert authority is not None
            assert authority.certificate is not None
            assert authority.certificate.der is not None
            out[slug] = x509.load_der_x509_certificate(authority.certificate.der)
        issuing = db.session.scalar(sa.select(Authority).where(Authority.slug == ISSUING_SLUG))
        assert issuing is not None
        responder = current_ocsp_responder(issuing)
        assert responder is not None
        assert responder.der is not None
        out["ocsp"] = x509.load_der_x509_certificate(responder.der)
        return out


def test_chain_passes_openssl_verify(app: Flask, tmp_path: Path) -> None:
    certs = _hierarchy(app)
    root, issuing, responder = certs[ROOT_SLUG], certs[ISSUING_SLUG], certs["ocsp"]
    assert openssl_verify(tmp_path, root, roots=[root]).returncode == 0
    proc = openssl_verify(tmp_path, issuing, roots=[root])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = openssl_verify(
        tmp_path, responder, roots=[root], intermediates=[issuing], extra=["-purpose", "ocsphelper"]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("which", [ROOT_SLUG, ISSUING_SLUG, "ocsp"])
def test_certificates_pass_pkilint(app: Flask, tmp_path: Path, which: str) -> None:
    der = _hierarchy(app)[which].public_bytes(Encoding.DER)
    findings = pkilint_findings("lint_pkix_cert", der, tmp_path)
    assert errors_only(findings) == [], findings


def test_profiles(app: Flask) -> None:
    certs = _hierarchy(app)
    root, issuing, responder = certs[ROOT_SLUG], certs[ISSUING_SLUG], certs["ocsp"]

    for cert in certs.values():
        assert 0 < cert.serial_number < 2**159
        assert cert.version is x509.Version.v3

    root_bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert root_bc.critical
    assert root_bc.value.ca
    assert root_bc.value.path_length is None
    issuing_bc = issuing.extensions.get_extension_for_class(x509.BasicConstraints)
    assert issuing_bc.value.ca
    assert issuing_bc.value.path_length == 0
    for ca in (root, issuing):
        ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical
        assert ku.value.key_cert_sign
        assert ku.value.crl_sign
        assert not ku.value.digital_signature

    # AKI of each child is the parent's SKI.
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    issuing_ski = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = issuing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == root_ski
    responder_aki = responder.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert responder_aki.value.key_identifier == issuing_ski.digest

    # URLs come from the configured public base URL.
    aia = issuing.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_location.value for d in aia] == ["http://ca.test/pki/ca/root.crt"]
    cdp = issuing.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name is not None
    assert cdp[0].full_name[0].value == "http://ca.test/pki/crl/root.crl"

    # Delegated OCSP responder: OCSPSigning, nocheck, not a CA, short-lived.
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert responder.extensions.get_extension_for_oid(ExtensionOID.OCSP_NO_CHECK)
    assert not responder.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert responder.not_valid_after_utc - responder.not_valid_before_utc <= dt.timedelta(days=90)

    # A child never outlives its issuer.
    assert issuing.not_valid_after_utc <= root.not_valid_after_utc
    assert responder.not_valid_after_utc <= issuing.not_valid_after_utc


def _fingerprints(output: str) -> list[str]:
    return re.findall(r"SHA-256 ([0-9a-f]{64})", output)


def test_init_twice_changes_nothing(app: Flask, cli: CliInvoke) -> None:
    with app.app_context():
        before = db.session.scalar(sa.select(sa.func.count()).select_from(Certificate))
        stored = sorted(
            db.session.scalars(
                sa.select(Certificate.fingerprint_sha256).where(
                    Certificate.kind != CertificateKind.END_ENTITY
                )
            )
        )
    first = cli("init")
    assert first.exit_code == 0, first.output
    second = cli("init")
    assert second.exit_code == 0, second.output

    assert _fingerprints(first.output) == _fingerprints(second.output)
    assert sorted(_fingerprints(first.output)) == stored
    assert "created root" not in second.output
    assert second.output.count("exists") == 3
    # The first run created the first CA administrator (one-time credentials, shown once).
    assert "one-time credentials" in first.output
    assert "one-time credentials" not in second.output
    with app.app_context():
        after = db.session.scalar(sa.select(sa.func.count()).select_from(Certificate))
    assert after == before


def test_ca_list(cli: CliInvoke) -> None:
    result = cli("ca", "list")
    assert result.exit_code == 0, result.output
    assert "root" in result.output
    assert "employer" in result.output


def test_repository_page_lists_fingerprints(app: Flask, client: FlaskClient) -> None:
    certs = _hierarchy(app)
    page = client.get("/pki/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for slug in (ROOT_SLUG, ISSUING_SLUG):
        fingerprint = certs[slug].fingerprint(hashes.SHA256()).hex()
        assert fingerprint in text
        assert f"/pki/ca/{slug}.crt" in text
        assert f"/pki/ca/{slug}.pem" in text
        assert f'href="/pki/crl/{slug}.crl"' in text


@pytest.mark.parametrize("slug", [ROOT_SLUG, ISSUING_SLUG])
def test_ca_downloads(app: Flask, client: FlaskClient, slug: str) -> None:
    expected = _hierarchy(app)[slug]
    der = client.get(f"/pki/ca/{slug}.crt")
    assert der.status_code == 200
    assert der.mimetype == "application/pkix-cert"
    assert x509.load_der_x509_certificate(der.data) == expected
    pem = client.get(f"/pki/ca/{slug}.pem")
    assert pem.mimetype == "application/x-pem-file"
    assert x509.load_pem_x509_certificate(pem.data) == expected


def test_unknown_ca_is_404_html_and_json(client: FlaskClient) -> None:
    page = client.get("/pki/ca/nope.crt")
    assert page.status_code == 404
    assert b"no certificate authority" in page.data
    assert b"Traceback" not in page.data
    api = client.get("/pki/ca/nope.crt", headers={"Accept": "application/json"})
    assert api.status_code == 404
    assert api.get_json()["error"]["code"] == "not_found"


# -- faults: one-line messages, non-zero exit, nothing half-written ---------------------------


def _run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ca_service", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=120,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def subprocess_env(app_overrides: dict[str, object], hsm_env: HsmEnv) -> dict[str, str]:
    """Environment for `ca-service` in a subprocess with the test settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_")}
    env.update({f"CA_{k}": str(v) for k, v in app_overrides.items()})
    env["CA_TEST_HSM_PIN"] = hsm_env.ca_pin
    return env


def test_wrong_pin(app: Flask, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    subprocess_env["CA_TEST_HSM_PIN"] = "0" * 16
    line = _one_line_error(_run_cli(["init"], subprocess_env, tmp_path))
    assert "PIN" in line
    assert "0" * 16 not in line


def test_missing_token(app: Flask, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    subprocess_env["CA_TOKEN_LABEL"] = "no-such-token"
    subprocess_env["CA_SOFTHSM"] = "false"
    line = _one_line_error(_run_cli(["init"], subprocess_env, tmp_path))
    assert "no-such-token" in line


def test_missing_module(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    subprocess_env["CA_PKCS11_MODULE"] = str(tmp_path / "missing.so")
    line = _one_line_error(_run_cli(["ca", "list"], subprocess_env, tmp_path))
    assert "missing.so" in line


def test_unreachable_database(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    subprocess_env["CA_DATABASE_URL"] = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    line = _one_line_error(_run_cli(["db", "upgrade"], subprocess_env, tmp_path))
    assert "database is unavailable" in line


def test_no_ca_private_key_can_be_read_out(app: Flask, hsm_env: HsmEnv) -> None:
    """Every HSM key the service made (CAs, OCSP responder, audit) is sensitive and
    non-extractable, read straight through python-pkcs11 with the PIN, as an attacker would."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    from ca_service.audit.service import AUDIT_KEY_LABEL
    from hsm import find_softhsm_module

    with app.app_context():
        labels = [a.key_label for a in db.session.scalars(sa.select(Authority))]
        labels += [
            label
            for label in db.session.scalars(sa.select(Certificate.key_label))
            if label is not None
        ]
    labels.append(AUDIT_KEY_LABEL)
    module = find_softhsm_module()
    assert module
    session = pkcs11.lib(module).get_token(token_label=hsm_env.ca_token_label).open()
    try:
        for label in sorted(set(labels)):
            key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            assert key[Attribute.EXTRACTABLE] is False, label
            assert key[Attribute.NEVER_EXTRACTABLE] is True, label
            secret = (
                Attribute.PRIVATE_EXPONENT
                if key.key_type == pkcs11.KeyType.RSA
                else Attribute.VALUE
            )
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                key[secret]
    finally:
        session.close()


def test_init_leaves_a_signed_audit_checkpoint(cli: CliInvoke) -> None:
    assert cli("init").exit_code == 0
    result = cli("audit", "verify")
    assert result.exit_code == 0, result.output
    assert "1 signed checkpoints" in result.output
