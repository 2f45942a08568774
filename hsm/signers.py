"""Private-key objects that cryptography's builders accept, with the key kept in the token.

cryptography's CertificateBuilder, CertificateSigningRequestBuilder,
CertificateRevocationListBuilder and OCSPResponseBuilder check the key against the
``RSAPrivateKey`` / ``EllipticCurvePrivateKey`` abstract base classes and then call
``sign(data, padding, algorithm)`` or ``sign(data, ECDSA(algorithm))`` on it; subclassing the ABCs
is how an external key plugs in. Everything that would need the private key itself refuses.
"""

from __future__ import annotations

import enum
from typing import NoReturn, Protocol, Self, TypeAlias

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import (
    MGF1,
    PSS,
    AsymmetricPadding,
    PKCS1v15,
)
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo, Prehashed
from cryptography.utils import Buffer

from hsm.keys import KeyAlgorithm


class SignatureScheme(enum.StrEnum):
    """A signature algorithm with its hash and padding, as ``Token.sign`` takes it."""

    RSA_PKCS1_SHA256 = "rsa-pkcs1-sha256"
    RSA_PKCS1_SHA384 = "rsa-pkcs1-sha384"
    # RSASSA-PSS with MGF1 over the same hash and a salt as long as the digest (RFC 4055 §3.1).
    RSA_PSS_SHA256 = "rsa-pss-sha256"
    RSA_PSS_SHA384 = "rsa-pss-sha384"
    ECDSA_SHA256 = "ecdsa-sha256"
    ECDSA_SHA384 = "ecdsa-sha384"

    @property
    def hash_name(self) -> str:
        """The hashlib name of the scheme's hash."""
        return self.value.rsplit("-", 1)[1]

    @property
    def digest_size(self) -> int:
        """Length in bytes of the scheme's digest (also the PSS salt length)."""
        return 48 if self.hash_name == "sha384" else 32

    @property
    def is_ecdsa(self) -> bool:
        """Whether this is an ECDSA scheme (otherwise RSA)."""
        return self.value.startswith("ecdsa-")

    @property
    def is_pss(self) -> bool:
        """Whether this is RSASSA-PSS."""
        return self.value.startswith("rsa-pss-")

    def fits(self, algorithm: KeyAlgorithm) -> bool:
        """Whether a key of ``algorithm`` can sign with this scheme."""
        return algorithm.is_rsa != self.is_ecdsa


class TokenSigner(Protocol):
    """What an adapter needs from the token: signatures by a key's label (``hsm.token.Token``).

    A protocol rather than ``Token`` itself, so this module does not import the module that
    imports it.
    """

    def sign(self, label: str, data: bytes, scheme: SignatureScheme) -> bytes:
        """Sign ``data`` (hashed on the host) with the key ``label``."""
        ...

    def sign_digest(self, label: str, digest: bytes, scheme: SignatureScheme) -> bytes:
        """Sign a digest made with the scheme's hash with the key ``label``."""
        ...


def _refuse(what: str) -> NoReturn:
    raise TypeError(f"{what} is not possible: the private key never leaves the HSM")


def _hash_and_prehashed(
    algorithm: hashes.HashAlgorithm | Prehashed | NoDigestInfo,
) -> tuple[str, bool]:
    """The hashlib name of a supported hash, and whether the data is already its digest."""
    prehashed = isinstance(algorithm, Prehashed)
    # Prehashed keeps its hash only in ``_algorithm`` (cryptography's own signers read it there);
    # the digest size alone would confuse SHA-256 with SHA3-256 or SHA-512/256.
    hash_algorithm: object = algorithm._algorithm if isinstance(algorithm, Prehashed) else algorithm
    if isinstance(hash_algorithm, hashes.SHA256 | hashes.SHA384):
        return hash_algorithm.name, prehashed
    if isinstance(algorithm, NoDigestInfo):
        raise ValueError("RSA signatures without DigestInfo are not supported")
    name = getattr(hash_algorithm, "name", type(hash_algorithm).__name__)
    raise ValueError(f"unsupported hash {name}: the HSM adapters sign with SHA-256 or SHA-384")


def _hash_object(name: str) -> hashes.SHA256 | hashes.SHA384:
    return hashes.SHA384() if name == "sha384" else hashes.SHA256()


