"""Making HR operators for tests: through the service (as the administrator's page does), with
the password set through the invitation's one-time secret."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from flask import Flask

from ca_service.auth.models import User
from ca_service.db import db
from ca_service.employers.operators import NewOperator, accept_invitation, create_operator
from tests.issuance.conftest import EmployerAccount


@dataclass(frozen=True)
class OperatorAccount:
    user_id: int
    username: str
    password: str
    mobile: str
    employer_id: int


def make_operator(
    app: Flask, admin: EmployerAccount, mobile: str = "+8613900139000"
) -> OperatorAccount:
    """A new HR operator of ``admin``'s employer whose password is set (committed)."""
    secrets_seen: list[tuple[int, str]] = []

    def link(user_id: int, secret: str) -> str:
        secrets_seen.append((user_id, secret))
        return f"http://localhost/employers/invitation/{user_id}/{secret}"

    password = secrets.token_urlsafe(16)
    with app.app_context():
        admin_user = db.session.get(User, admin.user_id)
        assert admin_user is not None
        operator = create_operator(
            admin=admin_user,
            data=NewOperator(
                full_name="Op Erator",
                email=f"op-{secrets.token_hex(3)}@example.test",
                mobile=mobile,
            ),
            invitation_link=link,
            invitation_hours=1,
        )
        ((user_id, secret),) = secrets_seen
        accept_invitation(user_id=user_id, secret=secret, new_password=password)
        db.session.commit()
        row = db.session.scalar(sa.select(User).where(User.id == operator.id))
        assert row is not None
        return OperatorAccount(row.id, row.username, password, mobile, admin.employer_id)
