"""Accounts: creation, password, TOTP and SMS-code checks, lockout, password changes and
resets.

Services take the acting user (or an actor string) explicitly and only flush, with one
exception: a failed sign-in attempt is committed at once (``_commit_failure``), because the
request that carries it fails, its boundary rolls back, and yet the attempt must count.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask_babel import gettext as _
from flask_babel import ngettext

from ca_service.audit.service import record_event
from ca_service.auth import totp
from ca_service.auth.access import ensure_role
from ca_service.auth.codes import check_code
from ca_service.auth.models import ApiToken, CodePurpose, Role, User
from ca_service.config import Settings
from ca_service.db import db, utcnow
from ca_service.employers.models import Employer
from ca_service.errors import (
    AccountLocked,
    AuthenticationFailed,
    Conflict,
    NotFound,
    ValidationError,
    echoed,
)
from ca_service.i18n import N_, format_utc_datetime
from ca_service.outbox.service import in_language_of, notify_employer

__all__ = [
    "INVALID_CREDENTIALS",
    "MIN_PASSWORD_LENGTH",
    "RESET_CODE_REFUSED",
    "LoginMethod",
    "LoginPolicy",
    "LoginStage",
    "actor_of",
    "change_own_password",
    "check_password",
    "check_password_policy",
    "check_sms_code",
    "check_totp",
    "complete_login",
    "create_user",
    "end_sessions",
    "enrol_totp",
    "ensure_role",
    "find_user",
    "hash_password",
    "next_login_stage",
    "one_time_password_matches",
    "password_reset_account",
    "refuse_if_locked",
    "reset_password",
    "reset_password_by_code",
    "set_disabled",
    "set_first_password",
]

# argon2-cffi's defaults are RFC 9106's second recommended Argon2id profile; hashes made with
# other parameters are upgraded at the next successful sign-in (check_needs_rehash).
_hasher = PasswordHasher()
# Verified against when the username is unknown, so both cases cost the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
MIN_PASSWORD_LENGTH = 12
# Messages kept as constants are msgids (N_ marks them for extraction); translate where shown.
INVALID_CREDENTIALS = N_("Wrong username or password.")
# Every refused password reset code gets this one answer (wrong, expired, used up, or no
# account that may reset): a different one would tell which usernames exist.
RESET_CODE_REFUSED = N_(
    "That code is wrong, has expired or was already used. Check the SMS, or ask for a new code."
)
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class LoginPolicy:
    """Lockout settings, passed in from configuration."""

    max_failures: int
    lockout: dt.timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginPolicy:
        return cls(
            max_failures=int(settings["LOGIN_MAX_FAILURES"]),
            lockout=dt.timedelta(minutes=int(settings["LOCKOUT_MINUTES"])),
        )


class LoginStage(StrEnum):
    """What a user who passed the password must still do before being signed in."""

    SET_PASSWORD = "set_password"  # noqa: S105  (a step name, not a password)
    CONFIRM_MOBILE = "confirm_mobile"  # an employer administrator's reserved mobile number
    SMS_CODE = "sms_code"  # an employer administrator's code sent to that number
    TOTP_ENROL = "totp_enrol"
    TOTP = "totp"


class LoginMethod(StrEnum):
    """How a sign-in was proved (the ``method`` of its ``auth.login`` audit event)."""

    PASSWORD = "password"  # noqa: S105  (a method name, not a password)
    PASSWORD_SMS = "password+sms"  # noqa: S105
    PASSWORD_TOTP = "password+totp"  # noqa: S105


def actor_of(user: User) -> str:
    """The audit actor string of a user."""
    return f"user:{user.username}"


def hash_password(password: str) -> str:
    """An Argon2id hash (``$argon2id$...``) of ``password``."""
    return _hasher.hash(password)


def _new_one_time_password() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def check_password_policy(username: str, password: str) -> None:
    """:raises ValidationError: when the password is too weak, with what to change."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            _(
                "Choose a password of at least %(min_password_length)s characters (this one has "
                "%(count)s).",
                min_password_length=MIN_PASSWORD_LENGTH,
                count=len(password),
            )
        )
    if password.strip().lower() == username.strip().lower():
        raise ValidationError(_("The password must differ from the username."))


