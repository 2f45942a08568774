"""Employer administrators sign in with the password and a one-time code sent by SMS to the
employer's reserved mobile number: wrong codes count towards the lockout, a code works once and
for its own purpose only, a new code ends the old one, every sign-in is audited and announced."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth.models import CodePurpose, OneTimeCode, User
from ca_service.auth.service import LoginPolicy, check_sms_code
from ca_service.db import db
from ca_service.errors import AuthenticationFailed
from ca_service.extensions import settings_of
from ca_service.outbox.models import Channel, OutboxMessage
from tests.auth.flows import (
    CSRF,
    MakeOfficer,
    code_at,
    enter_code,
    enter_sms_code,
    load_user,
    location,
    login,
    post_form,
    sms_code_for,
    sms_login,
    wrong_code,
)
from tests.issuance.conftest import (
    EmployerAccount,
    MakeEmployer,
    make_employer,  # noqa: F401  (fixture)
    new_number,
)
from tests.issuance.test_flow import register

MOBILE = "+8613800138000"  # every make_employer() employer's reserved number


def _events(app: Flask, action: str) -> list[dict[str, object]]:
    with app.app_context():
        details = db.session.scalars(
            sa.select(AuditEvent.details)
            .where(AuditEvent.action == action)
            .order_by(AuditEvent.seq)
        ).all()
    return [json.loads(d) for d in details]


def _actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.seq)))


def _sign_in_notices(app: Flask) -> list[OutboxMessage]:
    with app.app_context():
        rows = db.session.scalars(
            sa.select(OutboxMessage)
            .where(OutboxMessage.dedupe_key.like("sign-in:%"))
            .order_by(OutboxMessage.id)
        ).all()
        for row in rows:
            db.session.expunge(row)
    return list(rows)


def _codes_issued(app: Flask, user_id: int, purpose: CodePurpose) -> int:
    with app.app_context():
        return (
            db.session.scalar(
                sa.select(sa.func.count())
                .select_from(OneTimeCode)
                .where(OneTimeCode.user_id == user_id, OneTimeCode.purpose == purpose)
            )
            or 0
        )


def _lock_until(app: Flask, user_id: int, until: dt.datetime | None) -> None:
    with app.app_context():
        row = db.session.get(User, user_id)
        assert row is not None
        row.locked_until = until
        db.session.commit()


def _at_code_step(client: FlaskClient, account: EmployerAccount) -> None:
    assert location(login(client, account.username, account.password)) == "/auth/sms-code"


def test_password_then_sms_code_signs_in(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    account = make_employer()
    _at_code_step(client, account)
    # Half signed in: every page sends the browser back to the code step.
    assert location(client.get("/applications/")) == "/auth/sms-code"
    page = client.get("/auth/sms-code").get_data(as_text=True)
    assert "ending in" in page
    assert "8000" in page
    assert MOBILE not in page  # only the last digits are shown
    assert 'name="csrf_token"' in page
    assert "Send a new code" in page

    code = sms_code_for(app, account.user_id)
    with app.app_context():
        sms = db.session.scalar(
            sa.select(OutboxMessage).where(
                OutboxMessage.channel == Channel.SMS, OutboxMessage.body.contains(code)
            )
        )
        assert sms is not None
        assert sms.recipient == MOBILE
        assert sms.sensitive  # blanked once delivered
        assert sms.subject == "Sign-in code"

    assert location(enter_sms_code(client, code)) == "/auth/home"
    assert client.get("/applications/").status_code == 200
    (login_event,) = _events(app, "auth.login")
    assert login_event == {"method": "password+sms", "role": "employer_admin"}
    assert load_user(app, account.username).last_login_at is not None

    notices = _sign_in_notices(app)
    assert sorted(n.channel.value for n in notices) == ["email", "sms"]
    by_channel = {n.channel: n for n in notices}
    assert by_channel[Channel.EMAIL].recipient == f"hr-{account.number.lower()}@example.test"
    assert by_channel[Channel.SMS].recipient == MOBILE
    for notice in notices:
        assert notice.subject == "New sign-in to your social-security employer account"
        assert "UTC" in notice.body
        assert "if this was not you, reset your password and contact the agency" in notice.body
        assert not notice.sensitive

    # A second sign-in is a second notice (the dedupe key is per sign-in, not per account).
    assert location(sms_login(app.test_client(), account.username, account.password)) == (
        "/auth/home"
    )
    assert len(_sign_in_notices(app)) == 4
    assert [e["method"] for e in _events(app, "auth.login")] == ["password+sms"] * 2


def test_sms_code_step_needs_a_csrf_token(client: FlaskClient, make_employer: MakeEmployer) -> None:  # noqa: F811
    account = make_employer()
    _at_code_step(client, account)
    response = client.post("/auth/sms-code", data={"code": "123456"})
    assert response.status_code == 400
    assert b"CSRF" in response.data
    assert client.post("/auth/sms-code/resend").status_code == 400


def test_wrong_code_is_refused_and_counts_towards_the_lockout(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    account = make_employer()
    _at_code_step(client, account)
    code = sms_code_for(app, account.user_id)
    refused = enter_sms_code(client, wrong_code(code))
    assert refused.status_code == 401
    text = refused.get_data(as_text=True)
    assert "That code is wrong. Check the SMS and try again." in text
    assert 'name="code"' in text  # the code step again, not an error page
    assert load_user(app, account.username).failed_logins == 1
    assert _events(app, "auth.login_failed") == [{"reason": "wrong SMS code"}]

    # The right code still works, and resets the count.
    assert location(enter_sms_code(client, code)) == "/auth/home"
    assert load_user(app, account.username).failed_logins == 0


def test_too_many_wrong_codes_lock_the_account(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    account = make_employer()
    max_failures = int(app.extensions["ca_settings"]["LOGIN_MAX_FAILURES"])
    # Wrong passwords and wrong codes add up.
    assert login(client, account.username, "not the password at all").status_code == 401
    _at_code_step(client, account)
    code = sms_code_for(app, account.user_id)
    for _ in range(max_failures - 2):
        assert enter_sms_code(client, wrong_code(code)).status_code == 401
    locked = enter_sms_code(client, wrong_code(code))
    assert locked.status_code == 423
    text = locked.get_data(as_text=True)
    assert "locked" in text
    assert "Try again after" in text
    assert 'name="username"' in text  # back to the password form: this sign-in is over
    assert "auth.locked" in _actions(app)

    # This browser's half-finished sign-in was dropped, and the password no longer opens one.
    assert location(client.get("/auth/sms-code")) == "/auth/login"
    assert login(client, account.username, account.password).status_code == 423
    assert _events(app, "auth.login") == []


def test_a_locked_account_cannot_continue(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    account = make_employer()
    _at_code_step(client, account)
    code = sms_code_for(app, account.user_id)
    # Locked meanwhile (failures from elsewhere): even the right code is refused.
    _lock_until(app, account.user_id, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=15))
    response = enter_sms_code(client, code)
    assert response.status_code == 423
    assert "locked" in response.get_data(as_text=True)
    assert location(client.get("/applications/")).startswith("/auth/login")

    # Nor can it ask for new codes.
    other = app.test_client()
    _lock_until(app, account.user_id, None)
    _at_code_step(other, account)
    issued = _codes_issued(app, account.user_id, CodePurpose.LOGIN)
    _lock_until(app, account.user_id, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=15))
    resend = post_form(other, "/auth/sms-code/resend", {}, token_from="/auth/sms-code")
    assert resend.status_code == 423
    assert _codes_issued(app, account.user_id, CodePurpose.LOGIN) == issued
    assert _events(app, "auth.login") == []


def test_a_code_works_once(app: Flask, client: FlaskClient, make_employer: MakeEmployer) -> None:  # noqa: F811
    account = make_employer()
    _at_code_step(client, account)
    code = sms_code_for(app, account.user_id)
    assert location(enter_sms_code(client, code)) == "/auth/home"

    # Replayed (by whoever read it over the shoulder), it is refused and counts.
    with app.app_context():
        user = db.session.get(User, account.user_id)
        assert user is not None
        with pytest.raises(AuthenticationFailed, match="expired or was already used"):
            check_sms_code(
                user=user,
                code=code,
                secret_key=app.config["SECRET_KEY"],
                policy=LoginPolicy.from_settings(settings_of(app)),
            )
    assert load_user(app, account.username).failed_logins == 1

    # Replayed in another sign-in, which has a new code of its own.
    other = app.test_client()
    _at_code_step(other, account)
    if sms_code_for(app, account.user_id) != code:
        assert enter_sms_code(other, code).status_code == 401
        assert load_user(app, account.username).failed_logins == 2


def test_a_code_of_another_purpose_is_refused(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    account = make_employer()
    # A password reset code, live and unused, sent to the same mobile number.
    reset = post_form(client, "/auth/reset", {"username": account.username})
    assert location(reset) == "/auth/reset/confirm"
    reset_code = sms_code_for(app, account.user_id, CodePurpose.PASSWORD_RESET)

    browser = app.test_client()
    _at_code_step(browser, account)
    login_code = sms_code_for(app, account.user_id)
    if reset_code != login_code:  # one chance in a million that they are equal
        assert enter_sms_code(browser, reset_code).status_code == 401
    assert location(enter_sms_code(browser, login_code)) == "/auth/home"

    # The login code (used or not) does not reset the password either.
    new_password = "a brand new long password"
    refused = post_form(
        client,
        "/auth/reset/confirm",
        {"code": login_code, "password": new_password, "confirm": new_password},
    )
    if reset_code != login_code:
        assert refused.status_code == 401


def test_a_new_code_ends_the_old_one(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    account = make_employer()
    _at_code_step(client, account)
    first = sms_code_for(app, account.user_id)
    response = post_form(client, "/auth/sms-code/resend", {}, token_from="/auth/sms-code")
    assert location(response) == "/auth/sms-code"
    page = client.get("/auth/sms-code").get_data(as_text=True)
    assert "A new code is on its way. Earlier codes no longer work." in page
    second = sms_code_for(app, account.user_id)
    assert _codes_issued(app, account.user_id, CodePurpose.LOGIN) == 2
    if first != second:
        refused = enter_sms_code(client, first)
        assert refused.status_code == 401
    assert location(enter_sms_code(client, second)) == "/auth/home"


def test_resending_is_rate_limited(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    account = make_employer()
    _at_code_step(client, account)
    limit = int(str(app.extensions["ca_settings"]["LOGIN_RATE_LIMIT"]).split()[0])
    token = CSRF.search(client.get("/auth/sms-code").get_data(as_text=True))
    assert token
    statuses = [
        client.post("/auth/sms-code/resend", data={"csrf_token": token.group(1)}).status_code
        for _ in range(limit + 1)
    ]
    assert statuses[:limit] == [302] * limit
    assert statuses[limit] == 429


def test_no_second_code_right_after_confirming_the_mobile(app: Flask, client: FlaskClient) -> None:
    number = new_number()
    assert register(client, number)[0] == 302
    user = load_user(app, number)
    code = sms_code_for(app, user.id, CodePurpose.CONFIRM_MOBILE)
    # The confirmation code already proved the mobile number in this sign-in.
    assert location(post_form(client, "/auth/confirm-mobile", {"code": code})) == "/auth/home"
    assert _codes_issued(app, user.id, CodePurpose.LOGIN) == 0
    assert [e["method"] for e in _events(app, "auth.login")] == ["password+sms"]

    # The next sign-in asks for a code.
    other = app.test_client()
    assert location(login(other, number, "a long enough password")) == "/auth/sms-code"
    assert _codes_issued(app, user.id, CodePurpose.LOGIN) == 1


def test_agency_staff_keep_password_and_totp(
    app: Flask, client: FlaskClient, make_officer: MakeOfficer
) -> None:
    officer = make_officer()
    assert location(login(client, officer.user.username, officer.password)) == "/auth/totp"
    assert location(enter_code(client, code_at(officer.seed))) == "/auth/home"
    assert _codes_issued(app, officer.user.id, CodePurpose.LOGIN) == 0
    assert _events(app, "auth.login") == [{"method": "password+totp", "role": "ra_officer"}]
    assert _sign_in_notices(app) == []


def test_the_code_step_needs_the_password_first(client: FlaskClient) -> None:
    assert location(client.get("/auth/sms-code")) == "/auth/login"
