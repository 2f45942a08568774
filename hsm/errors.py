"""HSM errors, each with a message an operator can act on (never a PIN)."""

from __future__ import annotations


class HSMError(Exception):
    """Base of every error of the PKCS#11 layer."""


class PKCS11ModuleNotFound(HSMError):
    def __init__(self, path: str, reason: str = "") -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"PKCS#11 module {path} could not be loaded{detail} "
            "(install softhsm2, or set CA_PKCS11_MODULE to your HSM's module)"
        )


class TokenNotFound(HSMError):
    def __init__(self, label: str) -> None:
        super().__init__(
            f"no PKCS#11 token labelled {label!r} (run `ca-service init`, or check CA_TOKEN_LABEL)"
        )


class PinUnavailable(HSMError):
    """Neither the PIN environment variable nor the PIN file gives a PIN."""


class WrongPin(HSMError):
    def __init__(self, label: str) -> None:
        super().__init__(f"the HSM rejected the PIN for token {label!r} (check the PIN source)")


class PinLocked(HSMError):
    def __init__(self, label: str) -> None:
        super().__init__(
            f"the user PIN of token {label!r} is locked after too many wrong PINs; "
            "the security officer must unblock it"
        )


class KeyNotFound(HSMError):
    def __init__(self, label: str) -> None:
        super().__init__(f"no private key labelled {label!r} in the token (run `ca-service init`)")


class DuplicateKeyLabel(HSMError):
    def __init__(self, label: str) -> None:
        super().__init__(f"the token already holds a key labelled {label!r}; refusing a second")


class SessionLost(HSMError):
    def __init__(self, label: str, reason: str) -> None:
        super().__init__(f"lost the session to token {label!r} and could not reopen it: {reason}")


class HSMUnavailable(HSMError):
    """The HSM did not answer or failed an operation."""
