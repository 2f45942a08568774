"""The key algorithms the layer generates and signs with."""

from __future__ import annotations

import enum


class KeyAlgorithm(enum.StrEnum):
    """A key pair type; the value is how configuration and the audit log spell it."""

    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"

    @property
    def is_rsa(self) -> bool:
        """Whether this is an RSA key (otherwise EC)."""
        return self.value.startswith("rsa-")

    @property
    def rsa_bits(self) -> int:
        """Modulus length of an RSA key.

        :raises ValueError: for an EC key.
        """
        if not self.is_rsa:
            raise ValueError(f"{self.value} is not an RSA key")
        return int(self.value.removeprefix("rsa-"))

    @property
    def curve_name(self) -> str:
        """The SEC 2 name of an EC key's curve.

        :raises ValueError: for an RSA key.
        """
        if self.is_rsa:
            raise ValueError(f"{self.value} is not an EC key")
        return {"ec-p256": "secp256r1", "ec-p384": "secp384r1"}[self.value]
