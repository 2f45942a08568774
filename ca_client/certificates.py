"""Certificates the CA issued to an employer, as files and on the employer's token."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_client.errors import CertificateUnreadable
from hsm import Token


def load_certificate_file(path: Path) -> x509.Certificate:
    """Read one X.509 certificate from a PEM or DER file.

    :raises CertificateUnreadable: when the file is missing or holds no certificate.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateUnreadable(
            f"{path} is not an X.509 certificate in PEM or DER form"
        ) from None


def load_certificate_chain(path: Path) -> list[x509.Certificate]:
    """Read a certificate, or a PEM file holding it followed by its intermediates.

    :raises CertificateUnreadable: when the file is missing or holds no certificate.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" in data:
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError:
            pass
    return [load_certificate_file(path)]


def import_certificate(
    token: Token, label: str, certificate: x509.Certificate, *, replace: bool = False
) -> None:
    """Store ``certificate`` on the token beside the key pair ``label``.

    :raises hsm.KeyNotFound: when the token holds no key with this label.
    :raises hsm.DuplicateCertificateLabel: when one is stored already and not ``replace``.
    :raises ValueError: when the certificate is for another key.
    """
    token.store_certificate(label, certificate.public_bytes(Encoding.DER), replace=replace)
