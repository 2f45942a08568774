"""A seal verdict's reason in the reader's language, from its stable code.

The seal verifier writes an English sentence (the technical record officers and the audit
trail keep); what the employer reads is built here, when the page is shown, from the reason
code stored with the document and the facts stored beside it (signer, signing time)."""

from __future__ import annotations

import datetime as dt

from flask_babel import gettext as _
from flask_babel import lazy_gettext

from ca_service.i18n import format_utc_datetime
from ca_service.issuance.models import Document
from ca_service.issuance.seals import PDF, SealReason, SealVerdict

# Placeholders: subject (the seal certificate's subject), when (the signing time, UTC) and
# number (the employer's registration number); a sentence uses the ones it needs.
_REASON_TEXT = {
    SealReason.SEALED: lazy_gettext("Valid seal of %(subject)s, applied on %(when)s UTC."),
    SealReason.NOT_A_DOCUMENT: lazy_gettext("The file is not a PDF, PNG or JPEG document."),
    SealReason.PDF_DAMAGED: lazy_gettext("The PDF file is damaged or incomplete."),
    SealReason.IMAGE_DAMAGED: lazy_gettext("The image is damaged or incomplete."),
    SealReason.IMAGE_UNSIGNED: lazy_gettext(
        "The image carries no electronic seal; an officer must confirm the paper seal."
    ),
    SealReason.PDF_UNSIGNED: lazy_gettext(
        "The PDF carries no electronic seal; an officer must confirm the paper seal."
    ),
    SealReason.SIGNATURE_FILE_NOT_CMS: lazy_gettext(
        "The signature file is not a detached CMS signature (.p7s) over the document."
    ),
    SealReason.SIGNATURE_FILE_INCOMPLETE: lazy_gettext(
        "The signature file does not name its signer or lacks the signer's certificate."
    ),
    SealReason.SIGNATURE_INVALID: lazy_gettext(
        "The detached signature does not match the document: the file or the signature was changed."
    ),
    SealReason.PDF_SIGNATURE_DAMAGED: lazy_gettext("The seal in the PDF is damaged."),
    SealReason.PDF_SIGNATURE_INVALID: lazy_gettext(
        "The seal in the PDF is invalid: the document was changed after sealing or the seal is "
        "broken."
    ),
    SealReason.PDF_CHANGED: lazy_gettext("The PDF was changed after it was sealed."),
    SealReason.DOCUMENT_CHANGED: lazy_gettext("The document was changed after it was sealed."),
    SealReason.SIGNER_EXPIRED: lazy_gettext(
        "The seal certificate of %(subject)s had already expired when the document was sealed "
        "(%(when)s UTC)."
    ),
    SealReason.SIGNER_NOT_YET_VALID: lazy_gettext(
        "The seal certificate of %(subject)s was not yet valid when the document was sealed "
        "(%(when)s UTC)."
    ),
    SealReason.UNTRUSTED_SIGNER: lazy_gettext(
        "The seal of %(subject)s was not issued by a seal authority the agency trusts."
    ),
    SealReason.OTHER_ORGANISATION: lazy_gettext(
        "The seal belongs to %(subject)s, not to your organisation (registration number "
        "%(number)s)."
    ),
}

# Documents stored before reasons were recorded: one reason per verdict.
_REASON_OF_VERDICT = {
    SealVerdict.VERIFIED: SealReason.SEALED,
    SealVerdict.TAMPERED: SealReason.DOCUMENT_CHANGED,
    SealVerdict.UNTRUSTED_SIGNER: SealReason.UNTRUSTED_SIGNER,
    SealVerdict.OTHER_ORGANISATION: SealReason.OTHER_ORGANISATION,
    SealVerdict.SIGNER_EXPIRED: SealReason.SIGNER_EXPIRED,
    SealVerdict.SIGNER_NOT_YET_VALID: SealReason.SIGNER_NOT_YET_VALID,
    SealVerdict.UNSIGNED: SealReason.IMAGE_UNSIGNED,
    SealVerdict.INVALID_FILE: SealReason.NOT_A_DOCUMENT,
}


def reason_text(
    reason: SealReason,
    *,
    subject: str | None = None,
    signed_at: dt.datetime | None = None,
    registration_number: str = "",
) -> str:
    """The reason of a seal verdict as one sentence in the current language."""
    template = str(_REASON_TEXT[reason])
    return template % {
        "subject": subject or _("an unnamed signer"),
        "when": format_utc_datetime(signed_at) if signed_at is not None else "—",
        "number": registration_number,
    }


def reason_of(document: Document) -> SealReason:
    """The reason code of the document's verdict (for documents stored before reasons were
    recorded: the one that goes with their verdict)."""
    reason = document.verdict_reason or _REASON_OF_VERDICT[document.verdict]
    if reason is SealReason.IMAGE_UNSIGNED and document.media_type == PDF:
        reason = SealReason.PDF_UNSIGNED
    return reason


def document_reason(document: Document) -> str:
    """Why the document's seal got its verdict, in the current language."""
    return reason_text(
        reason_of(document),
        subject=document.signer_subject,
        signed_at=document.signed_at,
        registration_number=document.application.employer.registration_number,
    )
