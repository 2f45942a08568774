"""Certificate lineage (renewals), expiry warnings and the employer's language.

- ``certificates.renews_id``: the certificate a renewal replaces; ``next_notice_at``: when the
  expiry run next looks at the row (indexed, so an idle run reads nothing); ``expired_at``:
  when the expiry run marked it expired.
- ``applications.renews_id``: a renewal request; at most one open (not rejected) renewal per
  certificate, so two renewals at once yield one new certificate.
- ``expiry_notices``: each warning threshold sent for a certificate, at most once.
- ``employers.language`` (pages, e-mails and SMS) and ``employers.updated_at`` (a renewal
  without review needs the record unchanged since the last approval).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:30:00
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ca_service.db import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Warn first this many days before notAfter: rows issued before this migration get their first
# look-at time from it (the default of EXPIRY_WARNING_DAYS' largest threshold).
_FIRST_WARNING_DAYS = 30


def upgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("renews_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("next_notice_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_certificates_renews_id_certificates"),
            "certificates",
            ["renews_id"],
            ["id"],
        )
        batch_op.create_index(batch_op.f("ix_certificates_renews_id"), ["renews_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_certificates_next_notice_at"), ["next_notice_at"], unique=False
        )

    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("renews_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_applications_renews_id_certificates"),
            "certificates",
            ["renews_id"],
            ["id"],
        )
        batch_op.create_index(
            "uq_applications_open_renewal",
            ["renews_id"],
            unique=True,
            sqlite_where=sa.text("renews_id IS NOT NULL AND status <> 'rejected'"),
            postgresql_where=sa.text("renews_id IS NOT NULL AND status <> 'rejected'"),
        )

    with op.batch_alter_table("employers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("language", sa.String(length=8), nullable=False, server_default="en")
        )
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "expiry_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("certificate_id", sa.Integer(), nullable=False),
        sa.Column("threshold_days", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("threshold_days > 0", name=op.f("ck_expiry_notices_threshold_positive")),
        sa.ForeignKeyConstraint(
            ["certificate_id"],
            ["certificates.id"],
            name=op.f("fk_expiry_notices_certificate_id_certificates"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_expiry_notices")),
        sa.UniqueConstraint(
            "certificate_id", "threshold_days", name="uq_expiry_notices_certificate_threshold"
        ),
    )

    # Existing rows: the record was last changed when it was created; issued certificates are
    # looked at first _FIRST_WARNING_DAYS before their end (computed here, portably).
    bind = op.get_bind()
    bind.execute(sa.text("UPDATE employers SET updated_at = created_at"))
    with op.batch_alter_table("employers", schema=None) as batch_op:
        batch_op.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    certificates = sa.table(
        "certificates",
        sa.column("id", sa.Integer()),
        sa.column("status", sa.String()),
        sa.column("not_after", UTCDateTime()),
        sa.column("next_notice_at", UTCDateTime()),
    )
    rows = bind.execute(
        sa.select(certificates.c.id, certificates.c.not_after).where(
            certificates.c.status == "issued"
        )
    ).all()
    for row_id, not_after in rows:
        bind.execute(
            certificates.update()
            .where(certificates.c.id == row_id)
            .values(next_notice_at=not_after - dt.timedelta(days=_FIRST_WARNING_DAYS))
        )


def downgrade() -> None:
    op.drop_table("expiry_notices")
    with op.batch_alter_table("employers", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
        batch_op.drop_column("language")
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.drop_index("uq_applications_open_renewal")
        batch_op.drop_constraint(
            batch_op.f("fk_applications_renews_id_certificates"), type_="foreignkey"
        )
        batch_op.drop_column("renews_id")
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_certificates_next_notice_at"))
        batch_op.drop_index(batch_op.f("ix_certificates_renews_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_certificates_renews_id_certificates"), type_="foreignkey"
        )
        batch_op.drop_column("expired_at")
        batch_op.drop_column("next_notice_at")
        batch_op.drop_column("renews_id")
