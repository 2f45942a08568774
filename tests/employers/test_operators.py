"""HR operators: the administrator creates one, the invitation e-mail (delivered to a real SMTP
server) carries a one-time link, the operator sets a password, signs in with an SMS code to
their own mobile and applies; revoking, binding and managing operators are refused (page, API
and service); removal ends an open session and API token at once; another employer's
administrator cannot remove them; each step is audited."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth.models import OneTimeCode, Role, User
from ca_service.binding.bindings import bind_certificate
from ca_service.db import db, utcnow
from ca_service.employers.models import Employer
from ca_service.employers.operators import (
    NewOperator,
    create_operator,
    list_operators,
    remove_operator,
)
from ca_service.errors import Forbidden, NotFound
from ca_service.issuance.models import Application, ApplicationStatus
from ca_service.outbox.models import Channel, OutboxMessage
from ca_service.outbox.service import BLANKED
from tests.api.conftest import bearer, request_token, token_of
from tests.auth.flows import (
    csrf_token,
    enter_sms_code,
    location,
    login,
    post_form,
    sms_code_for,
)
from tests.conftest import free_port
from tests.employers.operator_support import OperatorAccount, make_operator
from tests.issuance.conftest import MakeEmployer, employer_login
from tests.issuance.seal_factory import Authority
from tests.issuance.test_flow import complete_application
from tests.outbox.test_delivery import Inbox, run_cli

LINK = re.compile(r"https?://\S+/employers/invitation/\d+/\S+")
OPERATOR_MOBILE = "+8613911112222"


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[Inbox, int]]:
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _events(app: Flask, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))
        for row in rows:
            db.session.expunge(row)
        return rows


def _user(app: Flask, user_id: int) -> User:
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        db.session.expunge(user)
        return user


def _spanish_code(app: Flask, user_id: int) -> str:
    with app.app_context():
        code_id = db.session.scalar(
            sa.select(OneTimeCode.id)
            .where(OneTimeCode.user_id == user_id)
            .order_by(OneTimeCode.id.desc())
            .limit(1)
        )
        body = db.session.scalar(
            sa.select(OutboxMessage.body).where(OutboxMessage.dedupe_key == f"code:{code_id}")
        )
    match = re.search(r"inicio de sesión es (\d{6})", body or "")
    assert match, body
    return match.group(1)


def test_invited_operator_sets_a_password_signs_in_by_sms_and_applies(
    app: Flask,
    app_overrides: dict[str, object],
    make_employer: MakeEmployer,
    trusted_seal_ca: Authority,
    smtp_inbox: tuple[Inbox, int],
) -> None:
    admin = make_employer()
    web = employer_login(app.test_client(), admin)
    with app.app_context():  # from now on, e-mail and SMS to this employer go out in Spanish
        employer = db.session.get(Employer, admin.employer_id)
        assert employer is not None
        employer.language = "es"
        db.session.commit()
    assert web.get("/employers/operators").status_code == 200
    form = {"full_name": "Li Lei", "email": "li.lei@example.test", "mobile": OPERATOR_MOBILE}
    bad = post_form(web, "/employers/operators", {**form, "mobile": "12"})
    assert bad.status_code == 400
    assert "is not a mobile number" in bad.get_data(as_text=True)
    created = post_form(web, "/employers/operators", form)
    assert location(created) == "/employers/operators"
    page = web.get("/employers/operators").get_data(as_text=True)
    username = f"{admin.number}-1"
    assert f'<td class="mono">{username}</td>' in page
    assert "Li Lei" in page

    (event,) = _events(app, "operator.created")
    assert (event.actor, event.target) == (f"user:{admin.username}", username)

    inbox, port = smtp_inbox
    result = run_cli({**app_overrides, "SMTP_URL": f"smtp://127.0.0.1:{port}"}, "outbox", "deliver")
    assert result.exit_code == 0, result.output
    (mail,) = [m for m in inbox.messages if m["To"] == "li.lei@example.test"]
    assert str(make_header(decode_header(mail["Subject"]))).startswith("Su cuenta de operador")
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    text = payload.decode()
    assert username in text
    match = LINK.search(text)
    assert match, text
    link = urlsplit(match.group(0)).path
    with app.app_context():  # the live link is not kept in the outbox once delivered
        stored = db.session.scalar(
            sa.select(OutboxMessage.body).where(OutboxMessage.recipient == "li.lei@example.test")
        )
    assert stored == BLANKED

    browser = app.test_client()
    assert browser.get(link).status_code == 200
    weak = post_form(browser, link, {"password": "short", "confirm": "short"})
    assert weak.status_code == 400
    password = "operator's own long password"
    done = post_form(browser, link, {"password": password, "confirm": password})
    assert location(done) == "/auth/login"
    assert browser.get(link).status_code == 404  # once only
    assert app.test_client().get(link.rsplit("/", 1)[0] + "/forged").status_code == 404

    operator = _user(app, int(link.split("/")[-2]))
    assert (operator.role, operator.username) == (Role.EMPLOYER_OPERATOR, username)
    assert location(login(browser, username, password)) == "/auth/sms-code"
    with app.app_context():  # the sign-in code went to the operator's own mobile
        sms = db.session.scalars(
            sa.select(OutboxMessage.recipient).where(
                OutboxMessage.channel == Channel.SMS, OutboxMessage.dedupe_key.like("code:%")
            )
        ).all()
    assert OPERATOR_MOBILE in sms
    code = _spanish_code(app, operator.id)
    assert location(enter_sms_code(browser, code)) == "/auth/home"
    dashboard = browser.get("/auth/home")
    assert dashboard.status_code == 200
    assert admin.legal_name in dashboard.get_data(as_text=True)

    application_id = complete_application(browser, admin, trusted_seal_ca)
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        assert application.status is ApplicationStatus.SUBMITTED
        assert application.created_by_id == operator.id
    assert _events(app, "operator.invitation_accepted")


def _operator_client(app: Flask, operator: OperatorAccount) -> FlaskClient:
    client = app.test_client()
    assert location(login(client, operator.username, operator.password)) == "/auth/sms-code"
    page = client.get("/auth/sms-code").get_data(as_text=True)
    assert f"your mobile number ending in {operator.mobile[-4:]}" in page
    code = sms_code_for(app, operator.user_id)
    assert location(enter_sms_code(client, code)) == "/auth/home"
    return client


def test_an_operator_cannot_revoke_bind_or_manage_operators(
    app: Flask, make_employer: MakeEmployer
) -> None:
    admin = make_employer()
    operator = make_operator(app, admin)
    web = _operator_client(app, operator)
    token = csrf_token(web, "/auth/home")
    # The pages: 403 before any record is looked at.
    assert web.post("/applications/1/revoke", data={"csrf_token": token}).status_code == 403
    assert web.get("/account/bindings/").status_code == 403
    assert web.post("/account/bindings/tls", data={"csrf_token": token}).status_code == 403
    assert web.get("/employers/operators").status_code == 403
    created = web.post(
        "/employers/operators",
        data={
            "csrf_token": token,
            "full_name": "X",
            "email": "x@example.test",
            "mobile": "+1234567",
        },
    )
    assert created.status_code == 403
    assert web.post("/employers/operators/1/remove", data={"csrf_token": token}).status_code == 403
    home = web.get("/auth/home").get_data(as_text=True)
    assert "/employers/operators" not in home
    assert "/account/bindings" not in home
    assert web.get("/applications/").status_code == 200  # what operators may do
    # The JSON API with the operator's bearer token.
    api = bearer(token_of(request_token(app.test_client(), operator.username, operator.password)))
    assert web.get("/api/v1/applications", headers=api).status_code == 200
    assert web.post("/api/v1/applications/1/revoke", json={}, headers=api).status_code == 403
    assert web.get("/api/v1/bindings", headers=api).status_code == 403
    assert (
        web.post("/api/v1/auth/challenges", json={"purpose": "bind"}, headers=api).status_code
        == 403
    )
    # The services themselves.
    with app.app_context():
        user = db.session.get(User, operator.user_id)
        assert user is not None
        with pytest.raises(Forbidden):
            list_operators(admin=user)
        with pytest.raises(Forbidden):
            remove_operator(admin=user, operator_id=user.id)
        with pytest.raises(Forbidden):
            create_operator(
                admin=user,
                data=NewOperator("X", "x@example.test", "+1234567"),
                invitation_link=lambda _id, _secret: "",
                invitation_hours=1,
            )
        with pytest.raises(Forbidden):
            bind_certificate(user=user, verified=None, method="tls", now=utcnow())  # type: ignore[arg-type]


def test_removal_ends_the_session_and_token_and_only_the_own_admin_removes(
    app: Flask, make_employer: MakeEmployer
) -> None:
    admin, stranger = make_employer(), make_employer()
    operator = make_operator(app, admin)
    session = _operator_client(app, operator)
    api = bearer(token_of(request_token(app.test_client(), operator.username, operator.password)))
    assert session.get("/applications/").status_code == 200
    assert session.get("/api/v1/applications", headers=api).status_code == 200

    path = f"/employers/operators/{operator.user_id}/remove"
    other = employer_login(app.test_client(), stranger)
    assert (
        other.post(path, data={"csrf_token": csrf_token(other, "/employers/operators")}).status_code
        == 404
    )
    with app.app_context():
        stranger_user = db.session.get(User, stranger.user_id)
        assert stranger_user is not None
        with pytest.raises(NotFound):
            remove_operator(admin=stranger_user, operator_id=operator.user_id)
        db.session.rollback()
    assert session.get("/applications/").status_code == 200  # still signed in
    assert not _events(app, "operator.removed")

    web = employer_login(app.test_client(), admin)
    removed = web.post(path, data={"csrf_token": csrf_token(web, "/employers/operators")})
    assert location(removed) == "/employers/operators"
    listed = f'<td class="mono">{operator.username}</td>'
    assert listed not in web.get("/employers/operators").get_data(as_text=True)
    # The open session and the token end with the removal, not at their expiry.
    assert "/auth/login" in location(session.get("/applications/"))
    assert session.get("/api/v1/applications", headers=api).status_code == 401
    refused = login(app.test_client(), operator.username, operator.password)
    assert refused.status_code == 401
    (event,) = _events(app, "operator.removed")
    assert (event.actor, event.target) == (f"user:{admin.username}", operator.username)
    # Removed once; again is a 404, and the username is never given out again.
    assert (
        web.post(path, data={"csrf_token": csrf_token(web, "/employers/operators")}).status_code
        == 404
    )
    assert make_operator(app, admin).username == f"{admin.number}-2"
