"""TOTP (RFC 6238) seeds: generation, QR code, verification, encryption at rest."""

from __future__ import annotations

import base64
import io
import os
import time

import pyotp
import qrcode
import qrcode.image.svg
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ISSUER = "Employer PKI"
_STEP = 30


def new_seed() -> str:
    return pyotp.random_base32()


def provisioning_uri(seed: str, username: str) -> str:
    return str(pyotp.TOTP(seed).provisioning_uri(name=username, issuer_name=ISSUER))


def qr_svg_data_uri(uri: str) -> str:
    """The otpauth URI as an inline SVG QR code (no external request, CSP allows data:)."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def matching_step(seed: str, code: str, now: float | None = None) -> int | None:
    """The time step the code belongs to (current ±1 for clock drift), or None."""
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


def _key(secret_key: str) -> bytes:
    # A dedicated key derived from the app secret, so the seed is unreadable in a database dump
    # alone; AES-GCM also authenticates it, so a seed cannot be swapped between rows unnoticed
    # (the username is not bound here: rows are protected by the database's own access control).
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"totp-seed-v1").derive(
        secret_key.encode()
    )


def encrypt_seed(seed: str, secret_key: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(_key(secret_key)).encrypt(nonce, seed.encode(), b"totp-seed-v1")
    return base64.b64encode(nonce + sealed).decode()


def decrypt_seed(token: str, secret_key: str) -> str:
    raw = base64.b64decode(token)
    return AESGCM(_key(secret_key)).decrypt(raw[:12], raw[12:], b"totp-seed-v1").decode()
