"""The durable outbox: every e-mail and SMS is a row first, delivered after the commit."""

from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db import Base, created_at, enum_column, intpk


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"


class MessageStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    SENT = "sent"
    FAILED = "failed"  # gave up after the last retry; `ca-service outbox retry` revives it


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[intpk]
    channel: Mapped[Channel] = mapped_column(enum_column(Channel))
    recipient: Mapped[str] = mapped_column(sa.String(254))
    subject: Mapped[str] = mapped_column(sa.String(200))
    body: Mapped[str] = mapped_column(sa.Text)
    # The same event never notifies twice (a retried request, a re-run command).
    dedupe_key: Mapped[str] = mapped_column(sa.String(200), unique=True)
    # Bodies with one-time codes are blanked once delivered (the code lives on in the
    # recipient's phone only).
    sensitive: Mapped[bool] = mapped_column(default=False)
    status: Mapped[MessageStatus] = mapped_column(enum_column(MessageStatus), index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime]
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[created_at]
    sent_at: Mapped[dt.datetime | None]

    __table_args__ = (sa.CheckConstraint("attempts >= 0", name="attempts_non_negative"),)
