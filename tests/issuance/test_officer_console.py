"""The RA officers' console: the review queue (search, filters, order, pages, clear 400s, empty
states), documents framed beside their seal verdicts (and nothing else framable), decisions
with reasons, and nobody but RA officers let in."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth.models import Role, User
from ca_service.db import db
from ca_service.errors import Forbidden
from ca_service.issuance.documents import document_store
from ca_service.issuance.models import (
    Application,
    ApplicationEvent,
    ApplicationStatus,
    Document,
    DocumentType,
    KeySource,
)
from ca_service.issuance.notes import event_note
from ca_service.issuance.queue import PAGE_SIZE, QueueFilter, search_queue
from ca_service.issuance.seals import SealReason, SealVerdict
from ca_service.models import Certificate
from tests.auth.flows import MakeOfficer, code_at, csrf_token, enter_code, login
from tests.issuance.conftest import (
    EmployerAccount,
    MakeEmployer,
    employer_login,
    seal_for,
    software_csr,
)
from tests.issuance.seal_factory import Authority, minimal_pdf, minimal_png, seal_pdf
from tests.issuance.test_flow import attach_csr, new_application, officer_post, submit, upload

OfficerClient = Callable[..., FlaskClient]
QUEUE = "/officer/applications/"
START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def _add(
    app: Flask,
    account: EmployerAccount,
    status: ApplicationStatus = ApplicationStatus.SUBMITTED,
    *,
    day: int = 0,
    renews_id: int | None = None,
) -> int:
    """An application row as the employer's submission (or a decision) leaves it, committed:
    the queue reads rows, however they got there."""
    with app.app_context():
        application = Application(
            employer_id=account.employer_id,
            status=status,
            key_source=KeySource.CSR,
            created_by_id=account.user_id,
            submitted_at=START + dt.timedelta(days=day),
            renews_id=renews_id,
            rejection_reason="Unreadable licence."
            if status is ApplicationStatus.REJECTED
            else None,
        )
        db.session.add(application)
        db.session.commit()
        return application.id


def _listed(client: FlaskClient, query: str = "") -> list[int]:
    response = client.get(f"{QUEUE}?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [int(n) for n in re.findall(r'href="/officer/applications/(\d+)"', response.text)]


@dataclass(frozen=True)
class Queue:
    acme: EmployerAccount
    beijing: EmployerAccount
    ids: dict[str, int]


@pytest.fixture
def queue(app: Flask, make_employer: MakeEmployer) -> Queue:
    acme = make_employer(legal_name="Acme Trading Co., Ltd.")
    beijing = make_employer(legal_name="北京测试科技有限公司")
    with app.app_context():
        certificate_id = db.session.scalars(sa.select(Certificate.id)).first()
    assert certificate_id is not None
    ids = {
        "acme_new": _add(app, acme, day=2),
        "beijing_new": _add(app, beijing, day=1),
        "beijing_confirm": _add(app, beijing, ApplicationStatus.AWAITING_CONFIRMATION, day=3),
        "acme_renewal": _add(app, acme, day=4, renews_id=certificate_id),
        "acme_approved": _add(app, acme, ApplicationStatus.APPROVED, day=0),
        "beijing_rejected": _add(app, beijing, ApplicationStatus.REJECTED, day=5),
    }
    ids["draft"] = _draft(app, acme)  # the employer's own: never listed
    return Queue(acme, beijing, ids)


def _draft(app: Flask, account: EmployerAccount) -> int:
    with app.app_context():
        draft = Application(
            employer_id=account.employer_id,
            status=ApplicationStatus.DRAFT,
            key_source=KeySource.CSR,
            created_by_id=account.user_id,
        )
        db.session.add(draft)
        db.session.commit()
        return draft.id


def test_the_default_view_is_what_awaits_a_decision_oldest_first(
    queue: Queue, officer_client: OfficerClient
) -> None:
    officer = officer_client()
    ids = queue.ids
    assert _listed(officer) == [
        ids["beijing_new"],
        ids["acme_new"],
        ids["beijing_confirm"],
        ids["acme_renewal"],
    ]
    assert _listed(officer, "sort=newest") == [
        ids["acme_renewal"],
        ids["beijing_confirm"],
        ids["acme_new"],
        ids["beijing_new"],
    ]
    page = officer.get(QUEUE).text
    assert "4 applications match." in page
    assert "approved (1)" in page  # the status tabs count
    assert "rejected (1)" in page


def test_filters_by_status_and_by_new_or_renewal(
    queue: Queue, officer_client: OfficerClient
) -> None:
    officer = officer_client()
    ids = queue.ids
    assert _listed(officer, "status=approved") == [ids["acme_approved"]]
    assert _listed(officer, "status=rejected") == [ids["beijing_rejected"]]
    assert _listed(officer, "status=awaiting_confirmation") == [ids["beijing_confirm"]]
    everything = _listed(officer, "status=all")
    assert sorted(everything) == sorted(v for k, v in ids.items() if k != "draft")
    assert ids["draft"] not in everything
    assert _listed(officer, "kind=renewal") == [ids["acme_renewal"]]
    assert ids["acme_renewal"] not in _listed(officer, "kind=new&status=all")
    assert _listed(officer, "kind=renewal&status=approved") == []


# (query, what it lists): one queue for all of them, the fixture being the slow part.
NAME_SEARCHES = [
    ("q=acme", ["acme_new", "acme_renewal"]),
    ("q=ACME+trading", ["acme_new", "acme_renewal"]),  # case-insensitive on both backends
    ("q=+Acme+", ["acme_new", "acme_renewal"]),  # surrounding blanks are dropped
    ("q=测试科技", ["beijing_new", "beijing_confirm"]),
    ("q=nothing+like+this", []),
    ("q=%25", []),  # LIKE wildcards are literal
    ("q=_", []),
    ("q=acme&status=all", ["acme_approved", "acme_new", "acme_renewal"]),
]


def test_search_by_employer_name(queue: Queue, officer_client: OfficerClient) -> None:
    officer = officer_client()
    for query, expected in NAME_SEARCHES:
        assert _listed(officer, query) == [queue.ids[name] for name in expected], query


def test_search_by_registration_number_and_application_number(
    queue: Queue, officer_client: OfficerClient
) -> None:
    officer = officer_client()
    ids = queue.ids
    # The random part of the number, typed in lower case (the check letter may be a letter).
    assert _listed(officer, f"q={queue.acme.number[8:].lower()}") == [
        ids["acme_new"],
        ids["acme_renewal"],
    ]
    assert _listed(officer, f"q={queue.beijing.number}&status=all") == [
        ids["beijing_new"],
        ids["beijing_confirm"],
        ids["beijing_rejected"],
    ]
    assert _listed(officer, f"q=%23{ids['acme_approved']}&status=all") == [ids["acme_approved"]]
    # Bare digits: that application, and any registration number containing them.
    assert ids["beijing_confirm"] in _listed(officer, f"q={ids['beijing_confirm']}")
    assert _listed(officer, f"q=%23{ids['draft']}&status=all") == []
    assert _listed(officer, "q=99999999999999999999") == []  # beyond any id: no error either


def test_empty_states_say_what_to_do(
    app: Flask, make_employer: MakeEmployer, officer_client: OfficerClient
) -> None:
    officer = officer_client()
    page = officer.get(QUEUE).text
    assert "Nothing to review: no application is waiting for a decision." in page
    missing = officer.get(f"{QUEUE}?q=Nobody+Ltd").text
    assert "No application matches “Nobody Ltd”." in missing
    assert 'href="/officer/applications/?status=all"' in missing
    assert (
        "No application has this status and type." in officer.get(f"{QUEUE}?status=approved").text
    )


def test_pages_keep_the_filters(
    app: Flask, make_employer: MakeEmployer, officer_client: OfficerClient
) -> None:
    account = make_employer(legal_name="Paged Industries Ltd.")
    made = [_add(app, account, day=n) for n in range(PAGE_SIZE + 2)]
    officer = officer_client()
    first = officer.get(f"{QUEUE}?q=paged&sort=newest")
    assert "Page 1 of 2" in first.text
    assert 'href="/officer/applications/?q=paged&amp;sort=newest&amp;page=2"' in first.text
    assert _listed(officer, "q=paged&sort=newest") == made[::-1][:PAGE_SIZE]
    assert _listed(officer, "q=paged&sort=newest&page=2") == made[1::-1]
    beyond = officer.get(f"{QUEUE}?q=paged&page=3")
    assert beyond.status_code == 200
    assert "There is no page 3" in beyond.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=0", "The page must be a whole number from 1 to"),
        ("page=abc", "The page must be a whole number from 1 to"),
        ("page=99999999999", "The page must be a whole number from 1 to"),
        ("status=draft", "There is no status &#39;draft&#39;"),
        ("status=pending", "There is no status &#39;pending&#39;"),
        ("kind=old", "The kind must be one of all, new, renewal"),
        ("sort=name", "The sort must be one of oldest, newest"),
        ("q=" + "x" * 101, "The search is too long (at most 100 characters)."),
    ],
)
def test_bad_queries_are_a_clear_400(
    officer_client: OfficerClient, query: str, message: str
) -> None:
    response = officer_client().get(f"{QUEUE}?{query}")
    assert response.status_code == 400
    assert message in response.text
    assert len(response.text) < 20_000


def _signed_in(app: Flask, make_officer: MakeOfficer, role: Role) -> FlaskClient:
    staff = make_officer(role)
    client = app.test_client()
    login(client, staff.user.username, staff.password)
    assert enter_code(client, code_at(staff.seed)).status_code == 302
    return client


def test_only_ra_officers_use_the_console(
    app: Flask,
    queue: Queue,
    make_officer: MakeOfficer,
    make_employer: MakeEmployer,
) -> None:
    application_id = queue.ids["acme_new"]
    paths = (QUEUE, f"{QUEUE}{application_id}")
    for role in (Role.CA_ADMIN, Role.AUDITOR):
        other = _signed_in(app, make_officer, role)
        for path in paths:
            assert other.get(path).status_code == 403, (role, path)
    employer = employer_login(app.test_client(), queue.acme)
    for path in paths:
        assert employer.get(path).status_code == 403
    assert app.test_client().get(QUEUE).status_code == 302  # signed out: the sign-in page
    # The service refuses on its own too (the API and the CLI call it without the view).
    admin = make_officer(Role.CA_ADMIN)
    with app.app_context():
        user = db.session.get(User, admin.user.id)
        assert user is not None
        with pytest.raises(Forbidden):
            search_queue(officer=user, filters=QueueFilter())


def test_the_service_pages_by_the_size_it_is_given(
    app: Flask, queue: Queue, make_officer: MakeOfficer
) -> None:
    officer = make_officer()
    with app.app_context():
        user = db.session.get(User, officer.user.id)
        assert user is not None
        first = search_queue(officer=user, filters=QueueFilter(), page_size=3)
        last = search_queue(officer=user, filters=QueueFilter(page=2), page_size=3)
    assert (first.total, first.pages, len(first.applications)) == (4, 2, 3)
    assert [a.id for a in last.applications] == [queue.ids["acme_renewal"]]
    assert first.counts["open"] == 4
    assert first.counts["all"] == 6


# -- the document viewer ---------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    employer: FlaskClient
    account: EmployerAccount
    application_id: int
    documents: dict[DocumentType, int]


@pytest.fixture
def submitted(app: Flask, make_employer: MakeEmployer, trusted_seal_ca: Authority) -> Submitted:
    """A submitted application: five sealed PDFs and a paper scan (PNG) of the licence."""
    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = new_application(client)
    seal = seal_for(trusted_seal_ca, account.number)
    for doc_type in DocumentType:
        if doc_type is DocumentType.BUSINESS_LICENCE:
            status, text = upload(
                client, application_id, doc_type, minimal_png(), filename="licence scan.png"
            )
        else:
            status, text = upload(client, application_id, doc_type, seal_pdf(minimal_pdf(), seal))
        assert status == 302, text
    assert attach_csr(client, application_id, software_csr())[0] == 302
    assert submit(client, application_id)[0] == 302
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        documents = {d.doc_type: d.id for d in application.documents}
    return Submitted(client, account, application_id, documents)


def _section(page: str, document_id: int) -> str:
    match = re.search(
        rf'<section class="card document" id="document-{document_id}".*?</section>', page, re.S
    )
    assert match, page
    return match.group(0)


def test_each_document_is_shown_beside_its_verdict_and_controls(
    app: Flask, submitted: Submitted, officer_client: OfficerClient
) -> None:
    page = officer_client().get(f"{QUEUE}{submitted.application_id}").text
    pdf_id = submitted.documents[DocumentType.APPLICATION_FORM]
    pdf = _section(page, pdf_id)
    src = f"/officer/applications/{submitted.application_id}/documents/{pdf_id}"
    assert f'<iframe src="{src}"' in pdf
    assert 'class="verdict ok">verified' in pdf
    with app.app_context():
        document = db.session.get(Document, pdf_id)
        assert document is not None
        assert document.signer_subject
        signer = document.signer_subject
    assert html.escape(signer) in pdf
    assert "Sealed at (UTC)" in pdf
    scan_id = submitted.documents[DocumentType.BUSINESS_LICENCE]
    scan = _section(page, scan_id)
    assert (
        f'<img src="/officer/applications/{submitted.application_id}/documents/{scan_id}"' in scan
    )
    assert "needs officer attestation" in scan
    assert f"/documents/{scan_id}/attest" in scan  # the attestation form sits beside it
    assert f'id="valid_until-{scan_id}"' in scan  # and the licence's validity date
    assert "not attested yet" in scan


def test_only_the_officers_document_route_may_be_framed_and_only_by_us(
    app: Flask, submitted: Submitted, officer_client: OfficerClient
) -> None:
    officer = officer_client()
    base = f"/officer/applications/{submitted.application_id}/documents"
    for doc_type, kind in (
        (DocumentType.APPLICATION_FORM, "application/pdf"),
        (DocumentType.BUSINESS_LICENCE, "image/png"),
    ):
        response = officer.get(f"{base}/{submitted.documents[doc_type]}")
        assert response.status_code == 200
        assert response.mimetype == kind
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'self'" in csp
        assert "default-src 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Disposition"].startswith("inline; filename=")
    scan = officer.get(f"{base}/{submitted.documents[DocumentType.BUSINESS_LICENCE]}")
    assert 'filename="licence scan.png"' in scan.headers["Content-Disposition"]

    # The same document through the employer's route, and every other page: never framed.
    document_id = submitted.documents[DocumentType.APPLICATION_FORM]
    others = [
        (submitted.employer, f"/applications/{submitted.application_id}/documents/{document_id}"),
        (submitted.employer, f"/applications/{submitted.application_id}"),
        (officer, f"/officer/applications/{submitted.application_id}"),
        (officer, QUEUE),
        (officer, "/officer/applications/?page=0"),  # an error page too
        (app.test_client(), "/pki/"),
        (app.test_client(), "/auth/login"),
    ]
    for client, path in others:
        response = client.get(path)
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
        assert "frame-ancestors 'self'" not in response.headers["Content-Security-Policy"], path


def test_a_stored_type_that_is_not_pdf_or_image_is_a_download_never_framed(
    app: Flask, submitted: Submitted, officer_client: OfficerClient
) -> None:
    document_id = submitted.documents[DocumentType.COMMITMENT_LETTER]
    with app.app_context():
        # Only PDF, PNG and JPEG get past the upload sniffer; a row of another type (an older
        # sniffer, a restored backup) must still not be shown in place.
        document = db.session.get(Document, document_id)
        assert document is not None
        document.sha256 = document_store().put(b"<script>alert(1)</script>")
        document.media_type = "text/html"
        document.filename = 'evil"\r\n.html'
        db.session.commit()
    response = officer_client().get(
        f"/officer/applications/{submitted.application_id}/documents/{document_id}"
    )
    assert response.status_code == 200
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="evil___.html"')
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- decisions with reasons ------------------------------------------------------------------


def _post(client: FlaskClient, application_id: int, action: str, **data: str) -> tuple[int, str]:
    path = f"/officer/applications/{application_id}"
    response = client.post(
        f"{path}/{action}", data={"csrf_token": csrf_token(client, path), **data}
    )
    return response.status_code, response.text


def _status(app: Flask, application_id: int) -> ApplicationStatus:
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        return application.status


def test_a_rejection_needs_a_reason_the_employer_then_sees(
    app: Flask, submitted: Submitted, officer_client: OfficerClient
) -> None:
    officer = officer_client()
    application_id = submitted.application_id
    for reason, message in (
        ("", "Give the employer a reason for the rejection."),
        ("   ", "Give the employer a reason for the rejection."),
        ("x" * 2001, "Keep the reason under 2,000 characters."),
    ):
        status, page = _post(officer, application_id, "reject", reason=reason)
        assert status == 400
        assert message in page
        assert _status(app, application_id) is ApplicationStatus.SUBMITTED
    # Without the form's CSRF token nothing is decided either.
    response = officer.post(
        f"/officer/applications/{application_id}/reject", data={"reason": "Seal faint"}
    )
    assert response.status_code == 400
    assert _status(app, application_id) is ApplicationStatus.SUBMITTED

    status, _page = _post(
        officer,
        application_id,
        "reject",
        reason="The licence scan is unreadable; upload a sharper one.",
    )
    assert status == 302
    assert _status(app, application_id) is ApplicationStatus.REJECTED
    assert (
        "The licence scan is unreadable; upload a sharper one."
        in submitted.employer.get(f"/applications/{application_id}").text
    )


def test_an_approval_can_carry_a_note_for_the_record(
    app: Flask, submitted: Submitted, officer_client: OfficerClient
) -> None:
    officer = officer_client()
    application_id = submitted.application_id
    status, page = _post(officer, application_id, "approve", note="Checked the licence by phone.")
    assert status == 400  # the paper seal is not attested yet
    assert (
        "Cannot approve: “Business licence (copy)” is unsigned and its paper seal is not attested."
        in html.unescape(page)
    )
    licence = submitted.documents[DocumentType.BUSINESS_LICENCE]
    assert officer_post(officer, application_id, f"documents/{licence}/attest") == 302
    assert _post(officer, application_id, "approve", note="x" * 2001)[0] == 400
    status, _page = _post(officer, application_id, "approve", note="Checked the licence by phone.")
    assert status == 302
    assert _status(app, application_id) is ApplicationStatus.ISSUED
    with app.app_context():
        notes = [
            event_note(event)
            for event in db.session.scalars(
                sa.select(ApplicationEvent).where(ApplicationEvent.application_id == application_id)
            )
        ]
        details = db.session.scalar(
            sa.select(AuditEvent.details).where(AuditEvent.action == "application.approved")
        )
    assert "Approved. Checked the licence by phone." in notes
    assert details is not None
    assert "Checked the licence by phone." in str(details)


def _mark_tampered(
    app: Flask, document_id: int, detail: str, *, reason: SealReason | None = None
) -> None:
    """Record the document's seal as tampered with, with that technical detail."""
    with app.app_context():
        document = db.session.get(Document, document_id)
        assert document is not None
        document.verdict = SealVerdict.TAMPERED
        document.verdict_reason = reason
        document.verdict_detail = detail
        db.session.commit()


