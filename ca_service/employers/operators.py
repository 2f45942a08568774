"""HR operators: accounts of their own that an employer's administrator creates and removes.

An operator signs in with a username, their own password and a code sent by SMS to their own
mobile number; they apply, upload documents, renew and download for the employer, but never
revoke, bind or unbind tax certificates, or manage operators (those stay the administrator's:
``ensure_role(user, Role.EMPLOYER_ADMIN)`` in each service). A new operator gets an e-mail in
the employer's language with a one-time link to set their password: the link's secret is the
account's one-time password (Argon2-hashed like any password, expiring after
ONE_TIME_PASSWORD_HOURS), so it works once and nothing else stores it. Removing an operator
disables the account and ends its sessions and API tokens at once.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import gettext as _

from ca_service.audit.service import record_event
from ca_service.auth.access import ensure_role
from ca_service.auth.models import Role, User
from ca_service.auth.service import (
    actor_of,
    end_sessions,
    hash_password,
    one_time_password_matches,
    set_first_password,
)
from ca_service.db import db, utcnow
from ca_service.employers.models import Employer
from ca_service.employers.service import employer_of, mobile_hint, normalise_mobile
from ca_service.errors import AuthenticationFailed, Conflict, NotFound, ValidationError, echoed
from ca_service.i18n import N_, format_utc_datetime
from ca_service.outbox.models import Channel
from ca_service.outbox.service import enqueue, in_language_of

# A bound on the accounts one employer keeps (the page lists them all, unpaged).
MAX_OPERATORS = 50
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

# Builds the absolute set-password link from the account id and its one-time secret (the view
# knows the route and the public base URL; the service does not read the request).
InvitationLink = Callable[[int, str], str]


@dataclass(frozen=True)
class NewOperator:
    """What the administrator gives for a new HR operator."""

    full_name: str
    email: str
    mobile: str


def _own_employer(admin: User) -> Employer:
    ensure_role(admin, Role.EMPLOYER_ADMIN)
    return employer_of(admin)


def list_operators(*, admin: User) -> list[User]:
    """The employer's current (not removed) HR operators, oldest first.

    :raises Forbidden: the user is not the employer's administrator.
    """
    employer = _own_employer(admin)
    return list(
        db.session.scalars(
            sa.select(User)
            .where(
                User.employer_id == employer.id,
                User.role == Role.EMPLOYER_OPERATOR,
                User.disabled.is_(False),
            )
            .order_by(User.created_at, User.id)
        )
    )


def _next_username(employer: Employer) -> str:
    # "<registration number>-<n>", n counting every operator the employer ever had, so a
    # removed operator's username (named in the audit log) is never given to someone else.
    made = db.session.scalar(
        sa.select(sa.func.count(User.id)).where(
            User.employer_id == employer.id, User.role == Role.EMPLOYER_OPERATOR
        )
    )
    return f"{employer.registration_number}-{int(made or 0) + 1}"


def create_operator(
    *, admin: User, data: NewOperator, invitation_link: InvitationLink, invitation_hours: int
) -> User:
    """Create an HR operator of the administrator's employer and queue their invitation e-mail
    (a one-time set-password link, in the employer's language); flushes.

    :raises Forbidden: the user is not the employer's administrator.
    :raises ValidationError: a malformed name, e-mail address or mobile number.
    :raises Conflict: the employer already has MAX_OPERATORS operators.
    """
    employer = _own_employer(admin)
    full_name = " ".join(data.full_name.split())
    if not full_name or len(full_name) > 200:
        raise ValidationError(_("Give the operator's name (at most 200 characters)."))
    email = data.email.strip()
    if not _EMAIL.fullmatch(email) or len(email) > 254:
        raise ValidationError(_("%(email)s is not an e-mail address.", email=echoed(data.email)))
    mobile = normalise_mobile(data.mobile)
    # Serialises concurrent creations for one employer (PostgreSQL row lock; SQLite writers
    # already queue: every transaction begins IMMEDIATE), so two never get the same username.
    db.session.execute(
        sa.select(Employer.id).where(Employer.id == employer.id).with_for_update()
    ).one()
    if len(list_operators(admin=admin)) >= MAX_OPERATORS:
        raise Conflict(
            _(
                "Your company already has %(count)s HR operators. Remove one before adding "
                "another.",
                count=MAX_OPERATORS,
            )
        )
    secret = secrets.token_urlsafe(18)  # 144 bits, the same as a one-time password
    expires = utcnow() + dt.timedelta(hours=invitation_hours)
    operator = User(
        username=_next_username(employer),
        email=email,
        full_name=full_name,
        role=Role.EMPLOYER_OPERATOR,
        password_hash=hash_password(secret),
        password_is_temporary=True,
        temporary_password_expires_at=expires,
        employer_id=employer.id,
        mobile=mobile,
    )
    db.session.add(operator)
    db.session.flush()
    record_event(
        actor_of(admin),
        "operator.created",
        operator.username,
        {
            "employer": employer.registration_number,
            "name": full_name,
            "mobile_ending": mobile_hint(mobile),
        },
    )
    _queue_invitation(employer, admin, operator, invitation_link(operator.id, secret), expires)
    return operator


def _queue_invitation(
    employer: Employer, admin: User, operator: User, link: str, expires: dt.datetime
) -> None:
    with in_language_of(employer):
        subject = _("Your HR operator account for %(employer)s", employer=employer.legal_name)
        body = _(
            "%(admin)s made you an HR operator of %(employer)s on the social-security employer "
            "certificate service.\n\n"
            "Your username: %(username)s\n\n"
            "Choose your password with this link; it works once, until %(until)s UTC:\n"
            "%(link)s\n\n"
            "Then sign in with your username, your password and the code sent by SMS to your "
            "mobile number ending in %(ending)s. If you did not expect this e-mail, ignore it.",
            admin=admin.full_name,
            employer=employer.legal_name,
            username=operator.username,
            until=format_utc_datetime(expires),
            link=link,
            ending=mobile_hint(operator.mobile or ""),
        )
    enqueue(
        channel=Channel.EMAIL,
        recipient=operator.email,
        subject=str(subject),
        body=str(body),
        dedupe_key=f"operator-invitation:{operator.id}",
        # Blanked once delivered: the link is a live credential until it is used.
        sensitive=True,
    )


def remove_operator(*, admin: User, operator_id: int) -> User:
    """Remove one of the employer's HR operators: the account is disabled and its sessions and
    API tokens end at once; flushes.

    :raises Forbidden: the user is not the employer's administrator.
    :raises NotFound: no such current operator of this employer (another employer's too).
    """
    employer = _own_employer(admin)
    operator = db.session.get(User, operator_id)
    if (
        operator is None
        or operator.role is not Role.EMPLOYER_OPERATOR
        or operator.employer_id != employer.id
        or operator.disabled
    ):
        raise NotFound(_("There is no HR operator %(id)s.", id=operator_id))
    operator.disabled = True
    end_sessions(operator)
    record_event(
        actor_of(admin),
        "operator.removed",
        operator.username,
        {"employer": employer.registration_number, "name": operator.full_name},
    )
    return operator


_INVITATION_REFUSED = N_(
    "This link does not work: it was already used, it has expired, or the account was removed. "
    "Ask your company's administrator for a new invitation."
)


def invited_operator(*, user_id: int, secret: str) -> User:
    """The HR operator an invitation link names, while the link still works.

    :raises AuthenticationFailed: used, expired, removed or never valid (one message for all).
    """
    operator = db.session.get(User, user_id)
    if (
        operator is None
        or operator.role is not Role.EMPLOYER_OPERATOR
        or operator.disabled
        or not one_time_password_matches(operator, secret)
    ):
        raise AuthenticationFailed(_(_INVITATION_REFUSED))
    return operator


def accept_invitation(*, user_id: int, secret: str, new_password: str) -> User:
    """Set an invited HR operator's own password through their link (which then stops
    working); flushes. They sign in next, with the password and an SMS code.

    :raises AuthenticationFailed: the link does not work (any more).
    :raises ValidationError: the password breaks the policy (the link keeps working).
    """
    operator = invited_operator(user_id=user_id, secret=secret)
    set_first_password(user=operator, new_password=new_password)
    record_event(actor_of(operator), "operator.invitation_accepted", operator.username, {})
    return operator
