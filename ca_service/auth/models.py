"""Accounts."""

from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db import Base, created_at, enum_column, intpk


class Role(enum.StrEnum):
    EMPLOYER_ADMIN = "employer_admin"
    RA_OFFICER = "ra_officer"
    CA_ADMIN = "ca_admin"
    AUDITOR = "auditor"

    @property
    def needs_totp(self) -> bool:
        """Agency staff (officers, administrators, auditors) log in with a second factor."""
        return self is not Role.EMPLOYER_ADMIN


class User(UserMixin, Base):  # type: ignore[misc]  # flask-login ships no type information
    __tablename__ = "users"

    id: Mapped[intpk]
    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    email: Mapped[str] = mapped_column(sa.String(254))
    full_name: Mapped[str] = mapped_column(sa.String(200))
    role: Mapped[Role] = mapped_column(enum_column(Role))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    # A one-time password handed out by `ca-service user create`: usable once, until it
    # expires, and only to set a password of the user's own.
    password_is_temporary: Mapped[bool] = mapped_column(default=True)
    temporary_password_expires_at: Mapped[dt.datetime | None]
    # TOTP seed, encrypted with a key derived from the app's secret key (see auth.totp).
    totp_secret_encrypted: Mapped[str | None] = mapped_column(sa.String(255))
    totp_enabled_at: Mapped[dt.datetime | None]
    # Last accepted TOTP time step: a code is never accepted twice.
    totp_last_step: Mapped[int | None]
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[dt.datetime | None]
    disabled: Mapped[bool] = mapped_column(default=False)
    # Bumped on password change: the session cookie embeds it, so old sessions end.
    session_version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[created_at]
    last_login_at: Mapped[dt.datetime | None]

    __table_args__ = (
        sa.CheckConstraint("failed_logins >= 0", name="failed_logins_non_negative"),
        sa.CheckConstraint("username <> ''", name="username_not_empty"),
    )

    def get_id(self) -> str:
        """Flask-Login's session id: bumping session_version ends every existing session."""
        return f"{self.id}:{self.session_version}"

    @property
    def is_active(self) -> bool:
        return not self.disabled
