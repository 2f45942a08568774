"""A stand-in for the tax bureau's certification authority, generated per run.

``TaxCA`` holds a root and an intermediate (the CA that issues taxpayers' certificates), both
with proper CA extensions, and makes the certificates and CRLs the real bureau would::

    tax = TaxCA()
    certificate, key = tax.issue("NTRCN-91110000600037341X")
    crl = tax.crl(revoked=[(certificate.serial_number, x509.ReasonFlags.key_compromise)])

Keys are software keys made in memory: this imitates an external CA, not ours, so nothing
here needs the HSM. Each CA publishes its CRL at ``<crl_base_url>/root.crl`` and
``<crl_base_url>/intermediate.crl``: the intermediate's certificate names the root's URL as its
CRL distribution point (unless ``intermediate_crl_dp=False``: many real roots publish no CRL
anyone configures), and taxpayer certificates name the intermediate's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from types import EllipsisType
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

KeyKind = Literal["ec", "rsa"]
IssuerName = Literal["intermediate", "root"]
CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
#: ``revoked=`` entries of ``TaxCA.crl``: a serial and its reason (None: no reason code).
Revocation = tuple[int, x509.ReasonFlags | None]

DEFAULT_CRL_BASE_URL = "http://crl.tax.test"
NUMBER_ATTRIBUTES = {
    "organizationIdentifier": NameOID.ORGANIZATION_IDENTIFIER,
    "serialNumber": NameOID.SERIAL_NUMBER,
}


def new_key(kind: KeyKind = "ec") -> CaKey:
    """A fresh P-256 or RSA-2048 private key."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def number_attribute(attribute: str) -> ObjectIdentifier:
    """The OID of ``organizationIdentifier``, ``serialNumber`` or a dotted OID string."""
    return NUMBER_ATTRIBUTES.get(attribute) or ObjectIdentifier(attribute)


