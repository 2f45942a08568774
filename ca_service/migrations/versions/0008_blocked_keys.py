"""Blocked keys and certificate-derived API tokens.

- ``blocked_keys``: public keys (SHA-256 of the DER SubjectPublicKeyInfo) of certificates
  revoked for keyCompromise; never certified again. Backfilled from the certificates already
  revoked for keyCompromise (the hash computed from their stored DER).
- ``api_tokens.certificate_id`` / ``certificate_not_after``: the certificate a token was
  obtained with; the token ends when that certificate is revoked or expires.
  ``login_challenges.result_certificate_id`` / ``result_certificate_not_after``: the same for
  the browser session a signed challenge signs in.

Revision ID: 0008_blocked_keys
Revises: 0007
Create Date: 2026-12-06 13:10:00
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ca_service.db import UTCDateTime, utcnow

revision: str = "0008_blocked_keys"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blocked_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("spki_sha256", sa.String(length=64), nullable=False),
        sa.Column("certificate_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["certificate_id"],
            ["certificates.id"],
            name=op.f("fk_blocked_keys_certificate_id_certificates"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocked_keys")),
        sa.UniqueConstraint("spki_sha256", name=op.f("uq_blocked_keys_spki_sha256")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("certificate_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("certificate_not_after", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_api_tokens_certificate_id_certificates"),
            "certificates",
            ["certificate_id"],
            ["id"],
        )
    with op.batch_alter_table("login_challenges", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_certificate_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("result_certificate_not_after", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_login_challenges_result_certificate_id_certificates"),
            "certificates",
            ["result_certificate_id"],
            ["id"],
        )

    # Backfill: every key of a certificate already revoked for keyCompromise, oldest first.
    bind = op.get_bind()
    certificates = sa.table(
        "certificates",
        sa.column("id", sa.Integer()),
        sa.column("der", sa.LargeBinary()),
        sa.column("revoked_at", UTCDateTime()),
        sa.column("revocation_reason", sa.String()),
    )
    blocked = sa.table(
        "blocked_keys",
        sa.column("spki_sha256", sa.String()),
        sa.column("certificate_id", sa.Integer()),
        sa.column("reason", sa.String()),
        sa.column("blocked_at", UTCDateTime()),
    )
    rows = bind.execute(
        sa.select(certificates.c.id, certificates.c.der, certificates.c.revoked_at)
        .where(
            certificates.c.revocation_reason == "keyCompromise",
            certificates.c.der.is_not(None),
        )
        .order_by(certificates.c.revoked_at, certificates.c.id)
    ).all()
    seen: set[str] = set()
    for row_id, der, revoked_at in rows:
        spki = (
            x509.load_der_x509_certificate(der)
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        )
        digest = hashlib.sha256(spki).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        bind.execute(
            blocked.insert().values(
                spki_sha256=digest,
                certificate_id=row_id,
                reason="keyCompromise",
                blocked_at=revoked_at or utcnow(),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("login_challenges", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_login_challenges_result_certificate_id_certificates"),
            type_="foreignkey",
        )
        batch_op.drop_column("result_certificate_not_after")
        batch_op.drop_column("result_certificate_id")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_api_tokens_certificate_id_certificates"), type_="foreignkey"
        )
        batch_op.drop_column("certificate_not_after")
        batch_op.drop_column("certificate_id")
    op.drop_table("blocked_keys")
