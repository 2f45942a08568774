"""Seal verification of uploaded employer documents (PDF, PNG, JPEG); no Flask, no database.

A document is "sealed" when its bytes are signed with a company seal certificate: either a PAdES
signature embedded in a PDF, or a detached CMS signature (a ``.p7s`` file) over the file's bytes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import cms, pem  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from flask_babel import lazy_gettext
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.general import (
    MultivaluedAttributeError,
    NonexistentAttributeError,
    extract_certificate_info,
    extract_signer_info,
    find_unique_cms_attribute,
)
from pyhanko.sign.validation import (
    EmbeddedPdfSignature,
    SignatureCoverageLevel,
    StandardCMSSignatureStatus,
    async_validate_detached_cms,
    validate_pdf_signature,
)
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import PdfSignatureStatus
from pyhanko_certvalidator import ValidationContext

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
# Some cameras and editors append a short trailer after the EOI marker; look for it in the tail.
_JPEG_EOI_WINDOW = 4096

# ETSI EN 319 412-1 §5.1.4 semantics identifier: 3-letter type + 2-letter country, a hyphen, then
# the registration number ("NTRCN-91350100M000100Y", "VATCN-...").
_ETSI_IDENTIFIER = re.compile(r"^[A-Z]{3}[A-Z]{2}-(?P<number>.+)$")

# Seal certificates carry contentCommitment (nonRepudiation) per ETSI EN 319 412-3, but some seal
# CAs only set digitalSignature; either one is enough to seal a document (pyHanko's default would
# demand nonRepudiation only).
_SEAL_KEY_USAGE = KeyUsageConstraints(
    key_usage={"digital_signature", "non_repudiation"}, match_all_key_usages=False
)

# cryptography prints these two by dotted OID; officers read the names.
_NAME_OVERRIDES = {
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
    NameOID.SERIAL_NUMBER: "serialNumber",
}

# After the last signature, only validation data (DSS, document timestamps) may be appended.
_FINAL_SIGNATURE_LEVELS = frozenset({ModificationLevel.NONE, ModificationLevel.LTA_UPDATES})
# Between an earlier signature and the last one, a later seal's own field may be filled in; the
# last signature covers (and vouches for) everything before it.
_EARLIER_SIGNATURE_LEVELS = _FINAL_SIGNATURE_LEVELS | {ModificationLevel.FORM_FILLING}


class SealVerdict(enum.StrEnum):
    VERIFIED = "verified"
    TAMPERED = "tampered"  # signature present but the bytes changed after signing / invalid
    UNTRUSTED_SIGNER = "untrusted_signer"  # no path to a configured seal trust anchor
    OTHER_ORGANISATION = "other_organisation"  # signer's registration number is not the employer's
    SIGNER_EXPIRED = "signer_expired"  # signer certificate expired at signing time
    SIGNER_NOT_YET_VALID = "signer_not_yet_valid"
    UNSIGNED = "unsigned"  # accepted, but needs an officer's attestation of a paper seal
    INVALID_FILE = "invalid_file"  # not a parseable PDF/PNG/JPEG, or unparseable .p7s

    @property
    def label(self) -> str:
        """The verdict in words, in the current language."""
        return str(_VERDICT_LABELS[self])


_VERDICT_LABELS = {
    SealVerdict.VERIFIED: lazy_gettext("verified"),
    SealVerdict.TAMPERED: lazy_gettext("tampered"),
    SealVerdict.UNTRUSTED_SIGNER: lazy_gettext("untrusted signer"),
    SealVerdict.OTHER_ORGANISATION: lazy_gettext("other organisation"),
    SealVerdict.SIGNER_EXPIRED: lazy_gettext("signer expired"),
    SealVerdict.SIGNER_NOT_YET_VALID: lazy_gettext("signer not yet valid"),
    SealVerdict.UNSIGNED: lazy_gettext("unsigned"),
    SealVerdict.INVALID_FILE: lazy_gettext("invalid file"),
}


class SealReason(enum.StrEnum):
    """Why a verdict was reached, as a stable code: stored with the document so the reason is
    shown in the reader's language (the English ``detail`` stays as the technical record)."""

    SEALED = "sealed"
    NOT_A_DOCUMENT = "not_a_document"
    PDF_DAMAGED = "pdf_damaged"
    IMAGE_DAMAGED = "image_damaged"
    IMAGE_UNSIGNED = "image_unsigned"
    PDF_UNSIGNED = "pdf_unsigned"
    SIGNATURE_FILE_NOT_CMS = "signature_file_not_cms"
    SIGNATURE_FILE_INCOMPLETE = "signature_file_incomplete"
    SIGNATURE_INVALID = "signature_invalid"
    PDF_SIGNATURE_DAMAGED = "pdf_signature_damaged"
    PDF_SIGNATURE_INVALID = "pdf_signature_invalid"
    PDF_CHANGED = "pdf_changed"
    DOCUMENT_CHANGED = "document_changed"
    SIGNER_EXPIRED = "signer_expired"
    SIGNER_NOT_YET_VALID = "signer_not_yet_valid"
    UNTRUSTED_SIGNER = "untrusted_signer"
    OTHER_ORGANISATION = "other_organisation"