def _distribution_point(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage(digital_signature: bool) -> x509.KeyUsage:
    # Without digitalSignature the extension still exists (nonRepudiation only), as on a
    # signing-only certificate that must not be accepted for sign-in.
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=not digital_signature,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


class TaxCA:
    """The tax bureau's root and intermediate CA, with software keys.

    ``now`` (default: the current time) anchors the CAs' validity: the root is valid from a
    year before it for ten years, the intermediate from 300 days before it for five.
    ``intermediate_crl_dp``: False makes an intermediate that names no CRL distribution point.
    """

    def __init__(
        self,
        name: str = "Test Tax Bureau",
        *,
        key_kind: KeyKind = "ec",
        now: dt.datetime | None = None,
        crl_base_url: str = DEFAULT_CRL_BASE_URL,
        intermediate_crl_dp: bool = True,
    ) -> None:
        self.name = name
        self.now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        self.key_kind: KeyKind = key_kind
        base = crl_base_url.rstrip("/")
        #: Where the root publishes the CRL it signs (the intermediate's CRL DP).
        self.root_crl_url = f"{base}/root.crl"
        #: Where the intermediate publishes the CRL it signs (taxpayer certificates' CRL DP).
        self.intermediate_crl_url = f"{base}/intermediate.crl"
        self._crl_numbers: dict[str, int] = {"root": 0, "intermediate": 0}

        self.root_key: CaKey = new_key(key_kind)
        root_name = self._ca_name(f"{name} Root CA")
        root_key_id = x509.SubjectKeyIdentifier.from_public_key(self.root_key.public_key())
        self.root: x509.Certificate = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(self.root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - dt.timedelta(days=365))
            .not_valid_after(self.now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(root_key_id, critical=False)
            .sign(self.root_key, hashes.SHA256())
        )

        self.intermediate_key: CaKey = new_key(key_kind)
        intermediate = (
            x509.CertificateBuilder()
            .subject_name(self._ca_name(f"{name} Issuing CA"))
            .issuer_name(root_name)
            .public_key(self.intermediate_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - dt.timedelta(days=300))
            .not_valid_after(self.now + dt.timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.intermediate_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_key_id),
                critical=False,
            )
        )
        if intermediate_crl_dp:
            intermediate = intermediate.add_extension(
                _distribution_point(self.root_crl_url), critical=False
            )
        self.intermediate: x509.Certificate = intermediate.sign(self.root_key, hashes.SHA256())

    def _ca_name(self, common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )

    # -- the CA certificates ------------------------------------------------------------------

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(Encoding.PEM)

    @property
    def root_der(self) -> bytes:
        return self.root.public_bytes(Encoding.DER)

    @property
    def intermediate_pem(self) -> bytes:
        return self.intermediate.public_bytes(Encoding.PEM)

    @property
    def intermediate_der(self) -> bytes:
        return self.intermediate.public_bytes(Encoding.DER)

    def certificate(self, issuer: IssuerName) -> x509.Certificate:
        """The root's or the intermediate's certificate."""
        return self.root if issuer == "root" else self.intermediate

    def key(self, issuer: IssuerName) -> CaKey:
        """The root's or the intermediate's private key."""
        return self.root_key if issuer == "root" else self.intermediate_key

    def crl_url(self, issuer: IssuerName) -> str:
        """Where the root or the intermediate publishes its CRL."""
        return self.root_crl_url if issuer == "root" else self.intermediate_crl_url

    # -- taxpayer certificates ----------------------------------------------------------------

    def issue(
        self,
        number: str,
        *,
        name: str = "Test Taxpayer Co., Ltd.",
        public_key: CertificatePublicKeyTypes | None = None,
        attribute: str = "organizationIdentifier",
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        eku: Sequence[ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        key_usage_digital_signature: bool = True,
        crl_url: str | EllipsisType | None = ...,
        serial: int | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | None]:
        """A taxpayer certificate from the intermediate: subject C=CN, O=``name``,
        ``attribute``=``number`` (as given: "NTRCN-…" prefixes stay), CN=``name``.

        ``public_key``: the certified key; by default a new P-256 key, returned with the
        certificate (else the second item is None). ``attribute``: organizationIdentifier,
        serialNumber or a dotted OID. Validity: by default from a day before the CA's ``now``
        for a year. ``eku``: the extended key usages, None for no EKU extension.
        ``key_usage_digital_signature``: False gives a key usage of nonRepudiation only.
        ``crl_url``: the CRL distribution point; by default the intermediate's CRL URL, None
        for no CRL DP. ``serial``: by default random.
        """
        private_key: ec.EllipticCurvePrivateKey | None = None
        if public_key is None:
            private_key = ec.generate_private_key(ec.SECP256R1())
            public_key = private_key.public_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(number_attribute(attribute), number),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        start = not_before or self.now - dt.timedelta(days=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.intermediate.subject)
            .public_key(public_key)
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(not_after or start + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(key_usage_digital_signature), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.intermediate_key.public_key()
                ),
                critical=False,
            )
        )
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        url = self.intermediate_crl_url if isinstance(crl_url, EllipsisType) else crl_url
        if url is not None:
            builder = builder.add_extension(_distribution_point(url), critical=False)
        return builder.sign(self.intermediate_key, hashes.SHA256()), private_key

    # -- CRLs ---------------------------------------------------------------------------------

    def crl(
        self,
        *,
        issuer: IssuerName = "intermediate",
        revoked: Sequence[Revocation] = (),
        this_update: dt.datetime | None = None,
        next_update: dt.datetime | None = None,
        number: int | None = None,
        signing_key: CertificateIssuerPrivateKeyTypes | None = None,
    ) -> bytes:
        """A CRL (DER) of the intermediate or the root listing ``revoked``.

        ``this_update``: by default a minute ago (real time); ``next_update``: by default a
        week after it. ``number``: the cRLNumber, by default one more than the last one this
        CA made for ``issuer`` (an explicit number moves that counter on). ``signing_key``:
        sign with another key under the same issuer name and key identifier (a forgery).
        Entries are revoked an hour before ``this_update``.
        """
        if number is None:
            number = self._crl_numbers[issuer] + 1
        self._crl_numbers[issuer] = max(self._crl_numbers[issuer], number)
        start = this_update or dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(
            minutes=1
        )
        ca_key = self.key(issuer)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate(issuer).subject)
            .last_update(start)
            .next_update(next_update or start + dt.timedelta(days=7))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        for serial, reason in revoked:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(start - dt.timedelta(hours=1))
            )
            if reason is not None:
                entry = entry.add_extension(x509.CRLReason(reason), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(signing_key or ca_key, hashes.SHA256()).public_bytes(Encoding.DER)


def crl_pem(der: bytes) -> bytes:
    """A DER CRL in PEM form (``-----BEGIN X509 CRL-----``)."""
    return x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)
