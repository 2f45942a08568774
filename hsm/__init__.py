"""Framework-free PKCS#11 layer: token sessions, key generation, signing, SoftHSM set-up."""

from hsm.config import HSMConfig
from hsm.errors import (
    DuplicateCertificateLabel,
    DuplicateKeyLabel,
    HSMError,
    HSMUnavailable,
    KeyNotFound,
    PinLocked,
    PinUnavailable,
    PKCS11ModuleNotFound,
    SessionLost,
    TokenNotFound,
    TokenNotPresent,
    WrongPin,
)
from hsm.keys import KeyAlgorithm
from hsm.signers import HSMECPrivateKey, HSMPrivateKey, HSMRSAPrivateKey, SignatureScheme
from hsm.softhsm import (
    delete_softhsm_token,
    find_softhsm_module,
    init_softhsm_token,
    softhsm_token_exists,
    write_softhsm_config,
)
from hsm.token import KeyHandle, PublicKey, Token, login_attempts, rescan_tokens

__all__ = [
    "DuplicateCertificateLabel",
    "DuplicateKeyLabel",
    "HSMConfig",
    "HSMECPrivateKey",
    "HSMError",
    "HSMPrivateKey",
    "HSMRSAPrivateKey",
    "HSMUnavailable",
    "KeyAlgorithm",
    "KeyHandle",
    "KeyNotFound",
    "PKCS11ModuleNotFound",
    "PinLocked",
    "PinUnavailable",
    "PublicKey",
    "SessionLost",
    "SignatureScheme",
    "Token",
    "TokenNotFound",
    "TokenNotPresent",
    "WrongPin",
    "delete_softhsm_token",
    "find_softhsm_module",
    "init_softhsm_token",
    "login_attempts",
    "rescan_tokens",
    "softhsm_token_exists",
    "write_softhsm_config",
]
