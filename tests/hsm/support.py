"""Helpers of the hsm tests: raw python-pkcs11 access, X.509 objects to sign, openssl."""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pkcs11.types import Session

from hsm import (
    HSMConfig,
    HSMPrivateKey,
    SignatureScheme,
    Token,
    init_softhsm_token,
    rescan_tokens,
)

Hash = hashes.SHA256 | hashes.SHA384
if TYPE_CHECKING:
    from tests.conftest import HsmEnv

NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HSM adapter test")])


@dataclass
class SoftHSMSetup:
    """The session's SoftHSM configuration and the tokens made in it."""

    conf: Path
    module: str
    created: list[str] = field(default_factory=list)

    def new_token(self, prefix: str = "hsm") -> tuple[str, str]:
        """Create a token; returns its label and user PIN."""
        label, pin = f"{prefix}-{secrets.token_hex(4)}", secrets.token_hex(8)
        init_softhsm_token(self.conf, label, secrets.token_hex(8), pin)
        self.created.append(label)
        # A module initialised before the token existed sees it only once re-initialised.
        rescan_tokens(self.module)
        return label, pin

    def config(self, prefix: str = "hsm", pool_size: int = 4) -> HSMConfig:
        """The configuration of a new token."""
        label, pin = self.new_token(prefix)
        return HSMConfig(module_path=self.module, token_label=label, pin=pin, pool_size=pool_size)


def raw_session(token: Token, label: str, *, rw: bool = False) -> Session:
    """A session opened straight through python-pkcs11, bypassing the layer under test.

    It has no PIN yet sees private objects, because this process is logged in: what any code
    in a process holding the PIN could do. Closing it (``with``) is a plain C_CloseSession.
    """
    # Another test's rescan may have ended the login: one signature logs in again.
    scheme = (
        SignatureScheme.RSA_PKCS1_SHA256
        if token.find_key(label).algorithm.is_rsa
        else SignatureScheme.ECDSA_SHA256
    )
    token.sign(label, b"log in", scheme)
    return pkcs11.lib(token.config.module_path).get_token(token_label=token.label).open(rw=rw)


def pss(algorithm: Hash) -> padding.PSS:
    """The PSS parameters the CA asks for: MGF1 with the same hash, salt = digest length."""
    return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.DIGEST_LENGTH)


def explicit_pss(algorithm: Hash) -> padding.PSS:
    """The same parameters with the salt length spelt out, as a certificate records them."""
    return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size)


def self_signed(
    key: HSMPrivateKey, algorithm: Hash, rsa_padding: padding.PSS | None = None
) -> x509.Certificate:
    """A CA certificate signed by ``key`` that passes `openssl verify -x509_strict`."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)  # tolerate clock skew
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
    )
    return builder.sign(key, algorithm, rsa_padding=rsa_padding)


def verify_signature(
    public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    signature: bytes,
    data: bytes,
    algorithm: Hash,
    rsa_padding: padding.PSS | None = None,
) -> None:
    """Verify with cryptography, with the PSS salt length pinned to the digest length."""
    if isinstance(public, rsa.RSAPublicKey):
        chosen = explicit_pss(algorithm) if rsa_padding is not None else padding.PKCS1v15()
        public.verify(signature, data, chosen, algorithm)
    else:
        public.verify(signature, data, ec.ECDSA(algorithm))


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the openssl command line, an independent implementation."""
    return subprocess.run(
        ["openssl", *args], capture_output=True, text=True, check=False, timeout=30
    )


def write_pem(path: Path, obj: x509.Certificate | x509.CertificateRevocationList) -> str:
    path.write_bytes(obj.public_bytes(Encoding.PEM))
    return str(path)


def issue_certificate(
    public_key: CertificatePublicKeyTypes, common_name: str = "Employer Ltd"
) -> x509.Certificate:
    """A certificate for ``public_key`` signed by a CA key made for this one call."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Throwaway CA")]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )


def token_directory(conf: Path, label: str) -> Path:
    """The directory in which SoftHSM keeps the token ``label`` (its files name the label)."""
    token_dir = Path(
        next(
            line.split("=", 1)[1].strip()
            for line in conf.read_text().splitlines()
            if line.strip().startswith("directories.tokendir")
        )
    )
    wanted = label.encode().ljust(32)  # CK_TOKEN_INFO's blank-padded label, as stored
    for candidate in token_dir.iterdir():
        state = candidate / "token.object"
        if state.is_file() and wanted in state.read_bytes():
            return candidate
    raise AssertionError(f"no SoftHSM token directory for {label!r} under {token_dir}")


@contextmanager
def token_moved_away(conf: Path, label: str, tmp_path: Path) -> Iterator[None]:
    """The SoftHSM directory of the token ``label`` moved off for the block, as if the token
    were pulled."""
    directory = token_directory(conf, label)
    away = tmp_path / f"away-{label}"
    shutil.move(directory, away)
    try:
        yield
    finally:
        shutil.move(away, directory)


def token_away(hsm_env: HsmEnv, tmp_path: Path) -> contextlib.AbstractContextManager[None]:
    """The CA token pulled for the block (``token_moved_away``)."""
    return token_moved_away(hsm_env.conf, hsm_env.ca_token_label, tmp_path)
