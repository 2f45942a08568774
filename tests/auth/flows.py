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

from ca_service.auth.models import User
from ca_service.db import db

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
ONE_TIME_PASSWORD = re.compile(r"shown once\): (\S+)")


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
