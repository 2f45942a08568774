"""verify_seal against real PAdES and detached CMS seals made per session with a test seal CA."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import textwrap
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from flask import Flask

from ca_service.issuance.seals import (
    SealReason,
    SealResult,
    SealVerdict,
    sniff_media_type,
    verify_seal,
)
from tests.issuance.seal_factory import (
    PDF_TEXT,
    Authority,
    SealIdentity,
    append_revision,
    flip_byte,
    make_seal,
    make_seal_ca,
    make_uscc,
    minimal_jpeg,
    minimal_pdf,
    minimal_png,
    seal_pdf,
    sign_detached,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
EMPLOYER = make_uscc("91350100MA2YA0001")
OTHER_EMPLOYER = make_uscc("91110108MA01B0002")


@dataclass(frozen=True)
class SealPki:
    anchor: x509.Certificate
    ca: Authority
    employer: SealIdentity  # organizationIdentifier NTRCN-<EMPLOYER>
    employer_by_serial: SealIdentity  # serialNumber <EMPLOYER>
    expired: SealIdentity
    not_yet_valid: SealIdentity
    other_organisation: SealIdentity
    untrusted: SealIdentity  # the employer's number, but issued by a CA we do not trust


@pytest.fixture(scope="module")
def pki() -> SealPki:
    ca = make_seal_ca("Test Seal Root", now=NOW)
    rogue = make_seal_ca("Rogue Seal Root", now=NOW)

    def seal(
        issuer: Authority = ca,
        *,
        number: str = EMPLOYER,
        starts: dt.timedelta = dt.timedelta(days=-30),
        ends: dt.timedelta = dt.timedelta(days=365),
        identifier: x509.NameAttribute | None = None,
    ) -> SealIdentity:
        return make_seal(
            issuer,
            organisation="Fuzhou Example Trading Co., Ltd.",
            registration_number=number,
            not_before=NOW + starts,
            not_after=NOW + ends,
            identifier=identifier,
        )

    return SealPki(
        anchor=ca.certificate,
        ca=ca,
        employer=seal(),
        employer_by_serial=seal(identifier=x509.NameAttribute(NameOID.SERIAL_NUMBER, EMPLOYER)),
        expired=seal(starts=dt.timedelta(days=-400), ends=dt.timedelta(days=-1)),
        not_yet_valid=seal(starts=dt.timedelta(days=1), ends=dt.timedelta(days=400)),
        other_organisation=seal(number=OTHER_EMPLOYER),
        untrusted=seal(rogue),
    )


@pytest.fixture(scope="module")
def sealed_pdf(pki: SealPki) -> bytes:
    return seal_pdf(minimal_pdf(), pki.employer)


def verify(
    pki: SealPki, content: bytes, signature: bytes | None = None, number: str = EMPLOYER
) -> SealResult:
    return verify_seal(
        content=content,
        detached_signature=signature,
        registration_number=number,
        anchors=[pki.anchor],
    )


# --- sniffing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
        (minimal_png(), "image/png"),
        (minimal_jpeg(), "image/jpeg"),
        (b"GIF89a\x01\x00\x01\x00", None),
        (b"Sealed application (really)\n", None),
        (b"", None),
        (b" %PDF-1.7", None),
    ],
)
def test_sniff_media_type(content: bytes, expected: str | None) -> None:
    assert sniff_media_type(content) == expected


# --- verified -------------------------------------------------------------------------------


def test_verified_pdf(pki: SealPki, sealed_pdf: bytes) -> None:
    result = verify(pki, sealed_pdf)

    assert result.verdict is SealVerdict.VERIFIED, result.detail
    assert result.signer_subject == pki.employer.certificate.subject.rfc4514_string(
        {NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier"}
    )
    assert result.signer_identifier == f"NTRCN-{EMPLOYER}"
    assert result.signed_at is not None
    assert result.signed_at.tzinfo is dt.UTC
    assert abs(result.signed_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    assert "Test Seal Root" in result.detail


def test_verified_detached_png(pki: SealPki) -> None:
    png = minimal_png()
    signed_at = NOW - dt.timedelta(hours=2)

    result = verify(pki, png, sign_detached(png, pki.employer, signing_time=signed_at))

    assert result.verdict is SealVerdict.VERIFIED, result.detail
    assert result.signed_at == signed_at
    assert result.detail.startswith("Sealed by CN=Fuzhou Example Trading Co.")


def test_verified_detached_jpeg_with_pem_signature(pki: SealPki) -> None:
    jpeg = minimal_jpeg()
    der = sign_detached(jpeg, pki.employer, signing_time=NOW)
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    pem = f"-----BEGIN PKCS7-----\n{body}\n-----END PKCS7-----\n".encode()

    assert verify(pki, jpeg, pem).verdict is SealVerdict.VERIFIED


def test_verified_detached_pdf(pki: SealPki) -> None:
    pdf = minimal_pdf()

    result = verify(pki, pdf, sign_detached(pdf, pki.employer, signing_time=NOW))

    assert result.verdict is SealVerdict.VERIFIED, result.detail


def test_seal_made_while_valid_stays_verified_after_expiry(pki: SealPki) -> None:
    png = minimal_png()
    signed_at = NOW - dt.timedelta(days=100)  # inside the expired seal's validity

    result = verify(pki, png, sign_detached(png, pki.expired, signing_time=signed_at))

    assert result.verdict is SealVerdict.VERIFIED, result.detail


def test_bare_registration_number_in_serial_number_matches(pki: SealPki) -> None:
    png = minimal_png()
    signature = sign_detached(png, pki.employer_by_serial, signing_time=NOW)

    result = verify(pki, png, signature, number=EMPLOYER.lower())

    assert result.verdict is SealVerdict.VERIFIED, result.detail
    assert result.signer_identifier == EMPLOYER


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"NTRCN-{EMPLOYER}", SealVerdict.VERIFIED),
        (f"VATCN-{EMPLOYER}", SealVerdict.VERIFIED),
        (f"ntrcn-{EMPLOYER.lower()}", SealVerdict.VERIFIED),
        (EMPLOYER, SealVerdict.VERIFIED),
        (f"NTRCN-{OTHER_EMPLOYER}", SealVerdict.OTHER_ORGANISATION),
        (f"NTR-{EMPLOYER}", SealVerdict.OTHER_ORGANISATION),  # not a 3+2-letter prefix
        (f"NTRCNX-{EMPLOYER}", SealVerdict.OTHER_ORGANISATION),
        (f"NT1CN-{EMPLOYER}", SealVerdict.OTHER_ORGANISATION),
        (f"{EMPLOYER}X", SealVerdict.OTHER_ORGANISATION),
        (f"NTRCN-X{EMPLOYER}", SealVerdict.OTHER_ORGANISATION),
    ],
)
def test_etsi_semantics_prefix_match(pki: SealPki, value: str, expected: SealVerdict) -> None:
    seal = make_seal(
        pki.ca,
        organisation="Fuzhou Example Trading Co., Ltd.",
        registration_number=EMPLOYER,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=1),
        identifier=x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, value),
    )
    png = minimal_png()

    result = verify(pki, png, sign_detached(png, seal, signing_time=NOW))

    assert result.verdict is expected, result.detail
    assert result.signer_identifier == value


# --- failures, in the order they are checked ------------------------------------------------


def test_tampered_pdf(pki: SealPki, sealed_pdf: bytes) -> None:
    tampered = flip_byte(sealed_pdf, PDF_TEXT)

    assert verify(pki, tampered).verdict is SealVerdict.TAMPERED


def test_pdf_changed_in_a_later_revision_is_tampered(pki: SealPki, sealed_pdf: bytes) -> None:
    # A new revision after the seal (an unsigned incremental update) is not covered by it.
    result = verify(pki, append_revision(sealed_pdf))

    assert result.verdict is SealVerdict.TAMPERED, result.detail


def test_tampered_detached(pki: SealPki) -> None:
    png = minimal_png()
    signature = sign_detached(png, pki.employer, signing_time=NOW)

    result = verify(pki, flip_byte(png, b"IDAT"), signature)

    assert result.verdict is SealVerdict.TAMPERED


def test_detached_signature_over_other_bytes_is_tampered(pki: SealPki) -> None:
    signature = sign_detached(minimal_jpeg(), pki.employer, signing_time=NOW)

    assert verify(pki, minimal_png(), signature).verdict is SealVerdict.TAMPERED


def test_expired_signer(pki: SealPki) -> None:
    png = minimal_png()

    result = verify(pki, png, sign_detached(png, pki.expired, signing_time=NOW))

    assert result.verdict is SealVerdict.SIGNER_EXPIRED, result.detail
    assert result.signer_identifier == f"NTRCN-{EMPLOYER}"


def test_expired_signer_pdf(pki: SealPki) -> None:
    # pyHanko's path validation fails too; the verdict must still say "expired", not "untrusted".
    result = verify(pki, seal_pdf(minimal_pdf(), pki.expired))

    assert result.verdict is SealVerdict.SIGNER_EXPIRED, result.detail


def test_not_yet_valid_signer(pki: SealPki) -> None:
    png = minimal_png()

    result = verify(pki, png, sign_detached(png, pki.not_yet_valid, signing_time=NOW))

    assert result.verdict is SealVerdict.SIGNER_NOT_YET_VALID, result.detail


def test_untrusted_signer_pdf(pki: SealPki) -> None:
    sealed = seal_pdf(minimal_pdf(), pki.untrusted)

    result = verify(pki, sealed)

    assert result.verdict is SealVerdict.UNTRUSTED_SIGNER, result.detail
    assert "Rogue" not in result.detail  # the subject is the signer's, the CA is not named


def test_no_anchors_means_untrusted(pki: SealPki) -> None:
    png = minimal_png()
    signature = sign_detached(png, pki.employer, signing_time=NOW)

    result = verify_seal(
        content=png, detached_signature=signature, registration_number=EMPLOYER, anchors=[]
    )

    assert result.verdict is SealVerdict.UNTRUSTED_SIGNER


def test_other_organisation(pki: SealPki) -> None:
    sealed = seal_pdf(minimal_pdf(), pki.other_organisation)

    result = verify(pki, sealed)

    assert result.verdict is SealVerdict.OTHER_ORGANISATION, result.detail
    assert result.signer_identifier == f"NTRCN-{OTHER_EMPLOYER}"
    assert EMPLOYER in result.detail


def test_earlier_co_signer_then_employer_seal_is_verified(pki: SealPki) -> None:
    twice = seal_pdf(
        seal_pdf(minimal_pdf(), pki.other_organisation, field_name="CoSigner"),
        pki.employer,
        field_name="Seal",
    )

    result = verify(pki, twice)

    assert result.verdict is SealVerdict.VERIFIED, result.detail


def test_earlier_untrusted_signature_fails_the_document(pki: SealPki) -> None:
    twice = seal_pdf(
        seal_pdf(minimal_pdf(), pki.untrusted, field_name="CoSigner"),
        pki.employer,
        field_name="Seal",
    )

    result = verify(pki, twice)

    assert result.verdict is SealVerdict.UNTRUSTED_SIGNER
    assert result.detail.startswith("Signature 1 of 2 failed")


# --- unsigned -------------------------------------------------------------------------------


def test_unsigned_pdf(pki: SealPki) -> None:
    result = verify(pki, minimal_pdf())

    assert result == SealResult(
        SealVerdict.UNSIGNED, result.detail, None, None, None, SealReason.PDF_UNSIGNED
    )
    assert "officer" in result.detail


@pytest.mark.parametrize("image", [minimal_png(), minimal_jpeg()], ids=["png", "jpeg"])
def test_unsigned_image(pki: SealPki, image: bytes) -> None:
    assert verify(pki, image).verdict is SealVerdict.UNSIGNED


# --- invalid files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        os.urandom(2048),
        b"This is the application form, sealed on paper.\n",  # a text file named .pdf
        b"%PDF-1.7\nthis is not a PDF body at all\n",
        minimal_png()[:20],  # IHDR cut short
        b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIDAT" + bytes(30),  # first chunk is not IHDR
        minimal_jpeg()[:-2],  # no EOI marker
    ],
    ids=["random", "text", "pdf-garbage", "png-truncated", "png-no-ihdr", "jpeg-no-eoi"],
)
def test_invalid_file(pki: SealPki, content: bytes) -> None:
    result = verify(pki, content)

    assert result.verdict is SealVerdict.INVALID_FILE
    assert result.signer_subject is None


def test_truncated_pdf_is_invalid(pki: SealPki, sealed_pdf: bytes) -> None:
    assert verify(pki, sealed_pdf[: len(sealed_pdf) // 2]).verdict is SealVerdict.INVALID_FILE


@pytest.mark.parametrize(
    "signature",
    [
        os.urandom(300),
        b"",
        b"-----BEGIN PKCS7-----\nbm90IGEgc2lnbmF0dXJl\n-----END PKCS7-----\n",
        bytes.fromhex("3003020101"),  # valid DER, but not a ContentInfo
    ],
    ids=["random", "empty", "pem-garbage", "wrong-der"],
)
def test_garbage_p7s_is_invalid(pki: SealPki, signature: bytes) -> None:
    assert verify(pki, minimal_png(), signature).verdict is SealVerdict.INVALID_FILE


def test_truncated_p7s_is_invalid(pki: SealPki) -> None:
    png = minimal_png()
    signature = sign_detached(png, pki.employer, signing_time=NOW)

    assert verify(pki, png, signature[:-40]).verdict is SealVerdict.INVALID_FILE


@pytest.mark.parametrize("signer", ["untrusted", "expired"])
def test_ordinary_verdicts_log_one_line_without_traceback(
    app: Flask, pki: SealPki, signer: str, caplog: pytest.LogCaptureFixture
) -> None:
    # create_app (the app fixture) installs the filter on pyHanko's loggers.
    caplog.set_level(logging.DEBUG, logger="pyhanko")
    result = verify(pki, seal_pdf(minimal_pdf(), getattr(pki, signer)))
    assert result.verdict in (SealVerdict.UNTRUSTED_SIGNER, SealVerdict.SIGNER_EXPIRED)
    records = [r for r in caplog.records if r.name.startswith("pyhanko")]
    assert records  # pyHanko did say something about the failed path
    for record in records:
        assert record.exc_info is None, record.getMessage()
        assert record.levelno <= logging.INFO
        assert "\n" not in record.getMessage()
    assert "Traceback" not in caplog.text
