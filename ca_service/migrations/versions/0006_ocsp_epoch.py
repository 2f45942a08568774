"""The OCSP epoch: a counter that tells workers their remembered OCSP answers changed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 13:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ocsp_epoch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_ocsp_epoch_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ocsp_epoch")),
    )


def downgrade() -> None:
    op.drop_table("ocsp_epoch")
