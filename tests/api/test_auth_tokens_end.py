"""A password change ends the account's API tokens, as it ends its web sessions."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.models import User
from ca_service.auth.service import change_own_password
from ca_service.db import db
from tests.api.conftest import request_token, token_of
from tests.issuance.conftest import MakeEmployer


def test_password_change_revokes_tokens(
    app: Flask, client: FlaskClient, make_employer: MakeEmployer
) -> None:
    account = make_employer()
    # Password, then the SMS code (request_token answers the code step from the outbox).
    token = token_of(request_token(client, account.username, account.password))
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/applications", headers=headers).status_code == 200
    with app.app_context():
        user = db.session.get(User, account.user_id)
        assert user is not None
        change_own_password(
            user=user, current_password=account.password, new_password="another long password"
        )
        db.session.commit()
    assert client.get("/api/v1/applications", headers=headers).status_code == 401
