"""Key algorithms and signature schemes the layer supports."""

from __future__ import annotations

import enum


class KeyAlgorithm(enum.StrEnum):
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa")

    @property
    def rsa_bits(self) -> int:
        return int(self.value.removeprefix("rsa-"))

    @property
    def curve_name(self) -> str:
        return {"ec-p256": "secp256r1", "ec-p384": "secp384r1"}[self.value]


class SignatureScheme(enum.StrEnum):
    RSA_PKCS1_SHA256 = "rsa-pkcs1-sha256"
    RSA_PKCS1_SHA384 = "rsa-pkcs1-sha384"
    RSA_PSS_SHA256 = "rsa-pss-sha256"
    RSA_PSS_SHA384 = "rsa-pss-sha384"
    ECDSA_SHA256 = "ecdsa-sha256"
    ECDSA_SHA384 = "ecdsa-sha384"

    @property
    def hash_name(self) -> str:
        return "sha384" if self.value.endswith("384") else "sha256"
