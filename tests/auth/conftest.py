"""Fixtures of the auth tests, on top of the shared ``app``/``client``/``cli``/``make_user``."""

from __future__ import annotations

import datetime as dt
import secrets

import pyotp
import pytest
from flask import Flask

from ca_service.auth import totp
from ca_service.auth.models import Role, User
from ca_service.db import db
from tests.auth.flows import ONE_TIME_PASSWORD, CreateAccount, MakeOfficer, Officer
from tests.auth.tls_fixtures import server_tls
from tests.conftest import CliInvoke, MakeUser

# Fixtures of other modules, offered to every test here by name.
__all__ = ["server_tls"]


@pytest.fixture
def make_officer(app: Flask, make_user: MakeUser) -> MakeOfficer:
    """Create an agency user (RA officer unless told) whose TOTP is already enrolled."""

    def make(role: Role = Role.RA_OFFICER) -> Officer:
        assert role.needs_totp
        user, password = make_user(role=role)
        seed = pyotp.random_base32()
        with app.app_context():
            row = db.session.get(User, user.id)
            assert row is not None
            row.totp_secret_encrypted = totp.encrypt_seed(seed, app.config["SECRET_KEY"])
            row.totp_enabled_at = dt.datetime.now(dt.UTC)
            db.session.commit()
        return Officer(user=user, password=password, seed=seed)

    return make


@pytest.fixture
def create_account(cli: CliInvoke) -> CreateAccount:
    """`ca-service user create` for a fresh username; returns (username, one-time password)."""

    def create(role: Role = Role.EMPLOYER_ADMIN) -> tuple[str, str]:
        username = f"{role.value.split('_')[0]}-{secrets.token_hex(3)}"
        result = cli(
            "user",
            "create",
            "--username",
            username,
            "--email",
            f"{username}@example.test",
            "--full-name",
            f"Test {role.value}",
            "--role",
            role.value,
        )
        assert result.exit_code == 0, result.output
        match = ONE_TIME_PASSWORD.search(result.output)
        assert match, result.output
        return username, match.group(1)

    return create
