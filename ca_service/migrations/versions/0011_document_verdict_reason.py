"""The reason of a document's seal verdict as a stable code.

- ``documents.verdict_reason``: why the seal verdict was reached (``sealed``, ``pdf_changed``,
  ``other_organisation``...), so the portal shows the reason in the reader's language; the
  English ``verdict_detail`` stays as the technical record. Null on documents uploaded before
  this revision (their pages fall back to a sentence per verdict).

Revision ID: 0011_document_verdict_reason
Revises: 0010_employer_operators
Create Date: 2026-12-07 03:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_document_verdict_reason"
down_revision: str | None = "0010_employer_operators"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REASONS = (
    "sealed",
    "not_a_document",
    "pdf_damaged",
    "image_damaged",
    "image_unsigned",
    "pdf_unsigned",
    "signature_file_not_cms",
    "signature_file_incomplete",
    "signature_invalid",
    "pdf_signature_damaged",
    "pdf_signature_invalid",
    "pdf_changed",
    "document_changed",
    "signer_expired",
    "signer_not_yet_valid",
    "untrusted_signer",
    "other_organisation",
)


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verdict_reason", sa.String(length=32), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_documents_sealreason"),
            "verdict_reason IN (" + ", ".join(f"'{r}'" for r in _REASONS) + ")",
        )


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_documents_sealreason"), type_="check")
        batch_op.drop_column("verdict_reason")
