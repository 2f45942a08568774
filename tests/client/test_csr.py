"""`ca-client csr` for existing keys, and the importable functions it is built on."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)

from ca_client.keys import build_csr, generate_file_key, generate_token_key, subject_name
from hsm import KeyAlgorithm, Token
from tests.client.conftest import ClientRun, UKey
from tests.client.support import assert_fails_cleanly, read_csr


def test_csr_for_key_on_token(
    run: ClientRun, ukey: UKey, ukey_token: Token, tmp_path: Path
) -> None:
    signer = generate_token_key(ukey_token, "existing", KeyAlgorithm.RSA_3072)
    csr_path = tmp_path / "again.csr"
    result = run(
        "csr", "--token-label", ukey.label, "--key-label", "existing",
        "--subject-cn", "Again", "--csr", str(csr_path),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    csr = read_csr(csr_path)
    assert csr.public_key() == signer.public_key()
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA384)
    assert csr.subject == subject_name("Again")


def test_csr_for_key_file_with_passphrase_file(run: ClientRun, tmp_path: Path) -> None:
    key_file = tmp_path / "employer.p8"
    key = generate_file_key(key_file, KeyAlgorithm.EC_P256, b"open sesame")
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text("open sesame\n", encoding="utf-8")
    csr_path = tmp_path / "employer.csr"

    result = run(
        "csr", "--key-file", str(key_file), "--passphrase-file", str(passphrase_file),
        "--csr", str(csr_path),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert read_csr(csr_path).public_key() == key.public_key()


def test_build_csr_signs_with_token_key(ukey_token: Token) -> None:
    signer = generate_token_key(ukey_token, "lib", KeyAlgorithm.EC_P384)
    csr = build_csr(signer, subject_name(organization_identifier="VATXX-1"))
    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA384)
    assert csr.public_key() == ukey_token.public_key("lib")


def _write_plain_key(path: Path, encoding_format: str) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    formats = {
        "pkcs8-pem": (Encoding.PEM, PrivateFormat.PKCS8),
        "sec1-pem": (Encoding.PEM, PrivateFormat.TraditionalOpenSSL),
        "pkcs8-der": (Encoding.DER, PrivateFormat.PKCS8),
    }
    encoding, private_format = formats[encoding_format]
    path.write_bytes(key.private_bytes(encoding, private_format, NoEncryption()))
    return key


@pytest.mark.parametrize("encoding_format", ["pkcs8-pem", "sec1-pem", "pkcs8-der"])
def test_csr_for_an_unencrypted_key_file_warns(
    run: ClientRun, tmp_path: Path, encoding_format: str
) -> None:
    # No passphrase is set: an unencrypted key needs none, and the missing passphrase must
    # not be what the command complains about.
    key_file = tmp_path / "employer.key"
    key = _write_plain_key(key_file, encoding_format)
    csr_path = tmp_path / "employer.csr"
    result = run("csr", "--key-file", str(key_file), "--csr", str(csr_path))
    assert result.exit_code == 0, result.output
    assert f"warning: {key_file} is not encrypted" in result.stderr
    assert read_csr(csr_path).public_key() == key.public_key()


def test_csr_for_a_pkcs12_key_file(run: ClientRun, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "employer.p12"
    key_file.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"employer", key, None, None, BestAvailableEncryption(b"open sesame")
        )
    )
    csr_path = tmp_path / "employer.csr"
    env = {"CA_CLIENT_PASSPHRASE": "open sesame"}
    result = run("csr", "--key-file", str(key_file), "--csr", str(csr_path), env=env)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert read_csr(csr_path).public_key() == key.public_key()

    wrong = run("csr", "--key-file", str(key_file), env={"CA_CLIENT_PASSPHRASE": "wrong"})
    assert_fails_cleanly(wrong, "or a PKCS#12 file with another passphrase")


def test_a_file_that_holds_no_key_says_so(run: ClientRun, tmp_path: Path) -> None:
    key_file = tmp_path / "employer.key"
    key_file.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    result = run("csr", "--key-file", str(key_file))  # no passphrase: none is needed to say so
    assert_fails_cleanly(result, f"{key_file} is not a PEM private key")