@dataclass(frozen=True)
class SealResult:
    verdict: SealVerdict
    detail: str  # one sentence an employer or officer can read (English, the technical record)
    signer_subject: str | None  # RFC 4514
    signer_identifier: str | None  # registration number found in the signer certificate
    signed_at: dt.datetime | None  # UTC, aware
    reason: SealReason  # the detail as a code, translated where it is shown


def sniff_media_type(content: bytes) -> str | None:
    """'application/pdf', 'image/png', 'image/jpeg' from the magic bytes, else None."""
    if content.startswith(b"%PDF-"):
        return PDF
    if content.startswith(_PNG_SIGNATURE):
        return PNG
    if content.startswith(_JPEG_SOI):
        return JPEG
    return None


# pyHanko's validation modules log each untrusted, expired or otherwise failed certificate
# path at WARNING with the whole traceback; for this service those are ordinary verdicts.
_PYHANKO_VERDICT_LOGGERS = (
    "pyhanko.sign.validation.generic_cms",
    "pyhanko.sign.validation.pdf_embedded",
    "pyhanko.sign.validation.status",
    "pyhanko.sign.validation.ades",
)


class _OneLineVerdicts(logging.Filter):
    """A pyHanko warning with a traceback becomes one INFO line naming the exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.exc_info:
            exc = record.exc_info[1]
            if exc is not None:
                first = (str(exc).strip().splitlines() or [""])[0]
                record.msg = f"{record.getMessage()} ({type(exc).__name__}: {first})"
                record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_ONE_LINE_VERDICTS = _OneLineVerdicts()


def quiet_pyhanko_verdicts() -> None:
    """Log pyHanko's per-path validation failures as one INFO line each (idempotent)."""
    for name in _PYHANKO_VERDICT_LOGGERS:
        logging.getLogger(name).addFilter(_ONE_LINE_VERDICTS)


def verify_seal(
    *,
    content: bytes,
    detached_signature: bytes | None,
    registration_number: str,
    anchors: Sequence[x509.Certificate],
    at: dt.datetime | None = None,
) -> SealResult:
    """Check the seal on an uploaded document; every problem maps to a verdict, nothing raises.

    ``at`` is the signing time assumed when the signature carries none (default: now).
    Must not be called from a running asyncio event loop (pyHanko's validation runs its own).
    """
    fallback_time = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    media_type = sniff_media_type(content)
    if media_type is None:
        return _plain(
            SealVerdict.INVALID_FILE,
            SealReason.NOT_A_DOCUMENT,
            "The file is not a PDF, PNG or JPEG document.",
        )
    reader: PdfFileReader | None = None
    if media_type == PDF:
        reader = _read_pdf(content)
        if reader is None:
            return _plain(
                SealVerdict.INVALID_FILE,
                SealReason.PDF_DAMAGED,
                "The PDF file is damaged or incomplete.",
            )
    elif not _plausible_image(content, media_type):
        kind = "PNG" if media_type == PNG else "JPEG"
        return _plain(
            SealVerdict.INVALID_FILE,
            SealReason.IMAGE_DAMAGED,
            f"The {kind} image is damaged or incomplete.",
        )

    context = _Context(
        registration_number=registration_number, anchors=anchors, fallback_time=fallback_time
    )
    if detached_signature is not None:
        return _verify_detached(content, detached_signature, context)
    if reader is not None:
        return _verify_embedded(reader, context)
    return _plain(
        SealVerdict.UNSIGNED,
        SealReason.IMAGE_UNSIGNED,
        "The image carries no electronic seal; an officer must confirm the paper seal.",
    )


