"""Certificate login challenges, cached tax-CA CRLs and tax-certificate bindings.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 11:20:07.016993
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "certificate_bindings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("employer_id", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.String(length=1000), nullable=False),
        sa.Column("serial", sa.String(length=42), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(length=64), nullable=False),
        sa.Column("spki_sha256", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=1000), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("bound_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("unbound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unbound_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["employer_id"],
            ["employers.id"],
            name=op.f("fk_certificate_bindings_employer_id_employers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificate_bindings")),
    )
    with op.batch_alter_table("certificate_bindings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_certificate_bindings_employer_id"), ["employer_id"], unique=False
        )
        batch_op.create_index(
            "uq_certificate_bindings_live_fingerprint",
            ["fingerprint_sha256"],
            unique=True,
            sqlite_where=sa.text("unbound_at IS NULL"),
            postgresql_where=sa.text("unbound_at IS NULL"),
        )

    op.create_table(
        "tax_crls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("anchor_id", sa.Integer(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("crl_number", sa.String(length=42), nullable=True),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.CheckConstraint("this_update < next_update", name=op.f("ck_tax_crls_update_ordered")),
        sa.ForeignKeyConstraint(
            ["anchor_id"], ["trust_anchors.id"], name=op.f("fk_tax_crls_anchor_id_trust_anchors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tax_crls")),
        sa.UniqueConstraint("anchor_id", name=op.f("uq_tax_crls_anchor_id")),
    )
    op.create_table(
        "login_challenges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("nonce_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "purpose",
            sa.Enum(
                "login",
                "bind",
                name="challengepurpose",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("browser_hash", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result_user_id", sa.Integer(), nullable=True),
        sa.Column("result_method", sa.String(length=32), nullable=True),
        sa.Column("picked_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_user_id"], ["users.id"], name=op.f("fk_login_challenges_result_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_login_challenges_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_challenges")),
        sa.UniqueConstraint("nonce_hash", name=op.f("uq_login_challenges_nonce_hash")),
    )


def downgrade() -> None:
    op.drop_table("login_challenges")
    op.drop_table("tax_crls")
    with op.batch_alter_table("certificate_bindings", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_certificate_bindings_live_fingerprint",
            sqlite_where=sa.text("unbound_at IS NULL"),
            postgresql_where=sa.text("unbound_at IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_certificate_bindings_employer_id"))

    op.drop_table("certificate_bindings")
