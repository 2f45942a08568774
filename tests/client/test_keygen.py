"""`ca-client keygen`: a new key pair on a token or in an encrypted file, and its CSR."""

from __future__ import annotations

import stat
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass

from hsm import KeyAlgorithm, Token
from tests.client.conftest import ClientRun, UKey
from tests.client.support import read_csr
from tests.hsm.support import raw_session

HASHES = {
    "ec-p256": hashes.SHA256,
    "ec-p384": hashes.SHA384,
    "rsa-2048": hashes.SHA256,
    "rsa-3072": hashes.SHA384,
}


@pytest.mark.parametrize("algorithm", list(HASHES))
def test_keygen_on_token_makes_unextractable_key_and_its_csr(
    run: ClientRun, ukey: UKey, ukey_token: Token, tmp_path: Path, algorithm: str
) -> None:
    csr_path = tmp_path / "employer.csr"
    result = run(
        "keygen",
        "--token-label", ukey.label,
        "--key-label", "company",
        "--algorithm", algorithm,
        "--subject-cn", "Example Employer Ltd",
        "--organization-identifier", "VATXX-123456789",
        "--csr", str(csr_path),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    csr = read_csr(csr_path)
    assert csr.public_key() == ukey_token.public_key("company")
    assert isinstance(csr.signature_hash_algorithm, HASHES[algorithm])
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "Example Employer Ltd"
    )
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].value == (
        "VATXX-123456789"
    )
    assert ukey_token.find_key("company").algorithm is KeyAlgorithm(algorithm)
    with raw_session(ukey_token, "company") as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="company")
        assert key[Attribute.EXTRACTABLE] is False
        secret = Attribute.PRIVATE_EXPONENT if algorithm.startswith("rsa-") else Attribute.VALUE
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[secret]


def test_keygen_defaults_to_softhsm_employer_key_and_stdout(
    run: ClientRun, ukey: UKey, ukey_token: Token
) -> None:
    result = run("keygen", "--token-label", ukey.label)

    assert result.exit_code == 0, result.output
    csr = x509.load_pem_x509_csr(result.stdout.encode())
    assert csr.is_signature_valid
    assert csr.public_key() == ukey_token.public_key("employer-key")
    assert ukey_token.find_key("employer-key").algorithm is KeyAlgorithm.EC_P256
    assert len(csr.subject) == 0  # the CA takes the subject from its own records


def test_keygen_reads_pin_file(
    run: ClientRun, ukey: UKey, ukey_token: Token, tmp_path: Path
) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(ukey.pin + "\n", encoding="utf-8")
    result = run(
        "keygen", "--token-label", ukey.label, "--pin-file", str(pin_file),
        env={"CA_CLIENT_PIN": None},
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert ukey_token.has_key("employer-key")


@pytest.mark.parametrize(
    ("algorithm", "hash_class"), [("ec-p384", hashes.SHA384), ("rsa-2048", hashes.SHA256)]
)
def test_keygen_to_file_writes_encrypted_private_key(
    run: ClientRun, tmp_path: Path, algorithm: str, hash_class: type[hashes.HashAlgorithm]
) -> None:
    key_file = tmp_path / "employer.p8"
    csr_path = tmp_path / "employer.csr"
    result = run(
        "keygen", "--key-file", str(key_file), "--algorithm", algorithm, "--csr", str(csr_path),
        env={"CA_CLIENT_PASSPHRASE": "correct horse battery staple"},
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pem = key_file.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError, match="encrypted"):
        serialization.load_pem_private_key(pem, password=None)
    # A wrong passphrase fails the decryption, or (when the CBC padding happens to look right,
    # about 1 in 256) the parse of what came out of it.
    with pytest.raises(ValueError, match=r"decrypt|deserialize"):
        serialization.load_pem_private_key(pem, password=b"wrong")
    key = serialization.load_pem_private_key(pem, password=b"correct horse battery staple")
    csr = read_csr(csr_path)
    assert csr.public_key() == key.public_key()
    assert isinstance(csr.signature_hash_algorithm, hash_class)
