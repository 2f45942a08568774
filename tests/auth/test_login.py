"""Sign-in: one-time password, forced password change, TOTP, lockout, CSRF, rate limits."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth.models import Role, User
from ca_service.db import db
from tests.conftest import CliInvoke, MakeUser

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    match = CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def post_form(client: FlaskClient, path: str, data: dict[str, str]) -> Any:
    return client.post(path, data={**data, "csrf_token": csrf_token(client, path)})


def login(client: FlaskClient, username: str, password: str) -> Any:
    return post_form(client, "/auth/login", {"username": username, "password": password})


def _user(app: Flask, username: str) -> User:
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.username == username))
        assert user is not None
        db.session.expunge(user)
        return user


def _code_for(seed: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(seed).at(time.time() + 30 * offset_steps)


def test_first_login_forces_password_then_totp(
    app: Flask, client: FlaskClient, cli: CliInvoke
) -> None:
    created = cli(
        "user",
        "create",
        "--username",
        "officer1",
        "--email",
        "o@example.test",
        "--full-name",
        "Officer One",
        "--role",
        "ra_officer",
    )
    assert created.exit_code == 0, created.output
    one_time = re.search(r"shown once\): (\S+)", created.output)
    assert one_time
    assert _user(app, "officer1").password_hash.startswith("$argon2id$")

    response = login(client, "officer1", one_time.group(1))
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/auth/set-password")
    # Half signed in: no other page is reachable yet.
    assert client.get("/auth/home").status_code == 302

    new_password = secrets.token_urlsafe(16)
    weak = post_form(client, "/auth/set-password", {"password": "short", "confirm": "short"})
    assert weak.status_code == 400
    response = post_form(
        client, "/auth/set-password", {"password": new_password, "confirm": new_password}
    )
    assert response.headers["Location"].endswith("/auth/totp/enrol")

    page = client.get("/auth/totp/enrol").get_data(as_text=True)
    assert "data:image/svg+xml;base64," in page  # the QR code
    seed_match = re.search(r"<code>([A-Z2-7]+)</code>", page)
    assert seed_match
    seed = seed_match.group(1)
    assert post_form(client, "/auth/totp/enrol", {"code": "000000"}).status_code == 400
    response = post_form(client, "/auth/totp/enrol", {"code": _code_for(seed)})
    assert response.headers["Location"].endswith("/auth/home")
    assert client.get("/auth/home").status_code == 200
    stored = _user(app, "officer1")
    assert stored.totp_secret_encrypted
    assert seed not in stored.totp_secret_encrypted  # encrypted at rest

    # The one-time password no longer works; the new one needs a TOTP code every time.
    fresh = app.test_client()
    assert login(fresh, "officer1", one_time.group(1)).status_code == 401
    response = login(fresh, "officer1", new_password)
    assert response.headers["Location"].endswith("/auth/totp")
    assert fresh.get("/auth/home").status_code == 302
    # The code used at enrolment cannot be replayed; the next one works.
    assert post_form(fresh, "/auth/totp", {"code": _code_for(seed)}).status_code == 401
    response = post_form(fresh, "/auth/totp", {"code": _code_for(seed, 1)})
    assert response.headers["Location"].endswith("/auth/home")
    assert fresh.get("/auth/home").status_code == 200


def test_employer_admin_needs_no_totp(client: FlaskClient, make_user: MakeUser) -> None:
    user, password = make_user(role=Role.EMPLOYER_ADMIN)
    response = login(client, user.username, password)
    assert response.headers["Location"].endswith("/auth/home")
    assert user.username in client.get("/auth/home").get_data(as_text=True)


def test_lockout_after_failures(app: Flask, client: FlaskClient, make_user: MakeUser) -> None:
    user, password = make_user()
    for _ in range(5):
        assert login(client, user.username, "wrong-" + secrets.token_hex(4)).status_code == 401
    locked = login(client, user.username, password)
    assert locked.status_code == 423
    assert b"locked" in locked.data
    with app.app_context():
        row = db.session.get(User, user.id)
        assert row is not None
        assert row.locked_until is not None
        row.locked_until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # time passes
        db.session.commit()
        actions = list(db.session.scalars(sa.select(AuditEvent.action)))
    assert actions.count("auth.login_failed") == 5
    assert "auth.locked" in actions
    assert login(client, user.username, password).status_code == 302


def test_unknown_user_same_message(client: FlaskClient, make_user: MakeUser) -> None:
    user, _ = make_user()
    unknown = login(client, "nobody-" + secrets.token_hex(3), "whatever-password")
    wrong = login(client, user.username, "whatever-password")
    assert unknown.status_code == wrong.status_code == 401
    assert b"Wrong username or password." in unknown.data
    assert b"Wrong username or password." in wrong.data


def test_csrf_required(client: FlaskClient, make_user: MakeUser) -> None:
    user, password = make_user()
    response = client.post("/auth/login", data={"username": user.username, "password": password})
    assert response.status_code == 400
    assert b"CSRF" in response.data


def test_rate_limit(app: Flask, client: FlaskClient) -> None:
    statuses = [login(client, "nobody", "not-the-password").status_code for _ in range(21)]
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429


def test_expired_one_time_password(app: Flask, client: FlaskClient, cli: CliInvoke) -> None:
    created = cli(
        "user",
        "create",
        "--username",
        "late",
        "--email",
        "l@example.test",
        "--full-name",
        "Late",
        "--role",
        "auditor",
    )
    one_time = re.search(r"shown once\): (\S+)", created.output)
    assert one_time
    with app.app_context():
        db.session.execute(
            sa.update(User)
            .where(User.username == "late")
            .values(temporary_password_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        )
        db.session.commit()
    response = login(client, "late", one_time.group(1))
    assert response.status_code == 401
    assert b"expired" in response.data


def test_password_change_ends_other_sessions(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    user, password = make_user()
    login(client, user.username, password)
    assert client.get("/auth/home").status_code == 200
    with app.app_context():
        row = db.session.get(User, user.id)
        assert row is not None
        row.session_version += 1  # what change_password and reset do
        db.session.commit()
    assert client.get("/auth/home").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "javascript:x"])
def test_next_never_redirects_off_site(
    client: FlaskClient, make_user: MakeUser, target: str
) -> None:
    user, password = make_user()
    client.get("/auth/login", query_string={"next": target})
    path = "/auth/login"
    token = CSRF.search(client.get(path).get_data(as_text=True))
    assert token
    response = client.post(
        path, data={"username": user.username, "password": password, "csrf_token": token.group(1)}
    )
    assert response.headers["Location"].endswith("/auth/home")


def test_next_local_path_kept(client: FlaskClient, make_user: MakeUser) -> None:
    user, password = make_user()
    page = client.get("/auth/login", query_string={"next": "/pki/"})
    token = CSRF.search(page.get_data(as_text=True))
    assert token
    response = client.post(
        "/auth/login",
        data={"username": user.username, "password": password, "csrf_token": token.group(1)},
    )
    assert response.headers["Location"].endswith("/pki/")


def test_logout_is_post_with_csrf(client: FlaskClient, make_user: MakeUser) -> None:
    user, password = make_user()
    login(client, user.username, password)
    assert client.get("/auth/logout").status_code == 405
    assert client.post("/auth/logout").status_code == 400  # no CSRF token
    token = CSRF.search(client.get("/auth/home").get_data(as_text=True))
    assert token
    assert client.post("/auth/logout", data={"csrf_token": token.group(1)}).status_code == 302
    assert client.get("/auth/home").status_code == 302


def test_user_cli_reset_and_disable(app: Flask, cli: CliInvoke, make_user: MakeUser) -> None:
    user, _ = make_user()
    reset = cli("user", "reset", user.username)
    assert reset.exit_code == 0
    assert "shown once" in reset.output
    assert _user(app, user.username).password_is_temporary
    assert cli("user", "disable", user.username).exit_code == 0
    assert _user(app, user.username).disabled
    listing = cli("user", "list")
    assert user.username in listing.output
    assert "disabled" in listing.output
    duplicate = cli(
        "user",
        "create",
        "--username",
        user.username,
        "--email",
        "x@example.test",
        "--full-name",
        "X",
        "--role",
        "auditor",
    )
    assert duplicate.exit_code == 1
    assert "taken" in duplicate.output
