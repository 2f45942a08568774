"""Bearer tokens: who gets one (employer administrators with the password and an SMS code,
agency staff with the password and a TOTP code), what the 401s look like, what ends a token,
and that neither the session cookie nor the wrong role opens the API."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth.models import ApiToken, CodePurpose, Role, User
from ca_service.db import db
from ca_service.outbox.models import Channel, OutboxMessage
from tests.api.conftest import (
    API,
    ApiEmployer,
    bearer,
    error_of,
    request_token,
    token_call,
    token_of,
)
from tests.auth.conftest import create_account  # noqa: F401  (fixture)
from tests.auth.flows import (
    CreateAccount,
    MakeOfficer,
    code_at,
    load_user,
    post_form,
    sms_code_for,
    wrong_code,
)
from tests.conftest import MakeUser
from tests.issuance.conftest import MakeEmployer, employer_login


def test_token_for_employer_and_its_shape(
    app: Flask, client: FlaskClient, api_employer: Callable[[], ApiEmployer]
) -> None:
    employer = api_employer()
    with app.app_context():
        row = db.session.scalar(sa.select(ApiToken))
        assert row is not None
        # Only the SHA-256 is stored, and the lifetime is API_TOKEN_HOURS (8).
        assert row.token_hash == hashlib.sha256(employer.token.encode()).hexdigest()
        lifetime = row.expires_at - row.created_at
        assert dt.timedelta(hours=8) - dt.timedelta(seconds=5) <= lifetime
        assert lifetime <= dt.timedelta(hours=8) + dt.timedelta(seconds=5)
    response = client.get(f"{API}/applications", headers=employer.headers)
    assert response.status_code == 200
    assert response.get_json() == {"applications": []}
    assert response.headers["Cache-Control"] == "no-store"


def _login_methods(app: Flask) -> list[str]:
    with app.app_context():
        details = db.session.scalars(
            sa.select(AuditEvent.details)
            .where(AuditEvent.action == "auth.login")
            .order_by(AuditEvent.seq)
        ).all()
    return [json.loads(d)["method"] for d in details]


def test_employer_needs_the_sms_code(
    app: Flask, client: FlaskClient, make_employer: MakeEmployer
) -> None:
    account = make_employer()
    credentials = {"username": account.username, "password": account.password}
    asked = token_call(client, **credentials)
    assert asked.status_code == 401
    assert asked.headers["WWW-Authenticate"].startswith("Bearer")
    error = error_of(asked)
    assert error["code"] == "sms_code_required"
    assert "sent by SMS to the reserved mobile number ending in 8000" in error["message"]
    assert "'sms_code'" in error["message"]
    assert "+8613800138000" not in error["message"]
    # The code was committed although the call failed, and its SMS is queued.
    code = sms_code_for(app, account.user_id)

    wrong = token_call(client, **credentials, sms_code=wrong_code(code))
    assert wrong.status_code == 401
    assert error_of(wrong)["message"] == "That code is wrong. Check the SMS and try again."
    assert load_user(app, account.username).failed_logins == 1

    token = token_of(token_call(client, **credentials, sms_code=code))
    assert client.get(f"{API}/applications", headers=bearer(token)).status_code == 200
    assert load_user(app, account.username).failed_logins == 0
    assert _login_methods(app) == ["password+sms"]
    with app.app_context():
        channels = db.session.scalars(
            sa.select(OutboxMessage.channel).where(OutboxMessage.dedupe_key.like("sign-in:%"))
        ).all()
    assert sorted(c.value for c in channels) == ["email", "sms"]

    # The code works once.
    replay = token_call(client, **credentials, sms_code=code)
    assert replay.status_code == 401
    assert "already used" in error_of(replay)["message"]
    # A wrong password is refused before any code is sent.
    with app.app_context():
        before = db.session.scalar(sa.select(sa.func.count()).select_from(OutboxMessage))
    refused = token_call(client, username=account.username, password="not the password")
    assert error_of(refused)["message"] == "Wrong username or password."
    with app.app_context():
        after = db.session.scalar(sa.select(sa.func.count()).select_from(OutboxMessage))
    assert after == before


def test_a_new_call_without_the_code_ends_the_old_code(
    app: Flask, client: FlaskClient, make_employer: MakeEmployer
) -> None:
    account = make_employer()
    credentials = {"username": account.username, "password": account.password}
    assert token_call(client, **credentials).status_code == 401
    first = sms_code_for(app, account.user_id)
    assert token_call(client, **credentials).status_code == 401
    second = sms_code_for(app, account.user_id)
    if first != second:
        assert token_call(client, **credentials, sms_code=first).status_code == 401
    assert token_call(client, **credentials, sms_code=second).status_code == 201
    with app.app_context():
        sent = db.session.scalars(
            sa.select(OutboxMessage.sensitive).where(
                OutboxMessage.channel == Channel.SMS, OutboxMessage.subject == "Sign-in code"
            )
        ).all()
    assert sent == [True, True]  # one SMS per call without the code, each blanked once sent


def test_wrong_sms_codes_lock_the_account(
    app: Flask, client: FlaskClient, make_employer: MakeEmployer
) -> None:
    account = make_employer()
    credentials = {"username": account.username, "password": account.password}
    max_failures = int(app.extensions["ca_settings"]["LOGIN_MAX_FAILURES"])
    assert token_call(client, **credentials).status_code == 401
    code = sms_code_for(app, account.user_id)
    statuses = [
        token_call(client, **credentials, sms_code=wrong_code(code)).status_code
        for _ in range(max_failures)
    ]
    assert statuses == [401] * (max_failures - 1) + [423]
    locked = token_call(client, **credentials, sms_code=code)
    assert locked.status_code == 423
    assert "locked" in error_of(locked)["message"]
    assert _login_methods(app) == []


def test_a_password_reset_code_does_not_sign_in(
    app: Flask, client: FlaskClient, make_employer: MakeEmployer
) -> None:
    account = make_employer()
    post_form(app.test_client(), "/auth/reset", {"username": account.username})
    reset_code = sms_code_for(app, account.user_id, CodePurpose.PASSWORD_RESET)
    credentials = {"username": account.username, "password": account.password}
    assert token_call(client, **credentials).status_code == 401
    if sms_code_for(app, account.user_id) != reset_code:
        assert token_call(client, **credentials, sms_code=reset_code).status_code == 401


def test_wrong_password_is_401_and_counts(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    user, _ = make_user()
    response = request_token(client, user.username, "not the password")
    assert response.status_code == 401
    assert error_of(response)["message"] == "Wrong username or password."
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert load_user(app, user.username).failed_logins == 1
    unknown = request_token(client, "nobody-here", "whatever password")
    assert unknown.status_code == 401


def test_officer_needs_a_totp_code(client: FlaskClient, make_officer: MakeOfficer) -> None:
    officer = make_officer()
    missing = request_token(client, officer.user.username, officer.password)
    assert missing.status_code == 401
    assert error_of(missing)["code"] == "totp_required"
    assert "totp_code" in error_of(missing)["message"]
    wrong = request_token(client, officer.user.username, officer.password, "000000")
    if code_at(officer.seed) != "000000":
        assert wrong.status_code == 401
    token = token_of(
        request_token(client, officer.user.username, officer.password, code_at(officer.seed))
    )
    assert client.get(f"{API}/review", headers=bearer(token)).status_code == 200
    assert _login_methods(client.application) == ["password+totp"]
    # The same code is never accepted twice.
    replay = request_token(client, officer.user.username, officer.password, code_at(officer.seed))
    assert replay.status_code == 401


def test_one_time_password_is_refused(
    client: FlaskClient,
    create_account: CreateAccount,  # noqa: F811
) -> None:
    username, one_time_password = create_account(Role.EMPLOYER_ADMIN)
    response = request_token(client, username, one_time_password)
    assert response.status_code == 403
    assert "set your own password" in error_of(response)["message"]


def test_missing_or_malformed_bearer_is_401(client: FlaskClient) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        response = client.get(f"{API}/applications", headers=headers)
        assert response.status_code == 401, headers
        assert error_of(response)["code"] == "invalid_token"
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="ca-service"')
    unknown = client.get(f"{API}/applications", headers=bearer("made-up"))
    assert unknown.status_code == 401
    assert 'error="invalid_token"' in unknown.headers["WWW-Authenticate"]


def _set_token(app: Flask, token: str, **values: Any) -> None:
    with app.app_context():
        db.session.execute(
            sa.update(ApiToken)
            .where(ApiToken.token_hash == hashlib.sha256(token.encode()).hexdigest())
            .values(**values)
        )
        db.session.commit()


def test_expired_revoked_and_disabled_tokens_are_401(
    app: Flask, client: FlaskClient, api_employer: Callable[[], ApiEmployer]
) -> None:
    expired, revoked, disabled = api_employer(), api_employer(), api_employer()
    _set_token(app, expired.token, expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    response = client.get(f"{API}/applications", headers=expired.headers)
    assert response.status_code == 401
    assert "expired" in error_of(response)["message"]

    assert client.delete(f"{API}/auth/token", headers=revoked.headers).status_code == 204
    response = client.get(f"{API}/applications", headers=revoked.headers)
    assert response.status_code == 401
    assert "revoked" in error_of(response)["message"]
    assert client.delete(f"{API}/auth/token", headers=revoked.headers).status_code == 401

    with app.app_context():
        user = db.session.get(User, disabled.account.user_id)
        assert user is not None
        user.disabled = True
        db.session.commit()
    assert client.get(f"{API}/applications", headers=disabled.headers).status_code == 401


def test_session_cookie_does_not_authenticate_the_api(
    client: FlaskClient, api_employer: Callable[[], ApiEmployer]
) -> None:
    employer = api_employer()
    employer_login(client, employer.account)
    assert client.get("/applications/").status_code == 200  # the web session works
    response = client.get(f"{API}/applications")
    assert response.status_code == 401
    # Bearer calls need no CSRF token, with or without a session cookie.
    created = client.post(
        f"{API}/applications", json={"key_source": "csr"}, headers=employer.headers
    )
    assert created.status_code == 201


def test_roles_are_enforced(
    client: FlaskClient,
    api_employer: Callable[[], ApiEmployer],
    officer_token: Callable[[], str],
) -> None:
    employer = api_employer()
    for path in (f"{API}/review", f"{API}/review/1"):
        response = client.get(path, headers=employer.headers)
        assert response.status_code == 403, path
        assert error_of(response)["code"] == "forbidden"
    response = client.post(f"{API}/review/1/approve", headers=employer.headers)
    assert response.status_code == 403
    officer = bearer(officer_token())
    assert client.get(f"{API}/applications", headers=officer).status_code == 403
    response = client.post(f"{API}/applications", json={"key_source": "csr"}, headers=officer)
    assert response.status_code == 403


def test_token_requests_are_rate_limited(
    app: Flask, app_overrides: dict[str, Any], make_user: MakeUser
) -> None:
    from ca_service.app import create_app

    limited = create_app({**app_overrides, "LOGIN_RATE_LIMIT": "2 per minute"})
    try:
        client = limited.test_client()
        user, _ = make_user()
        statuses = [request_token(client, user.username, "wrong").status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
        response = request_token(client, user.username, "wrong")
        assert error_of(response)["code"] == "too_many_requests"
    finally:
        with limited.app_context():
            db.session.remove()
            db.engine.dispose()
