"""Registering an employer and its administrator; the SMS codes sent to the reserved mobile
number (to confirm it, to sign in, to reset a forgotten password)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ca_service.audit.service import record_event
from ca_service.auth.code_limits import (
    ALLOWED,
    Allowance,
    CodeThrottle,
    account_destination,
    mobile_destination,
)
from ca_service.auth.codes import check_code, issue_code
from ca_service.auth.models import CodePurpose, Role, User
from ca_service.auth.service import (
    actor_of,
    check_password_policy,
    find_user,
    hash_password,
    password_reset_account,
)
from ca_service.config import Settings
from ca_service.db import db, utcnow
from ca_service.employers import numbers
from ca_service.employers.models import Employer
from ca_service.errors import Conflict, NotFound, ValidationError, echoed
from ca_service.i18n import DEFAULT_LANGUAGE, normalise_language
from ca_service.outbox.models import Channel
from ca_service.outbox.service import enqueue, in_language_of

_MOBILE = re.compile(r"\+?[0-9]{6,15}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass(frozen=True)
class Registration:
    """What the registration form or API gives."""

    registration_number: str
    legal_name: str
    administrator_name: str
    mobile: str
    email: str
    password: str
    legal_representative_id: str = ""
    # The language of the page it came from: e-mail and SMS to the employer use it.
    language: str = DEFAULT_LANGUAGE


@dataclass(frozen=True)
class CodePolicy:
    """SMS-code settings, passed in from configuration, and the limits on sending codes."""

    secret_key: str
    lifetime: dt.timedelta
    throttle: CodeThrottle

    @classmethod
    def from_settings(
        cls, settings: Settings, secret_key: str, throttle: CodeThrottle
    ) -> CodePolicy:
        return cls(
            secret_key=secret_key,
            lifetime=dt.timedelta(minutes=int(settings["SMS_CODE_MINUTES"])),
            throttle=throttle,
        )


def normalise_mobile(value: str) -> str:
    """Digits with an optional leading +, spaces and dashes removed.

    :raises ValidationError: when it is not a phone number.
    """
    compact = re.sub(r"[\s\-().]", "", value)
    if not _MOBILE.fullmatch(compact):
        raise ValidationError(
            _("%(value)s is not a mobile number (6 to 15 digits).", value=echoed(value))
        )
    return compact


def register_employer(
    data: Registration, *, scheme: str, codes: CodePolicy, client_address: str | None
) -> tuple[Employer, User, Allowance]:
    """Create the employer and its administrator (username = registration number), and send an
    SMS code to confirm the mobile number unless the limits on codes refuse it (the third
    value says which); flushes.

    :raises ValidationError: for each malformed field, with what is wrong.
    :raises Conflict: when the registration number is already registered.
    """
    number = numbers.registration_number(data.registration_number, scheme)
    legal_name = " ".join(data.legal_name.split())
    admin_name = " ".join(data.administrator_name.split())
    # 64 characters: the upper bound of organizationName and commonName (RFC 5280), where
    # the legal name goes in the certificate.
    if not legal_name or len(legal_name) > 64:
        raise ValidationError(_("Give the company's legal name (at most 64 characters)."))
    if not admin_name or len(admin_name) > 200:
        raise ValidationError(_("Give the administrator's name (at most 200 characters)."))
    email = data.email.strip()
    if not _EMAIL.fullmatch(email) or len(email) > 254:
        raise ValidationError(_("%(email)s is not an e-mail address.", email=echoed(data.email)))
    mobile = normalise_mobile(data.mobile)
    representative = (
        numbers.legal_representative_id(data.legal_representative_id)
        if data.legal_representative_id.strip()
        else None
    )
    check_password_policy(number, data.password)
    taken = db.session.scalar(sa.select(Employer.id).where(Employer.registration_number == number))
    if taken is not None or find_user(number) is not None:
        raise Conflict(
            _(
                "The registration number %(number)s is already registered. Sign in, or ask the "
                "agency if you did not register it.",
                number=number,
            )
        )
    employer = Employer(
        registration_number=number,
        legal_name=legal_name,
        legal_representative_id=representative,
        mobile=mobile,
        email=email,
        language=normalise_language(data.language),
    )
    db.session.add(employer)
    db.session.flush()
    user = User(
        username=number,
        email=email,
        full_name=admin_name,
        role=Role.EMPLOYER_ADMIN,
        password_hash=hash_password(data.password),
        password_is_temporary=False,
        employer_id=employer.id,
    )
    db.session.add(user)
    db.session.flush()
    record_event(
        actor_of(user),
        "employer.registered",
        number,
        {"legal_name": legal_name, "administrator": admin_name},
    )
    sent = send_mobile_code(user, employer, codes, client_address=client_address)
    return employer, user, sent


def code_mobile(user: User, employer: Employer) -> str:
    """Where the user's SMS codes go: an HR operator's own mobile number, otherwise the
    employer's reserved one (the administrator's)."""
    if user.role is Role.EMPLOYER_OPERATOR and user.mobile:
        return user.mobile
    return employer.mobile


def employer_of(user: User) -> Employer:
    """The employer an administrator or HR operator acts for.

    :raises NotFound: when the account belongs to no employer.
    """
    employer = db.session.get(Employer, user.employer_id) if user.employer_id else None
    if employer is None:
        raise NotFound(_("This account does not belong to an employer."))
    return employer


# Subject and opening of the SMS carrying each kind of code.
_CODE_TEXTS = {
    CodePurpose.CONFIRM_MOBILE: (
        _l("Mobile confirmation code"),
        _l(
            "Your confirmation code is %(code)s. It expires in %(minutes)s minutes. "
            "Nobody from the agency will ask you for it."
        ),
    ),
    CodePurpose.LOGIN: (
        _l("Sign-in code"),
        _l(
            "Your sign-in code is %(code)s. It expires in %(minutes)s minutes. "
            "Nobody from the agency will ask you for it."
        ),
    ),
    CodePurpose.PASSWORD_RESET: (
        _l("Password reset code"),
        _l(
            "Your password reset code is %(code)s. It expires in %(minutes)s minutes. "
            "Nobody from the agency will ask you for it."
        ),
    ),
}


def _send_code(
    user: User,
    employer: Employer,
    purpose: CodePurpose,
    codes: CodePolicy,
    *,
    client_address: str | None,
) -> Allowance:
    """A fresh code of ``purpose`` by SMS to the reserved mobile number (earlier ones of the
    purpose stop working), if the limits on codes allow it; otherwise nothing is sent, the code
    already sent stays valid, and the suppressed send is audited."""
    allowance = codes.throttle.acquire(
        kind=purpose.value,
        destination=mobile_destination(code_mobile(user, employer)),
        client_address=client_address,
    )
    if not allowance.allowed:
        _audit_suppressed(user, employer, purpose, allowance)
        return allowance
    _enqueue_code(user, employer, purpose, codes)
    return allowance


def _audit_suppressed(
    user: User, employer: Employer, purpose: CodePurpose, allowance: Allowance
) -> None:
    record_event(
        actor_of(user),
        "auth.code_suppressed",
        user.username,
        {
            "purpose": purpose.value,
            # Masked as on the pages: the audit log holds no mobile number in clear.
            "mobile_ending": mobile_hint(code_mobile(user, employer)),
            "limit": allowance.refused_by,
            "retry_after_seconds": allowance.retry_after,
        },
    )


def _enqueue_code(user: User, employer: Employer, purpose: CodePurpose, codes: CodePolicy) -> None:
    code, code_id = issue_code(
        user=user, purpose=purpose, secret_key=codes.secret_key, lifetime=codes.lifetime
    )
    minutes = int(codes.lifetime.total_seconds() // 60)
    subject, text = _CODE_TEXTS[purpose]
    with in_language_of(employer):
        subject, body = str(subject), str(text) % {"code": code, "minutes": minutes}
    enqueue(
        channel=Channel.SMS,
        recipient=code_mobile(user, employer),
        subject=subject,
        body=body,
        dedupe_key=f"code:{code_id}",
        # Blanked once delivered: the outbox is no place to keep a live code.
        sensitive=True,
    )


def send_mobile_code(
    user: User, employer: Employer, codes: CodePolicy, *, client_address: str | None
) -> Allowance:
    """A fresh confirmation code by SMS to the reserved mobile number, unless the limits on
    codes refuse it (the answer says so, and for how long)."""
    return _send_code(
        user, employer, CodePurpose.CONFIRM_MOBILE, codes, client_address=client_address
    )


def send_sign_in_code(
    user: User, codes: CodePolicy, *, client_address: str | None
) -> tuple[Employer, Allowance]:
    """A fresh sign-in code by SMS to the administrator's reserved mobile number (the second
    factor after the password), unless the limits on codes refuse it; returns the employer,
    whose number the caller may hint at, and whether a code went out.

    :raises NotFound: when the account belongs to no employer.
    """
    employer = employer_of(user)
    sent = _send_code(user, employer, CodePurpose.LOGIN, codes, client_address=client_address)
    return employer, sent


def request_password_reset(
    username: str, codes: CodePolicy, *, client_address: str | None
) -> Allowance:
    """Send a password reset code when ``username`` is an employer administrator with a
    confirmed mobile number; otherwise do nothing.

    The caller answers the same either way, so nobody learns which accounts exist: the
    request is counted against the username typed (and the client address) whether or not
    the account exists, and the answer (allowed, or refused for so long) comes from that
    count alone. The count per mobile number, which keeps the phone from being flooded
    through several accounts, refuses silently.
    """
    asked = codes.throttle.acquire(
        kind=CodePurpose.PASSWORD_RESET.value,
        destination=account_destination(username),
        client_address=client_address,
    )
    account = password_reset_account(username)
    if account is None:
        return asked
    user, employer = account
    if not asked.allowed:
        _audit_suppressed(user, employer, CodePurpose.PASSWORD_RESET, asked)
        return asked
    # The address was counted above; this is the number's own count.
    sent = _send_code(user, employer, CodePurpose.PASSWORD_RESET, codes, client_address=None)
    if sent.allowed:
        record_event(actor_of(user), "auth.password_reset_requested", user.username, {})
    return ALLOWED


def mobile_hint(mobile: str) -> str:
    """The last four digits of a mobile number, all that pages and API answers show of it
    (as the mobile confirmation page does)."""
    return mobile[-4:]


def confirm_mobile(user: User, code: str, codes: CodePolicy) -> Employer:
    """Accept the SMS code and mark the mobile number confirmed.

    :raises AuthenticationFailed: wrong, expired or reused code.
    """
    employer = employer_of(user)
    check_code(
        user=user, purpose=CodePurpose.CONFIRM_MOBILE, code=code, secret_key=codes.secret_key
    )
    employer.mobile_confirmed_at = utcnow()
    db.session.flush()
    record_event(actor_of(user), "employer.mobile_confirmed", employer.registration_number, {})
    return employer
