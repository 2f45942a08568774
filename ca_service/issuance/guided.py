"""The guided application: the employer's draft as a sequence of steps (one per required
document, then the certificate request, then review and submit), what each step asks for,
and which step to show. No Flask request access: the view passes the chosen step."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from flask_babel import lazy_gettext
from flask_babel.speaklater import LazyString

from ca_service.db import utcnow
from ca_service.issuance.lineage import documents_of_record
from ca_service.issuance.models import (
    Application,
    ApplicationStatus,
    Document,
    DocumentType,
    KeySource,
)
from ca_service.issuance.seals import SealVerdict

REQUEST_STEP = "request"
SUBMIT_STEP = "submit"


class StepState(enum.StrEnum):
    DONE = "done"  # enough to submit (a verified seal, or a paper seal an officer will check)
    PROBLEM = "problem"  # uploaded, but it cannot be submitted as it is: upload it again
    TODO = "todo"


@dataclass(frozen=True)
class DocumentGuide:
    """What the employer reads before uploading a document kind."""

    what: LazyString
    seal: LazyString


_COMPANY_SEAL = lazy_gettext(
    "Your company seal: an electronic seal in the PDF, a detached signature (.p7s) made with "
    "your seal certificate, or the paper seal on a scan (an officer then checks it)."
)

GUIDES = {
    DocumentType.APPLICATION_FORM: DocumentGuide(
        lazy_gettext(
            "The agency's certificate application form, filled in with your organisation's "
            "details and signed by the legal representative."
        ),
        _COMPANY_SEAL,
    ),
    DocumentType.DECLARATION_FORM: DocumentGuide(
        lazy_gettext(
            "The application form for online social-security declarations, naming the "
            "services your organisation will use."
        ),
        _COMPANY_SEAL,
    ),
    DocumentType.COMMITMENT_LETTER: DocumentGuide(
        lazy_gettext(
            "The user commitment letter: your organisation undertakes to keep the certificate "
            "and its token safe and to report a loss at once."
        ),
        _COMPANY_SEAL,
    ),
    DocumentType.BUSINESS_LICENCE: DocumentGuide(
        lazy_gettext(
            "A copy of your business licence showing the Unified Social Credit Code and its "
            "period of validity."
        ),
        lazy_gettext(
            "The copy stamped with your company seal (electronic or paper), marking it as a "
            "true copy."
        ),
    ),
    DocumentType.SOCIAL_SECURITY_REGISTRATION: DocumentGuide(
        lazy_gettext("A copy of your social-security registration certificate."),
        lazy_gettext(
            "The copy stamped with your company seal (electronic or paper), marking it as a "
            "true copy."
        ),
    ),
    DocumentType.LEGAL_REPRESENTATIVE_ID: DocumentGuide(
        lazy_gettext("A copy of both sides of the legal representative's identity card."),
        lazy_gettext(
            "The copy stamped with your company seal (electronic or paper); the legal "
            "representative's own signature is not enough."
        ),
    ),
}

_REQUEST_TITLE = lazy_gettext("Certificate request")
_SUBMIT_TITLE = lazy_gettext("Review and submit")


@dataclass(frozen=True)
class Step:
    number: int  # 1-based, as shown ("step 2 of 8")
    key: str  # the document type's value, "request" or "submit" (the ?step= value)
    title: str
    state: StepState
    doc_type: DocumentType | None = None
    document: Document | None = None  # the document of record (a renewal may inherit it)
    # The document comes from the approval a renewal relies on, not from this draft.
    inherited: bool = False

    @property
    def guide(self) -> DocumentGuide | None:
        return GUIDES[self.doc_type] if self.doc_type is not None else None


@dataclass(frozen=True)
class GuidedApplication:
    steps: list[Step]
    current: Step
    missing: list[str]  # what the server still requires before submitting, in words

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def previous(self) -> Step | None:
        index = self.current.number - 1
        return self.steps[index - 1] if index > 0 else None

    @property
    def next(self) -> Step | None:
        index = self.current.number - 1
        return self.steps[index + 1] if index + 1 < len(self.steps) else None


def _document_state(document: Document | None) -> StepState:
    if document is None:
        return StepState.TODO
    if document.verdict not in (SealVerdict.VERIFIED, SealVerdict.UNSIGNED):
        return StepState.PROBLEM
    if document.valid_until is not None and document.valid_until < utcnow().date():
        return StepState.PROBLEM
    return StepState.DONE


def guided_application(
    application: Application, *, chosen: str | None, missing: list[str]
) -> GuidedApplication:
    """The steps of the application and the one to show: ``chosen`` (a step key from the
    page's links) when it names a step, else the first step not done yet."""
    of_record = {d.doc_type: d for d in documents_of_record(application)}
    steps: list[Step] = []
    for doc_type in DocumentType:
        document = of_record.get(doc_type)
        steps.append(
            Step(
                number=len(steps) + 1,
                key=doc_type.value,
                title=doc_type.label,
                state=_document_state(document),
                doc_type=doc_type,
                document=document,
                inherited=document is not None and document.application_id != application.id,
            )
        )
    if application.key_source is KeySource.CSR:
        steps.append(
            Step(
                number=len(steps) + 1,
                key=REQUEST_STEP,
                title=str(_REQUEST_TITLE),
                state=StepState.DONE if application.csr_der is not None else StepState.TODO,
            )
        )
    submitted = application.status is not ApplicationStatus.DRAFT
    steps.append(
        Step(
            number=len(steps) + 1,
            key=SUBMIT_STEP,
            title=str(_SUBMIT_TITLE),
            state=StepState.DONE if submitted else StepState.TODO,
        )
    )
    by_key = {step.key: step for step in steps}
    current = by_key.get(chosen or "") or next(
        (step for step in steps if step.state is not StepState.DONE), steps[-1]
    )
    return GuidedApplication(steps=steps, current=current, missing=missing)
