"""Accounts: creation, password and TOTP checks, lockout, password changes.

Services take the acting user (or an actor string) explicitly and only flush, with one
exception: a failed login attempt is committed at once (``_commit_failure``), because the
request that carries it fails and its boundary rolls back, yet the attempt must count.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ca_service.audit.service import record_event
from ca_service.auth import totp
from ca_service.auth.models import Role, User
from ca_service.db import db, utcnow
from ca_service.errors import (
    AccountLocked,
    AuthenticationFailed,
    Conflict,
    Forbidden,
    NotFound,
    ValidationError,
)

# argon2-cffi's defaults are RFC 9106's second recommended Argon2id profile.
_hasher = PasswordHasher()
# Verified against when the username is unknown, so both cases cost the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
MIN_PASSWORD_LENGTH = 12
INVALID_CREDENTIALS = "Wrong username or password."


@dataclass(frozen=True)
class LoginPolicy:
    """Lockout settings, passed in from configuration."""

    max_failures: int
    lockout: dt.timedelta


def actor_of(user: User) -> str:
    """The audit actor string of a user."""
    return f"user:{user.username}"


def ensure_role(user: User, *roles: Role) -> None:
    """Authorisation check for services.

    :raises Forbidden: when the user has none of the roles.
    """
    if user.role not in roles:
        raise Forbidden("Your role does not allow this action.")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password_policy(username: str, password: str) -> None:
    """:raises ValidationError: when the password is too weak."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"Choose a password of at least {MIN_PASSWORD_LENGTH} characters.")
    if password.strip().lower() == username.strip().lower():
        raise ValidationError("The password must differ from the username.")


def find_user(username: str) -> User | None:
    return db.session.scalar(sa.select(User).where(User.username == username))


def create_user(
    *,
    actor: str,
    username: str,
    email: str,
    full_name: str,
    role: Role,
    one_time_password_hours: int,
) -> tuple[User, str]:
    """Create an account with a one-time password (returned once, stored only as a hash).

    :raises Conflict: when the username is taken.
    """
    username = username.strip()
    if not username or len(username) > 64:
        raise ValidationError("A username has 1 to 64 characters.")
    if find_user(username) is not None:
        raise Conflict(f"The username {username!r} is taken.")
    one_time_password = secrets.token_urlsafe(18)
    user = User(
        username=username,
        email=email.strip(),
        full_name=full_name.strip(),
        role=role,
        password_hash=hash_password(one_time_password),
        password_is_temporary=True,
        temporary_password_expires_at=utcnow() + dt.timedelta(hours=one_time_password_hours),
    )
    db.session.add(user)
    db.session.flush()
    record_event(actor, "user.created", username, {"role": role.value})
    return user, one_time_password


def reset_password(*, actor: str, username: str, one_time_password_hours: int) -> str:
    """Give the account a new one-time password and unlock it; returns the password."""
    user = find_user(username)
    if user is None:
        raise NotFound(f"No user {username!r}.")
    one_time_password = secrets.token_urlsafe(18)
    user.password_hash = hash_password(one_time_password)
    user.password_is_temporary = True
    user.temporary_password_expires_at = utcnow() + dt.timedelta(hours=one_time_password_hours)
    user.failed_logins, user.locked_until = 0, None
    user.session_version += 1
    db.session.flush()
    record_event(actor, "user.password_reset", username, {})
    return one_time_password


def set_disabled(*, actor: str, username: str, disabled: bool) -> User:
    user = find_user(username)
    if user is None:
        raise NotFound(f"No user {username!r}.")
    user.disabled = disabled
    user.session_version += 1
    db.session.flush()
    record_event(actor, "user.disabled" if disabled else "user.enabled", username, {})
    return user


