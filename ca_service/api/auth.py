"""Bearer tokens: issued for username + password + a second factor (the code sent by SMS to
the reserved mobile number for employer administrators, TOTP for agency staff), revoked by their
holder, and read from ``Authorization: Bearer`` on every other authenticated call.

Only the SHA-256 of a token is stored. The session cookie never authenticates an API call
(nothing here reads ``current_user`` or calls ``login_user``), which is why the blueprint is
exempt from CSRF: a forged cross-site request carries no bearer token.

What ends a token: its expiry (``API_TOKEN_HOURS``), ``DELETE /api/v1/auth/token``, the
account being disabled (checked on every call), a password change or reset (the auth
service revokes the account's tokens, as it ends its web sessions), and for a token obtained
by certificate login, that certificate's revocation or expiry (read with the token).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

import sqlalchemy as sa
from flask import Response, current_app, make_response, request
from flask_babel import gettext as _

from ca_service.api import schemas
from ca_service.api.http import InvalidToken, TotpRequired, bp, json_body, text_field
from ca_service.api.serialise import timestamp
from ca_service.api.spec import AUTHENTICATION, Reply, documented
from ca_service.audit.service import record_event
from ca_service.auth import service as auth_service
from ca_service.auth.access import ensure_role
from ca_service.auth.certificate_login import CertificateLogin, certificate_ended_message
from ca_service.auth.code_context import client_address, code_policy
from ca_service.auth.code_limits import wait_text
from ca_service.auth.models import ApiToken, Role, User
from ca_service.auth.service import LoginMethod, LoginPolicy, LoginStage, actor_of
from ca_service.db import db, utcnow
from ca_service.employers.service import code_mobile, mobile_hint, send_sign_in_code
from ca_service.errors import AuthenticationFailed, Forbidden
from ca_service.extensions import settings_of
from ca_service.models import Certificate
from ca_service.prepared import Entity, PreparedQuery


class SmsCodeRequired(AuthenticationFailed):
    """The password was right; an employer administrator also needs the code just sent by SMS."""

    code = "sms_code_required"


_STAGE_REFUSALS = {
    LoginStage.SET_PASSWORD: (
        "This account still has its one-time password. Sign in to the web UI (/auth/login) and "
        "set your own password first."
    ),
    LoginStage.CONFIRM_MOBILE: (
        "Confirm your mobile number first: POST /api/v1/employers/confirm-mobile with the code "
        "sent by SMS (POST /api/v1/employers/resend-code sends a new one)."
    ),
    LoginStage.TOTP_ENROL: (
        "Enrol an authenticator first: sign in to the web UI (/auth/login) and scan the QR code."
    ),
}


def login_policy() -> LoginPolicy:
    return LoginPolicy.from_settings(settings_of(current_app))


def _secret_key() -> str:
    return str(current_app.config["SECRET_KEY"])


def _second_factor(user: User, stage: LoginStage | None, totp_code: str, sms_code: str) -> str:
    """Check the factor the account owes after its password; returns the sign-in method.

    :raises TotpRequired, SmsCodeRequired: the factor is missing (an SMS code is sent then).
    :raises AuthenticationFailed: a wrong code (committed as a failed attempt).
    :raises AccountLocked: the account is locked.
    """
    if stage is LoginStage.TOTP:
        if not totp_code:
            raise TotpRequired(
                "This account also needs the current code from its authenticator: send 'totp_code'."
            )
        auth_service.check_totp(
            user=user, code=totp_code, secret_key=_secret_key(), policy=login_policy()
        )
        return LoginMethod.PASSWORD_TOTP
    if stage is LoginStage.SMS_CODE:
        if not sms_code:
            codes = code_policy()
            employer, sent = send_sign_in_code(user, codes, client_address=client_address())
            # Early commit, on purpose: this call answers 401, whose boundary rolls back, yet
            # the code just queued for the SMS must be there for the repeated call (and a
            # suppressed send's audit event must stay).
            db.session.commit()
            if not sent.allowed:
                raise SmsCodeRequired(
                    str(
                        _(
                            "No new code was sent: too many codes were asked for in a short "
                            "time. Repeat this call with the code sent earlier to the mobile "
                            "number ending in %(ending)s in 'sms_code' (it still works); a new "
                            "code can be asked for in %(wait)s.",
                            ending=mobile_hint(code_mobile(user, employer)),
                            wait=wait_text(sent.retry_after),
                        )
                    )
                )
            minutes = int(codes.lifetime.total_seconds() // 60)
            ending = mobile_hint(code_mobile(user, employer))
            raise SmsCodeRequired(
                "A six-digit code was sent by SMS to the reserved mobile number ending in "
                f"{ending}. Repeat this call with the same username and "
                f"password and the code in 'sms_code' (it expires in {minutes} minutes; a call "
                "without it sends a new code and the earlier one stops working)."
            )
        auth_service.check_sms_code(
            user=user, code=sms_code, secret_key=_secret_key(), policy=login_policy()
        )
        return LoginMethod.PASSWORD_SMS
    return LoginMethod.PASSWORD


def token_digest(token: str) -> str:
    """What ``api_tokens.token_hash`` holds for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _presented_token() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken(
            "Authenticate with 'Authorization: Bearer <token>' (POST /api/v1/auth/token gives one)."
        )
    return token.strip()


