"""TOTP for agency staff: asked at every sign-in, never accepted twice, counts toward lockout,
seed encrypted at rest."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth import totp
from ca_service.auth.models import Role, User
from ca_service.db import db
from ca_service.qr import qr_svg_data_uri
from tests.auth.flows import MakeOfficer, code_at, enter_code, load_user, location, login


@pytest.mark.parametrize("role", [Role.RA_OFFICER, Role.CA_ADMIN, Role.AUDITOR])
def test_agency_staff_need_a_code_at_every_sign_in(
    app: Flask, make_officer: MakeOfficer, role: Role
) -> None:
    officer = make_officer(role)
    for offset in (0, 1):  # two sign-ins, each with its own (later) code
        browser = app.test_client()
        assert location(login(browser, officer.user.username, officer.password)) == "/auth/totp"
        assert location(browser.get("/auth/home")) == "/auth/totp"  # password alone: no entry
        assert location(enter_code(browser, code_at(officer.seed, offset))) == "/auth/home"
        assert browser.get("/auth/home").status_code == 200


def test_a_code_is_never_accepted_twice(
    app: Flask, client: FlaskClient, make_officer: MakeOfficer
) -> None:
    officer = make_officer()
    code = code_at(officer.seed)
    login(client, officer.user.username, officer.password)
    assert location(enter_code(client, code)) == "/auth/home"

    replay = app.test_client()
    login(replay, officer.user.username, officer.password)
    refused = enter_code(replay, code)
    assert refused.status_code == 401
    assert b"already used" in refused.data
    # An older code (within the drift window) is refused too: steps only move forward.
    assert enter_code(replay, code_at(officer.seed, -1)).status_code == 401
    assert location(enter_code(replay, code_at(officer.seed, 1))) == "/auth/home"


def test_codes_outside_the_drift_window_are_refused(
    client: FlaskClient, make_officer: MakeOfficer
) -> None:
    officer = make_officer()
    login(client, officer.user.username, officer.password)
    assert enter_code(client, code_at(officer.seed, 3)).status_code == 401
    assert enter_code(client, "12345").status_code == 200  # too short: the form's own error
    assert location(enter_code(client, code_at(officer.seed))) == "/auth/home"


def test_wrong_codes_lock_the_account(
    app: Flask, client: FlaskClient, make_officer: MakeOfficer
) -> None:
    officer = make_officer()
    max_failures = int(app.extensions["ca_settings"]["LOGIN_MAX_FAILURES"])
    login(client, officer.user.username, officer.password)
    good = code_at(officer.seed)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    for _ in range(max_failures):
        assert enter_code(client, wrong).status_code == 401
    locked = enter_code(client, good)
    assert locked.status_code == 423
    assert b"locked" in locked.data
    assert login(app.test_client(), officer.user.username, officer.password).status_code == 423
    assert load_user(app, officer.user.username).locked_until is not None


def test_seed_is_encrypted_with_a_key_from_the_secret_key(
    app: Flask, make_officer: MakeOfficer
) -> None:
    officer = make_officer()
    stored = load_user(app, officer.user.username).totp_secret_encrypted
    assert stored is not None
    assert officer.seed not in stored
    assert totp.decrypt_seed(stored, app.config["SECRET_KEY"]) == officer.seed
    with pytest.raises(totp.SeedUnreadable):
        totp.decrypt_seed(stored, app.config["SECRET_KEY"] + "-another-key")
    # A fresh nonce each time: the same seed never encrypts to the same text.
    key = app.config["SECRET_KEY"]
    assert totp.encrypt_seed(officer.seed, key) != totp.encrypt_seed(officer.seed, key)


def test_qr_code_is_an_inline_svg() -> None:
    uri = totp.provisioning_uri(totp.new_seed(), "someone")
    assert uri.startswith("otpauth://totp/")
    assert qr_svg_data_uri(uri).startswith("data:image/svg+xml;base64,")


def test_unreadable_seed_gives_a_clear_message(
    app: Flask, client: FlaskClient, make_officer: MakeOfficer
) -> None:
    officer = make_officer()
    with app.app_context():
        row = db.session.get(User, officer.user.id)
        assert row is not None
        row.totp_secret_encrypted = totp.encrypt_seed(officer.seed, "an-earlier-secret-key")
        db.session.commit()
    login(client, officer.user.username, officer.password)
    refused = enter_code(client, code_at(officer.seed))
    assert refused.status_code == 401
    assert b"--remove-totp" in refused.data
