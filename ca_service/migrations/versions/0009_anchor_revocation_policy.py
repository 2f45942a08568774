"""A revocation policy per trust anchor.

- ``trust_anchors.revocation_policy``: ``require`` (every CA certificate of a tax path needs a
  current CRL from its issuer, the behaviour until now) or ``when-published`` (a CA
  certificate that names no CRL distribution point and whose issuer has no stored CRL and no
  CRL URL is accepted unchecked; the taxpayer's certificate still needs its CRL). Existing
  anchors get ``when-published``, the default, as new ones do.

Revision ID: 0009_anchor_revocation_policy
Revises: 0008_blocked_keys
Create Date: 2026-12-06 22:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_anchor_revocation_policy"
down_revision: str | None = "0008_blocked_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trust_anchors", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "revocation_policy",
                sa.String(length=32),
                server_default="when-published",
                nullable=False,
            )
        )
        batch_op.create_check_constraint(
            op.f("ck_trust_anchors_revocationpolicy"),
            "revocation_policy IN ('require', 'when-published')",
        )


def downgrade() -> None:
    with op.batch_alter_table("trust_anchors", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_trust_anchors_revocationpolicy"), type_="check")
        batch_op.drop_column("revocation_policy")
