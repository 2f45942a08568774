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


# Exit statuses of `ca-client` (documented in the README). Click's own usage errors exit 2;
# `renew` adds the two outcomes that are not failures, for a cron job or a systemd timer.
EXIT_FAILED = 1  # `error: …` on stderr
EXIT_USAGE = 2  # a wrong or missing option
EXIT_NOT_DUE = 3  # `renew --if-due`: outside the suggested renewal window, nothing done
EXIT_PENDING = 4  # `renew`: the renewal waits for an officer (or was already waiting)


class RenewalRefused(ClientError):
    """The certificate cannot be renewed online now (the service's renewal information says
    why), found before a new key is made."""
