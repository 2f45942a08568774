"""Helpers of the client tests: certificates from a throwaway CA, checks of failed commands."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from click.testing import Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hsm import PublicKey


def issue_certificate(public_key: PublicKey, common_name: str = "Employer Ltd") -> x509.Certificate:
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


def read_csr(path: Path) -> x509.CertificateSigningRequest:
    """A PEM CSR from a file, checked to be signed by its own key."""
    csr = x509.load_pem_x509_csr(path.read_bytes())
    assert csr.is_signature_valid
    return csr


def assert_fails_cleanly(result: Result, message: str, exit_code: int = 1) -> None:
    """The command ended with one `Error: ...` line holding ``message``, and no traceback."""
    assert result.exit_code == exit_code, result.output
    # An exception click did not turn into an exit would show up here instead of SystemExit.
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1, result.stderr
    assert message in error_lines[0]