# --- file structure ---------------------------------------------------------------------------


def _read_pdf(content: bytes) -> PdfFileReader | None:
    # Strict parsing: a signed document must be unambiguous (no xref repair guessing which bytes
    # a signature covers).
    try:
        reader = PdfFileReader(io.BytesIO(content))
        reader.root["/Pages"]  # force the catalog and page tree to parse now
    except PdfError:
        return None
    except (ValueError, KeyError, TypeError, IndexError):
        # pyHanko's object parser lets these escape on some garbage (bad numbers, missing keys,
        # wrong object types, short buffers) instead of wrapping them in PdfReadError.
        return None
    return reader


def _plausible_image(content: bytes, media_type: str) -> bool:
    # No image library on purpose: we only sniff and store the bytes, never render or transform
    # them, so a decoder would add attack surface without adding assurance.
    if media_type == PNG:
        # The first chunk must be IHDR with its fixed 13-byte length, then width/height > 0.
        header = content[8:24]
        return (
            len(content) >= 8 + 25
            and header[:8] == b"\x00\x00\x00\x0dIHDR"
            and int.from_bytes(header[8:12]) > 0
            and int.from_bytes(header[12:16]) > 0
        )
    start = max(len(_JPEG_SOI), len(content) - _JPEG_EOI_WINDOW)
    return content.rfind(_JPEG_EOI, start) != -1


# --- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    registration_number: str
    anchors: Sequence[x509.Certificate]
    fallback_time: dt.datetime

    def validation_context(self, moment: dt.datetime) -> ValidationContext:
        # Revocation checking is soft-fail and never fetches: the seal CAs' CRLs are not
        # configured yet, so a missing CRL must not fail every seal.
        return ValidationContext(
            trust_roots=[_to_asn1(c) for c in self.anchors],
            moment=moment,
            best_signature_time=moment,
            allow_fetching=False,
            revocation_mode="soft-fail",
        )


def _verify_detached(content: bytes, detached_signature: bytes, context: _Context) -> SealResult:
    signed_data = _load_signed_data(detached_signature)
    if signed_data is None:
        return _plain(
            SealVerdict.INVALID_FILE,
            SealReason.SIGNATURE_FILE_NOT_CMS,
            "The signature file is not a detached CMS signature (.p7s) over the document.",
        )
    try:
        signer_info = extract_signer_info(signed_data)
        extract_certificate_info(signed_data)  # the signer's certificate must be embedded
        signed_at = _signing_time(signer_info) or context.fallback_time
    except ValueError:
        # pyHanko's CMSExtractionError (no signer, signer certificate missing) and asn1crypto's
        # lazy parsing errors are both ValueErrors.
        return _plain(
            SealVerdict.INVALID_FILE,
            SealReason.SIGNATURE_FILE_INCOMPLETE,
            "The signature file does not name its signer or lacks the signer's certificate.",
        )
    try:
        status = asyncio.run(
            async_validate_detached_cms(
                content,
                signed_data,
                signer_validation_context=context.validation_context(signed_at),
                key_usage_settings=_SEAL_KEY_USAGE,
            )
        )
    except SignatureValidationError as e:
        return _tampered(
            SealReason.SIGNATURE_INVALID,
            f"The signature is invalid: {e.failure_message}.",
            signed_at,
        )
    return _judge(status, signed_at, context)


