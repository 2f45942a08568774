"""Bearer tokens: who gets one, what the 401s look like, what ends a token, and that neither
the session cookie nor the wrong role opens the API."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.models import ApiToken, Role, User
from ca_service.db import db
from tests.api.conftest import API, ApiEmployer, bearer, error_of, request_token, token_of
from tests.auth.conftest import create_account  # noqa: F401  (fixture)
from tests.auth.flows import CreateAccount, MakeOfficer, code_at, load_user, login
from tests.conftest import MakeUser


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
    signed_in = login(client, employer.account.username, employer.account.password)
    assert signed_in.status_code == 302
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
