"""A password change ends the account's API tokens, as it ends its web sessions."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.models import User
from ca_service.auth.service import change_own_password
from ca_service.db import db
from tests.issuance.conftest import MakeEmployer


def test_password_change_revokes_tokens(
    app: Flask, client: FlaskClient, make_employer: MakeEmployer
) -> None:
    account = make_employer()
    issued = client.post(
        "/api/v1/auth/token", json={"username": account.username, "password": account.password}
    )
    assert issued.status_code == 201, issued.get_json()
    headers = {"Authorization": f"Bearer {issued.get_json()['token']}"}
    assert client.get("/api/v1/applications", headers=headers).status_code == 200
    with app.app_context():
        user = db.session.get(User, account.user_id)
        assert user is not None
        change_own_password(
            user=user, current_password=account.password, new_password="another long password"
        )
        db.session.commit()
    assert client.get("/api/v1/applications", headers=headers).status_code == 401
