"""An application's history notes as stable codes with parameters, shown in the reader's
language.

A history row stores what happened (``note_code``) and its facts (``note_params``: strings,
numbers, codes), never a sentence: the sentence is built here from one registry when the page
or the API answer is made, so an employer reading in Spanish sees the step in Spanish even
when a Chinese-speaking officer caused it. What a person typed (an officer's rejection reason
or approval note) stays in ``note`` and is shown as typed, after the sentence. Rows written
before revision 0012 have no code: their English ``note`` is shown as stored."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext
from flask_babel.speaklater import LazyString

from ca_service.issuance.models import DOCUMENT_TITLES, ApplicationEvent, DocumentType

# A parameter value as stored in the JSON column: plain, so any version can read it back.
Param = str | int | list[dict[str, str]]


class NoteCode(enum.StrEnum):
    DRAFT_CREATED = "draft_created"
    REQUEST_ATTACHED = "request_attached"  # key
    COUNTER_KEY = "counter_key"  # key
    SUBMITTED = "submitted"
    APPROVED = "approved"  # + the officer's note, as typed
    FIRST_APPROVAL = "first_approval"  # + the officer's note, as typed
    REJECTED = "rejected"  # + the officer's reason, as typed
    ISSUED = "issued"  # serial
    RENEWAL_REQUESTED = "renewal_requested"  # serial
    RENEWAL_NEEDS_REVIEW = "renewal_needs_review"  # reasons: a list of ReviewReason
    RENEWAL_APPROVED = "renewal_approved"
    RENEWAL_RESUMED = "renewal_resumed"  # the employer's retry after a failed issuance
    RENEWAL_RESUMED_NEW_KEY = "renewal_resumed_new_key"  # the same, with another key


class ReviewCode(enum.StrEnum):
    """Why a renewal waits for an officer or for documents."""

    NO_APPROVAL = "no_approval"
    EMPLOYER_CHANGED = "employer_changed"  # date
    DOCUMENT_EXPIRED = "document_expired"  # document (a DocumentType value), date


# Placeholders are named after the parameters stored with the row.
_NOTES: Mapping[str, LazyString] = {
    NoteCode.DRAFT_CREATED: lazy_gettext("Draft created."),
    NoteCode.REQUEST_ATTACHED: lazy_gettext("Certificate request attached (%(key)s)."),
    NoteCode.COUNTER_KEY: lazy_gettext("Key generated at the counter (%(key)s)."),
    NoteCode.SUBMITTED: lazy_gettext("Submitted for review."),
    NoteCode.APPROVED: lazy_gettext("Approved."),
    NoteCode.FIRST_APPROVAL: lazy_gettext("Approved; waiting for a second officer's confirmation."),
    NoteCode.REJECTED: lazy_gettext("Rejected:"),
    NoteCode.ISSUED: lazy_gettext("Certificate issued (serial %(serial)s)."),
    NoteCode.RENEWAL_REQUESTED: lazy_gettext("Renewal of certificate %(serial)s requested."),
    NoteCode.RENEWAL_NEEDS_REVIEW: lazy_gettext("Needs review: %(reasons)s."),
    NoteCode.RENEWAL_APPROVED: lazy_gettext(
        "Approved without review: employer record unchanged and documents still valid."
    ),
    NoteCode.RENEWAL_RESUMED: lazy_gettext("Issuance resumed by the employer."),
    NoteCode.RENEWAL_RESUMED_NEW_KEY: lazy_gettext(
        "Issuance resumed by the employer with a new key."
    ),
}

_REVIEW_REASONS: Mapping[str, LazyString] = {
    ReviewCode.NO_APPROVAL: lazy_gettext("no officer approval was found for this certificate"),
    ReviewCode.EMPLOYER_CHANGED: lazy_gettext(
        "your employer record changed on %(date)s, after the last approval"
    ),
    ReviewCode.DOCUMENT_EXPIRED: lazy_gettext(
        "“%(document)s” expired on %(date)s: upload a current one"
    ),
}


@dataclass(frozen=True)
class ReviewReason:
    """One reason a renewal needs review, as plain values (a renewal plan crosses threads)."""

    code: ReviewCode
    params: Mapping[str, str] = field(default_factory=dict)

    def stored(self) -> dict[str, str]:
        return {"code": self.code.value, **self.params}

    def __str__(self) -> str:
        """The reason in the current language."""
        return _review_reason_text(self.stored())


@dataclass(frozen=True)
class Note:
    """What a history row says: a code, its parameters, and what a person typed (if any)."""

    code: NoteCode
    params: Mapping[str, Param] = field(default_factory=dict)
    typed: str | None = None


def _review_reason_text(stored: Mapping[str, Any]) -> str:
    message = _REVIEW_REASONS.get(str(stored.get("code")))
    if message is None:
        return str(stored.get("code", ""))
    params = {key: str(value) for key, value in stored.items() if key != "code"}
    document = params.get("document")
    if document in {d.value for d in DocumentType}:
        params["document"] = str(DOCUMENT_TITLES[DocumentType(document)])
    return _filled(message, params)


def _filled(message: LazyString, params: Mapping[str, object]) -> str:
    """``message`` in the current language with ``params`` filled in.

    :raises KeyError: a placeholder without its parameter.
    """
    text = str(message)
    return text % params if "%(" in text else text


def note_text(code: str | None, params: Mapping[str, Any] | None, typed: str | None) -> str:
    """A history note in the current language: the sentence of ``code`` with ``params``, then
    the text a person typed, as typed. No code (a row from before revision 0012): ``typed``
    is the stored English note. A code this version does not know, or parameters that do not
    fit its sentence (a row written by another version), still shows: a neutral sentence
    naming the code, then what was typed."""
    if code is None:
        return typed or ""
    message = _NOTES.get(code)
    sentence: str | None = None
    if message is not None:
        values = dict(params or {})
        reasons = values.get("reasons")
        if isinstance(reasons, list):
            values["reasons"] = "; ".join(
                _review_reason_text(r) if isinstance(r, dict) else str(r) for r in reasons
            )
        try:
            sentence = _filled(message, values)
        except (KeyError, TypeError, ValueError):
            sentence = None
    if sentence is None:
        sentence = _("Step recorded (%(code)s).", code=code)
    if not typed:
        return sentence
    # The sentence, then what was typed: joined as the language joins them (no space after
    # Chinese full-width punctuation).
    return str(_("%(step)s %(typed)s", step=sentence, typed=typed))


def event_note(event: ApplicationEvent) -> str:
    """The note of a history row in the current language (pages and the JSON API)."""
    return note_text(event.note_code, event.note_params, event.note)
