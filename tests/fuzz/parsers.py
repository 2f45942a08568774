"""What the OCSP, certificate and upload harnesses run on each input, with seeds made per run
from real inputs: OCSP requests for a certificate of a throwaway CA (with and without a
nonce, SHA-1 and SHA-256 CertIDs, POST bodies and GET paths), that CA's certificates as DER
and as a PEM chain, and a sealed PDF, a PNG and a JPEG."""

from __future__ import annotations

import base64
import datetime as dt
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from ca_service.auth.verification import (
    CertificateRefused,
    _check_times,
    _check_usage,
    certificate_number,
    parse_chain,
    spki_sha256,
)
from ca_service.errors import ValidationError
from ca_service.issuance.documents import content_disposition
from ca_service.issuance.seals import SealResult, sniff_media_type, verify_seal
from ca_service.revocation.fastpath import decode_get, get_request
from ca_service.revocation.ocsp import OCSPAnswer, _matches, parse_ocsp_request
from tests.issuance.seal_factory import minimal_jpeg
from tests.issuance.test_hostile_parsers import CA, EMPLOYER, NOW, PNG, SEAL, SEALED_PDF

# The upload limit the checks below apply (CA_MAX_UPLOAD_MB is 10 by default; inputs are
# at most the harness's -max_len, so a smaller limit exercises the refusal).
UPLOAD_LIMIT = 32 * 1024
_ISSUER_DER = CA.certificate.public_bytes(Encoding.DER)


def _ocsp_request(algorithm: hashes.HashAlgorithm, *, nonce: bool) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(SEAL.certificate, CA.certificate, algorithm)
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(secrets.token_bytes(16)), critical=False)
    return builder.build().public_bytes(Encoding.DER)


_OCSP_DER = [
    _ocsp_request(hashes.SHA1(), nonce=False),  # noqa: S303  (RFC 5019 CertID)
    _ocsp_request(hashes.SHA256(), nonce=True),
]
OCSP_SEEDS = _OCSP_DER + [base64.b64encode(der) for der in _OCSP_DER]
CERTIFICATE_SEEDS = [
    SEAL.certificate.public_bytes(Encoding.DER),
    SEAL.certificate.public_bytes(Encoding.PEM) + CA.certificate.public_bytes(Encoding.PEM),
]
UPLOAD_SEEDS = [SEALED_PDF, PNG, minimal_jpeg()]


def check_ocsp(data: bytes) -> None:
    """The responder's parsing of a POST body and of a GET path: the parsed request (whose
    CertID can be matched against the CA) or a malformedRequest answer, nothing else."""
    text = data.decode("latin-1")
    for der in (data, decode_get(text), get_request("/ocsp/" + text) or b""):
        parsed = parse_ocsp_request(der)
        if isinstance(parsed, OCSPAnswer):
            status = ocsp.load_der_ocsp_response(parsed.der).response_status
            assert status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST, status
            continue
        _matches(parsed, _ISSUER_DER)
        format(parsed.serial_number, "x")


def check_certificate(data: bytes) -> None:
    """A presented certificate (certificate login, tax binding) up to path validation: read
    and checked, or refused with a CertificateRefused."""
    for presented in (data, data.decode("latin-1")):
        try:
            chain = parse_chain(presented)
            leaf = chain[0]
            leaf.fingerprint(hashes.SHA256())
            spki_sha256(leaf)
            for attribute in ("organizationIdentifier", "serialNumber", "2.5.4.97"):
                certificate_number(leaf, attribute)
            _check_times(leaf, NOW)
            _check_usage(leaf)
        except CertificateRefused:
            continue


def check_upload(data: bytes) -> None:
    """A document upload's checks: empty, too large, not a PDF/PNG/JPEG by its content, or a
    seal verdict; and the file name, which goes back out in a header."""
    disposition = content_disposition("inline", data[:300].decode("utf-8", "replace"))
    assert "\r" not in disposition
    assert "\n" not in disposition
    disposition.encode("latin-1")  # WSGI sends header values as Latin-1
    try:
        if not data:
            raise ValidationError("empty")
        if len(data) > UPLOAD_LIMIT:
            raise ValidationError("too large")
        if sniff_media_type(data) is None:
            raise ValidationError("not a PDF, PNG or JPEG")
    except ValidationError:
        return
    started = dt.datetime.now(dt.UTC)
    result = verify_seal(
        content=data,
        detached_signature=None,
        registration_number=EMPLOYER,
        anchors=[CA.certificate],
    )
    assert isinstance(result, SealResult)
    assert dt.datetime.now(dt.UTC) - started < dt.timedelta(seconds=10)
