"""Password sign-in: lockout, equal answers for unknown users, CSRF, rate limit, `next`,
sessions (regenerated, permanent, ended by a password change), sign-out, rehashing."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import statistics
import time

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth import service
from ca_service.auth.models import Role, User
from ca_service.db import db
from ca_service.errors import AuthenticationFailed, ValidationError
from tests.auth.flows import CSRF, csrf_token, load_user, location, login, post_form
from tests.conftest import CliInvoke, MakeUser


def _wrong_password() -> str:
    return "wrong-" + secrets.token_urlsafe(12)


def _flashes(page: str) -> list[str]:
    return re.findall(r'<div class="flash [a-z]+" role="(?:status|alert)">([^<]*)</div>', page)


def _actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.seq)))


def test_employer_signs_in_with_password_only(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    user, password = make_user(role=Role.EMPLOYER_ADMIN)
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
    response = login(client, user.username, password)
    assert location(response) == "/auth/home"
    # A fresh, permanent session (expires after SESSION_HOURS, not with the browser).
    cookie = response.headers["Set-Cookie"]
    assert "Expires=" in cookie
    assert "HttpOnly" in cookie
    with client.session_transaction() as session:
        assert "planted" not in session
    home = client.get("/auth/home").get_data(as_text=True)
    assert user.username in home
    assert "this is your first" in home
    assert "not required for this role" in home
    stored = load_user(app, user.username)
    assert stored.last_login_at is not None
    assert _actions(app) == ["auth.login"]

    # The next sign-in shows the previous one.
    other = app.test_client()
    login(other, user.username, password)
    assert f"{stored.last_login_at:%Y-%m-%d %H:%M} UTC" in other.get("/auth/home").get_data(
        as_text=True
    )


def test_lockout_after_failures_then_unlock(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    user, password = make_user()
    max_failures = int(app.extensions["ca_settings"]["LOGIN_MAX_FAILURES"])
    for _ in range(max_failures):
        refused = login(client, user.username, _wrong_password())
        assert refused.status_code == 401
        assert b"Wrong username or password." in refused.data

    locked = login(client, user.username, password)  # even the right password
    assert locked.status_code == 423
    text = locked.get_data(as_text=True)
    assert "locked" in text
    assert "Try again after" in text
    minutes = int(app.extensions["ca_settings"]["LOCKOUT_MINUTES"])
    assert f"(in {minutes} minutes)" in text  # the setting, not one more
    assert 'name="username"' in text  # the form again, not an error page
    actions = _actions(app)
    assert actions.count("auth.login_failed") == max_failures
    assert "auth.locked" in actions

    with app.app_context():  # time passes
        row = db.session.get(User, user.id)
        assert row is not None
        assert row.locked_until is not None
        row.locked_until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        db.session.commit()
    assert location(login(client, user.username, password)) == "/auth/home"
    stored = load_user(app, user.username)
    assert stored.failed_logins == 0
    assert stored.locked_until is None


def test_successful_sign_in_resets_the_failure_count(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    user, password = make_user()
    for _ in range(2):
        login(client, user.username, _wrong_password())
    assert load_user(app, user.username).failed_logins == 2
    login(client, user.username, password)
    assert load_user(app, user.username).failed_logins == 0


def test_unknown_user_gets_the_same_answer(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    user, _ = make_user()
    unknown = login(client, "nobody-" + secrets.token_hex(3), _wrong_password())
    wrong = login(client, user.username, _wrong_password())
    assert unknown.status_code == wrong.status_code == 401
    assert b"Wrong username or password." in unknown.data
    assert b"Wrong username or password." in wrong.data
    assert _flashes(unknown.get_data(as_text=True)) == _flashes(wrong.get_data(as_text=True))


@pytest.mark.production_password_hashing
def test_unknown_user_takes_as_long_as_a_known_one(app: Flask, make_user: MakeUser) -> None:
    user, _ = make_user()
    policy = service.LoginPolicy(max_failures=100, lockout=dt.timedelta(minutes=1))

    def duration(username: str) -> float:
        start = time.perf_counter()
        with pytest.raises(AuthenticationFailed):
            service.check_password(username=username, password=_wrong_password(), policy=policy)
        return time.perf_counter() - start

    with app.app_context():
        known = statistics.median(duration(user.username) for _ in range(3))
        unknown = statistics.median(duration("ghost-" + secrets.token_hex(3)) for _ in range(3))
    # Both verify an Argon2id hash; without the dummy hash the unknown case would take ~1 ms.
    assert unknown > 0.5 * known


def test_login_needs_a_csrf_token(client: FlaskClient, make_user: MakeUser) -> None:
    user, password = make_user()
    response = client.post("/auth/login", data={"username": user.username, "password": password})
    assert response.status_code == 400
    assert b"CSRF" in response.data
    forged = client.post(
        "/auth/login",
        data={"username": user.username, "password": password, "csrf_token": "forged"},
    )
    assert forged.status_code == 400
    assert client.get("/auth/home").status_code == 302  # not signed in


def test_login_posts_are_rate_limited(app: Flask, client: FlaskClient) -> None:
    limit = int(str(app.extensions["ca_settings"]["LOGIN_RATE_LIMIT"]).split()[0])
    token = csrf_token(client, "/auth/login")
    data = {"username": "nobody", "password": _wrong_password(), "csrf_token": token}
    statuses = [client.post("/auth/login", data=data).status_code for _ in range(limit + 1)]
    assert statuses[:limit] == [401] * limit
    assert statuses[limit] == 429
    blocked = client.post("/auth/login", data=data, headers={"Accept": "application/json"})
    assert blocked.status_code == 429
    assert blocked.json is not None
    assert "Too many attempts" in blocked.json["error"]["message"]
    # Another address is not affected.
    other = client.post("/auth/login", data=data, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 401
    # Reading the page is not limited.
    assert client.get("/auth/login").status_code == 200


def test_every_limit_wraps_a_view_and_no_request_pays_the_limiters_hooks(
    app: Flask, client: FlaskClient
) -> None:
    # ratelimit._without_request_hooks took Flask-Limiter's before_request check away: it
    # would only check application, default, blueprint and meta limits, which must stay none.
    limiter = app.extensions["auth_limiter"]
    assert limiter._check_request_limit not in app.before_request_funcs.get(None, [])
    # Nor any other hook of it: the header hook would only add the X-RateLimit headers (off)
    # and deduct limits with a deduct_when (none), the teardown only reset its request state.
    hooks = [
        *app.before_request_funcs.get(None, []),
        *app.after_request_funcs.get(None, []),
        *app.teardown_request_funcs.get(None, []),
    ]
    assert not [hook for hook in hooks if limiter in getattr(hook, "args", ())]
    assert not [hook for hook in hooks if getattr(hook, "__self__", None) is limiter]
    assert not limiter._headers_enabled
    decorated = limiter.limit_manager._decorated_limits
    assert decorated
    assert all(group.deduct_when is None for groups in decorated.values() for group in groups)
    for _ in range(2):  # hints would be learnt at the first request
        client.get("/auth/login")
        client.post("/auth/login", data={"username": "nobody", "password": "x"})
    manager = limiter.limit_manager
    assert manager.application_limits == []
    assert manager.default_limits == []
    assert not manager._blueprint_limits
    assert not manager._endpoint_hints
    assert not limiter._meta_limits


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example/x",
        "/\t/evil.example/x",
        " //evil.example/x",
        "javascript:alert(1)",
        "evil.example",
    ],
)
def test_next_never_redirects_off_site(
    client: FlaskClient, make_user: MakeUser, target: str
) -> None:
    user, password = make_user()
    page = client.get("/auth/login", query_string={"next": target})
    token = CSRF.search(page.get_data(as_text=True))
    assert token
    response = client.post(
        "/auth/login",
        data={"username": user.username, "password": password, "csrf_token": token.group(1)},
    )
    assert location(response) == "/auth/home"


def test_next_from_a_protected_page_is_kept(client: FlaskClient, make_user: MakeUser) -> None:
    user, password = make_user()
    redirect = location(client.get("/auth/password"))
    assert redirect == "/auth/login?next=%2Fauth%2Fpassword"
    page = client.get(redirect)
    token = CSRF.search(page.get_data(as_text=True))
    assert token
    response = client.post(
        "/auth/login",
        data={"username": user.username, "password": password, "csrf_token": token.group(1)},
    )
    assert location(response) == "/auth/password"


def test_logout_is_a_post_with_csrf(app: Flask, client: FlaskClient, make_user: MakeUser) -> None:
    user, password = make_user()
    login(client, user.username, password)
    assert client.get("/auth/logout").status_code == 405
    assert client.post("/auth/logout").status_code == 400  # no CSRF token
    assert client.get("/auth/home").status_code == 200  # still signed in
    response = post_form(client, "/auth/logout", {}, token_from="/auth/home")
    assert location(response) == "/auth/login"
    assert location(client.get("/auth/home")).startswith("/auth/login")
    assert _actions(app)[-1] == "auth.logout"


def test_password_change_ends_other_sessions(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    user, password = make_user()
    elsewhere = app.test_client()
    login(client, user.username, password)
    login(elsewhere, user.username, password)
    assert elsewhere.get("/auth/home").status_code == 200
    version = load_user(app, user.username).session_version

    new_password = secrets.token_urlsafe(16)
    wrong_current = post_form(
        client,
        "/auth/password",
        {"current": _wrong_password(), "password": new_password, "confirm": new_password},
    )
    assert wrong_current.status_code == 401
    assert b"current password is wrong" in wrong_current.data
    too_short = post_form(
        client, "/auth/password", {"current": password, "password": "x" * 5, "confirm": "x" * 5}
    )
    assert too_short.status_code == 400
    assert b"at least 12 characters" in too_short.data
    response = post_form(
        client,
        "/auth/password",
        {"current": password, "password": new_password, "confirm": new_password},
    )
    assert location(response) == "/auth/home"

    assert load_user(app, user.username).session_version == version + 1
    assert client.get("/auth/home").status_code == 200  # this session carries on
    assert location(elsewhere.get("/auth/home")).startswith("/auth/login")  # that one ended
    third = app.test_client()
    assert login(third, user.username, password).status_code == 401
    assert location(login(third, user.username, new_password)) == "/auth/home"
    assert "auth.password_changed" in _actions(app)


def test_disabled_account_is_signed_out_and_refused(
    app: Flask, client: FlaskClient, cli: CliInvoke, make_user: MakeUser
) -> None:
    user, password = make_user()
    login(client, user.username, password)
    assert cli("user", "disable", user.username).exit_code == 0
    assert location(client.get("/auth/home")).startswith("/auth/login")
    refused = login(client, user.username, password)
    assert refused.status_code == 401
    assert b"disabled" in refused.data
    assert cli("user", "enable", user.username).exit_code == 0
    assert location(login(client, user.username, password)) == "/auth/home"


@pytest.mark.production_password_hashing
def test_old_hash_parameters_are_upgraded_at_sign_in(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    user, password = make_user()
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(password)
    with app.app_context():
        db.session.execute(sa.update(User).where(User.id == user.id).values(password_hash=weak))
        db.session.commit()
    assert location(login(client, user.username, password)) == "/auth/home"
    upgraded = load_user(app, user.username).password_hash
    assert upgraded != weak
    assert upgraded.startswith("$argon2id$")
    assert not PasswordHasher().check_needs_rehash(upgraded)


def test_password_policy_messages() -> None:
    with pytest.raises(ValidationError, match="at least 12 characters"):
        service.check_password_policy("someone", "short")
    with pytest.raises(ValidationError, match="differ from the username"):
        service.check_password_policy("a-long-username", "A-Long-Username")
    service.check_password_policy("someone", secrets.token_urlsafe(12))