def test_a_verdict_other_than_verified_is_shown_as_bad(
    app: Flask, submitted: Submitted, officer_client: OfficerClient
) -> None:
    document_id = submitted.documents[DocumentType.DECLARATION_FORM]
    _mark_tampered(app, document_id, "The document was changed after it was sealed.")
    page = officer_client().get(f"{QUEUE}{submitted.application_id}").text
    section = _section(page, document_id)
    assert 'class="verdict bad">tampered' in section
    assert "The document was changed after it was sealed." in section


@pytest.mark.parametrize(
    ("language", "reason", "record"),
    [
        ("es-ES,es;q=0.9", "El documento se modificó después de sellarlo.", "Registro técnico"),
        ("zh-CN,zh;q=0.9", "该文档在盖章后被改动。", "技术记录"),
    ],
)
def test_the_officer_reads_a_verdict_in_their_language_beside_the_english_record(
    app: Flask,
    submitted: Submitted,
    officer_client: OfficerClient,
    language: str,
    reason: str,
    record: str,
) -> None:
    document_id = submitted.documents[DocumentType.DECLARATION_FORM]
    _mark_tampered(
        app,
        document_id,
        "Integrity check failed: the document was changed.",
        reason=SealReason.DOCUMENT_CHANGED,
    )
    page = officer_client().get(
        f"{QUEUE}{submitted.application_id}", headers={"Accept-Language": language}
    )
    section = _section(page.text, document_id)
    assert f'<p class="verdict-reason">{reason}</p>' in section
    technical = re.search(r"<details class=\"technical-record\">(.*?)</details>", section, re.S)
    assert technical, section
    english = '<p lang="en">Integrity check failed: the document was changed.</p>'
    assert record in technical.group(1)
    assert english in technical.group(1)


@pytest.mark.parametrize(
    ("language", "tab", "refusal"),
    [
        ("es-ES,es;q=0.9", "por decidir (", "No existe el estado"),
        ("zh-CN,zh;q=0.9", "待决定 (", "不存在状态"),
    ],
)
def test_the_queue_and_its_refusals_speak_the_officers_language(
    officer_client: OfficerClient, language: str, tab: str, refusal: str
) -> None:
    officer = officer_client()
    headers = {"Accept-Language": language}
    assert tab in officer.get(QUEUE, headers=headers).text
    response = officer.get(f"{QUEUE}?status=pending", headers=headers)
    assert response.status_code == 400
    assert refusal in response.text
