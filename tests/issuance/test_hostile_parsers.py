"""Hostile input for the parsers an employer reaches: certificate requests and sealed documents
(PDF, images, detached CMS). Garbage and near-misses are refused with a verdict or a clear
ValidationError: never another exception, and never slowly."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca_service.errors import ValidationError
from ca_service.issuance.csr import check_request
from ca_service.issuance.seals import SealResult, SealVerdict, verify_seal
from tests.issuance.seal_factory import (
    make_seal,
    make_seal_ca,
    make_uscc,
    minimal_pdf,
    minimal_png,
    seal_pdf,
    sign_detached,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
EMPLOYER = make_uscc("91350100MA2YA0002")
CA = make_seal_ca("Hostile Test Seal Root", now=NOW)
SEAL = make_seal(
    CA,
    organisation="Hostile Test Co",
    registration_number=EMPLOYER,
    not_before=NOW - dt.timedelta(days=1),
    not_after=NOW + dt.timedelta(days=30),
)
SEALED_PDF = seal_pdf(minimal_pdf(b"Application form"), SEAL)
PNG = minimal_png()
DETACHED = sign_detached(PNG, SEAL, signing_time=NOW)
_KEY = ec.generate_private_key(ec.SECP256R1())
CSR_DER = (
    x509.CertificateSigningRequestBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hostile Test Co")]))
    .sign(_KEY, hashes.SHA256())
    .public_bytes(Encoding.DER)
)
CSR_PEM = x509.load_der_x509_csr(CSR_DER).public_bytes(Encoding.PEM)

# Bounded, so the suite stays fast; each example must also finish well inside the deadline.
FUZZ = settings(
    max_examples=150,
    deadline=dt.timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few bytes flipped, a slice cut out or garbage spliced in."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "splice", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[at:]
    return bytes(data)


def _refused_or_checked(data: bytes) -> None:
    refusal: ValidationError | None = None
    try:
        check_request(data)
    except ValidationError as exc:
        refusal = exc
    if refusal is not None:
        assert refusal.status_code == 400
        assert len(refusal.message) < 300  # never the input echoed back


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_as_a_certificate_request(data: bytes) -> None:
    _refused_or_checked(data)


@FUZZ
@given(st.one_of(mutated(CSR_DER), mutated(CSR_PEM)))
def test_damaged_certificate_requests(data: bytes) -> None:
    _refused_or_checked(data)


def test_the_unharmed_request_passes() -> None:
    assert check_request(CSR_DER).public_key_sha256 == check_request(CSR_PEM).public_key_sha256


def _verdict(content: bytes, detached: bytes | None = None) -> SealResult:
    result = verify_seal(
        content=content,
        detached_signature=detached,
        registration_number=EMPLOYER,
        anchors=[CA.certificate],
    )
    assert isinstance(result.verdict, SealVerdict)
    return result


def test_the_unharmed_documents_verify() -> None:
    assert _verdict(SEALED_PDF).verdict is SealVerdict.VERIFIED
    assert _verdict(PNG, DETACHED).verdict is SealVerdict.VERIFIED


@FUZZ
@given(st.one_of(mutated(SEALED_PDF), st.binary(max_size=2048).map(lambda b: b"%PDF-1.7\n" + b)))
def test_damaged_sealed_pdfs_get_a_verdict(content: bytes) -> None:
    # Some bytes (the signature's zero padding, an unsigned certificate in the CMS bag) may
    # change and still verify; what must hold is a verdict, in time, and no exception.
    _verdict(content)


@FUZZ
@given(mutated(PNG), st.one_of(mutated(DETACHED), st.just(DETACHED)))
def test_damaged_detached_seals_get_a_verdict(content: bytes, detached: bytes) -> None:
    # The image is what the seal covers: changed, it never verifies, whatever the signature.
    assert _verdict(content, detached).verdict is not SealVerdict.VERIFIED


@FUZZ
@given(mutated(DETACHED))
def test_damaged_detached_signatures_get_a_verdict(detached: bytes) -> None:
    _verdict(PNG, detached)


@pytest.mark.parametrize(
    "content",
    [
        b"%PDF-1.7\n" + b"[" * 100_000,  # deep nesting
        b"%PDF-1.7\n1 0 obj << /Length 99999999999999999999 >> stream\nendstream endobj",
        b"%PDF-1.7\n" + b"1 0 obj 1 0 R endobj\n" * 1000 + b"trailer << /Root 1 0 R >>",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        b"\xff\xd8\xff" + b"\xff" * 4096,
    ],
)
def test_pathological_files_are_refused_quickly(content: bytes) -> None:
    assert _verdict(content).verdict is SealVerdict.INVALID_FILE
