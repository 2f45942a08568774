"""One-time SMS codes: six digits, stored as an HMAC, single use, a few tries, short-lived."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

import sqlalchemy as sa
from flask_babel import gettext as _

from ca_service.auth.models import CodePurpose, OneTimeCode, User
from ca_service.db import db, rows_changed, utcnow
from ca_service.errors import AuthenticationFailed

MAX_ATTEMPTS = 5
CODE_DIGITS = 6


def _digest(code: str, user_id: int, purpose: CodePurpose, secret_key: str) -> str:
    # Keyed, so a copy of the table alone does not reveal codes by trying all 10^6.
    message = f"{user_id}:{purpose.value}:{code}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def issue_code(
    *, user: User, purpose: CodePurpose, secret_key: str, lifetime: dt.timedelta
) -> tuple[str, int]:
    """A new code for ``user`` and its row id; earlier unused codes of the purpose stop working."""
    now = utcnow()
    db.session.execute(
        sa.update(OneTimeCode)
        .where(
            OneTimeCode.user_id == user.id,
            OneTimeCode.purpose == purpose,
            OneTimeCode.used_at.is_(None),
        )
        .values(used_at=now)
    )
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    row = OneTimeCode(
        user_id=user.id,
        purpose=purpose,
        code_hash=_digest(code, user.id, purpose, secret_key),
        expires_at=now + lifetime,
    )
    db.session.add(row)
    db.session.flush()
    return code, row.id


def check_code(*, user: User, purpose: CodePurpose, code: str, secret_key: str) -> None:
    """Accept the current code once.

    A wrong guess is committed at once: the request fails and rolls back, but the attempt
    must count, or the six digits could be tried without limit.

    :raises AuthenticationFailed: no live code, too many wrong tries, or a wrong code.
    """
    now = utcnow()
    row = db.session.scalar(
        sa.select(OneTimeCode)
        .where(
            OneTimeCode.user_id == user.id,
            OneTimeCode.purpose == purpose,
            OneTimeCode.used_at.is_(None),
        )
        .order_by(OneTimeCode.id.desc())
        .limit(1)
    )
    if row is None or row.expires_at <= now:
        raise AuthenticationFailed(
            _("That code has expired or was already used. Ask for a new one.")
        )
    if row.attempts >= MAX_ATTEMPTS:
        raise AuthenticationFailed(_("Too many wrong codes. Ask for a new one."))
    expected = _digest(code.strip(), user.id, purpose, secret_key)
    # The conditional UPDATE claims the code: of two requests with the same code, one wins.
    if hmac.compare_digest(expected, row.code_hash):
        claimed = rows_changed(
            sa.update(OneTimeCode)
            .where(OneTimeCode.id == row.id, OneTimeCode.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session="fetch")
        )
        if claimed == 1:
            return
        raise AuthenticationFailed(_("That code was already used. Ask for a new one."))
    db.session.execute(
        sa.update(OneTimeCode)
        .where(OneTimeCode.id == row.id)
        .values(attempts=OneTimeCode.attempts + 1)
        .execution_options(synchronize_session="fetch")
    )
    db.session.commit()
    raise AuthenticationFailed(_("That code is wrong. Check the SMS and try again."))
