"""Reading an employer's PKCS#10 request: format, signature and key policy.

Only the public key is taken from a CSR; the subject always comes from the employer record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask_babel import gettext as _

from ca_service.errors import ValidationError

MAX_CSR_BYTES = 64 * 1024
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}


@dataclass(frozen=True)
class CheckedRequest:
    csr: x509.CertificateSigningRequest
    public_key: CertificatePublicKeyTypes
    key_description: str  # "RSA 3072", "EC P-256"
    public_key_sha256: str  # of the DER SubjectPublicKeyInfo

    @property
    def der(self) -> bytes:
        return self.csr.public_bytes(Encoding.DER)


def describe_key(key: CertificatePublicKeyTypes) -> str:
    """'RSA 2048' or 'EC P-256'.

    :raises ValidationError: when the key is outside the policy (RSA 2048-8192 bits with a
        sane exponent, EC P-256 or P-384).
    """
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValidationError(
                _(
                    "The request's RSA key has %(key_size)s bits; use at least %(min_rsa_bits)s.",
                    key_size=key.key_size,
                    min_rsa_bits=MIN_RSA_BITS,
                )
            )
        if key.key_size > MAX_RSA_BITS:
            raise ValidationError(
                _(
                    "RSA keys above %(max_rsa_bits)s bits are not accepted.",
                    max_rsa_bits=MAX_RSA_BITS,
                )
            )
        if key.public_numbers().e < 65537 or key.public_numbers().e % 2 == 0:
            raise ValidationError(_("The request's RSA key has a weak public exponent."))
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVES.get(key.curve.name)
        if curve is None:
            raise ValidationError(
                _(
                    "The request's key is on curve %(name)s; use P-256 or P-384.",
                    name=key.curve.name,
                )
            )
        return f"EC {curve}"
    raise ValidationError(
        _(
            "The request's key type (%(value)s) is not accepted; use RSA (2048 bits or more) "
            "or EC P-256/P-384.",
            value=type(key).__name__.removeprefix("_"),
        )
    )


def check_request(data: bytes) -> CheckedRequest:
    """Parse a PEM or DER CSR and check its signature and key.

    :raises ValidationError: empty, oversize, unparseable, badly signed or weak-keyed requests.
    """
    if not data.strip():
        raise ValidationError(_("The certificate request is empty."))
    if len(data) > MAX_CSR_BYTES:
        raise ValidationError(_("The certificate request is too large (64 KiB at most)."))
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except ValueError:
        raise ValidationError(
            _(
                "This is not a PKCS#10 certificate request (PEM or DER). Create one with "
                "`ca-client keygen` or `openssl req -new`."
            )
        ) from None
    try:
        key = csr.public_key()
    except (UnsupportedAlgorithm, ValueError, TypeError):
        raise ValidationError(_("The request's public key cannot be read.")) from None
    description = describe_key(key)
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError):  # unsupported signature algorithm
        valid = False
    if not valid:
        raise ValidationError(
            _("The request's signature does not verify: it was not made with the key it carries.")
        )
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return CheckedRequest(
        csr=csr,
        public_key=key,
        key_description=description,
        public_key_sha256=hashlib.sha256(spki).hexdigest(),
    )
