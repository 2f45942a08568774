"""`ca-service user ...` and the account services: create, reset, disable, list, audit."""

from __future__ import annotations

import re
import secrets

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth import service
from ca_service.auth.models import Role
from ca_service.db import db
from ca_service.errors import Conflict, ValidationError
from tests.auth.flows import (
    ONE_TIME_PASSWORD,
    CreateAccount,
    MakeOfficer,
    load_user,
    location,
    login,
    post_form,
)
from tests.conftest import CliInvoke, MakeUser


def test_create_user_service_returns_the_one_time_password(app: Flask) -> None:
    with app.app_context():
        user, one_time = service.create_user(
            actor="tests",
            username="first-admin",
            email="admin@example.test",
            full_name="First Admin",
            role=Role.CA_ADMIN,
            one_time_password_hours=2,
        )
        db.session.commit()
        assert len(one_time) >= 16
        assert one_time not in user.password_hash
        assert user.password_is_temporary
        assert user.temporary_password_expires_at is not None
        with pytest.raises(Conflict, match="taken"):
            service.create_user(
                actor="tests",
                username="first-admin",
                email="other@example.test",
                full_name="Other",
                role=Role.AUDITOR,
                one_time_password_hours=2,
            )


@pytest.mark.parametrize(
    ("username", "email", "full_name", "message"),
    [
        ("", "a@example.test", "A", "username"),
        ("has space", "a@example.test", "A", "username"),
        ("x" * 65, "a@example.test", "A", "username"),
        ("fine", "not-an-address", "A", "e-mail"),
        ("fine", "a@example.test", "  ", "full name"),
    ],
)
def test_create_user_validates(
    app: Flask, username: str, email: str, full_name: str, message: str
) -> None:
    with app.app_context(), pytest.raises(ValidationError, match=message):
        service.create_user(
            actor="tests",
            username=username,
            email=email,
            full_name=full_name,
            role=Role.EMPLOYER_ADMIN,
            one_time_password_hours=1,
        )


def test_reset_gives_a_new_one_time_password_and_unlocks(
    app: Flask, client: FlaskClient, cli: CliInvoke, make_user: MakeUser
) -> None:
    user, password = make_user()
    for _ in range(int(app.extensions["ca_settings"]["LOGIN_MAX_FAILURES"])):
        login(client, user.username, "wrong-" + secrets.token_hex(8))
    assert login(client, user.username, password).status_code == 423
    assert "locked until" in cli("user", "list").output

    reset = cli("user", "reset", user.username)
    assert reset.exit_code == 0, reset.output
    match = ONE_TIME_PASSWORD.search(reset.output)
    assert match
    stored = load_user(app, user.username)
    assert stored.password_is_temporary
    assert stored.locked_until is None
    assert login(client, user.username, password).status_code == 401  # the old one is gone
    assert location(login(client, user.username, match.group(1))) == "/auth/set-password"


def test_reset_can_remove_a_lost_authenticator(
    app: Flask, client: FlaskClient, cli: CliInvoke, make_officer: MakeOfficer
) -> None:
    officer = make_officer()
    reset = cli("user", "reset", "--remove-totp", officer.user.username)
    match = ONE_TIME_PASSWORD.search(reset.output)
    assert match
    assert load_user(app, officer.user.username).totp_secret_encrypted is None
    login(client, officer.user.username, match.group(1))
    new_password = secrets.token_urlsafe(16)
    response = post_form(
        client, "/auth/set-password", {"password": new_password, "confirm": new_password}
    )
    assert location(response) == "/auth/totp/enrol"  # enrols a new authenticator


def test_user_cli_disable_list_and_errors(app: Flask, cli: CliInvoke, make_user: MakeUser) -> None:
    user, _ = make_user()
    assert cli("user", "disable", user.username).exit_code == 0
    assert load_user(app, user.username).disabled
    listing = cli("user", "list")
    assert re.search(rf"{user.username}\s+employer_admin\s+disabled", listing.output)

    missing = cli("user", "reset", "nobody-" + secrets.token_hex(3))
    assert missing.exit_code == 1
    assert "no user" in missing.output
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
    bad_role = cli(
        "user",
        "create",
        "--username",
        "u1",
        "--email",
        "u@x.test",
        "--full-name",
        "U",
        "--role",
        "root",
    )
    assert bad_role.exit_code == 2


def test_account_events_are_audited_without_secrets(
    app: Flask, client: FlaskClient, cli: CliInvoke, create_account: CreateAccount
) -> None:
    username, one_time = create_account(Role.EMPLOYER_ADMIN)
    login(client, username, "wrong-" + secrets.token_hex(8))
    login(client, username, one_time)
    new_password = secrets.token_urlsafe(16)
    post_form(client, "/auth/set-password", {"password": new_password, "confirm": new_password})
    post_form(client, "/auth/logout", {}, token_from="/auth/home")
    reset = cli("user", "reset", username)
    cli("user", "disable", username)

    with app.app_context():
        events = list(db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)))
    assert [e.action for e in events] == [
        "user.created",
        "auth.login_failed",
        "auth.password_changed",
        "auth.login",
        "auth.logout",
        "user.password_reset",
        "user.disabled",
    ]
    assert events[0].actor == "cli"
    assert events[1].actor == "anonymous"
    assert events[3].actor == f"user:{username}"
    reset_password = ONE_TIME_PASSWORD.search(reset.output)
    assert reset_password
    for event in events:
        for secret in (one_time, new_password, reset_password.group(1)):
            assert secret not in event.details
            assert secret not in event.target
