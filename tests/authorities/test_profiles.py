"""The employer profile's per-issuer parts, built once per issuer, stay each issuer's own."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ca_service.authorities import profiles

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _issuer(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = profiles.ca_name("CN", "Tests", common_name)
    certificate = (
        profiles.root_ca_builder(name, key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _employer(issuer: x509.Certificate, slug: str, base_url: str) -> x509.CertificateBuilder:
    return profiles.employer_builder(
        subject=profiles.employer_subject(
            country="CN", legal_name="Employer", registration_number="R1"
        ),
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        issuer=issuer,
        issuer_slug=slug,
        urls=profiles.PublicUrls(base_url),
        non_repudiation=False,
    )


def test_each_issuer_and_url_gets_its_own_identifiers_and_locations() -> None:
    (key_a, issuer_a), (key_b, issuer_b) = _issuer("A"), _issuer("B")
    signed = []
    for key, issuer, slug, url in (
        (key_a, issuer_a, "issuing", "http://a.test"),
        (key_b, issuer_b, "issuing", "http://b.test"),
        (key_a, issuer_a, "other", "http://a.test"),
    ):
        signed.append(
            _employer(issuer, slug, url)
            .serial_number(2)
            .not_valid_before(NOW)
            .not_valid_after(NOW + dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
    for certificate, issuer in zip(signed, (issuer_a, issuer_b, issuer_a), strict=True):
        assert certificate.issuer == issuer.subject
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest
    crls = [
        c.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name
        for c in signed
    ]
    assert [str(n[0].value) for n in crls] == [
        "http://a.test/pki/crl/issuing.crl",
        "http://b.test/pki/crl/issuing.crl",
        "http://a.test/pki/crl/other.crl",
    ]
    # Extension order as the profile has always had it (pkilint and relying parties see the
    # same certificates as before the parts were cached).
    assert [type(e.value).__name__ for e in signed[0].extensions] == [
        "BasicConstraints",
        "KeyUsage",
        "ExtendedKeyUsage",
        "SubjectKeyIdentifier",
        "AuthorityKeyIdentifier",
        "AuthorityInformationAccess",
        "CRLDistributionPoints",
    ]
