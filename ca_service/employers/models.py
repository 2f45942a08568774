"""Employers: the companies our certificates identify."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db import Base, created_at, intpk, utcnow


class Employer(Base):
    """A company registered by its HR administrator; the subject of its certificates comes from
    here (legal name, registration number), never from a CSR."""

    __tablename__ = "employers"

    id: Mapped[intpk]
    # Unified Social Credit Code (or another country's number, see employers.numbers), stored
    # in its compact upper-case form.
    registration_number: Mapped[str] = mapped_column(sa.String(32), unique=True)
    legal_name: Mapped[str] = mapped_column(sa.String(200))
    legal_representative_id: Mapped[str | None] = mapped_column(sa.String(32))
    # The administrator's reserved mobile number (E.164-like digits) and e-mail: notices go here.
    mobile: Mapped[str] = mapped_column(sa.String(20))
    email: Mapped[str] = mapped_column(sa.String(254))
    mobile_confirmed_at: Mapped[dt.datetime | None]
    # Language of the e-mails and SMS sent to the administrator (one of ca_service.i18n.LANGUAGES).
    language: Mapped[str] = mapped_column(sa.String(8), default="en", server_default="en")
    created_at: Mapped[created_at]
    # Changed on every edit of the record: a renewal is issued without review only when the
    # record is unchanged since the approval it relies on.
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        sa.CheckConstraint("registration_number <> ''", name="registration_number_not_empty"),
        sa.CheckConstraint("legal_name <> ''", name="legal_name_not_empty"),
    )

    @property
    def active(self) -> bool:
        return self.mobile_confirmed_at is not None
