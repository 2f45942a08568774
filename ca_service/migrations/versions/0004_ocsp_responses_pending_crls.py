"""Pre-signed OCSP responses and coalesced CRL publication (pending CRLs).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_crls",
        sa.Column("issuer_id", sa.Integer(), nullable=False),
        sa.Column("due_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("marker", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["issuer_id"], ["authorities.id"], name=op.f("fk_pending_crls_issuer_id_authorities")
        ),
        sa.PrimaryKeyConstraint("issuer_id", name=op.f("pk_pending_crls")),
    )
    op.create_table(
        "ocsp_responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer_id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("hash_algorithm", sa.String(length=8), nullable=False),
        sa.Column("issuer_name_hash", sa.LargeBinary(length=64), nullable=False),
        sa.Column("issuer_key_hash", sa.LargeBinary(length=64), nullable=False),
        sa.Column(
            "cert_status",
            sa.Enum(
                "good",
                "revoked",
                name="ocspcertstatus",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("responder_id", sa.Integer(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "hash_algorithm IN ('sha1', 'sha256')",
            name=op.f("ck_ocsp_responses_hash_algorithm_known"),
        ),
        sa.CheckConstraint(
            "this_update < next_update", name=op.f("ck_ocsp_responses_update_ordered")
        ),
        sa.ForeignKeyConstraint(
            ["issuer_id"], ["authorities.id"], name=op.f("fk_ocsp_responses_issuer_id_authorities")
        ),
        sa.ForeignKeyConstraint(
            ["responder_id"],
            ["certificates.id"],
            name=op.f("fk_ocsp_responses_responder_id_certificates"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ocsp_responses")),
        sa.UniqueConstraint(
            "issuer_id", "serial", "hash_algorithm", name="uq_ocsp_responses_issuer_serial_hash"
        ),
    )
    op.create_index(
        op.f("ix_ocsp_responses_next_update"), "ocsp_responses", ["next_update"], unique=False
    )
    op.create_index(
        op.f("ix_ocsp_responses_responder_id"), "ocsp_responses", ["responder_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ocsp_responses_responder_id"), table_name="ocsp_responses")
    op.drop_index(op.f("ix_ocsp_responses_next_update"), table_name="ocsp_responses")
    op.drop_table("ocsp_responses")
    op.drop_table("pending_crls")
