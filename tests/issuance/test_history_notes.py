"""History notes are stored as codes with parameters and shown in the reader's language; what
an officer typed is shown as typed; rows from before the codes, and codes this version does
not know, still show."""

# Chinese text uses full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask
from flask_babel import force_locale

from ca_service.db import db
from ca_service.issuance.models import Application, ApplicationEvent, ApplicationStatus
from ca_service.issuance.notes import NoteCode, ReviewCode, note_text
from tests.issuance.conftest import MakeEmployer, employer_login
from tests.issuance.seal_factory import Authority
from tests.issuance.test_flow import complete_application, officer_post
from tests.issuance.test_review import OfficerClient

# A reason that is also a message of the catalogue: typed text must not be translated.
TYPED = "Draft created."


def test_a_note_written_in_one_language_reads_in_another(
    app: Flask,
    make_employer: MakeEmployer,
    trusted_seal_ca: Authority,
    officer_client: OfficerClient,
) -> None:
    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = complete_application(client, account, trusted_seal_ca)
    officer = officer_client()
    officer.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"  # the officer works in Chinese
    assert officer_post(officer, application_id, "reject", reason=TYPED) == 302
    with app.app_context():
        events = db.session.scalars(
            sa.select(ApplicationEvent)
            .where(ApplicationEvent.application_id == application_id)
            .order_by(ApplicationEvent.id)
        ).all()
        stored = [(e.note_code, e.note_params, e.note) for e in events]
    assert stored[0] == (NoteCode.DRAFT_CREATED, None, None)
    assert stored[-1] == (NoteCode.REJECTED, None, TYPED)
    key = next(p["key"] for code, p, _ in stored if code == NoteCode.REQUEST_ATTACHED and p)

    page = f"/applications/{application_id}"
    spanish = client.get(page, headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert "Borrador creado." in spanish
    assert f"Solicitud de certificado adjuntada ({key})." in spanish
    assert "Presentada para revisión." in spanish
    assert f"Rechazada: {TYPED}" in spanish
    chinese = client.get(page, headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "已创建草稿。" in chinese
    assert f"已附加证书请求（{key}）。" in chinese
    assert f"已驳回：{TYPED}" in chinese
    english = client.get(page, headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert f"Rejected: {TYPED}" in english
    assert "Borrador creado." not in english
    review = officer.get(f"/officer/applications/{application_id}").get_data(as_text=True)
    assert "已提交审核。" in review


def test_rows_from_before_the_codes_show_as_stored(
    app: Flask, make_employer: MakeEmployer, trusted_seal_ca: Authority
) -> None:
    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = complete_application(client, account, trusted_seal_ca)
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        db.session.add_all(
            [
                ApplicationEvent(
                    application_id=application_id,
                    status=ApplicationStatus.SUBMITTED,
                    actor="tests",
                    note="Submitted for review (written in 2025).",
                ),
                ApplicationEvent(
                    application_id=application_id,
                    status=ApplicationStatus.SUBMITTED,
                    actor="tests",
                    note_code="from_a_later_version",
                    note_params={"x": "1"},
                ),
            ]
        )
        db.session.commit()
    page = client.get(f"/applications/{application_id}", headers={"Accept-Language": "es"})
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Submitted for review (written in 2025)." in text
    assert "Paso registrado (from_a_later_version)." in text


def test_unknown_codes_and_missing_parameters_fall_back(app: Flask) -> None:
    with app.test_request_context(), force_locale("zh_Hans"):
        assert note_text(None, None, "As stored.") == "As stored."
        assert note_text(None, None, None) == ""
        assert note_text("no_such_code", None, "typed") == "已记录步骤（no_such_code）。typed"
        # A known code whose parameters do not fit its sentence (another version wrote it).
        assert note_text(NoteCode.ISSUED, {}, None) == "已记录步骤（issued）。"
        assert note_text(NoteCode.ISSUED, {"serial": "0a1b"}, None) == "证书已签发（序列号 0a1b）。"
    with app.test_request_context(), force_locale("es"):
        reasons = [
            {"code": ReviewCode.DOCUMENT_EXPIRED, "document": "business_licence", "date": "2026"},
            {"code": "gone"},
        ]
        text = note_text(NoteCode.RENEWAL_NEEDS_REVIEW, {"reasons": reasons}, None)
        assert "Licencia" in text or "licencia" in text, text
        assert "2026" in text
        assert text.endswith("; gone."), text
