"""Helpers of the client tests: certificates from a throwaway CA, checks of failed commands."""

from __future__ import annotations

from pathlib import Path

from click.testing import Result
from cryptography import x509

from tests.hsm.support import issue_certificate

__all__ = ["issue_certificate"]


def read_csr(path: Path) -> x509.CertificateSigningRequest:
    """A PEM CSR from a file, checked to be signed by its own key."""
    csr = x509.load_pem_x509_csr(path.read_bytes())
    assert csr.is_signature_valid
    return csr


def assert_fails_cleanly(result: Result, message: str, exit_code: int = 1) -> None:
    """The command ended with one `error: ...` line holding ``message``, and no traceback."""
    assert result.exit_code == exit_code, result.output
    # An exception click did not turn into an exit would show up here instead of SystemExit.
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    assert message in error_lines[0]
