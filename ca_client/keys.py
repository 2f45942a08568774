"""Employer key pairs (in a PKCS#11 token or a key file) and their CSRs.

The CA server's counter provisioning imports ``build_csr`` and the token functions, so
nothing here reads options, files named by options or the environment beyond its arguments.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from ca_client.errors import KeyFileExists, KeyFileUnreadable
from hsm import HSMConfig, HSMPrivateKey, KeyAlgorithm, PublicKey, Token

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# What an employer may choose: the CA issues organisation certificates for these. RSA-4096 is
# left out as SoftHSM and most USB tokens take minutes to generate it.
CLIENT_ALGORITHMS = (
    KeyAlgorithm.EC_P256,
    KeyAlgorithm.EC_P384,
    KeyAlgorithm.RSA_2048,
    KeyAlgorithm.RSA_3072,
)


def csr_hash(public_key: PublicKey) -> hashes.SHA256 | hashes.SHA384:
    """The CSR signature hash for a key: SHA-384 from P-384 and RSA-3072 up, else SHA-256."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return hashes.SHA384() if public_key.key_size >= 3072 else hashes.SHA256()
    return hashes.SHA384() if public_key.curve.key_size >= 384 else hashes.SHA256()


def subject_name(
    common_name: str | None = None, organization_identifier: str | None = None
) -> x509.Name:
    """A CSR subject from the optional CN and organizationIdentifier (may be empty)."""
    attributes = []
    if organization_identifier:
        attributes.append(
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, organization_identifier)
        )
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def build_csr(private_key: PrivateKey, subject: x509.Name) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for ``private_key`` (a token key adapter or a software key).

    RSA keys sign with PKCS#1 v1.5, the padding every CA accepts in a CSR.
    """
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return builder.sign(private_key, csr_hash(private_key.public_key()))


def token_config(
    *, module_path: str, token_label: str, pin_env: str, pin_file: str | None
) -> HSMConfig:
    """One session's worth of configuration for a person's token: a PIN file given on the
    command line wins over a variable set in the environment.

    :raises hsm.PinUnavailable: when neither gives a PIN.
    """
    return HSMConfig.from_sources(
        module_path=module_path,
        token_label=token_label,
        pin_env=None if pin_file else pin_env,
        pin_file=pin_file,
        environ=os.environ,
        pool_size=1,
    )


def generate_token_key(token: Token, label: str, algorithm: KeyAlgorithm) -> HSMPrivateKey:
    """Generate an unextractable signing key pair in the token; returns its signer.

    :raises hsm.DuplicateKeyLabel: when the token already holds a key with this label.
    """
    token.generate_key(label, algorithm)
    return token.private_key(label)


def generate_file_key(path: Path, algorithm: KeyAlgorithm, passphrase: bytes) -> PrivateKey:
    """Generate a key pair and write it to a new file (mode 0600) as encrypted PKCS#8 PEM.

    :raises KeyFileExists: when ``path`` exists (it is never overwritten).
    :raises ValueError: for an empty passphrase.
    """
    if not passphrase:
        raise ValueError("the key file needs a non-empty passphrase")
    key: PrivateKey
    if algorithm.is_rsa:
        key = rsa.generate_private_key(public_exponent=65537, key_size=algorithm.rsa_bits)
    else:
        curve = ec.SECP384R1() if algorithm is KeyAlgorithm.EC_P384 else ec.SECP256R1()
        key = ec.generate_private_key(curve)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    try:
        # O_EXCL: creating and refusing an existing file (or symlink) is one atomic step.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileExists(str(path)) from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(fd, 0o600)  # whatever the umask left of 0600
        out.write(pem)
    return key


def load_file_key(
    path: Path, passphrase: Callable[[], bytes], warn: Callable[[str], None]
) -> PrivateKey:
    """Read a key file: PEM or DER PKCS#8 (encrypted, or not with a warning), traditional
    PEM (PKCS#1, SEC 1), or PKCS#12. ``passphrase`` is asked for only when the file is
    encrypted, so a missing passphrase never hides what is wrong with the file.

    :raises KeyFileUnreadable: when the file is missing, the passphrase is wrong, the file is
        not a private key, or the key is of a type the CA does not accept.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" in data:
        key = _load_pem_key(path, data, passphrase, warn)
    else:
        key = _load_der_key(path, data, passphrase, warn)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyFileUnreadable(f"{path} holds a {type(key).__name__}, not an RSA or EC key")
    return key


def _unencrypted(path: Path) -> str:
    return (
        f"warning: {path} is not encrypted: anyone who can read it can use the key "
        "(a passphrase-protected PKCS#8 file keeps it safe at rest)"
    )


def _load_pem_key(
    path: Path, data: bytes, passphrase: Callable[[], bytes], warn: Callable[[str], None]
) -> Any:
    if b"ENCRYPTED" in data:  # BEGIN ENCRYPTED PRIVATE KEY, or Proc-Type: 4,ENCRYPTED
        try:
            return serialization.load_pem_private_key(data, password=passphrase())
        except ValueError:
            raise KeyFileUnreadable(
                f"cannot decrypt {path}: wrong passphrase, or the key in it is damaged"
            ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise KeyFileUnreadable(
            f"{path} is not a PEM private key (PKCS#8, PKCS#1 or SEC 1)"
        ) from None
    warn(_unencrypted(path))
    return key


def _load_der_key(
    path: Path, data: bytes, passphrase: Callable[[], bytes], warn: Callable[[str], None]
) -> Any:
    try:
        key = serialization.load_der_private_key(data, password=None)
    except TypeError:  # an encrypted DER PKCS#8 key
        try:
            return serialization.load_der_private_key(data, password=passphrase())
        except ValueError:
            raise KeyFileUnreadable(f"cannot decrypt {path}: wrong passphrase") from None
    except ValueError:
        pass  # not PKCS#8: perhaps PKCS#12
    else:
        warn(_unencrypted(path))
        return key
    try:
        bundle = pkcs12.load_pkcs12(data, passphrase())
    except ValueError:
        raise KeyFileUnreadable(
            f"cannot open {path}: not a private key (PEM, DER PKCS#8 or PKCS#12), "
            "or a PKCS#12 file with another passphrase"
        ) from None
    if bundle.key is None:
        raise KeyFileUnreadable(f"{path} is a PKCS#12 file without a private key")
    return bundle.key


def algorithm_of(public_key: PublicKey) -> str:
    """How the client names a public key's algorithm (``ec-p256``, ``rsa-2048``, ...)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}"
    return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(
        public_key.curve.name, public_key.curve.name
    )


def public_key_fingerprint(public_key: PublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, as colon-separated hex."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest().hex(":").upper()


@dataclass(frozen=True)
class TokenKeySummary:
    """What a token holds under one key label."""

    label: str
    algorithm: KeyAlgorithm
    fingerprint: str
    certificate: x509.Certificate | None


def describe_token_key(token: Token, label: str) -> TokenKeySummary:
    """The key pair ``label`` and the certificate stored beside it, if any.

    :raises hsm.KeyNotFound: when the token holds no key with this label.
    """
    handle = token.find_key(label)
    der = token.certificate(label)
    return TokenKeySummary(
        label=label,
        algorithm=handle.algorithm,
        fingerprint=public_key_fingerprint(token.public_key(label)),
        certificate=x509.load_der_x509_certificate(der) if der is not None else None,
    )