def _verify_embedded(reader: PdfFileReader, context: _Context) -> SealResult:
    try:
        # Document timestamps are not seals; embedded_regular_signatures leaves them out.
        signatures: list[EmbeddedPdfSignature] = list(reader.embedded_regular_signatures)
    except (PdfError, ValueError, KeyError, TypeError):
        # Malformed signature fields/values: pyHanko parses /Contents with asn1crypto as it
        # collects them, and both let ValueError/KeyError/TypeError through on garbage.
        return _tampered(
            SealReason.PDF_SIGNATURE_DAMAGED, "The signature in the PDF is damaged.", None
        )
    if not signatures:
        return _plain(
            SealVerdict.UNSIGNED,
            SealReason.PDF_UNSIGNED,
            "The PDF carries no electronic seal; an officer must confirm the paper seal.",
        )
    # Several signatures: every one must hold up (intact, signer valid and trusted), and the
    # verdict is about the last one, which covers the whole final document; earlier ones cover
    # earlier revisions only and may come from co-signers, so only the last must be the employer's.
    *earlier, last = signatures
    for index, signature in enumerate(earlier, start=1):
        result = _verify_pdf_signature(signature, context, is_last=False)
        if result.verdict is not SealVerdict.VERIFIED:
            return _with_detail(
                result, f"Signature {index} of {len(signatures)} failed: {result.detail}"
            )
    return _verify_pdf_signature(last, context, is_last=True)


def _verify_pdf_signature(
    signature: EmbeddedPdfSignature, context: _Context, *, is_last: bool
) -> SealResult:
    try:
        signed_at = _pdf_signing_time(signature) or context.fallback_time
        status: PdfSignatureStatus = validate_pdf_signature(
            signature,
            signer_validation_context=context.validation_context(signed_at),
            key_usage_settings=_SEAL_KEY_USAGE,
        )
    except SignatureValidationError as e:
        return _tampered(
            SealReason.PDF_SIGNATURE_INVALID,
            f"The signature in the PDF is invalid: {e.failure_message}.",
            None,
        )
    except (PdfError, ValueError, KeyError):
        # A byte range or signature dictionary that does not fit the file: pyHanko raises
        # PdfReadError or, from its dictionary accessors, KeyError/ValueError.
        return _tampered(
            SealReason.PDF_SIGNATURE_DAMAGED, "The signature in the PDF is damaged.", None
        )
    if not (status.intact and status.valid):
        return _judge(status, signed_at, context)
    allowed = _FINAL_SIGNATURE_LEVELS if is_last else _EARLIER_SIGNATURE_LEVELS
    whole_file = status.coverage == SignatureCoverageLevel.ENTIRE_FILE
    benign_update = (
        status.coverage == SignatureCoverageLevel.ENTIRE_REVISION
        and status.modification_level in allowed
        and status.docmdp_ok is not False
    )
    if not (whole_file or benign_update):
        return _tampered(
            SealReason.PDF_CHANGED, "The PDF was changed after it was sealed.", signed_at
        )
    return _judge(status, signed_at, context, check_organisation=is_last)


def _judge(
    status: StandardCMSSignatureStatus,
    signed_at: dt.datetime,
    context: _Context,
    *,
    check_organisation: bool = True,
) -> SealResult:
    """Integrity, then the signer's validity at signing time, then trust, then organisation."""
    if not (status.intact and status.valid):
        return _tampered(
            SealReason.DOCUMENT_CHANGED, "The document was changed after it was sealed.", signed_at
        )
    signer = x509.load_der_x509_certificate(status.signing_cert.dump())
    subject = signer.subject.rfc4514_string(_NAME_OVERRIDES)
    identifier = _registration_identifier(signer)
    when = _format_time(signed_at)

    def result(verdict: SealVerdict, detail: str) -> SealResult:
        # The verdicts reached here are one reason each, named alike.
        reason = SealReason.SEALED if verdict is SealVerdict.VERIFIED else SealReason(verdict.value)
        return SealResult(verdict, detail, subject, identifier, signed_at, reason)

    # Checked before path validation, which would report an expired signer only as "no path".
    if signed_at > signer.not_valid_after_utc:
        expiry = _format_time(signer.not_valid_after_utc)
        return result(
            SealVerdict.SIGNER_EXPIRED,
            f"The seal certificate of {subject} had expired on {expiry}, before the signing "
            f"time {when}.",
        )
    if signed_at < signer.not_valid_before_utc:
        start = _format_time(signer.not_valid_before_utc)
        return result(
            SealVerdict.SIGNER_NOT_YET_VALID,
            f"The seal certificate of {subject} was only valid from {start}, after the signing "
            f"time {when}.",
        )
    if not status.trusted or status.validation_path is None:
        problem = status.trust_problem_indic
        reason = "" if problem is None else f" ({str(problem.standard_name).lower()})"
        reason = reason.replace("_", " ")
        return result(
            SealVerdict.UNTRUSTED_SIGNER,
            f"The seal of {subject} does not chain to a trusted seal CA{reason}.",
        )
    if check_organisation and not _same_organisation(signer, context.registration_number):
        return result(
            SealVerdict.OTHER_ORGANISATION,
            f"The seal belongs to {subject} (registration number {identifier or 'missing'}), "
            f"not to the employer {context.registration_number}.",
        )
    anchor = _anchor_name(status, context.anchors)
    return result(
        SealVerdict.VERIFIED, f"Sealed by {subject} on {when}; chain to seal CA '{anchor}'."
    )


