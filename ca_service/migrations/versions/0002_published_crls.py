"""Published CRLs (newest per issuer is served; numbers unique per issuer).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 07:29:33.886789
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('crls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('issuer_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.BigInteger(), nullable=False),
    sa.Column('this_update', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_update', sa.DateTime(timezone=True), nullable=False),
    sa.Column('entries', sa.Integer(), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('number > 0', name=op.f('ck_crls_number_positive')),
    sa.CheckConstraint('this_update < next_update', name=op.f('ck_crls_update_ordered')),
    sa.ForeignKeyConstraint(['issuer_id'], ['authorities.id'], name=op.f('fk_crls_issuer_id_authorities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crls')),
    sa.UniqueConstraint('issuer_id', 'number', name='uq_crls_issuer_number')
    )


def downgrade() -> None:
    op.drop_table('crls')
