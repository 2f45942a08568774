"""Initial schema: accounts, audit log, CA hierarchy and certificates.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 07:07:34.148906
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_checkpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('key_label', sa.String(length=64), nullable=False),
    sa.Column('algorithm', sa.String(length=32), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_checkpoints')),
    sa.UniqueConstraint('seq', name=op.f('uq_audit_checkpoints_seq'))
    )
    op.create_table('audit_events',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=256), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.CheckConstraint('seq > 0', name=op.f('ck_audit_events_seq_positive')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_events')),
    sa.UniqueConstraint('hash', name=op.f('uq_audit_events_hash'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_action'), ['action'], unique=False)

    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('events_since_checkpoint', sa.Integer(), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_audit_head_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    # The genesis head of the audit chain: appenders lock this row, never create it.
    op.execute(
        "INSERT INTO audit_head (id, seq, hash, events_since_checkpoint) "
        f"VALUES (1, 0, '{'0' * 64}', 0)"
    )
    op.create_table('authorities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('key_label', sa.String(length=64), nullable=False),
    sa.Column('key_algorithm', sa.String(length=16), nullable=False),
    sa.Column('certificate_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("slug <> ''", name=op.f('ck_authorities_slug_not_empty')),
    sa.ForeignKeyConstraint(['parent_id'], ['authorities.id'], name=op.f('fk_authorities_parent_id_authorities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_authorities')),
    sa.UniqueConstraint('key_label', name=op.f('uq_authorities_key_label')),
    sa.UniqueConstraint('slug', name=op.f('uq_authorities_slug'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('full_name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.Enum('employer_admin', 'ra_officer', 'ca_admin', 'auditor', name='role', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('password_is_temporary', sa.Boolean(), nullable=False),
    sa.Column('temporary_password_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('totp_secret_encrypted', sa.String(length=255), nullable=True),
    sa.Column('totp_enabled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('totp_last_step', sa.Integer(), nullable=True),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('session_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("username <> ''", name=op.f('ck_users_username_not_empty')),
    sa.CheckConstraint('failed_logins >= 0', name=op.f('ck_users_failed_logins_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('issuer_id', sa.Integer(), nullable=False),
    sa.Column('serial', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.Enum('root_ca', 'issuing_ca', 'ocsp_responder', 'end_entity', name='certificatekind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('status', sa.Enum('pending', 'issued', 'failed', name='certificatestatus', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('subject', sa.String(length=1000), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('key_label', sa.String(length=64), nullable=True),
    sa.Column('der', sa.LargeBinary(), nullable=True),
    sa.Column('fingerprint_sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revocation_reason', sa.String(length=32), nullable=True),
    sa.Column('invalidity_date', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("serial <> '' AND serial NOT LIKE '0%'", name=op.f('ck_certificates_serial_canonical_hex')),
    sa.CheckConstraint("status <> 'issued' OR der IS NOT NULL", name=op.f('ck_certificates_issued_has_der')),
    sa.CheckConstraint('not_before < not_after', name=op.f('ck_certificates_validity_ordered')),
    sa.ForeignKeyConstraint(['issuer_id'], ['authorities.id'], name=op.f('fk_certificates_issuer_id_authorities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_certificates')),
    sa.UniqueConstraint('fingerprint_sha256', name=op.f('uq_certificates_fingerprint_sha256')),
    sa.UniqueConstraint('issuer_id', 'serial', name='uq_certificates_issuer_serial')
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificates_issuer_id'), ['issuer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_certificates_not_after'), ['not_after'], unique=False)

    # authorities <-> certificates is circular (a root certifies itself): this FK can only be
    # added once both tables exist.
    with op.batch_alter_table('authorities', schema=None) as batch_op:
        batch_op.create_foreign_key(
            'fk_authorities_certificate_id', 'certificates', ['certificate_id'], ['id']
        )


def downgrade() -> None:
    with op.batch_alter_table('authorities', schema=None) as batch_op:
        batch_op.drop_constraint('fk_authorities_certificate_id', type_='foreignkey')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_not_after'))
        batch_op.drop_index(batch_op.f('ix_certificates_issuer_id'))

    op.drop_table('certificates')
    op.drop_table('users')
    op.drop_table('authorities')
    op.drop_table('audit_head')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_action'))

    op.drop_table('audit_events')
    op.drop_table('audit_checkpoints')
