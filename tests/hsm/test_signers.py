"""The adapters sign what cryptography's builders make, and the results verify independently."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509 import ocsp
from cryptography.x509.oid import SignatureAlgorithmOID

from hsm import KeyAlgorithm, SignatureScheme, Token
from tests.hsm.support import (
    NAME,
    Hash,
    explicit_pss,
    openssl,
    pss,
    self_signed,
    verify_signature,
    write_pem,
)


class Case(NamedTuple):
    key: KeyAlgorithm
    algorithm: Hash
    use_pss: bool

    @property
    def rsa_padding(self) -> padding.PSS | None:
        return pss(self.algorithm) if self.use_pss else None


# PKCS#1 v1.5 and PSS on RSA 2048/3072/4096, ECDSA on both curves.
CASES = [
    pytest.param(Case(KeyAlgorithm.EC_P256, hashes.SHA256(), False), id="ecdsa-p256-sha256"),
    pytest.param(Case(KeyAlgorithm.EC_P384, hashes.SHA384(), False), id="ecdsa-p384-sha384"),
    pytest.param(Case(KeyAlgorithm.RSA_2048, hashes.SHA256(), False), id="rsa2048-pkcs1-sha256"),
    pytest.param(Case(KeyAlgorithm.RSA_2048, hashes.SHA256(), True), id="rsa2048-pss-sha256"),
    pytest.param(Case(KeyAlgorithm.RSA_3072, hashes.SHA384(), True), id="rsa3072-pss-sha384"),
    pytest.param(Case(KeyAlgorithm.RSA_4096, hashes.SHA384(), False), id="rsa4096-pkcs1-sha384"),
]


@pytest.mark.parametrize("case", CASES)
def test_certificate(
    token: Token,
    keys: dict[KeyAlgorithm, str],
    case: Case,
) -> None:
    key = token.private_key(keys[case.key])
    cert = self_signed(key, case.algorithm, case.rsa_padding)
    cert.verify_directly_issued_by(cert)
    public = token.public_key(keys[case.key])
    assert cert.public_key() == public
    verify_signature(
        public, cert.signature, cert.tbs_certificate_bytes, case.algorithm, case.rsa_padding
    )
    assert isinstance(cert.signature_hash_algorithm, type(case.algorithm))
    if case.use_pss:
        # What the certificate says must be what the token did: MGF1 with the same hash and a
        # salt as long as the digest (verify_signature above pins the salt length too).
        assert cert.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
        assert cert.signature_algorithm_parameters == explicit_pss(case.algorithm)


@pytest.mark.parametrize("case", CASES)
def test_csr(
    token: Token,
    keys: dict[KeyAlgorithm, str],
    case: Case,
) -> None:
    key = token.private_key(keys[case.key])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(NAME)
        .sign(key, case.algorithm, rsa_padding=case.rsa_padding)
    )
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()


@pytest.mark.parametrize("case", CASES)
def test_crl(
    token: Token,
    keys: dict[KeyAlgorithm, str],
    case: Case,
) -> None:
    key = token.private_key(keys[case.key])
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(x509.random_serial_number())
        .revocation_date(now)
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(NAME)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(key, case.algorithm, rsa_padding=case.rsa_padding)
    )
    assert crl.is_signature_valid(key.public_key())


@pytest.mark.parametrize("case", CASES)
def test_ocsp_response(
    token: Token,
    keys: dict[KeyAlgorithm, str],
    case: Case,
) -> None:
    key = token.private_key(keys[case.key])
    issuer = self_signed(key, case.algorithm, case.rsa_padding)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=issuer,
            issuer=issuer,
            algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now,
            next_update=now + dt.timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
        .sign(key, case.algorithm)  # OCSPResponseBuilder signs RSA with PKCS#1 v1.5 only
    )
    verify_signature(
        key.public_key(), response.signature, response.tbs_response_bytes, case.algorithm
    )


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]])
def test_openssl_accepts_certificate_and_crl(
    token: Token,
    keys: dict[KeyAlgorithm, str],
    case: Case,
    tmp_path: Path,
) -> None:
    key = token.private_key(keys[case.key])
    cert_pem = write_pem(tmp_path / "cert.pem", self_signed(key, case.algorithm, case.rsa_padding))
    verified = openssl("verify", "-x509_strict", "-CAfile", cert_pem, cert_pem)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(NAME)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .sign(key, case.algorithm, rsa_padding=case.rsa_padding)
    )
    crl_pem = write_pem(tmp_path / "crl.pem", crl)
    checked = openssl("crl", "-in", crl_pem, "-CAfile", cert_pem, "-noout")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "verify OK" in checked.stdout + checked.stderr


def test_prehashed_input(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    data = b"signed by digest"
    rsa_key = token.private_key(keys[KeyAlgorithm.RSA_2048])
    ec_key = token.private_key(keys[KeyAlgorithm.EC_P384])
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    digest256 = hashlib.sha256(data).digest()
    digest384 = hashlib.sha384(data).digest()
    for rsa_padding in (padding.PKCS1v15(), pss(hashes.SHA256())):
        signature = rsa_key.sign(digest256, rsa_padding, Prehashed(hashes.SHA256()))
        verify_signature(
            rsa_key.public_key(),
            signature,
            data,
            hashes.SHA256(),
            rsa_padding if isinstance(rsa_padding, padding.PSS) else None,
        )
    signature = ec_key.sign(digest384, ec.ECDSA(Prehashed(hashes.SHA384())))
    ec_key.public_key().verify(signature, data, ec.ECDSA(hashes.SHA384()))


def test_token_sign_schemes(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    data = b"straight through Token.sign"
    rsa_public = token.public_key(keys[KeyAlgorithm.RSA_3072])
    assert isinstance(rsa_public, rsa.RSAPublicKey)
    for scheme, chosen, algorithm in [
        (SignatureScheme.RSA_PKCS1_SHA256, padding.PKCS1v15(), hashes.SHA256()),
        (SignatureScheme.RSA_PKCS1_SHA384, padding.PKCS1v15(), hashes.SHA384()),
        (SignatureScheme.RSA_PSS_SHA256, explicit_pss(hashes.SHA256()), hashes.SHA256()),
        (SignatureScheme.RSA_PSS_SHA384, explicit_pss(hashes.SHA384()), hashes.SHA384()),
    ]:
        signature = token.sign(keys[KeyAlgorithm.RSA_3072], data, scheme)
        rsa_public.verify(signature, data, chosen, algorithm)
    ec_public = token.public_key(keys[KeyAlgorithm.EC_P256])
    assert isinstance(ec_public, ec.EllipticCurvePublicKey)
    for scheme, algorithm in [
        (SignatureScheme.ECDSA_SHA256, hashes.SHA256()),
        (SignatureScheme.ECDSA_SHA384, hashes.SHA384()),
    ]:
        signature = token.sign(keys[KeyAlgorithm.EC_P256], data, scheme)
        ec_public.verify(signature, data, ec.ECDSA(algorithm))


def test_unsupported_requests_are_refused(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    rsa_key = token.private_key(keys[KeyAlgorithm.RSA_2048])
    ec_key = token.private_key(keys[KeyAlgorithm.EC_P256])
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    builder = x509.CertificateSigningRequestBuilder().subject_name(NAME)
    with pytest.raises(ValueError, match="unsupported hash sha512"):
        builder.sign(rsa_key, hashes.SHA512())
    with pytest.raises(ValueError, match="unsupported hash sha1"):
        rsa_key.sign(b"data", padding.PKCS1v15(), hashes.SHA1())  # noqa: S303  (refusal test)
    other_salts = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=20)
    with pytest.raises(ValueError, match="unsupported PSS parameters"):
        rsa_key.sign(b"data", other_salts, hashes.SHA256())
    other_mgf = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=32)
    with pytest.raises(ValueError, match="unsupported PSS parameters"):
        rsa_key.sign(b"data", other_mgf, hashes.SHA256())
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    with pytest.raises(ValueError, match="unsupported RSA padding"):
        rsa_key.sign(b"data", oaep, hashes.SHA256())
    with pytest.raises(ValueError, match="deterministic ECDSA"):
        builder.sign(ec_key, hashes.SHA256(), ecdsa_deterministic=True)
    with pytest.raises(ValueError, match="does not fit"):
        token.sign(keys[KeyAlgorithm.EC_P256], b"data", SignatureScheme.RSA_PSS_SHA256)
    with pytest.raises(ValueError, match="does not fit"):
        token.sign(keys[KeyAlgorithm.RSA_2048], b"data", SignatureScheme.ECDSA_SHA256)
    with pytest.raises(ValueError, match="32 bytes"):
        token.sign_digest(keys[KeyAlgorithm.EC_P256], b"short", SignatureScheme.ECDSA_SHA256)
