"""Private-key objects that cryptography's builders accept, with the key kept in the token.

cryptography's CertificateBuilder, CertificateSigningRequestBuilder,
CertificateRevocationListBuilder and OCSPResponseBuilder check the key against its abstract
base classes and then call ``sign(data, padding, algorithm)`` / ``sign(data, ECDSA(algorithm))``;
subclassing the ABCs is the documented way to plug in an external key.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, NoReturn, Self

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo, Prehashed
from cryptography.utils import Buffer

from hsm.keys import SignatureScheme

if TYPE_CHECKING:
    from hsm.token import Token


def _refuse(what: str) -> NoReturn:
    raise TypeError(f"{what} is not possible: the private key never leaves the HSM")


def _hash_name(algorithm: object) -> str:
    if not isinstance(algorithm, hashes.HashAlgorithm):
        _refuse(f"signing with {type(algorithm).__name__} through the adapter")
    if isinstance(algorithm, hashes.SHA256):
        return "sha256"
    if isinstance(algorithm, hashes.SHA384):
        return "sha384"
    raise ValueError(f"unsupported hash {algorithm.name}: use SHA-256 or SHA-384")


class _TokenKey:
    """What both adapters share: the key cannot be exported, and copies are the same handle."""

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        _refuse("exporting the key")

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class HSMRSAPrivateKey(_TokenKey, rsa.RSAPrivateKey):
    """An RSA key in the token; PKCS#1 v1.5 or PSS (MGF1 same hash, salt = digest length)."""

    def __init__(self, token: Token, label: str, public: rsa.RSAPublicKey) -> None:
        self._token, self._label, self._public = token, label, public

    def sign(
        self,
        data: Buffer,
        padding: padding.AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | Prehashed | NoDigestInfo,
    ) -> bytes:
        name = _hash_name(algorithm)
        if isinstance(padding, _PKCS1v15):
            scheme = SignatureScheme(f"rsa-pkcs1-{name}")
        elif isinstance(padding, _PSS):
            mgf = padding.mgf
            salt = padding._salt_length  # cryptography keeps the requested length here
            if not (isinstance(mgf, _MGF1) and isinstance(mgf._algorithm, type(algorithm))):
                raise ValueError("PSS must use MGF1 with the signature's hash")
            if salt not in (_PSS.DIGEST_LENGTH, hashlib.new(name).digest_size):
                raise ValueError("PSS salt length must equal the digest length")
            scheme = SignatureScheme(f"rsa-pss-{name}")
        else:
            raise ValueError(f"unsupported RSA padding {padding.name}")
        return self._token.sign(self._label, bytes(data), scheme)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        _refuse("decryption with a signing key")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        _refuse("reading the private numbers")


class HSMECPrivateKey(_TokenKey, ec.EllipticCurvePrivateKey):
    """An EC key in the token; ECDSA with SHA-256 or SHA-384."""

    def __init__(self, token: Token, label: str, public: ec.EllipticCurvePublicKey) -> None:
        self._token, self._label, self._public = token, label, public

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise ValueError("only ECDSA signatures are supported")
        name = _hash_name(signature_algorithm.algorithm)
        return self._token.sign(self._label, bytes(data), SignatureScheme(f"ecdsa-{name}"))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        _refuse("key agreement with a signing key")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        _refuse("reading the private numbers")


_PKCS1v15 = padding.PKCS1v15
_PSS = padding.PSS
_MGF1 = padding.MGF1
