"""Employer registration: numbers validated with python-stdnum, duplicates refused, the mobile
number confirmed with a one-time SMS code from the outbox before anything else."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.models import OneTimeCode
from ca_service.db import db
from ca_service.employers.models import Employer
from tests.auth.flows import location, login, post_form
from tests.conftest import CliInvoke
from tests.issuance.conftest import new_number
from tests.issuance.test_flow import register

CODE = re.compile(r"code is (\d{6})")


def codes_sent(cli: CliInvoke) -> list[str]:
    result = cli("outbox", "list", "--to", "+8613800138000", "--limit", "100")
    assert result.exit_code == 0, result.output
    return CODE.findall(result.output)  # newest first


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("registration_number", "91350100M000100Y0", "not a valid registration number"),
        ("registration_number", "91110000600037341A", "check digit is invalid"),
        ("legal_representative_id", "110101199003070001", "not a valid resident ID number"),
        ("mobile", "call me", "is not a mobile number"),
        ("email", "nobody", "is not an e-mail address"),
        ("legal_name", "N" * 65, "64 characters"),
    ],
    ids=["uscc-length", "uscc-check-digit", "ric", "mobile", "email", "legal-name"],
)
def test_bad_fields_are_refused_with_what_is_wrong(
    app: Flask, client: FlaskClient, field: str, value: str, message: str
) -> None:
    status, text = register(client, new_number(), **{field: value})
    assert status == 400
    assert message in text
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Employer)) == 0


def test_short_password_and_duplicate_number(app: Flask, client: FlaskClient) -> None:
    number = new_number()
    status, text = register(client, number, password="short", confirm="short")
    assert status == 400
    assert "at least 12 characters" in text
    assert register(client, number)[0] == 302
    other = app.test_client()
    status, text = register(other, number.lower())  # the same number, typed differently
    assert status == 409
    assert "already registered" in text


def test_the_mobile_number_is_confirmed_before_anything_else(
    app: Flask, client: FlaskClient, cli: CliInvoke
) -> None:
    number = new_number()
    assert register(client, number, legal_representative_id="11010519491231002X")[0] == 302
    assert location(client.get("/applications/")) == "/auth/confirm-mobile"
    (first,) = codes_sent(cli)

    # A new code replaces the old one.
    response = post_form(
        client, "/auth/confirm-mobile/resend", {}, token_from="/auth/confirm-mobile"
    )
    assert location(response) == "/auth/confirm-mobile"
    second = codes_sent(cli)[0]
    wrong = f"{(int(second) + 1) % 1_000_000:06d}"
    assert post_form(client, "/auth/confirm-mobile", {"code": wrong}).status_code == 401
    if first != second:
        assert post_form(client, "/auth/confirm-mobile", {"code": first}).status_code == 401

    # A fresh browser signing in with the password is held at the same step.
    other = app.test_client()
    assert location(login(other, number, "a long enough password")) == "/auth/confirm-mobile"

    assert location(post_form(client, "/auth/confirm-mobile", {"code": second})) == "/auth/home"
    assert client.get("/applications/").status_code == 200
    with app.app_context():
        employer = db.session.scalar(
            sa.select(Employer).where(Employer.registration_number == number)
        )
        assert employer is not None
        assert employer.mobile_confirmed_at is not None
        assert employer.legal_representative_id == "11010519491231002X"
        # Codes are stored as keyed hashes, never in clear.
        hashes = db.session.scalars(sa.select(OneTimeCode.code_hash)).all()
        assert second not in hashes
        assert all(len(h) == 64 for h in hashes)


def test_too_many_wrong_codes_burn_the_code(client: FlaskClient, cli: CliInvoke) -> None:
    assert register(client, new_number())[0] == 302
    code = codes_sent(cli)[0]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert post_form(client, "/auth/confirm-mobile", {"code": wrong}).status_code == 401
    response = post_form(client, "/auth/confirm-mobile", {"code": code})
    assert response.status_code == 401
    assert "Too many wrong codes" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("registration_number", "is not a valid registration number"),
        ("legal_representative_id", "is not a valid resident ID number"),
        ("mobile", "is not a mobile number"),
        ("email", "is not an e-mail address"),
    ],
)
def test_a_huge_value_is_quoted_short_in_the_error(
    client: FlaskClient, field: str, message: str
) -> None:
    huge = "9" * 200_000
    # The page names the limit and leaves the field empty rather than filled with 200 kB.
    status, text = register(client, new_number(), **{field: huge})
    assert status == 400
    assert "cannot be longer than" in text
    assert len(text) < 20_000
    reply = client.post(
        "/api/v1/employers",
        json={
            "registration_number": new_number(),
            "legal_name": "Fujian Example Trading Co., Ltd.",
            "administrator_name": "Li Hua",
            "mobile": "+86 138 0013 8000",
            "email": "hr@example.test",
            "password": "a long enough password",
            field: huge,
        },
    )
    assert reply.status_code == 400
    error = reply.get_json()["error"]["message"]
    assert message in error
    assert f"'{'9' * 64}…'" in error  # the first 64 characters, quoted
    assert len(reply.data) < 1_000
