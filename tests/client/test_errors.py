"""What the employer sees when something is wrong: one `Error:` line, never a traceback."""

from __future__ import annotations

from pathlib import Path

from ca_client.keys import generate_file_key, generate_token_key
from hsm import KeyAlgorithm, Token
from tests.client.conftest import ClientRun, UKey
from tests.client.support import assert_fails_cleanly


def test_wrong_pin(run: ClientRun, ukey: UKey) -> None:
    result = run("keygen", "--token-label", ukey.label, env={"CA_CLIENT_PIN": "0000wrong"})
    assert_fails_cleanly(result, f"cannot log in to token {ukey.label!r}")


def test_unknown_token_label(run: ClientRun) -> None:
    result = run("keygen", "--token-label", "no-such-ukey")
    assert_fails_cleanly(result, "no token labelled 'no-such-ukey': plug in your token")


def test_module_not_found(run: ClientRun, ukey: UKey, tmp_path: Path) -> None:
    module = tmp_path / "libnothing.so"
    result = run("show", "--token-label", ukey.label, "--module", str(module))
    assert_fails_cleanly(result, f"cannot load the PKCS#11 module {module}: check --module")


def test_pin_variable_unset(run: ClientRun, ukey: UKey) -> None:
    result = run("show", "--token-label", ukey.label, env={"CA_CLIENT_PIN": None})
    assert_fails_cleanly(result, "no HSM user PIN: set $CA_CLIENT_PIN")


def test_pin_file_missing(run: ClientRun, ukey: UKey, tmp_path: Path) -> None:
    missing = tmp_path / "no-pin"
    result = run("show", "--token-label", ukey.label, "--pin-file", str(missing))
    assert_fails_cleanly(result, f"cannot read {missing}")


def test_existing_key_label(run: ClientRun, ukey: UKey, ukey_token: Token) -> None:
    generate_token_key(ukey_token, "employer-key", KeyAlgorithm.EC_P256)
    result = run("keygen", "--token-label", ukey.label)
    assert_fails_cleanly(result, "already holds a key labelled 'employer-key'")


def test_missing_key_label(run: ClientRun, ukey: UKey) -> None:
    result = run("csr", "--token-label", ukey.label, "--key-label", "nothing")
    assert_fails_cleanly(result, f"token {ukey.label!r} holds no key labelled 'nothing'")


def test_existing_key_file_is_not_overwritten(run: ClientRun, tmp_path: Path) -> None:
    key_file = tmp_path / "employer.p8"
    key_file.write_bytes(b"precious")
    result = run("keygen", "--key-file", str(key_file), env={"CA_CLIENT_PASSPHRASE": "secret"})
    assert_fails_cleanly(result, f"{key_file} exists already")
    assert key_file.read_bytes() == b"precious"


def test_passphrase_unset(run: ClientRun, tmp_path: Path) -> None:
    key_file = tmp_path / "employer.p8"
    result = run("keygen", "--key-file", str(key_file))
    assert_fails_cleanly(result, "no key-file passphrase: set $CA_CLIENT_PASSPHRASE")
    assert not key_file.exists()


def test_wrong_passphrase(run: ClientRun, tmp_path: Path) -> None:
    key_file = tmp_path / "employer.p8"
    generate_file_key(key_file, KeyAlgorithm.EC_P256, b"right")
    result = run("csr", "--key-file", str(key_file), env={"CA_CLIENT_PASSPHRASE": "wrong"})
    assert_fails_cleanly(result, f"cannot decrypt {key_file}: wrong passphrase")


def test_unreadable_certificate(run: ClientRun, ukey: UKey, tmp_path: Path) -> None:
    cert_file = tmp_path / "garbage.pem"
    cert_file.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    result = run("import-cert", str(cert_file), "--token-label", ukey.label)
    assert_fails_cleanly(result, "is not an X.509 certificate in PEM or DER form")
    missing = run("import-cert", str(tmp_path / "absent.der"), "--token-label", ukey.label)
    assert_fails_cleanly(missing, "cannot read")


def test_token_and_key_file_are_exclusive(run: ClientRun, ukey: UKey, tmp_path: Path) -> None:
    neither = run("keygen")
    assert_fails_cleanly(neither, "give either --token-label", exit_code=2)
    both = run("csr", "--token-label", ukey.label, "--key-file", str(tmp_path / "k.p8"))
    assert_fails_cleanly(both, "give either --token-label", exit_code=2)
