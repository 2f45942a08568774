"""The API's request and response bodies, declared once as pydantic models.

The OpenAPI document's ``components/schemas`` are these models' JSON Schemas
(``ca_service.api.openapi``), and request bodies are read through them
(``ca_service.api.http.json_body``), so the fields a handler accepts are the fields the
document lists. Enumerations are the domain's own enums. Response models describe what
``ca_service.api.serialise`` writes; the schemathesis test (tests/api/test_openapi_fuzz.py)
fails when an answer contradicts them.

Request models forbid unknown fields (``additionalProperties: false``); response models list
every key the service always writes as required.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ca_service.auth.models import ChallengePurpose, Role
from ca_service.issuance.models import ApplicationStatus, DocumentType, KeySource
from ca_service.issuance.queue import (
    ALL,
    LISTED_STATUSES,
    OPEN,
    PAGE_SIZE,
    SEARCH_LIMIT,
    ApplicationKind,
    QueueOrder,
)
from ca_service.issuance.renewal import RenewalState
from ca_service.issuance.seals import SealReason, SealVerdict
from ca_service.issuance.service import DOWNLOAD_FORMATS
from ca_service.paging import MAX_PAGE
from ca_service.revocation.portal import EMPLOYER_REASONS, OFFICER_REASONS

_PASSWORD: dict[str, Any] = {"format": "password"}
_BINARY: dict[str, Any] = {"contentMediaType": "application/octet-stream"}


class RequestBody(BaseModel):
    """A JSON object a client sends: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class ResponseBody(BaseModel):
    """A JSON object the service answers with."""


# --- errors ------------------------------------------------------------------------------------


class ErrorDetail(ResponseBody):
    code: str = Field(examples=["invalid_input", "invalid_token"])
    message: str


class Error(ResponseBody):
    error: ErrorDetail


# --- authentication ----------------------------------------------------------------------------


class TokenRequest(RequestBody):
    username: str
    password: str = Field(json_schema_extra=_PASSWORD)
    totp_code: str = Field("", description="Current authenticator code; required for agency staff.")
    sms_code: str = Field(
        "",
        description="Six-digit code sent by SMS to the employer's reserved mobile number by a "
        "call without it; required for employer administrators.",
    )


class Token(ResponseBody):
    token: str = Field(description="Send as 'Authorization: Bearer <token>'.")
    token_type: Literal["Bearer"]
    expires_at: dt.datetime
    username: str
    role: Role


class ChallengeRequest(RequestBody):
    purpose: ChallengePurpose = Field(
        ChallengePurpose.LOGIN,
        description="`bind` needs the employer administrator's bearer token.",
    )


class Challenge(ResponseBody):
    challenge: str = Field(description="The one-time nonce.")
    purpose: ChallengePurpose
    to_sign: str = Field(
        description="The exact UTF-8 text to sign: `ca-service <purpose> challenge: <nonce>`."
    )
    expires_at: dt.datetime
    signature_algorithms: list[str]


class ChallengeAnswer(RequestBody):
    challenge: str
    certificate: str = Field(
        description="PEM: the certificate, optionally followed by intermediates (only "
        "configured CAs build paths)."
    )
    signature: str = Field(
        description="Signature of `to_sign` with the certificate's key: ECDSA (SHA-256 or "
        "SHA-384) or RSA PKCS#1 v1.5 (SHA-256 or SHA-384).",
        json_schema_extra={"contentEncoding": "base64"},
    )


class BrowserSignedIn(ResponseBody):
    signed_in: Literal["browser"]
    username: str
    method: str


# --- registration ------------------------------------------------------------------------------


class Registration(RequestBody):
    registration_number: str = Field(
        description="The company's registration number (USCC); it becomes the username."
    )
    legal_name: str = Field(json_schema_extra={"maxLength": 64})
    administrator_name: str = Field(json_schema_extra={"maxLength": 200})
    mobile: str = Field(description="Reserved mobile number; gets the SMS code.")
    email: str = Field(json_schema_extra={"format": "email"})
    password: str = Field(json_schema_extra={**_PASSWORD, "minLength": 12})
    legal_representative_id: str = ""


class Employer(ResponseBody):
    id: int
    registration_number: str
    legal_name: str
    mobile: str
    email: str
    mobile_confirmed: bool
    created_at: dt.datetime


