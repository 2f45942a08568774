"""First sign-in: one-time password, forced password change, TOTP enrolment; pending state."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth import totp
from ca_service.auth.models import Role, User
from ca_service.auth.views import PENDING_SECONDS, PENDING_SINCE
from ca_service.db import db
from tests.auth.flows import (
    CreateAccount,
    code_at,
    enter_code,
    load_user,
    location,
    login,
    post_form,
)

SEED_ON_PAGE = re.compile(r"<code>([A-Z2-7]+)</code>")


def test_officer_first_sign_in_end_to_end(
    app: Flask, client: FlaskClient, create_account: CreateAccount
) -> None:
    username, one_time = create_account(Role.RA_OFFICER)
    assert len(one_time) >= 16
    assert load_user(app, username).password_hash.startswith("$argon2id$")

    assert location(login(client, username, one_time)) == "/auth/set-password"
    # Half signed in: not authenticated, and every other page leads back to the forced step.
    for path in ("/auth/home", "/", "/auth/login", "/auth/totp"):
        assert location(client.get(path)) == "/auth/set-password", path

    new_password = secrets.token_urlsafe(16)
    weak = post_form(client, "/auth/set-password", {"password": "short", "confirm": "short"})
    assert weak.status_code == 400
    assert b"at least 12 characters" in weak.data
    response = post_form(
        client, "/auth/set-password", {"password": new_password, "confirm": new_password}
    )
    assert location(response) == "/auth/totp/enrol"
    assert location(client.get("/auth/home")) == "/auth/totp/enrol"

    page = client.get("/auth/totp/enrol").get_data(as_text=True)
    assert 'src="data:image/svg+xml;base64,' in page  # the QR code, inline
    seed_match = SEED_ON_PAGE.search(page)
    assert seed_match
    seed = seed_match.group(1)
    assert totp.provisioning_uri(seed, username).startswith("otpauth://totp/")
    wrong = post_form(client, "/auth/totp/enrol", {"code": "000000"})
    assert wrong.status_code == 400
    enrolment_code = code_at(seed)
    response = post_form(client, "/auth/totp/enrol", {"code": enrolment_code})
    assert location(response) == "/auth/home"
    home = client.get("/auth/home").get_data(as_text=True)
    assert "Test ra_officer" in home
    assert "ra officer" in home
    assert "enrolled" in home

    stored = load_user(app, username)
    assert stored.totp_secret_encrypted
    assert seed not in stored.totp_secret_encrypted  # encrypted at rest
    assert not stored.password_is_temporary
    assert stored.last_login_at is not None

    # The one-time password is dead; the new password needs a code, and the enrolment code
    # (already used) is refused.
    fresh = app.test_client()
    refused = login(fresh, username, one_time)
    assert refused.status_code == 401
    assert b"Wrong username or password." in refused.data
    assert location(login(fresh, username, new_password)) == "/auth/totp"
    assert enter_code(fresh, enrolment_code).status_code == 401
    assert location(enter_code(fresh, code_at(seed, 1))) == "/auth/home"
    assert fresh.get("/auth/home").status_code == 200


def test_employer_one_time_password_works_once(
    app: Flask, client: FlaskClient, create_account: CreateAccount
) -> None:
    username, one_time = create_account(Role.EMPLOYER_ADMIN)
    assert location(login(client, username, one_time)) == "/auth/set-password"
    new_password = secrets.token_urlsafe(16)
    response = post_form(
        client, "/auth/set-password", {"password": new_password, "confirm": new_password}
    )
    assert location(response) == "/auth/home"  # employers need no TOTP
    assert client.get("/auth/home").status_code == 200

    other = app.test_client()
    assert login(other, username, one_time).status_code == 401
    assert location(login(other, username, new_password)) == "/auth/home"


def test_expired_one_time_password_refused(
    app: Flask, client: FlaskClient, create_account: CreateAccount
) -> None:
    username, one_time = create_account(Role.AUDITOR)
    with app.app_context():
        db.session.execute(
            sa.update(User)
            .where(User.username == username)
            .values(temporary_password_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        )
        db.session.commit()
    response = login(client, username, one_time)
    assert response.status_code == 401
    text = response.get_data(as_text=True)
    assert "expired" in text
    assert "reset" in text
    assert client.get("/auth/set-password").status_code == 302  # not pending either


def test_cancel_abandons_a_pending_sign_in(
    client: FlaskClient, create_account: CreateAccount
) -> None:
    username, one_time = create_account()
    assert location(login(client, username, one_time)) == "/auth/set-password"
    response = post_form(client, "/auth/cancel", {}, token_from="/auth/set-password")
    assert location(response) == "/auth/login"
    assert client.get("/auth/login").status_code == 200
    assert location(client.get("/auth/set-password")) == "/auth/login"


def test_pending_sign_in_expires(client: FlaskClient, create_account: CreateAccount) -> None:
    username, one_time = create_account()
    login(client, username, one_time)
    with client.session_transaction() as session:
        session[PENDING_SINCE] = time.time() - PENDING_SECONDS - 1
    assert location(client.get("/auth/set-password")) == "/auth/login"
    page = client.get("/auth/login")
    assert page.status_code == 200
    assert b"took too long" in page.data


def test_pending_stage_cannot_be_skipped(
    client: FlaskClient, create_account: CreateAccount
) -> None:
    # Posting straight to a later step does nothing for a browser that owes an earlier one.
    username, one_time = create_account(Role.CA_ADMIN)
    login(client, username, one_time)
    response = post_form(client, "/auth/totp", {"code": "123456"}, token_from="/auth/set-password")
    assert location(response) == "/auth/set-password"
    assert location(client.get("/auth/home")) == "/auth/set-password"
