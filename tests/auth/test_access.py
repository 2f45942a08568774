"""Authorisation by role: `require_role` on views, `ensure_role` in services."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth import ensure_role, require_role
from ca_service.auth.models import Role, User
from ca_service.errors import Forbidden
from tests.auth.flows import MakeOfficer, code_at, enter_code, location, login
from tests.conftest import MakeUser


@pytest.fixture
def admin_page(app: Flask) -> str:
    """A page for CA administrators only, added to the test app."""

    @require_role(Role.CA_ADMIN)
    def admin_only() -> str:
        return "admin page"

    app.add_url_rule("/test/admin-only", view_func=admin_only)
    return "/test/admin-only"


def test_require_role_sends_strangers_to_sign_in(client: FlaskClient, admin_page: str) -> None:
    assert location(client.get(admin_page)) == "/auth/login?next=%2Ftest%2Fadmin-only"


def test_require_role_forbids_other_roles(
    client: FlaskClient, make_user: MakeUser, admin_page: str
) -> None:
    user, password = make_user(role=Role.EMPLOYER_ADMIN)
    login(client, user.username, password)
    response = client.get(admin_page)
    assert response.status_code == 403
    assert b"role does not allow" in response.data


def test_require_role_admits_the_role(
    client: FlaskClient, make_officer: MakeOfficer, admin_page: str
) -> None:
    admin = make_officer(Role.CA_ADMIN)
    login(client, admin.user.username, admin.password)
    enter_code(client, code_at(admin.seed))
    assert client.get(admin_page).get_data(as_text=True) == "admin page"


def _user(role: Role, *, disabled: bool = False) -> User:
    return User(username="u", role=role, disabled=disabled)


def test_ensure_role() -> None:
    ensure_role(_user(Role.RA_OFFICER), Role.RA_OFFICER, Role.CA_ADMIN)
    with pytest.raises(Forbidden):
        ensure_role(_user(Role.EMPLOYER_ADMIN), Role.RA_OFFICER, Role.CA_ADMIN)
    with pytest.raises(Forbidden):
        ensure_role(_user(Role.CA_ADMIN, disabled=True), Role.CA_ADMIN)


def test_require_role_needs_a_role() -> None:
    with pytest.raises(ValueError, match="at least one role"):
        require_role()