def find_user(username: str) -> User | None:
    """The account with this username, or None."""
    return db.session.scalar(sa.select(User).where(User.username == username))


def _get_user(username: str) -> User:
    user = find_user(username)
    if user is None:
        raise NotFound(_("There is no user %(username)s.", username=echoed(username)))
    return user


def create_user(
    *,
    actor: str,
    username: str,
    email: str,
    full_name: str,
    role: Role,
    one_time_password_hours: int,
) -> tuple[User, str]:
    """Create an account with a one-time password, returned once and stored only as a hash.

    :raises ValidationError: for a malformed username, e-mail address or empty name.
    :raises Conflict: when the username is taken.
    """
    username, email, full_name = username.strip(), email.strip(), full_name.strip()
    if not _USERNAME.fullmatch(username):
        raise ValidationError(
            _(
                "A username has 1 to 64 characters: letters, digits and . _ @ - (starting with a "
                "letter or digit)."
            )
        )
    if "@" not in email.strip("@") or len(email) > 254:
        raise ValidationError(_("%(email)s is not an e-mail address.", email=echoed(email)))
    if not full_name:
        raise ValidationError(_("Give the person's full name."))
    if find_user(username) is not None:
        raise Conflict(_("The username %(username)s is taken.", username=echoed(username)))
    one_time_password = _new_one_time_password()
    user = User(
        username=username,
        email=email,
        full_name=full_name,
        role=role,
        password_hash=hash_password(one_time_password),
        password_is_temporary=True,
        temporary_password_expires_at=utcnow() + dt.timedelta(hours=one_time_password_hours),
    )
    db.session.add(user)
    db.session.flush()
    record_event(actor, "user.created", username, {"role": role.value})
    return user, one_time_password


def reset_password(
    *, actor: str, username: str, one_time_password_hours: int, remove_totp: bool = False
) -> str:
    """Give the account a new one-time password, unlock it and end its sessions.

    ``remove_totp`` also drops the enrolled authenticator (a lost phone): the user enrols a new
    one after setting a password. Returns the one-time password.

    :raises NotFound: when there is no such user.
    """
    user = _get_user(username)
    one_time_password = _new_one_time_password()
    user.password_hash = hash_password(one_time_password)
    user.password_is_temporary = True
    user.temporary_password_expires_at = utcnow() + dt.timedelta(hours=one_time_password_hours)
    user.failed_logins, user.locked_until = 0, None
    user.session_version += 1
    if remove_totp:
        user.totp_secret_encrypted = user.totp_enabled_at = user.totp_last_step = None
    _revoke_api_tokens(user)
    db.session.flush()
    record_event(actor, "user.password_reset", username, {"authenticator_removed": remove_totp})
    return one_time_password


