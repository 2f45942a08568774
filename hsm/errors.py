"""HSM errors, each with a one-line message an operator can act on (never a PIN).

The web layer shows ``str(error)`` and maps every ``HSMError`` except ``KeyNotFound`` and
``DuplicateKeyLabel`` to HTTP 503, so a message says what is wrong and what to do about it.
"""

from __future__ import annotations


class HSMError(Exception):
    """Base of every error of the PKCS#11 layer."""


class PKCS11ModuleNotFound(HSMError):
    """The PKCS#11 module (shared library) is missing or is not a PKCS#11 module."""

    def __init__(self, path: str, reason: str = "") -> None:
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"PKCS#11 module {path} could not be loaded{detail}: install softhsm2, "
            "or set CA_PKCS11_MODULE to your HSM vendor's module"
        )


class TokenNotFound(HSMError):
    """No token with the configured label is present."""

    def __init__(self, label: str) -> None:
        super().__init__(
            f"no PKCS#11 token labelled {label!r}: run `ca-service init`, "
            "or check CA_TOKEN_LABEL against the HSM's token labels"
        )


class PinUnavailable(HSMError):
    """Neither the PIN environment variable nor the PIN file gives a PIN."""


class WrongPin(HSMError):
    """The token rejected the user PIN."""

    def __init__(
        self,
        label: str,
        reason: str = "the token rejected the PIN",
        source: str = "the PIN source",
    ) -> None:
        super().__init__(f"cannot log in to token {label!r}: {reason} (check {source})")


class PinLocked(HSMError):
    """The user PIN is locked after too many wrong attempts (CKR_PIN_LOCKED)."""

    def __init__(self, label: str) -> None:
        super().__init__(
            f"the user PIN of token {label!r} is locked after too many wrong PINs: "
            "the security officer must unblock it"
        )


class KeyNotFound(HSMError):
    """No key pair with this label in the token."""

    def __init__(self, label: str) -> None:
        super().__init__(
            f"no key labelled {label!r} in the token: run `ca-service init`, or check the label"
        )


class DuplicateKeyLabel(HSMError):
    """A key with this label already exists; labels identify keys, so they must be unique."""

    def __init__(self, label: str) -> None:
        super().__init__(
            f"the token already holds a key labelled {label!r}: choose another label "
            "(existing keys are never replaced)"
        )


class DuplicateCertificateLabel(HSMError):
    """A certificate with this label is already stored; replacing it has to be asked for."""

    def __init__(self, label: str) -> None:
        super().__init__(
            f"the token already holds a certificate labelled {label!r}: "
            "replace it explicitly (replace=True, `ca-client import-cert --replace`)"
        )


class SessionLost(HSMError):
    """The session to the token broke, and reopening it once did not help."""

    def __init__(self, label: str, reason: str) -> None:
        super().__init__(
            f"lost the session to token {label!r} and could not reopen it ({reason}): "
            "check that the HSM is reachable"
        )


class HSMUnavailable(HSMError):
    """The HSM is not reachable or failed an operation."""


class TokenNotPresent(HSMUnavailable):
    """The token this process was using went away (removed, deleted, HSM unreachable)."""

    def __init__(self, label: str) -> None:
        super().__init__(
            f"token {label!r} is not present any more: put it back (or bring the HSM back); "
            "the service picks it up again without a restart"
        )
