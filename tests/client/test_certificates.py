"""`ca-client import-cert` and `ca-client show`: the issued certificate on the token."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ca_client.keys import generate_token_key, public_key_fingerprint
from hsm import KeyAlgorithm, Token
from tests.client.conftest import ClientRun, UKey
from tests.client.support import assert_fails_cleanly, issue_certificate


def test_import_cert_pem_stores_it_and_show_lists_it(
    run: ClientRun, ukey: UKey, ukey_token: Token, tmp_path: Path
) -> None:
    signer = generate_token_key(ukey_token, "employer-key", KeyAlgorithm.EC_P256)
    certificate = issue_certificate(signer.public_key(), "Example Employer Ltd")
    cert_file = tmp_path / "employer.pem"
    cert_file.write_bytes(certificate.public_bytes(Encoding.PEM))

    result = run("import-cert", str(cert_file), "--token-label", ukey.label)

    assert result.exit_code == 0, result.output
    assert ukey_token.certificate("employer-key") == certificate.public_bytes(Encoding.DER)
    shown = run("show", "--token-label", ukey.label)
    assert shown.exit_code == 0, shown.output
    assert "algorithm:    ec-p256" in shown.stdout
    assert public_key_fingerprint(signer.public_key()) in shown.stdout
    assert "CN=Example Employer Ltd" in shown.stdout
    assert f"{certificate.serial_number:x}" in shown.stdout
    assert f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC" in shown.stdout


def test_import_cert_der_refuses_second_unless_replace(
    run: ClientRun, ukey: UKey, ukey_token: Token, tmp_path: Path
) -> None:
    signer = generate_token_key(ukey_token, "company", KeyAlgorithm.RSA_2048)
    first, second = (issue_certificate(signer.public_key(), name) for name in ("One", "Two"))
    paths = []
    for name, certificate in (("one.der", first), ("two.der", second)):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(certificate.public_bytes(Encoding.DER))
    options = ("--token-label", ukey.label, "--key-label", "company")

    assert run("import-cert", str(paths[0]), *options).exit_code == 0
    refused = run("import-cert", str(paths[1]), *options)
    assert_fails_cleanly(refused, "already holds a certificate labelled 'company'")
    assert ukey_token.certificate("company") == first.public_bytes(Encoding.DER)

    replaced = run("import-cert", str(paths[1]), *options, "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert ukey_token.certificate("company") == second.public_bytes(Encoding.DER)


def test_import_cert_for_another_key_is_refused(
    run: ClientRun, ukey: UKey, ukey_token: Token, tmp_path: Path
) -> None:
    generate_token_key(ukey_token, "employer-key", KeyAlgorithm.EC_P256)
    stranger = issue_certificate(ec.generate_private_key(ec.SECP256R1()).public_key())
    cert_file = tmp_path / "stranger.pem"
    cert_file.write_bytes(stranger.public_bytes(Encoding.PEM))

    result = run("import-cert", str(cert_file), "--token-label", ukey.label)

    assert_fails_cleanly(result, "the certificate is for another key than 'employer-key'")
    assert ukey_token.certificate("employer-key") is None


def test_show_without_certificate(run: ClientRun, ukey: UKey, ukey_token: Token) -> None:
    generate_token_key(ukey_token, "employer-key", KeyAlgorithm.RSA_2048)
    result = run("show", "--token-label", ukey.label)
    assert result.exit_code == 0, result.output
    assert "algorithm:    rsa-2048" in result.stdout
    assert "certificate:  none stored" in result.stdout