# --- helpers ----------------------------------------------------------------------------------


def _load_signed_data(data: bytes) -> cms.SignedData | None:
    try:
        der = pem.unarmor(data)[2] if pem.detect(data) else data
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            return None
        signed_data = info["content"]
        # asn1crypto parses lazily; walk the whole structure now so garbage fails here.
        signed_data.native  # noqa: B018 -- evaluated for its parsing side effect
    except (ValueError, TypeError):
        # asn1crypto reports malformed DER/PEM as ValueError, and as TypeError when a tag does
        # not match the expected type.
        return None
    # An attached signature (.p7m) carries the document inside; we want the uploaded file signed.
    if signed_data["encap_content_info"]["content"].native is not None:
        return None
    return signed_data


def _signing_time(signer_info: cms.SignerInfo) -> dt.datetime | None:
    # The signed signingTime attribute is the signer's own claim; without a trusted timestamp it
    # is the best evidence of when the document was sealed.
    try:
        value = find_unique_cms_attribute(signer_info["signed_attrs"], "signing_time")
    except (NonexistentAttributeError, MultivaluedAttributeError):
        return None
    signed_at: dt.datetime = value.native
    return signed_at.astimezone(dt.UTC)


def _pdf_signing_time(signature: EmbeddedPdfSignature) -> dt.datetime | None:
    # PAdES forbids signingTime in the CMS; the signature dictionary's /M (inside the signed byte
    # range) carries it instead. pyHanko prefers signingTime and falls back to /M.
    signed_at: dt.datetime | None = signature.self_reported_timestamp
    return None if signed_at is None else signed_at.astimezone(dt.UTC)


def _registration_identifier(cert: x509.Certificate) -> str | None:
    for oid in (NameOID.ORGANIZATION_IDENTIFIER, NameOID.SERIAL_NUMBER):
        for attribute in cert.subject.get_attributes_for_oid(oid):
            if isinstance(attribute.value, str):
                return attribute.value
    return None


def _same_organisation(cert: x509.Certificate, registration_number: str) -> bool:
    wanted = registration_number.strip().upper()
    for oid in (NameOID.ORGANIZATION_IDENTIFIER, NameOID.SERIAL_NUMBER):
        for attribute in cert.subject.get_attributes_for_oid(oid):
            if isinstance(attribute.value, str) and _identifier_matches(attribute.value, wanted):
                return True
    return False


def _identifier_matches(value: str, wanted: str) -> bool:
    value = value.strip().upper()
    if value == wanted:
        return True
    match = _ETSI_IDENTIFIER.match(value)
    return match is not None and match["number"] == wanted


def _anchor_name(status: StandardCMSSignatureStatus, anchors: Sequence[x509.Certificate]) -> str:
    assert status.validation_path is not None  # noqa: S101 -- checked by the caller (trusted)
    root_name = status.validation_path.trust_anchor.authority.name
    for anchor in anchors:
        if anchor.subject.public_bytes() == root_name.dump():
            return anchor.subject.rfc4514_string(_NAME_OVERRIDES)
    human: str = root_name.human_friendly
    return human


def _to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


def _format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _plain(verdict: SealVerdict, reason: SealReason, detail: str) -> SealResult:
    return SealResult(verdict, detail, None, None, None, reason)


def _tampered(reason: SealReason, detail: str, signed_at: dt.datetime | None) -> SealResult:
    return SealResult(SealVerdict.TAMPERED, detail, None, None, signed_at, reason)


def _with_detail(result: SealResult, detail: str) -> SealResult:
    return SealResult(
        result.verdict,
        detail,
        result.signer_subject,
        result.signer_identifier,
        result.signed_at,
        result.reason,
    )
