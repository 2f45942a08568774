"""Errors of the employer client, each with a one-line message the employer can act on."""

from __future__ import annotations


class ClientError(Exception):
    """Base of the client's own errors (token errors are ``hsm.HSMError``)."""


class KeyFileExists(ClientError):
    """The key file to create exists already; keys are never overwritten."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} exists already: keys are never overwritten, choose another --key-file"
        )


class KeyFileUnreadable(ClientError):
    """The key file cannot be read or decrypted, or holds a key the CA does not accept."""


class CertificateUnreadable(ClientError):
    """The certificate file cannot be read or is neither a PEM nor a DER X.509 certificate."""