class Registered(ResponseBody):
    employer: Employer
    username: str
    code_sent: bool = Field(
        description="false: the limits on SMS codes held the confirmation code back; ask for "
        "one at /employers/resend-code after retry_after_seconds."
    )
    retry_after_seconds: int | None = None
    next: str


class MobileConfirmation(RequestBody):
    username: str
    password: str = Field(json_schema_extra=_PASSWORD)
    code: str = Field(description="The code sent by SMS.")


class MobileConfirmed(ResponseBody):
    employer: Employer
    next: str


class Credentials(RequestBody):
    username: str
    password: str = Field(json_schema_extra=_PASSWORD)


class CodeResent(ResponseBody):
    message: str
    code_sent: bool
    retry_after_seconds: int | None = Field(
        None,
        description="When code_sent is false: seconds until a new code can be asked for (also "
        "in Retry-After); the code sent earlier still works.",
    )


# --- applications ------------------------------------------------------------------------------


class NewApplication(RequestBody):
    key_source: KeySource = Field(
        description="csr: the employer uploads a PKCS#10 request; counter: an officer "
        "generates the key on the employer's token."
    )


class CsrJson(RequestBody):
    csr_pem: str


class DocumentUpload(RequestBody):
    """A multipart/form-data upload (file parts are bytes)."""

    doc_type: DocumentType
    file: str = Field(json_schema_extra=_BINARY)
    signature: str = Field(
        "",
        description="Detached CMS signature (.p7s) over a scan.",
        json_schema_extra=_BINARY,
    )


class Document(ResponseBody):
    id: int
    doc_type: DocumentType
    label: str
    filename: str
    media_type: str
    size: int
    sha256: str
    signature_sha256: str | None
    verdict: SealVerdict
    detail: str = Field(description="Why, in English: the technical record officers keep.")
    verdict_reason: SealReason = Field(
        description="Why, as a stable code (one per sentence of verdict_message)."
    )
    verdict_message: str = Field(
        description="Why, in the caller's language (Accept-Language: en, es or zh-Hans)."
    )
    signer_subject: str | None
    signed_at: dt.datetime | None
    attested: bool
    attested_at: dt.datetime | None
    valid_until: dt.date | None
    acceptable: bool
    uploaded_at: dt.datetime


class Certificate(ResponseBody):
    serial: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str
    revoked_at: dt.datetime | None
    revocation_reason: str | None


class ApplicationEmployer(ResponseBody):
    registration_number: str
    legal_name: str


class ApplicationSummary(ResponseBody):
    id: int
    status: ApplicationStatus
    key_source: KeySource
    employer: ApplicationEmployer
    key_description: str | None
    public_key_sha256: str | None
    created_at: dt.datetime
    submitted_at: dt.datetime | None
    decided_at: dt.datetime | None
    rejection_reason: str | None
    certificate: Certificate | None


class HistoryEvent(ResponseBody):
    status: ApplicationStatus
    actor: str
    note: str | None = Field(
        description="What happened, in the caller's language (Accept-Language); text an "
        "officer typed (a rejection reason) is shown as typed. Null when there is nothing."
    )
    note_code: str | None = Field(
        description="The stable code of the step (draft_created, submitted, approved, "
        "rejected, issued, renewal_requested...); null on steps recorded before codes existed."
    )
    at: dt.datetime


class Application(ApplicationSummary):
    documents: list[Document]
    missing: list[str] = Field(description="What a draft still needs before submission.")
    history: list[HistoryEvent]


class ApplicationList(ResponseBody):
    applications: list[ApplicationSummary]


class Review(Application):
    approval_blockers: list[str] = Field(
        description="Why it cannot be approved yet (empty: it can)."
    )
    dual_control: bool


class DownloadQuery(RequestBody):
    format: str = Field(
        "pem",
        description="pem (default), der, chain (PEM with the CA chain) or p7b (PKCS#7 with the "
        "chain, DER).",
        json_schema_extra={"enum": list(DOWNLOAD_FORMATS)},
    )


# --- review ------------------------------------------------------------------------------------


