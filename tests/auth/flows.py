"""Browser-like steps through the sign-in pages (forms posted with their CSRF tokens)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyotp
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ca_service.auth.models import CodePurpose, OneTimeCode, User
from ca_service.db import db
from ca_service.outbox.models import Channel, OutboxMessage

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
ONE_TIME_PASSWORD = re.compile(r"shown once\): (\S+)")
SMS_CODE = re.compile(r"code is (\d{6})")


def csrf_token(client: FlaskClient, path: str) -> str:
    """The CSRF token of the first form on ``path``."""
    page = client.get(path)
    match = CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path} (status {page.status_code})"
    return match.group(1)


def post_form(
    client: FlaskClient, path: str, data: dict[str, str], token_from: str | None = None
) -> TestResponse:
    """Post ``data`` to ``path`` with a CSRF token read from ``token_from`` (default: path)."""
    token = csrf_token(client, token_from or path)
    return client.post(path, data={**data, "csrf_token": token})


def login(client: FlaskClient, username: str, password: str) -> TestResponse:
    return post_form(client, "/auth/login", {"username": username, "password": password})


def enter_code(client: FlaskClient, code: str) -> TestResponse:
    return post_form(client, "/auth/totp", {"code": code})


def enter_sms_code(client: FlaskClient, code: str) -> TestResponse:
    return post_form(client, "/auth/sms-code", {"code": code})


def sms_code_for(app: Flask, user_id: int, purpose: CodePurpose = CodePurpose.LOGIN) -> str:
    """The newest code of ``purpose`` sent to the user, read from its SMS in the outbox (found
    by the code's row: test employers often share one mobile number)."""
    with app.app_context():
        code_id = db.session.scalar(
            sa.select(OneTimeCode.id)
            .where(OneTimeCode.user_id == user_id, OneTimeCode.purpose == purpose)
            .order_by(OneTimeCode.id.desc())
            .limit(1)
        )
        assert code_id is not None, f"no {purpose.value} code was issued to user {user_id}"
        body = db.session.scalar(
            sa.select(OutboxMessage.body).where(
                OutboxMessage.channel == Channel.SMS, OutboxMessage.dedupe_key == f"code:{code_id}"
            )
        )
    match = SMS_CODE.search(body or "")
    assert match, body
    return match.group(1)


def wrong_code(code: str) -> str:
    """Another six-digit code."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


def sms_login(client: FlaskClient, username: str, password: str) -> TestResponse:
    """An employer administrator's sign-in: the password, then the code the SMS carried.

    Returns the answer to the code step (a redirect once signed in).
    """
    response = login(client, username, password)
    assert location(response) == "/auth/sms-code"
    user = load_user(client.application, username)
    return enter_sms_code(client, sms_code_for(client.application, user.id))


def location(response: TestResponse) -> str:
    """The redirect target's path (and query)."""
    assert response.status_code == 302, (response.status_code, response.get_data(as_text=True))
    return response.headers["Location"].removeprefix("http://localhost")


def code_at(seed: str, offset_steps: int = 0) -> str:
    """The TOTP code of the current 30-second step plus ``offset_steps``."""
    return str(pyotp.TOTP(seed).at(time.time() + 30 * offset_steps))


def load_user(app: Flask, username: str) -> User:
    """A detached copy of the user's row as stored now."""
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.username == username))
        assert user is not None
        db.session.expunge(user)
        return user


@dataclass(frozen=True)
class Officer:
    """An agency account (``make_officer``) with a set password and an enrolled authenticator."""

    user: User
    password: str
    seed: str


MakeOfficer = Callable[..., Officer]

#: ``create_account(role)`` runs `ca-service user create`; returns (username, one-time password).
CreateAccount = Callable[..., tuple[str, str]]
