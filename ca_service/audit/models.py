"""Append-only, hash-chained audit log with HSM-signed checkpoints."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db import Base


class AuditEvent(Base):
    """One security-relevant event; ``hash`` covers its content and the previous event's hash."""

    __tablename__ = "audit_events"

    # The sequence number is assigned by the chain (see AuditHead), not by the database, so a
    # gap means a deleted row.
    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(sa.String(128))
    action: Mapped[str] = mapped_column(sa.String(64), index=True)
    target: Mapped[str] = mapped_column(sa.String(256))
    # Canonical JSON (sorted keys, no insignificant white space): what the hash covers.
    details: Mapped[str] = mapped_column(sa.Text)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)

    __table_args__ = (sa.CheckConstraint("seq > 0", name="seq_positive"),)


class AuditHead(Base):
    """The single row that serialises appends: last sequence number and hash.

    Every append updates this row first, so concurrent writers (threads, gunicorn workers,
    machines on PostgreSQL) queue on its row lock instead of forking the chain.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    hash: Mapped[str] = mapped_column(sa.String(64))
    events_since_checkpoint: Mapped[int] = mapped_column(default=0)

    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)


class AuditCheckpoint(Base):
    """A signature by the HSM audit key over the chain head at ``seq``."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(sa.BigInteger, unique=True)
    hash: Mapped[str] = mapped_column(sa.String(64))
    signed_at: Mapped[dt.datetime]
    key_label: Mapped[str] = mapped_column(sa.String(64))
    algorithm: Mapped[str] = mapped_column(sa.String(32))
    signature: Mapped[bytes] = mapped_column(sa.LargeBinary)
