"""Certificate profiles (RFC 5280): root, issuing CA, OCSP responder, employer."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class PublicUrls:
    """Where relying parties fetch CA certificates, CRLs and OCSP answers."""

    base_url: str

    def ca_certificate(self, slug: str) -> str:
        return f"{self.base_url}/pki/ca/{slug}.crt"

    def crl(self, slug: str) -> str:
        return f"{self.base_url}/pki/crl/{slug}.crl"

    @property
    def ocsp(self) -> str:
        return f"{self.base_url}/ocsp"


def ca_name(country: str, organization: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
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


def _aki(issuer_public_key: CertificatePublicKeyTypes) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
        x509.SubjectKeyIdentifier.from_public_key(issuer_public_key)
    )


def _signing_leaf(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Certificate,
    usage: x509.ObjectIdentifier,
    non_repudiation: bool,
) -> x509.CertificateBuilder:
    """An end-entity certificate whose key only signs, for one extended key usage."""
    return (
        _leaf_template(issuer, usage, non_repudiation)
        .subject_name(subject)
        .public_key(public_key)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_issuer_key_identifier(issuer), critical=False)
    )


# What a leaf takes from its issuer and profile alone is the same for every certificate the
# issuer signs: built once per issuer (builders are immutable, each step returns a new one),
# not again for each certificate (hashing the issuer's key for the AKI, the URLs, the
# extension objects). The extensions keep their order, so the certificates are the same bytes.
@lru_cache(maxsize=16)
def _leaf_template(
    issuer: x509.Certificate, usage: x509.ObjectIdentifier, non_repudiation: bool
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .issuer_name(issuer.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=non_repudiation,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )


@lru_cache(maxsize=16)
def _issuer_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    return _aki(issuer.public_key())


def root_ca_builder(
    subject: x509.Name, public_key: CertificatePublicKeyTypes
) -> x509.CertificateBuilder:
    """Self-signed root: CA without a path length limit, keyCertSign + cRLSign."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(public_key), critical=False)
    )


def subordinate_ca_builder(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Certificate,
    issuer_slug: str,
    urls: PublicUrls,
) -> x509.CertificateBuilder:
    """Issuing CA under the root: pathLen 0 (it issues end-entity certificates only)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(issuer.public_key()), critical=False)
        .add_extension(
            authority_information_access(issuer_slug, urls, with_ocsp=False), critical=False
        )
        .add_extension(crl_distribution_points(issuer_slug, urls), critical=False)
    )


def ocsp_responder_builder(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Certificate,
    issuer_slug: str,
    urls: PublicUrls,
) -> x509.CertificateBuilder:
    """Delegated OCSP responder (RFC 6960 §4.2.2.2): id-kp-OCSPSigning and id-pkix-ocsp-nocheck.

    With nocheck, relying parties do not check the responder's own status, so its lifetime is
    kept short (OCSP_VALIDITY_DAYS) and it carries no CRL distribution point.
    """
    return (
        _signing_leaf(
            subject=subject,
            public_key=public_key,
            issuer=issuer,
            usage=ExtendedKeyUsageOID.OCSP_SIGNING,
            non_repudiation=False,
        )
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(
            authority_information_access(issuer_slug, urls, with_ocsp=False), critical=False
        )
    )


def authority_information_access(
    issuer_slug: str, urls: PublicUrls, *, with_ocsp: bool
) -> x509.AuthorityInformationAccess:
    """AIA: where to fetch the issuer's certificate, and (end-entity profiles) the OCSP URL."""
    descriptions = [
        x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS,
            x509.UniformResourceIdentifier(urls.ca_certificate(issuer_slug)),
        )
    ]
    if with_ocsp:
        descriptions.insert(
            0,
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp)
            ),
        )
    return x509.AuthorityInformationAccess(descriptions)


def crl_distribution_points(issuer_slug: str, urls: PublicUrls) -> x509.CRLDistributionPoints:
    """CRL distribution point for certificates issued by ``issuer_slug``."""
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(urls.crl(issuer_slug))],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def employer_subject(*, country: str, legal_name: str, registration_number: str) -> x509.Name:
    """An employer's subject, from its record: the registration number in both
    organizationIdentifier (2.5.4.97) and serialNumber, as relying parties look in either."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, legal_name),
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, registration_number),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, registration_number),
            x509.NameAttribute(NameOID.COMMON_NAME, legal_name),
        ]
    )


def employer_builder(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Certificate,
    issuer_slug: str,
    urls: PublicUrls,
    non_repudiation: bool,
) -> x509.CertificateBuilder:
    """Employer (organisation) certificate: digitalSignature (+ nonRepudiation where
    configured), clientAuth, AIA with OCSP, CRL distribution point."""
    access, distribution = _employer_locations(issuer_slug, urls)
    return (
        _signing_leaf(
            subject=subject,
            public_key=public_key,
            issuer=issuer,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            non_repudiation=non_repudiation,
        )
        .add_extension(access, critical=False)
        .add_extension(distribution, critical=False)
    )


@lru_cache(maxsize=16)
def _employer_locations(
    issuer_slug: str, urls: PublicUrls
) -> tuple[x509.AuthorityInformationAccess, x509.CRLDistributionPoints]:
    # The same for every employer certificate of an issuer (see _leaf_template).
    return (
        authority_information_access(issuer_slug, urls, with_ocsp=True),
        crl_distribution_points(issuer_slug, urls),
    )
