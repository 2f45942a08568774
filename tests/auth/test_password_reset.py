"""An employer administrator who forgot the password sets a new one with a code sent by SMS to
the reserved mobile number: the same answer whether or not the account exists, sessions and API
tokens end, the lock is lifted, the employer is told; agency staff cannot use it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth.models import CodePurpose, OneTimeCode, User
from ca_service.auth.service import RESET_CODE_REFUSED
from ca_service.db import db
from ca_service.outbox.models import OutboxMessage
from tests.api.conftest import API, bearer, request_token, token_of
from tests.auth.flows import (
    CSRF,
    MakeOfficer,
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
    employer_login,
    make_employer,  # noqa: F401  (fixture)
)

NEW_PASSWORD = "a new and long enough password"
SENT = "a six-digit code is on its way to that number by SMS"


def _actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.seq)))


def _reset_codes(app: Flask) -> list[OneTimeCode]:
    with app.app_context():
        rows = db.session.scalars(
            sa.select(OneTimeCode).where(OneTimeCode.purpose == CodePurpose.PASSWORD_RESET)
        ).all()
        for row in rows:
            db.session.expunge(row)
    return list(rows)


def _outbox_count(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)) or 0


def ask_for_code(client: FlaskClient, username: str) -> str:
    """Step 1; returns the page the browser lands on."""
    response = post_form(client, "/auth/reset", {"username": username})
    assert location(response) == "/auth/reset/confirm"
    return client.get("/auth/reset/confirm").get_data(as_text=True)


def set_new_password(
    client: FlaskClient, code: str, password: str = NEW_PASSWORD, confirm: str | None = None
) -> Any:
    return post_form(
        client,
        "/auth/reset/confirm",
        {"code": code, "password": password, "confirm": password if confirm is None else confirm},
    )


def _lock(app: Flask, account: EmployerAccount) -> None:
    max_failures = int(app.extensions["ca_settings"]["LOGIN_MAX_FAILURES"])
    client = app.test_client()
    for _ in range(max_failures):
        assert login(client, account.username, "certainly not the password").status_code == 401
    assert login(client, account.username, account.password).status_code == 423


def test_reset_from_start_to_end(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    account = make_employer()
    # A browser session and an API token from before, then the account gets locked.
    signed_in = employer_login(app.test_client(), account)
    token = token_of(request_token(app.test_client(), account.username, account.password))
    assert client.get(f"{API}/applications", headers=bearer(token)).status_code == 200
    _lock(app, account)

    login_page = client.get("/auth/login").get_data(as_text=True)
    assert 'href="/auth/reset"' in login_page
    assert "Forgot your password?" in login_page
    form = client.get("/auth/reset").get_data(as_text=True)
    assert 'name="csrf_token"' in form
    page = ask_for_code(client, account.username)
    assert SENT in page
    assert account.username in page
    code = sms_code_for(app, account.user_id, CodePurpose.PASSWORD_RESET)

    # A wrong code, a weak or mismatched password: refused, with what to do.
    wrong = set_new_password(client, wrong_code(code))
    assert wrong.status_code == 401
    assert RESET_CODE_REFUSED in wrong.get_data(as_text=True)
    short = set_new_password(client, code, "short", "short")
    assert short.status_code == 400
    assert "at least 12 characters" in short.get_data(as_text=True)
    mismatch = set_new_password(client, code, NEW_PASSWORD, NEW_PASSWORD + "!")
    assert mismatch.status_code == 400
    assert "The passwords differ." in mismatch.get_data(as_text=True)
    same = set_new_password(client, code, account.password)
    assert same.status_code == 400
    assert "different from the current one" in same.get_data(as_text=True)
    # The wrong code used up one try (committed although the request failed).
    (row,) = _reset_codes(app)
    assert row.attempts == 1
    assert row.used_at is None  # the refused attempts did not spend it

    done = set_new_password(client, code)
    assert location(done) == "/auth/login"
    assert "Your password is changed; sign in." in client.get("/auth/login").get_data(as_text=True)

    # Old sessions and API tokens ended; the lock is lifted.
    assert location(signed_in.get("/applications/")).startswith("/auth/login")
    assert client.get(f"{API}/applications", headers=bearer(token)).status_code == 401
    stored = load_user(app, account.username)
    assert stored.failed_logins == 0
    assert stored.locked_until is None
    assert not stored.password_is_temporary
    actions = _actions(app)
    assert "auth.password_reset_requested" in actions
    assert "auth.password_changed" in actions
    assert actions[-1] == "auth.password_reset_by_sms"
    with app.app_context():
        notices = db.session.scalars(
            sa.select(OutboxMessage).where(OutboxMessage.dedupe_key.like("password-reset:%"))
        ).all()
        assert sorted(n.channel.value for n in notices) == ["email", "sms"]
        assert all("contact the agency" in n.body for n in notices)

    # The old password no longer works; the new one does (with its SMS code).
    assert login(app.test_client(), account.username, account.password).status_code == 401
    assert location(sms_login(app.test_client(), account.username, NEW_PASSWORD)) == ("/auth/home")
    # The code worked once.
    again = app.test_client()
    ask_for_code(again, account.username)
    if sms_code_for(app, account.user_id, CodePurpose.PASSWORD_RESET) != code:
        assert set_new_password(again, code, "yet another long password").status_code == 401


def test_unknown_and_staff_accounts_get_the_same_answer(
    app: Flask,
    make_employer: MakeEmployer,  # noqa: F811
    make_officer: MakeOfficer,
) -> None:
    account = make_employer()
    officer = make_officer()
    pages = {}
    for name, username in (
        ("employer", account.username),
        ("unknown", "91110000NOSUCHONE"),
        ("officer", officer.user.username),
    ):
        client = app.test_client()
        before = _outbox_count(app)
        page = ask_for_code(client, username)
        pages[name] = CSRF.sub("CSRF", page.replace(username, "USERNAME"))
        sent = _outbox_count(app) - before
        assert sent == (1 if name == "employer" else 0), name
        # Step 2 refuses a guess with one message, whether or not the account exists.
        guess = "123456"
        if name == "employer":
            guess = wrong_code(sms_code_for(app, account.user_id, CodePurpose.PASSWORD_RESET))
        refused = set_new_password(client, guess)
        assert refused.status_code == 401, name
        assert RESET_CODE_REFUSED in refused.get_data(as_text=True), name
    assert pages["employer"] == pages["unknown"] == pages["officer"]
    assert SENT in pages["unknown"]
    # Staff passwords are reset by an administrator only.
    assert [c.user_id for c in _reset_codes(app)] == [account.user_id]
    assert location(login(app.test_client(), officer.user.username, officer.password)) == (
        "/auth/totp"
    )


def test_too_many_wrong_codes_burn_the_reset_code(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    account = make_employer()
    ask_for_code(client, account.username)
    code = sms_code_for(app, account.user_id, CodePurpose.PASSWORD_RESET)
    for _ in range(5):
        response = set_new_password(client, wrong_code(code))
        assert response.status_code == 401
        assert RESET_CODE_REFUSED in response.get_data(as_text=True)
    assert _reset_codes(app)[0].attempts == 5
    assert set_new_password(client, code).status_code == 401  # even the right one now
    # A new code starts over.
    ask_for_code(client, account.username)
    fresh = sms_code_for(app, account.user_id, CodePurpose.PASSWORD_RESET)
    assert location(set_new_password(client, fresh)) == "/auth/login"


def test_reset_code_expires(app: Flask, client: FlaskClient, make_employer: MakeEmployer) -> None:  # noqa: F811
    account = make_employer()
    before = _hash_of(app, account.user_id)
    ask_for_code(client, account.username)
    code = sms_code_for(app, account.user_id, CodePurpose.PASSWORD_RESET)
    with app.app_context():
        db.session.execute(
            sa.update(OneTimeCode).values(
                expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            )
        )
        db.session.commit()
    response = set_new_password(client, code)
    assert response.status_code == 401
    assert RESET_CODE_REFUSED in response.get_data(as_text=True)
    assert _hash_of(app, account.user_id) == before


def _hash_of(app: Flask, user_id: int) -> str:
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        return user.password_hash


def test_step_two_needs_step_one_and_csrf(client: FlaskClient) -> None:
    response = client.get("/auth/reset/confirm")
    assert location(response) == "/auth/reset"
    assert "Start with your username" in client.get("/auth/reset").get_data(as_text=True)
    assert client.post("/auth/reset", data={"username": "someone"}).status_code == 400
    empty = post_form(client, "/auth/reset", {"username": ""})
    assert empty.status_code == 400


def test_reset_steps_are_rate_limited(
    app: Flask,
    app_overrides: dict[str, Any],
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    from ca_service.app import create_app

    account = make_employer()
    limited = create_app({**app_overrides, "LOGIN_RATE_LIMIT": "2 per minute"})
    try:
        client = limited.test_client()
        statuses = [
            post_form(client, "/auth/reset", {"username": account.username}).status_code
            for _ in range(3)
        ]
        assert statuses == [302, 302, 429]
        confirm = [set_new_password(client, "000000").status_code for _ in range(3)]
        assert confirm[2] == 429
    finally:
        with limited.app_context():
            db.session.remove()
            db.engine.dispose()
