"""`ca-client csr` for existing keys, and the importable functions it is built on."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import hashes

from ca_client.keys import build_csr, generate_file_key, generate_token_key, subject_name
from hsm import KeyAlgorithm, Token
from tests.client.conftest import ClientRun, UKey
from tests.client.support import read_csr


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
