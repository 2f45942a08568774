"""Officers find a certificate to revoke by serial or employer: RA officers in the review queue
and on the certificate search, CA administrators (who have no review queue) on the search."""

from __future__ import annotations

import html
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.models import Role
from tests.auth.flows import MakeOfficer, code_at, csrf_token, enter_code, location, login
from tests.issuance.conftest import MakeEmployer
from tests.revocation.test_portal import (  # noqa: F401  (fixtures used by name)
    IssuedApplication,
    issued,
    make_employer,
    make_officer,
    officer_client,
    seal_ca,
    stored,
    trusted_seal_ca,
)

FIND = "/officer/certificates/"


def _ca_admin(app: Flask, make_officer: MakeOfficer) -> FlaskClient:  # noqa: F811
    admin = make_officer(Role.CA_ADMIN)
    client = app.test_client()
    login(client, admin.user.username, admin.password)
    assert enter_code(client, code_at(admin.seed)).status_code == 302
    return client


def test_a_ca_administrator_finds_by_serial_or_employer_and_revokes(
    app: Flask,
    issued: IssuedApplication,  # noqa: F811
    make_officer: MakeOfficer,  # noqa: F811
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    admin = _ca_admin(app, make_officer)
    other = make_employer()  # an employer without a certificate: never listed
    for search in (f"0x{issued.serial.upper()}", issued.owner.number.lower(), "test employer"):
        page = admin.get(FIND, query_string={"q": search})
        assert page.status_code == 200, search
        text = page.get_data(as_text=True)
        assert issued.serial in text, search
        assert other.number not in text
    nothing = admin.get(FIND, query_string={"q": "no such employer"}).get_data(as_text=True)
    assert issued.serial not in nothing
    assert admin.get(FIND, query_string={"q": "x" * 101}).status_code == 400

    token = csrf_token(admin, FIND)
    response = admin.post(
        f"/officer/certificates/{issued.serial}/revoke",
        data={"csrf_token": token, "reason": "keyCompromise"},
    )
    assert response.status_code == 302
    assert location(response) == f"{FIND}?q={issued.serial}"
    assert stored(app, issued.serial).revocation_reason == "keyCompromise"
    after = html.unescape(admin.get(location(response)).get_data(as_text=True))
    assert f"Certificate {issued.serial} is revoked (keyCompromise)" in after
    assert 'name="reason"' not in after  # revoked for good: no form any more


def test_the_review_queue_finds_an_application_by_its_certificate_serial(
    issued: IssuedApplication,  # noqa: F811
    officer_client: Callable[..., FlaskClient],  # noqa: F811
) -> None:
    officer = officer_client()
    page = officer.get(
        "/officer/applications/", query_string={"q": issued.serial.upper(), "status": "all"}
    )
    assert page.status_code == 200
    assert f"/officer/applications/{issued.application_id}" in page.get_data(as_text=True)
    elsewhere = officer.get(
        "/officer/applications/", query_string={"q": "ffffffffff", "status": "all"}
    )
    assert f"/officer/applications/{issued.application_id}" not in elsewhere.get_data(as_text=True)
