"""HR operators: a role of their own and their own mobile number.

- ``users.role`` may hold ``employer_operator`` (an employer's HR operator, created and removed
  by its administrator): the CHECK constraint of the non-native enum is replaced. SQLite
  cannot alter a constraint, so the table is rebuilt (batch mode); PostgreSQL drops and
  re-creates it.
- ``users.mobile``: an operator's own mobile number, where their sign-in codes go.

The downgrade refuses while operator accounts exist (they would break the old constraint):
remove them first.

Revision ID: 0010_employer_operators
Revises: 0009_anchor_revocation_policy
Create Date: 2026-12-07 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_employer_operators"
down_revision: str | None = "0009_anchor_revocation_policy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_ROLES = ("employer_admin", "ra_officer", "ca_admin", "auditor")
_NEW_ROLES = ("employer_admin", "employer_operator", "ra_officer", "ca_admin", "auditor")


def _role_type(roles: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*roles, name="role", native_enum=False, create_constraint=True, length=32)


def _swap_role_check(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    # alter_column with the old and new enum types drops the old type's CHECK constraint and
    # adds the new one's (named ck_users_role by the naming convention); on SQLite the batch
    # rebuilds the table with it.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column(
            "role", existing_type=_role_type(old), type_=_role_type(new), existing_nullable=False
        )


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mobile", sa.String(length=20), nullable=True))
    _swap_role_check(_OLD_ROLES, _NEW_ROLES)


def downgrade() -> None:
    operators = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM users WHERE role = 'employer_operator'")
    )
    if operators:
        raise RuntimeError(
            f"{operators} HR operator account(s) exist; the schema before 0010 cannot hold "
            "them. Delete them first (DELETE FROM users WHERE role = 'employer_operator', "
            "after their one-time codes, API tokens and challenges)."
        )
    _swap_role_check(_NEW_ROLES, _OLD_ROLES)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("mobile")