def _refuse_if_locked(user: User, now: dt.datetime) -> None:
    if user.locked_until is not None and user.locked_until > now:
        minutes = max(1, int((user.locked_until - now).total_seconds() // 60) + 1)
        raise AccountLocked(
            f"This account is locked after too many failed attempts. Try again in {minutes} "
            "minute(s), or ask an administrator to reset it."
        )


def _commit_failure(user: User | None, policy: LoginPolicy, reason: str, username: str) -> None:
    # Early commit, on purpose: the request fails (and rolls back), but the attempt must count.
    now = utcnow()
    details: dict[str, object] = {"reason": reason}
    if user is not None:
        user.failed_logins += 1
        if user.failed_logins >= policy.max_failures:
            user.locked_until = now + policy.lockout
            user.failed_logins = 0
            record_event(actor_of(user), "auth.locked", user.username, {"until": user.locked_until})
    record_event("anonymous", "auth.login_failed", username[:64], details)
    db.session.commit()


def check_password(*, username: str, password: str, policy: LoginPolicy) -> User:
    """First factor. Returns the user; the caller decides what comes next.

    :raises AuthenticationFailed: wrong username or password (same message for both).
    :raises AccountLocked: the account is locked.
    """
    user = find_user(username)
    now = utcnow()
    if user is None:
        _verify_quietly(_DUMMY_HASH, password)
        _commit_failure(None, policy, "unknown user", username)
        raise AuthenticationFailed(INVALID_CREDENTIALS)
    _refuse_if_locked(user, now)
    if not _verify_quietly(user.password_hash, password) or user.disabled:
        _commit_failure(user, policy, "disabled" if user.disabled else "wrong password", username)
        raise AuthenticationFailed(INVALID_CREDENTIALS)
    if user.password_is_temporary and (
        user.temporary_password_expires_at is None or user.temporary_password_expires_at <= now
    ):
        raise AuthenticationFailed(
            "This one-time password has expired. Ask an administrator for a new one."
        )
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def _verify_quietly(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_totp(*, user: User, code: str, secret_key: str, policy: LoginPolicy) -> None:
    """Second factor for agency staff; a code is never accepted twice.

    :raises AuthenticationFailed: wrong or replayed code.
    """
    _refuse_if_locked(user, utcnow())
    if user.totp_secret_encrypted is None:
        raise AuthenticationFailed("Enrol an authenticator first.")
    seed = totp.decrypt_seed(user.totp_secret_encrypted, secret_key)
    step = totp.matching_step(seed, code)
    if step is None or (user.totp_last_step is not None and step <= user.totp_last_step):
        _commit_failure(user, policy, "wrong or reused TOTP code", user.username)
        raise AuthenticationFailed("That code is wrong or was already used. Wait for the next.")
    user.totp_last_step = step


def complete_login(user: User) -> None:
    """All factors passed: reset the failure counter, record the login."""
    user.failed_logins, user.locked_until = 0, None
    user.last_login_at = utcnow()
    db.session.flush()
    record_event(actor_of(user), "auth.login", user.username, {"role": user.role.value})


def change_password(*, user: User, new_password: str) -> None:
    """Set the user's own password; ends their other sessions."""
    check_password_policy(user.username, new_password)
    if _verify_quietly(user.password_hash, new_password):
        raise ValidationError("Choose a password different from the current one.")
    user.password_hash = hash_password(new_password)
    user.password_is_temporary = False
    user.temporary_password_expires_at = None
    user.session_version += 1
    db.session.flush()
    record_event(actor_of(user), "auth.password_changed", user.username, {})


def enrol_totp(*, user: User, seed: str, code: str, secret_key: str) -> None:
    """Confirm an authenticator with a current code and store its seed (encrypted).

    :raises ValidationError: when the code does not match the seed.
    """
    step = totp.matching_step(seed, code)
    if step is None:
        raise ValidationError("That code does not match. Check the time on your device.")
    user.totp_secret_encrypted = totp.encrypt_seed(seed, secret_key)
    user.totp_enabled_at = utcnow()
    user.totp_last_step = step
    db.session.flush()
    record_event(actor_of(user), "auth.totp_enrolled", user.username, {})


def next_login_stage(user: User) -> str | None:
    """What the user must still do before being signed in (None: nothing)."""
    if user.password_is_temporary:
        return "set_password"
    if user.role.needs_totp:
        return "totp" if user.totp_secret_encrypted else "totp_enrol"
    return None
