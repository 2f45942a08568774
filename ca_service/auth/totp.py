"""TOTP (RFC 6238) seeds: generation, QR code, verification, encryption at rest."""

from __future__ import annotations

import base64
import os
import time

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ISSUER = "Employer PKI"
_STEP = 30


def new_seed() -> str:
    """A fresh 160-bit base32 seed."""
    return pyotp.random_base32()


def provisioning_uri(seed: str, username: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code."""
    return str(pyotp.TOTP(seed).provisioning_uri(name=username, issuer_name=ISSUER))


def matching_step(seed: str, code: str, now: float | None = None) -> int | None:
    """The time step the code belongs to (current ±1 for clock drift), or None.

    The same window as pyotp's ``verify(code, valid_window=1)``, but it says *which* step
    matched, so the caller can refuse that step (and older ones) from then on.
    """
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    moment = time.time() if now is None else now
    otp = pyotp.TOTP(seed)
    current = int(moment // _STEP)
    for step in (current - 1, current, current + 1):
        if pyotp.utils.strings_equal(otp.at(step * _STEP), code):
            return step
    return None


# Seeds at rest: AES-256-GCM under a key derived with HKDF-SHA256 from the app's SECRET_KEY.
# - HKDF with its own "info" label gives a key used for nothing else: the session-signing key
#   itself is never used to encrypt, and a future second use of SECRET_KEY gets another label.
# - AES-GCM authenticates as well as encrypts, so an altered ciphertext fails instead of
#   decrypting to a wrong seed. Chosen over Fernet (AES-128-CBC + HMAC) for a 256-bit key
#   and a shorter token; Fernet's timestamp is of no use here. Random 96-bit nonces are safe
#   at this volume (one encryption per enrolment).
# - A database dump alone does not reveal the seeds; the SECRET_KEY is needed too. Changing
#   SECRET_KEY makes the seeds unreadable: users then need `ca-service user reset --remove-totp`.
_INFO = b"totp-seed-v1"  # HKDF info and AES-GCM associated data; seeds stored so far use it
_NONCE_BYTES = 12


class SeedUnreadable(Exception):
    """The stored seed does not decrypt with this SECRET_KEY (changed key, or altered row)."""


def _key(secret_key: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        secret_key.encode()
    )


def encrypt_seed(seed: str, secret_key: str) -> str:
    """The seed encrypted for storage (base64 of nonce + ciphertext + tag)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(_key(secret_key)).encrypt(nonce, seed.encode(), _INFO)
    return base64.b64encode(nonce + sealed).decode()


def decrypt_seed(token: str, secret_key: str) -> str:
    """The seed back from ``encrypt_seed``'s output.

    :raises SeedUnreadable: wrong key or altered data.
    """
    raw = base64.b64decode(token)
    try:
        plain = AESGCM(_key(secret_key)).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _INFO)
    except InvalidTag:
        raise SeedUnreadable("the stored TOTP seed does not decrypt with this secret key") from None
    return plain.decode()