def _token_row(token: str, *, with_user: bool = False) -> tuple[ApiToken, User | None]:
    """The token's row (and, ``with_user``, its account: loaded in the same query, a
    primary-key join, so that an authenticated call reads both in one round trip). The
    certificate a token came from is read in the same query too."""
    columns: list[Any] = [ApiToken, Certificate.revoked_at, Certificate.not_after]
    query = sa.select(*columns).outerjoin(Certificate, Certificate.id == ApiToken.certificate_id)
    if with_user:
        query = query.add_columns(User).outerjoin(User, User.id == ApiToken.user_id)
    query = query.where(ApiToken.token_hash == token_digest(token))
    found = db.session.execute(query).one_or_none()
    if found is None or found[0].revoked_at is not None:
        raise InvalidToken("This token is unknown or was revoked; request a new one.")
    row = found[0]
    _check_token(
        expires_at=row.expires_at,
        certificate_id=row.certificate_id,
        token_not_after=row.certificate_not_after,
        certificate_revoked_at=found[1],
        certificate_not_after=found[2],
    )
    return row, (found[3] if with_user else None)


def _check_token(
    *,
    expires_at: dt.datetime,
    certificate_id: int | None,
    token_not_after: dt.datetime | None,
    certificate_revoked_at: dt.datetime | None,
    certificate_not_after: dt.datetime | None,
) -> None:
    """:raises InvalidToken: the (unrevoked) token expired, or the certificate it came from
    was revoked or expired."""
    now = utcnow()
    if expires_at <= now:
        raise InvalidToken("This token has expired; request a new one.")
    if certificate_id is not None or token_not_after is not None:
        not_after = min(
            (d for d in (token_not_after, certificate_not_after) if d is not None),
            default=None,
        )
        ended = certificate_ended_message(
            revoked_at=certificate_revoked_at, not_after=not_after, now=now
        )
        if ended is not None:
            raise InvalidToken(ended)


# What every authenticated call reads (``_authenticated``): the token, the certificate it came
# from and the whole account, in one query compiled once and run without the ORM's statement
# and loading machinery (``prepared``): through ``session.execute`` of the entities it cost
# more CPU than the rest of a renewal's reads together.
_TOKENS = ApiToken.__table__
_CERTIFICATES = Certificate.__table__
_USERS = User.__table__
_ACCOUNT = Entity(User, "user")
_BEARER = PreparedQuery(
    sa.select(
        _TOKENS.c.revoked_at,
        _TOKENS.c.expires_at,
        _TOKENS.c.certificate_id,
        _TOKENS.c.certificate_not_after,
        _CERTIFICATES.c.revoked_at.label("certificate_revoked_at"),
        _CERTIFICATES.c.not_after.label("certificate_not_after_now"),
        *_ACCOUNT.columns,
    )
    .select_from(_TOKENS)
    .outerjoin(_CERTIFICATES, _CERTIFICATES.c.id == _TOKENS.c.certificate_id)
    .outerjoin(_USERS, _USERS.c.id == _TOKENS.c.user_id)
    .where(_TOKENS.c.token_hash == sa.bindparam("token_hash"))
)


def _authenticated() -> User:
    """The enabled account of the request's usable bearer token (``_token_row``'s checks).

    :raises InvalidToken: no usable token, or its account is disabled.
    """
    session = db.session()
    found = _BEARER.rows(session, {"token_hash": token_digest(_presented_token())})
    if not found or found[0][0] is not None:
        raise InvalidToken("This token is unknown or was revoked; request a new one.")
    row = found[0]
    _check_token(
        expires_at=row[1],
        certificate_id=row[2],
        token_not_after=row[3],
        certificate_revoked_at=row[4],
        certificate_not_after=row[5],
    )
    user = _ACCOUNT.load(session, row, 6)
    if user is None or user.disabled:
        raise InvalidToken("This token's account is disabled.")
    return user


