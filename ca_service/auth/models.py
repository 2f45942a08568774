"""Accounts."""

from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from flask_babel import lazy_gettext
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db import Base, created_at, enum_column, intpk


class Role(enum.StrEnum):
    EMPLOYER_ADMIN = "employer_admin"
    # An HR operator an employer's administrator created: applies, uploads, renews and
    # downloads for that employer; never revokes, binds or manages operators.
    EMPLOYER_OPERATOR = "employer_operator"
    RA_OFFICER = "ra_officer"
    CA_ADMIN = "ca_admin"
    AUDITOR = "auditor"

    @property
    def label(self) -> str:
        """The role in words, in the current language."""
        return str(_ROLE_LABELS[self])

    @property
    def needs_totp(self) -> bool:
        """Agency staff (officers, administrators, auditors) log in with a second factor."""
        return self not in EMPLOYER_MEMBERS

    @property
    def is_employer_member(self) -> bool:
        """An employer's administrator or one of its HR operators."""
        return self in EMPLOYER_MEMBERS


# The roles that act for one employer (its administrator and its HR operators); employer
# portal pages and API calls that operators may use are open to these.
EMPLOYER_MEMBERS = (Role.EMPLOYER_ADMIN, Role.EMPLOYER_OPERATOR)


_ROLE_LABELS = {
    Role.EMPLOYER_ADMIN: lazy_gettext("employer admin"),
    Role.EMPLOYER_OPERATOR: lazy_gettext("HR operator"),
    Role.RA_OFFICER: lazy_gettext("ra officer"),
    Role.CA_ADMIN: lazy_gettext("ca admin"),
    Role.AUDITOR: lazy_gettext("auditor"),
}


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
    # An HR operator's own mobile number (E.164-like digits), where their sign-in codes go; an
    # administrator's is the employer's reserved number, and staff have none.
    mobile: Mapped[str | None] = mapped_column(sa.String(20))
    # The employer an administrator or HR operator acts for; officers may belong to one too,
    # and then never review its applications.
    employer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("employers.id"), index=True)
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


class CodePurpose(enum.StrEnum):
    CONFIRM_MOBILE = "confirm_mobile"
    LOGIN = "login"
    PASSWORD_RESET = "password_reset"  # noqa: S105  (a purpose name, not a password)


class OneTimeCode(Base):
    """A short numeric code sent by SMS; stored as an HMAC, used once, tried a few times."""

    __tablename__ = "one_time_codes"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    purpose: Mapped[CodePurpose] = mapped_column(enum_column(CodePurpose))
    code_hash: Mapped[str] = mapped_column(sa.String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    created_at: Mapped[created_at]


class ApiToken(Base):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    created_at: Mapped[created_at]
    # A token obtained by certificate login ends with that certificate: ours by its row (its
    # revocation, read with the token in one join), any (a tax certificate too) by its notAfter.
    certificate_id: Mapped[int | None] = mapped_column(sa.ForeignKey("certificates.id"))
    certificate_not_after: Mapped[dt.datetime | None]


class ChallengePurpose(enum.StrEnum):
    LOGIN = "login"
    BIND = "bind"  # proof of possession of a tax certificate being bound


class LoginChallenge(Base):
    """A one-time nonce a certificate's key signs: short-lived, single use.

    A browser-started challenge is tied to that browser by ``browser_hash`` (SHA-256 of a
    secret kept only in its session cookie): whoever signs the nonce (``ca-client`` on another
    device, a mobile signer) completes the sign-in of that browser alone. A challenge made
    through the API has no browser and is answered with a bearer token. Only the SHA-256 of
    the nonce is stored.
    """

    __tablename__ = "login_challenges"

    id: Mapped[intpk]
    nonce_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    purpose: Mapped[ChallengePurpose] = mapped_column(enum_column(ChallengePurpose))
    browser_hash: Mapped[str | None] = mapped_column(sa.String(64))
    # For a binding challenge: the signed-in administrator who asked for it.
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    expires_at: Mapped[dt.datetime]
    # Set by the single conditional UPDATE that accepts the signature.
    used_at: Mapped[dt.datetime | None]
    # Whom the signature signed in (picked up once by the browser that started it).
    result_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    result_method: Mapped[str | None] = mapped_column(sa.String(32))
    # The certificate that answered it (ours: its row; any: its notAfter): the session the
    # answer signs in ends with that certificate.
    result_certificate_id: Mapped[int | None] = mapped_column(sa.ForeignKey("certificates.id"))
    result_certificate_not_after: Mapped[dt.datetime | None]
    picked_up_at: Mapped[dt.datetime | None]
    created_at: Mapped[created_at]