def _revoke_api_tokens(user: User) -> None:
    """End the user's API bearer tokens (as a bumped session_version ends web sessions)."""
    db.session.execute(
        sa.update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def end_sessions(user: User) -> None:
    """End every web session and API token of ``user`` at once (their next request is signed
    out: the session cookie carries the old session_version); flushes."""
    user.session_version += 1
    _revoke_api_tokens(user)
    db.session.flush()


def one_time_password_matches(user: User, one_time_password: str) -> bool:
    """Whether ``user`` still holds this one-time password, unexpired and unused (an
    invitation link carries it); the same work whether or not it matches."""
    matches = _verify_quietly(user.password_hash, one_time_password)
    expires = user.temporary_password_expires_at
    return matches and user.password_is_temporary and expires is not None and expires > utcnow()


def set_disabled(*, actor: str, username: str, disabled: bool) -> User:
    """Disable (ending its sessions) or re-enable an account.

    :raises NotFound: when there is no such user.
    """
    user = _get_user(username)
    user.disabled = disabled
    user.session_version += 1
    _revoke_api_tokens(user)
    db.session.flush()
    record_event(actor, "user.disabled" if disabled else "user.enabled", username, {})
    return user


def refuse_if_locked(user: User) -> None:
    """:raises AccountLocked: the account is locked now; the message says until when."""
    _refuse_if_locked(user, utcnow())


def _refuse_if_locked(user: User, now: dt.datetime) -> None:
    if user.locked_until is not None and user.locked_until > now:
        # Rounded up, but a lock of exactly LOCKOUT_MINUTES reads as that many, not one more.
        minutes = max(1, math.ceil((user.locked_until - now).total_seconds() / 60))
        raise AccountLocked(
            ngettext(
                "This account is locked after too many failed attempts. Try again after "
                "%(time)s UTC (in %(num)d minute), or ask an administrator to reset it.",
                "This account is locked after too many failed attempts. Try again after "
                "%(time)s UTC (in %(num)d minutes), or ask an administrator to reset it.",
                minutes,
                time=f"{user.locked_until:%H:%M}",
            )
        )


def _commit_failure(user: User | None, policy: LoginPolicy, reason: str, username: str) -> None:
    # Early commit, on purpose: the request fails and its boundary rolls back, but the attempt
    # (counter, lock, audit event) must persist, or lockout would never trigger.
    if user is not None:
        # Incremented in SQL, so concurrent wrong guesses each count (no lost update); the
        # row stays write-locked until the commit below.
        failures = db.session.execute(
            sa.update(User)
            .where(User.id == user.id)
            .values(failed_logins=User.failed_logins + 1)
            .returning(User.failed_logins)
            .execution_options(synchronize_session="fetch")
        ).scalar_one()
        if failures >= policy.max_failures:
            user.locked_until = utcnow() + policy.lockout
            user.failed_logins = 0
            db.session.flush()
            record_event(actor_of(user), "auth.locked", user.username, {"until": user.locked_until})
    record_event("anonymous", "auth.login_failed", username[:64], {"reason": reason})
    db.session.commit()


def _verify_quietly(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_password(*, username: str, password: str, policy: LoginPolicy) -> User:
    """First factor. Returns the user; ``next_login_stage`` says what comes next.

    A wrong password is committed at once (it must count although the request fails).

    :raises AuthenticationFailed: wrong username or password (the same message and about the
        same time for both), a disabled account, an expired one-time password.
    :raises AccountLocked: the account is locked; the message says until when.
    """
    user = find_user(username)
    now = utcnow()
    if user is None:
        _verify_quietly(_DUMMY_HASH, password)
        _commit_failure(None, policy, "unknown user", username)
        raise AuthenticationFailed(_(INVALID_CREDENTIALS))
    _refuse_if_locked(user, now)
    if not _verify_quietly(user.password_hash, password):
        _commit_failure(user, policy, "wrong password", username)
        raise AuthenticationFailed(_(INVALID_CREDENTIALS))
    if user.disabled:
        raise AuthenticationFailed(_("This account is disabled. Ask an administrator."))
    if user.password_is_temporary and (
        user.temporary_password_expires_at is None or user.temporary_password_expires_at <= now
    ):
        raise AuthenticationFailed(
            _(
                "This one-time password has expired. Ask an administrator for a reset (a new "
                "one-time password)."
            )
        )
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def check_totp(*, user: User, code: str, secret_key: str, policy: LoginPolicy) -> None:
    """Second factor for agency staff; a code (time step) is never accepted twice.

    :raises AuthenticationFailed: wrong or replayed code (committed as a failed attempt).
    :raises AccountLocked: the account is locked.
    """
    _refuse_if_locked(user, utcnow())
    if user.totp_secret_encrypted is None:
        raise AuthenticationFailed(_("Enrol an authenticator first."))
    try:
        seed = totp.decrypt_seed(user.totp_secret_encrypted, secret_key)
    except totp.SeedUnreadable:
        raise AuthenticationFailed(
            _(
                "Your authenticator cannot be checked (the service's secret key changed). Ask an "
                "administrator to reset your account with `ca-service user reset --remove-totp`."
            )
        ) from None
    step = totp.matching_step(seed, code)
    # Claim the step with a conditional UPDATE: of two concurrent requests carrying the same
    # code only one changes the row (the other waits on its lock, then matches nothing).
    claimed = (
        step is not None
        and db.session.execute(
            sa.update(User)
            .where(
                User.id == user.id,
                sa.or_(User.totp_last_step.is_(None), User.totp_last_step < step),
            )
            .values(totp_last_step=step)
            .returning(User.id)
            .execution_options(synchronize_session="fetch")
        ).first()
        is not None
    )
    if not claimed:
        _commit_failure(user, policy, "wrong or reused TOTP code", user.username)
        raise AuthenticationFailed(
            _("That code is wrong or was already used. Wait for the next code and try again.")
        )


def check_sms_code(*, user: User, code: str, secret_key: str, policy: LoginPolicy) -> None:
    """Second factor for employer administrators: the code sent by SMS at this sign-in
    (``CodePurpose.LOGIN``), accepted once.

    :raises AuthenticationFailed: wrong, expired or reused code (committed as a failed sign-in
        attempt; a wrong one also uses up one of the code's tries).
    :raises AccountLocked: the account is locked, or this failure locked it.
    """
    _refuse_if_locked(user, utcnow())
    try:
        check_code(user=user, purpose=CodePurpose.LOGIN, code=code, secret_key=secret_key)
    except AuthenticationFailed:
        _commit_failure(user, policy, "wrong SMS code", user.username)
        # The failure that locks the account says so at once: the next step would be refused.
        _refuse_if_locked(user, utcnow())
        raise


def complete_login(user: User, method: str = LoginMethod.PASSWORD) -> None:
    """All factors passed: reset the failure counter, stamp and record the sign-in.

    A password + SMS sign-in of an employer administrator is also announced to the employer
    by e-mail and SMS, so a sign-in by someone else does not go unnoticed.
    """
    user.failed_logins, user.locked_until = 0, None
    now = utcnow()
    user.last_login_at = now
    db.session.flush()
    event = record_event(
        actor_of(user), "auth.login", user.username, {"role": user.role.value, "method": method}
    )
    employer = db.session.get(Employer, user.employer_id) if user.employer_id else None
    if method == LoginMethod.PASSWORD_SMS and employer is not None:
        with in_language_of(employer):
            notify_employer(
                employer,
                subject=_("New sign-in to your social-security employer account"),
                body=_(
                    "Signed in as %(username)s on %(when)s UTC with the password and an SMS "
                    "code; if this was not you, reset your password and contact the agency."
                    "\n\n"
                    'To reset it, choose "Forgot your password?" on the sign-in page.',
                    username=user.username,
                    when=format_utc_datetime(now),
                ),
                # The audit sequence number is unique per event, hence per sign-in.
                dedupe_key=f"sign-in:{user.id}:{event.seq}",
            )


def _store_new_password(user: User, new_password: str) -> None:
    check_password_policy(user.username, new_password)
    if _verify_quietly(user.password_hash, new_password):
        raise ValidationError(_("Choose a password different from the current one."))
    user.password_hash = hash_password(new_password)
    user.password_is_temporary = False
    user.temporary_password_expires_at = None
    user.session_version += 1  # every existing session of this user ends
    _revoke_api_tokens(user)
    db.session.flush()
    record_event(actor_of(user), "auth.password_changed", user.username, {})


def set_first_password(*, user: User, new_password: str) -> None:
    """Replace a one-time password (already verified at sign-in) with the user's own.

    :raises ValidationError: when the new password breaks the policy.
    """
    if not user.password_is_temporary:
        raise ValidationError(_("Your password is already set; change it from your account page."))
    _store_new_password(user, new_password)


def password_reset_account(username: str) -> tuple[User, Employer] | None:
    """The employer administrator ``username`` and its employer, when the account may reset
    its password by SMS code (enabled, mobile number confirmed); otherwise None.

    Agency staff never may: they ask an administrator (`ca-service user reset`).
    """
    user = find_user(username.strip())
    if user is None or user.disabled or user.role is not Role.EMPLOYER_ADMIN:
        return None
    employer = db.session.get(Employer, user.employer_id) if user.employer_id else None
    if employer is None or employer.mobile_confirmed_at is None:
        return None
    return user, employer


def reset_password_by_code(*, username: str, code: str, new_password: str, secret_key: str) -> User:
    """Set a forgotten password with the SMS code sent for it (``CodePurpose.PASSWORD_RESET``):
    the account is unlocked, its sessions and API tokens end, the employer is told.

    :raises ValidationError: the new password breaks the policy (the code stays usable).
    :raises AuthenticationFailed: ``RESET_CODE_REFUSED`` for a wrong code (committed: it uses
        up one of the code's tries), an expired or used one, and an account that cannot reset.
    """
    check_password_policy(username.strip(), new_password)
    account = password_reset_account(username)
    if account is None:
        raise AuthenticationFailed(_(RESET_CODE_REFUSED))
    user, employer = account
    try:
        check_code(user=user, purpose=CodePurpose.PASSWORD_RESET, code=code, secret_key=secret_key)
    except AuthenticationFailed:
        raise AuthenticationFailed(_(RESET_CODE_REFUSED)) from None
    # A ValidationError from here on (the same password again) rolls the claimed code back too.
    _store_new_password(user, new_password)
    user.failed_logins, user.locked_until = 0, None
    db.session.flush()
    event = record_event(actor_of(user), "auth.password_reset_by_sms", user.username, {})
    with in_language_of(employer):
        notify_employer(
            employer,
            subject=_("The password of your social-security employer account was changed"),
            body=_(
                "The password of %(username)s was reset with an SMS code on %(when)s UTC; every "
                "session and API token was ended. If this was not you, contact the agency at "
                "once.",
                username=user.username,
                when=format_utc_datetime(utcnow()),
            ),
            dedupe_key=f"password-reset:{user.id}:{event.seq}",
        )
    return user


def change_own_password(*, user: User, current_password: str, new_password: str) -> None:
    """A signed-in user changes their password; their other sessions end.

    :raises AuthenticationFailed: the current password is wrong.
    :raises ValidationError: the new password breaks the policy.
    """
    if not _verify_quietly(user.password_hash, current_password):
        raise AuthenticationFailed(_("Your current password is wrong."))
    _store_new_password(user, new_password)


def enrol_totp(*, user: User, seed: str, code: str, secret_key: str) -> None:
    """Confirm an authenticator with a current code and store its seed (encrypted).

    :raises ValidationError: when the code does not match the seed.
    """
    step = totp.matching_step(seed, code)
    if step is None:
        raise ValidationError(_("That code does not match. Check the time on your device."))
    user.totp_secret_encrypted = totp.encrypt_seed(seed, secret_key)
    user.totp_enabled_at = utcnow()
    user.totp_last_step = step  # the enrolment code cannot sign in again
    db.session.flush()
    record_event(actor_of(user), "auth.totp_enrolled", user.username, {})


def next_login_stage(user: User, *, mobile_proven: bool = False) -> LoginStage | None:
    """What the user must still do before being signed in (None: nothing).

    ``mobile_proven``: this sign-in already accepted a code sent to the employer's reserved
    mobile number (the confirmation code right after registration, or the sign-in code), so no
    further code is asked.
    """
    if user.password_is_temporary:
        return LoginStage.SET_PASSWORD
    if user.role.is_employer_member and user.employer_id is not None:
        employer = db.session.get(Employer, user.employer_id)
        # The reserved number is the administrator's to confirm; an HR operator's own number
        # is proven by the sign-in code sent to it.
        admin = user.role is Role.EMPLOYER_ADMIN
        if admin and employer is not None and employer.mobile_confirmed_at is None:
            return LoginStage.CONFIRM_MOBILE
        if employer is not None and not mobile_proven:
            return LoginStage.SMS_CODE
    if user.role is Role.EMPLOYER_OPERATOR and not mobile_proven:
        # Never a password-only sign-in: an operator without an employer is refused there.
        return LoginStage.SMS_CODE
    if user.role.needs_totp:
        return LoginStage.TOTP if user.totp_secret_encrypted else LoginStage.TOTP_ENROL
    return None