class ReviewQuery(RequestBody):
    q: str = Field(
        "",
        description="Part of the employer's legal name or registration number (any case), or "
        "the application number (42 or #42).",
        json_schema_extra={"maxLength": SEARCH_LIMIT},
    )
    status: str = Field(
        OPEN,
        description="open (default): submitted or awaiting confirmation; all: every status "
        "but draft; or one status.",
        json_schema_extra={"enum": [OPEN, *(s.value for s in LISTED_STATUSES), ALL]},
    )
    kind: ApplicationKind = Field(
        ApplicationKind.ALL, description="new: first applications; renewal: renewals."
    )
    sort: QueueOrder = Field(QueueOrder.OLDEST, description="By submission time.")
    page: int = Field(1, ge=1, le=MAX_PAGE, description=f"{PAGE_SIZE} applications a page.")


class ReviewPage(ResponseBody):
    applications: list[ApplicationSummary]
    total: int = Field(description="Matching applications on all pages.")
    page: int
    pages: int = Field(description="At least 1 (an empty list has one empty page).")
    page_size: int
    next: str | None = Field(description="The next page's URL; null on the last page.")
    previous: str | None = Field(description="The previous page's URL; null on the first.")
    counts: dict[str, int] = Field(
        description="Matching applications per status value, open and all (search and kind "
        "applied, status not): what the console's status tabs show."
    )


class Validity(RequestBody):
    valid_until: dt.date | None


class Rejection(RequestBody):
    reason: str = Field(json_schema_extra={"maxLength": 2000})


# --- revocation --------------------------------------------------------------------------------


class OfficerRevocation(RequestBody):
    reason: str = Field(
        description="RFC 5280 reason; certificateHold suspends the certificate, removeFromCRL "
        "releases the hold.",
        json_schema_extra={"enum": list(OFFICER_REASONS)},
    )
    invalidity_date: dt.datetime | None = Field(
        None,
        description="When the key is known or suspected to have been compromised (UTC when no "
        "offset is given); not in the future.",
    )


class EmployerRevocation(RequestBody):
    reason: str = Field(json_schema_extra={"enum": list(EMPLOYER_REASONS)})
    password: str = Field(
        description="The administrator's current password; a wrong one counts as a failed sign-in.",
        json_schema_extra=_PASSWORD,
    )


class StatusChange(ResponseBody):
    certificate: Certificate
    crl_number: int | None = Field(
        description="The CRL published with the change; null when it is coalesced with other "
        "revocations and published within seconds (OCSP shows the change at once either way)."
    )
    crl_published_at: dt.datetime | None


# --- renewal -----------------------------------------------------------------------------------


class RenewalWindow(ResponseBody):
    start: dt.datetime
    end: dt.datetime


class RenewalInfo(ResponseBody):
    serial: str
    not_after: dt.datetime
    state: RenewalState
    due: bool = Field(description="Renew now (inside the window or grace).")
    days_left: int
    suggested_window: RenewalWindow
    renewable_until: dt.datetime
    renewed_by: str | None
    resumable: bool = Field(
        description="A renewal of it was approved but got no certificate (the HSM failed, or "
        "a worker died): renewing again resumes it."
    )
    explanation_url: str


class CertificateWithRenewal(Certificate):
    renewal: RenewalInfo


class CertificateList(ResponseBody):
    certificates: list[CertificateWithRenewal]


class RenewalRequest(RequestBody):
    csr_pem: str = Field(description="PKCS#10 request for the new key.")
    supersede: bool = Field(
        False, description="Revoke the old certificate as superseded once renewed."
    )
    contacts_confirmed: bool = Field(
        False, description="After expiry: the administrator's mobile and e-mail are current."
    )


class RenewalResult(ResponseBody):
    application: Application
    reasons: list[str]
    certificate: Certificate | None = None
    certificate_pem: str | None = None
    chain_pem: str | None = None


# --- bindings and public status ----------------------------------------------------------------


class BindingsQuery(RequestBody):
    registration_number: str = Field(
        "", description="The employer, for RA officers and CA administrators."
    )


class Binding(ResponseBody):
    id: int
    issuer: str
    serial: str = Field(description="Hexadecimal.")
    subject: str
    fingerprint_sha256: str
    spki_sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    bound_at: dt.datetime
    unbound_at: dt.datetime | None


class Bindings(ResponseBody):
    bindings: list[Binding]


class PublicStatus(ResponseBody):
    serial: str
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    status: Literal["valid", "revoked", "expired", "not yet valid"]
    revoked_at: dt.datetime | None
    revocation_reason: str | None
    sha256: str