def bearer_user(*roles: Role) -> User:
    """The account the request's bearer token belongs to, holding one of ``roles``.

    :raises InvalidToken: no usable token (401).
    :raises Forbidden: the account holds none of ``roles`` (403).
    """
    user = _authenticated()
    if roles:
        ensure_role(user, *roles)
    return user


def password_user(username: str, password: str) -> User:
    """First factor only, for the calls made before a token can exist (mobile confirmation).

    :raises AuthenticationFailed: wrong credentials (the attempt counts towards lockout).
    :raises AccountLocked: the account is locked.
    """
    return auth_service.check_password(username=username, password=password, policy=login_policy())


@bp.post("/auth/token")
@documented(
    tag=AUTHENTICATION,
    public=True,
    body=schemas.TokenRequest,
    responses={201: Reply(schemas.Token, "A new token; only its hash is stored.")},
    errors=(400, 401, 403, 415, 423, 429),
)
def create_token() -> Response:
    """Exchange username, password and a second factor (SMS code for employer
    administrators, TOTP code for agency staff) for a bearer token.

    Employer administrators sign in in two calls. The first, with username and password only,
    sends a six-digit code by SMS to the employer's reserved mobile number and answers 401
    with error code `sms_code_required` (the message gives the number's last digits). Repeat
    the call with the same username and password and the code in `sms_code`; each call
    without it sends a new code and the earlier one stops working, unless the limits on SMS
    codes hold it back (one per number per CA_SMS_CODE_INTERVAL_SECONDS, a few an hour): then
    the message says so and when to ask again, and the earlier code still works. A wrong code
    answers 401 and counts as a failed sign-in (too many lock the account: 423). Each sign-in
    is audited and announced to the employer by e-mail and SMS.

    Agency staff send the current authenticator code in `totp_code` (without it: 401
    `totp_required`).
    """
    data = json_body(schemas.TokenRequest)
    username = text_field(data, "username")
    password = text_field(data, "password")
    totp_code = text_field(data, "totp_code", required=False)
    sms_code = text_field(data, "sms_code", required=False)
    user = password_user(username, password)
    stage = auth_service.next_login_stage(user)
    refusal = _STAGE_REFUSALS.get(stage) if stage is not None else None
    if refusal is not None:
        raise Forbidden(refusal)
    method = _second_factor(user, stage, totp_code.strip(), sms_code.strip())
    return issue_token(user, method=method)


def issue_token(user: User, *, method: str, login: CertificateLogin | None = None) -> Response:
    """Every factor passed (``method`` says which): record the sign-in and answer 201 with a
    new bearer token, of which only the hash is stored. A token of a certificate ``login``
    ends when that certificate is revoked or expires."""
    auth_service.complete_login(user, method)
    token = secrets.token_urlsafe(32)
    hours = int(settings_of(current_app)["API_TOKEN_HOURS"])
    row = ApiToken(
        user_id=user.id,
        token_hash=token_digest(token),
        expires_at=utcnow() + dt.timedelta(hours=hours),
        certificate_id=login.certificate_id if login is not None else None,
        certificate_not_after=login.not_after if login is not None else None,
    )
    db.session.add(row)
    db.session.flush()
    record_event(
        actor_of(user),
        "api.token_created",
        user.username,
        {
            "api_credential_id": row.id,
            "expires_at": row.expires_at,
            "certificate_id": row.certificate_id,
        },
    )
    body = {
        "token": token,
        "token_type": "Bearer",
        "expires_at": timestamp(row.expires_at),
        "username": user.username,
        "role": user.role.value,
    }
    return make_response(body, 201)


@bp.delete("/auth/token")
@documented(tag=AUTHENTICATION, responses={204: Reply(None, "Revoked.")}, errors=(401,))
def revoke_token() -> tuple[str, int]:
    """Revoke the presented token."""
    # A disabled account may still revoke its token: _authenticated would refuse it.
    row, user = _token_row(_presented_token(), with_user=True)
    row.revoked_at = utcnow()
    db.session.flush()
    record_event(
        actor_of(user) if user is not None else f"user-id:{row.user_id}",
        "api.token_revoked",
        user.username if user is not None else str(row.user_id),
        {"api_credential_id": row.id},
    )
    return "", 204