class _TokenKey:
    """What both adapters share: the key cannot be exported; a copy names the same token key."""

    _label: str

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        """Refused: the key is sensitive and unextractable."""
        _refuse("exporting the key")

    def __copy__(self) -> Self:
        # A reference to a key in the token: a copy would name the same key, so it is this one.
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self

    @property
    def label(self) -> str:
        """The key's label in the token."""
        return self._label


class HSMRSAPrivateKey(_TokenKey, rsa.RSAPrivateKey):
    """An RSA key in the token: PKCS#1 v1.5, or PSS with MGF1 (same hash) and salt = digest."""

    def __init__(self, token: TokenSigner, label: str, public: rsa.RSAPublicKey) -> None:
        self._token = token
        self._label = label
        self._public = public

    def sign(
        self,
        data: bytes,
        padding: AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | Prehashed | NoDigestInfo,
    ) -> bytes:
        """Sign in the token.

        :raises ValueError: for a padding, hash or PSS parameter set the adapter does not offer.
        """
        name, prehashed = _hash_and_prehashed(algorithm)
        if isinstance(padding, PKCS1v15):
            scheme = SignatureScheme(f"rsa-pkcs1-{name}")
        elif isinstance(padding, PSS):
            scheme = SignatureScheme(f"rsa-pss-{name}")
            # The token is given these exact parameters; anything else would make the signature
            # disagree with the parameters the builder writes into the certificate.
            mgf = MGF1(_hash_object(name))
            accepted = (
                PSS(mgf=mgf, salt_length=PSS.DIGEST_LENGTH),
                PSS(mgf=mgf, salt_length=scheme.digest_size),
            )
            if padding not in accepted:
                raise ValueError(
                    f"unsupported PSS parameters: use MGF1 with {name.upper()} and a salt "
                    "as long as the digest (PSS.DIGEST_LENGTH)"
                )
        else:
            raise ValueError(f"unsupported RSA padding {padding.name}: use PKCS1v15 or PSS")
        if prehashed:
            return self._token.sign_digest(self._label, bytes(data), scheme)
        return self._token.sign(self._label, bytes(data), scheme)

    def public_key(self) -> rsa.RSAPublicKey:
        """The public half, read from the token."""
        return self._public

    @property
    def key_size(self) -> int:
        """Modulus length in bits."""
        return self._public.key_size

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """Refused: the token key is a signing key (CKA_DECRYPT false)."""
        _refuse("decryption with a signing key")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        """Refused: the private numbers are sensitive and unextractable."""
        _refuse("reading the private numbers")

    def __repr__(self) -> str:
        return f"<HSMRSAPrivateKey label={self._label!r} bits={self.key_size}>"


class HSMECPrivateKey(_TokenKey, ec.EllipticCurvePrivateKey):
    """An EC key in the token: ECDSA with SHA-256 or SHA-384, DER-encoded signatures."""

    def __init__(self, token: TokenSigner, label: str, public: ec.EllipticCurvePublicKey) -> None:
        self._token = token
        self._label = label
        self._public = public

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """Sign in the token.

        :raises ValueError: for anything but randomised ECDSA with SHA-256/384.
        """
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise ValueError("only ECDSA signatures are supported")
        if signature_algorithm.deterministic_signing:
            # CKM_ECDSA takes its nonce from the token's RNG; RFC 6979 is not on offer.
            raise ValueError("deterministic ECDSA (RFC 6979) is not supported by the HSM")
        name, prehashed = _hash_and_prehashed(signature_algorithm.algorithm)
        scheme = SignatureScheme(f"ecdsa-{name}")
        if prehashed:
            return self._token.sign_digest(self._label, bytes(data), scheme)
        return self._token.sign(self._label, bytes(data), scheme)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half, read from the token."""
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        """The key's curve."""
        return self._public.curve

    @property
    def key_size(self) -> int:
        """Size of the curve's field in bits."""
        return self._public.curve.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        """Refused: the token key is a signing key (CKA_DERIVE false)."""
        _refuse("key agreement with a signing key")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        """Refused: the private value is sensitive and unextractable."""
        _refuse("reading the private value")

    def __repr__(self) -> str:
        return f"<HSMECPrivateKey label={self._label!r} curve={self.curve.name}>"


HSMPrivateKey: TypeAlias = HSMRSAPrivateKey | HSMECPrivateKey
