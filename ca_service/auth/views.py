"""Sign-in flow: password, then (as needed) new password, mobile confirmation, SMS code
(employer administrators) or TOTP enrolment and code (agency staff); password reset by SMS code.

Until every factor has passed, the user is only *pending* in the session (user id, session
version, stage, start time); ``login_user`` runs at the very end, so a half-signed-in browser is
not authenticated anywhere, and every page it asks for sends it back to the step it owes.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from ca_service.audit.service import record_event
from ca_service.auth import service, totp
from ca_service.auth.certificate_login import certificate_session_end
from ca_service.auth.code_context import client_address, code_policy
from ca_service.auth.code_limits import Allowance, wait_text
from ca_service.auth.forms import (
    CancelForm,
    ChangePasswordForm,
    CodeForm,
    LoginForm,
    ResetPasswordForm,
    ResetRequestForm,
    SetPasswordForm,
)
from ca_service.auth.models import Role, User
from ca_service.auth.service import LoginMethod, LoginStage
from ca_service.db import db, utcnow
from ca_service.employers import service as employers_service
from ca_service.employers.service import CodePolicy, code_mobile, employer_of, mobile_hint
from ca_service.errors import AccountLocked, AuthenticationFailed, ValidationError
from ca_service.extensions import settings_of
from ca_service.i18n import N_
from ca_service.portal import service as portal
from ca_service.qr import qr_svg_data_uri

bp = Blueprint("auth", __name__, url_prefix="/auth")

PENDING_USER = "pending_user"
PENDING_STAGE = "pending_stage"
PENDING_SINCE = "pending_since"
PENDING_SEED = "pending_totp_seed"
# This sign-in already accepted a code sent to the reserved mobile number.
PENDING_MOBILE_PROVEN = "pending_mobile_proven"
NEXT = "next_url"
PREVIOUS_LOGIN = "previous_login_at"
RESET_USERNAME = "reset_username"
_PENDING_KEYS = (PENDING_USER, PENDING_STAGE, PENDING_SINCE, PENDING_SEED, PENDING_MOBILE_PROVEN)
# A half-finished sign-in is abandoned after this long without progress (each step restarts
# the clock): a password typed on a shared computer does not stay usable for the next person.
PENDING_SECONDS = 15 * 60

_STAGE_ENDPOINTS = {
    LoginStage.SET_PASSWORD: "auth.set_password",
    LoginStage.TOTP_ENROL: "auth.totp_enrol",
    LoginStage.TOTP: "auth.totp_code",
    LoginStage.CONFIRM_MOBILE: "auth.confirm_mobile",
    LoginStage.SMS_CODE: "auth.sms_code",
}
# Endpoints a pending browser may use besides its stage's own page.
_PENDING_EXTRA = {
    LoginStage.CONFIRM_MOBILE: ("auth.resend_mobile_code",),
    LoginStage.SMS_CODE: ("auth.resend_sms_code",),
}

Page = Response | str | tuple[str, int]


def _policy() -> service.LoginPolicy:
    return service.LoginPolicy.from_settings(settings_of(current_app))


def _secret_key() -> str:
    return str(current_app.config["SECRET_KEY"])


def _safe_next(target: str | None) -> str | None:
    """Only local paths: never an open redirect to another site."""
    if not target:
        return None
    # Browsers drop tabs and newlines inside URLs and treat a backslash like a slash, so
    # "/\t/evil.example" or "/\\evil.example" would leave the site.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return None
    parts = urlsplit(target.replace("\\", "/"))
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return None
    return target


def _clear_pending() -> None:
    for key in _PENDING_KEYS:
        session.pop(key, None)


def _pending_stage() -> LoginStage | None:
    """The step a half-signed-in browser owes, or None (dropping a stale pending state)."""
    raw = session.get(PENDING_STAGE)
    if raw is None:
        return None
    if raw not in LoginStage.__members__.values():
        _clear_pending()  # a cookie from an older version of the flow
        return None
    if time.time() - float(session.get(PENDING_SINCE, 0)) > PENDING_SECONDS:
        _clear_pending()
        flash(_("Your sign-in took too long and was abandoned. Sign in again."), "error")
        return None
    return LoginStage(raw)


def _pending_user(stage: LoginStage) -> User | None:
    if _pending_stage() is not stage:
        return None
    user_id, version = session.get(PENDING_USER, (None, None))
    user = db.session.get(User, user_id) if isinstance(user_id, int) else None
    if user is None or user.session_version != version or user.disabled:
        return None
    return user


@bp.before_app_request
def _hold_pending_browser() -> Response | None:
    """Send a half-signed-in browser back to the step it owes (the forced password change
    comes before anything else)."""
    if PENDING_STAGE not in session or request.endpoint is None:
        return None
    if request.path.startswith("/api/"):
        return None  # the API authenticates by bearer token, never by this browser state
    if request.endpoint == "auth.login" and request.method == "POST":
        return None  # signing in again (perhaps as someone else) replaces the pending state
    stage = _pending_stage()
    if stage is None:
        return None
    if request.endpoint in (_STAGE_ENDPOINTS[stage], "auth.cancel", *_PENDING_EXTRA.get(stage, ())):
        return None
    return redirect(url_for(_STAGE_ENDPOINTS[stage]))


def advance_login(user: User) -> Response:
    """Move a user whose password passed (or who just registered) to the next step, or sign
    them in."""
    mobile_proven = bool(session.get(PENDING_MOBILE_PROVEN))
    stage = service.next_login_stage(user, mobile_proven=mobile_proven)
    if stage is None:
        method = LoginMethod.PASSWORD_SMS if mobile_proven else LoginMethod.PASSWORD
        return _sign_in(user, method)
    if stage is LoginStage.SMS_CODE:
        _employer, sent = employers_service.send_sign_in_code(
            user, _code_policy(), client_address=client_address()
        )
        if not sent.allowed:
            flash(code_withheld(sent), "error")
    session[PENDING_USER] = (user.id, user.session_version)
    session[PENDING_STAGE] = stage.value
    session[PENDING_SINCE] = time.time()
    return redirect(url_for(_STAGE_ENDPOINTS[stage]))


# Session key of a certificate login: {"id": our certificate's row or None, "not_after": ISO}.
CERTIFICATE_SESSION = "certificate_session"


def _sign_in(
    user: User,
    method: str = LoginMethod.PASSWORD,
    *,
    certificate_id: int | None = None,
    certificate_not_after: dt.datetime | None = None,
) -> Response:
    """Every factor passed: a fresh session (no fixation), then Flask-Login's. A session of a
    certificate login notes the certificate (``end_certificate_sessions`` ends it with it)."""
    target = _safe_next(session.get(NEXT))
    previous = user.last_login_at
    flashes = session.get("_flashes")  # "Your password is set." and the like survive
    session.clear()
    if flashes:
        session["_flashes"] = flashes
    session.permanent = True  # expires after SESSION_HOURS (PERMANENT_SESSION_LIFETIME)
    service.complete_login(user, method)
    login_user(user)
    session[PREVIOUS_LOGIN] = previous.isoformat() if previous else None
    if certificate_id is not None or certificate_not_after is not None:
        session[CERTIFICATE_SESSION] = {
            "id": certificate_id,
            "not_after": certificate_not_after.isoformat() if certificate_not_after else None,
        }
    return redirect(target or url_for("auth.home"))


def end_certificate_sessions() -> Response | None:
    """Before every request: a session of a certificate login ends (signed out, with the
    reason) once that certificate is revoked or past notAfter. One primary-key lookup, and
    only for such sessions; the JSON API reads no session."""
    entry = session.get(CERTIFICATE_SESSION)
    if not isinstance(entry, dict) or request.blueprint == "api":
        return None
    certificate_id = entry.get("id")
    raw = entry.get("not_after")
    not_after = dt.datetime.fromisoformat(raw) if isinstance(raw, str) else None
    ended = certificate_session_end(
        certificate_id if isinstance(certificate_id, int) else None,
        not_after,
        utcnow(),
    )
    if ended is None:
        return None
    user = current_user
    if user.is_authenticated:
        record_event(
            service.actor_of(user),
            "auth.certificate_session_ended",
            user.username,
            {"certificate_id": certificate_id},
        )
    logout_user()
    session.clear()
    flash(ended, "error")
    return redirect(url_for("auth.login"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Page:
    if current_user.is_authenticated:
        return redirect(url_for("auth.home"))
    if request.method == "GET":
        next_url = _safe_next(request.args.get("next"))
        if next_url:
            session[NEXT] = next_url
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = service.check_password(
                username=form.username.data or "",
                password=form.password.data or "",
                policy=_policy(),
            )
        except (AuthenticationFailed, AccountLocked) as exc:
            # The form again, with the reason; the service has already committed the attempt.
            flash(exc.message, "error")
            return render_template("auth/login.html", form=form), exc.status_code
        next_url = session.get(NEXT)
        session.clear()
        if next_url:
            session[NEXT] = next_url
        return advance_login(user)
    return render_template("auth/login.html", form=form)


@bp.route("/set-password", methods=["GET", "POST"])
def set_password() -> Page:
    user = _pending_user(LoginStage.SET_PASSWORD)
    if user is None:
        return redirect(url_for("auth.login"))
    form = SetPasswordForm()
    if form.validate_on_submit():
        try:
            service.set_first_password(user=user, new_password=form.password.data or "")
        except ValidationError as exc:
            flash(exc.message, "error")
            return _stage_page("auth/set_password.html", form), exc.status_code
        flash(_("Your password is set."), "success")
        return advance_login(user)
    return _stage_page("auth/set_password.html", form)


def _stage_page(template: str, form: Any, **context: Any) -> str:
    return render_template(template, form=form, cancel=CancelForm(), **context)


@bp.route("/totp/enrol", methods=["GET", "POST"])
def totp_enrol() -> Page:
    user = _pending_user(LoginStage.TOTP_ENROL)
    if user is None:
        return redirect(url_for("auth.login"))
    # The seed waits in the (signed) session cookie until confirmed: it is shown on this very
    # page anyway, and nothing is stored for an enrolment that is never finished.
    seed = session.get(PENDING_SEED) or totp.new_seed()
    session[PENDING_SEED] = seed
    form = CodeForm()
    status = 200
    if form.validate_on_submit():
        try:
            service.enrol_totp(
                user=user, seed=seed, code=form.code.data or "", secret_key=_secret_key()
            )
        except ValidationError as exc:
            flash(exc.message, "error")
            status = exc.status_code
        else:
            return _sign_in(user, LoginMethod.PASSWORD_TOTP)
    uri = totp.provisioning_uri(seed, user.username)
    page = _stage_page("auth/totp_enrol.html", form, seed=seed, qr=qr_svg_data_uri(uri), uri=uri)
    return page, status


@bp.route("/totp", methods=["GET", "POST"])
def totp_code() -> Page:
    user = _pending_user(LoginStage.TOTP)
    if user is None:
        return redirect(url_for("auth.login"))
    form = CodeForm()
    if form.validate_on_submit():
        try:
            service.check_totp(
                user=user, code=form.code.data or "", secret_key=_secret_key(), policy=_policy()
            )
        except (AuthenticationFailed, AccountLocked) as exc:
            flash(exc.message, "error")
            return _stage_page("auth/totp.html", form), exc.status_code
        return _sign_in(user, LoginMethod.PASSWORD_TOTP)
    return _stage_page("auth/totp.html", form)


def _code_policy() -> CodePolicy:
    return code_policy()


def code_withheld(allowance: Allowance) -> str:
    """What to say when the limits on codes kept a new one from being sent."""
    return str(
        _(
            "No new code was sent: too many codes were asked for in a short time. The code "
            "sent earlier still works; you can ask for a new one in %(wait)s.",
            wait=wait_text(allowance.retry_after),
        )
    )


@bp.route("/confirm-mobile", methods=["GET", "POST"])
def confirm_mobile() -> Page:
    user = _pending_user(LoginStage.CONFIRM_MOBILE)
    if user is None:
        return redirect(url_for("auth.login"))
    employer = employer_of(user)
    form = CodeForm()
    if form.validate_on_submit():
        try:
            employers_service.confirm_mobile(user, form.code.data or "", _code_policy())
        except AuthenticationFailed as exc:
            flash(exc.message, "error")
            return _stage_page(
                "auth/confirm_mobile.html", form, mobile=employer.mobile, resend=CancelForm()
            ), exc.status_code
        flash(_("Your mobile number is confirmed."), "success")
        # The code just accepted went to the reserved mobile: no second one in this sign-in.
        session[PENDING_MOBILE_PROVEN] = True
        return advance_login(user)
    return _stage_page(
        "auth/confirm_mobile.html", form, mobile=employer.mobile, resend=CancelForm()
    )


@bp.post("/confirm-mobile/resend")
def resend_mobile_code() -> Response:
    user = _pending_user(LoginStage.CONFIRM_MOBILE)
    if user is None:
        return redirect(url_for("auth.login"))
    if CancelForm().validate_on_submit():
        sent = employers_service.send_mobile_code(
            user, employer_of(user), _code_policy(), client_address=client_address()
        )
        if sent.allowed:
            flash(_("A new code is on its way. Earlier codes no longer work."), "success")
        else:
            flash(code_withheld(sent), "error")
    return redirect(url_for("auth.confirm_mobile"))


def _sms_code_page(form: CodeForm, user: User) -> str:
    hint = mobile_hint(code_mobile(user, employer_of(user)))
    operator = user.role is Role.EMPLOYER_OPERATOR
    return _stage_page(
        "auth/sms_code.html", form, mobile_hint=hint, resend=CancelForm(), operator=operator
    )


def _locked_out(exc: AccountLocked) -> tuple[str, int]:
    """End a half-finished sign-in of an account that is (now) locked: back to the password."""
    _clear_pending()
    flash(exc.message, "error")
    return render_template("auth/login.html", form=LoginForm(formdata=None)), exc.status_code


@bp.route("/sms-code", methods=["GET", "POST"])
def sms_code() -> Page:
    user = _pending_user(LoginStage.SMS_CODE)
    if user is None:
        return redirect(url_for("auth.login"))
    form = CodeForm()
    if form.validate_on_submit():
        try:
            service.check_sms_code(
                user=user, code=form.code.data or "", secret_key=_secret_key(), policy=_policy()
            )
        except AccountLocked as exc:
            return _locked_out(exc)
        except AuthenticationFailed as exc:
            flash(exc.message, "error")
            return _sms_code_page(form, user), exc.status_code
        session[PENDING_MOBILE_PROVEN] = True
        return advance_login(user)
    return _sms_code_page(form, user)


@bp.post("/sms-code/resend")
def resend_sms_code() -> Page:
    user = _pending_user(LoginStage.SMS_CODE)
    if user is None:
        return redirect(url_for("auth.login"))
    if CancelForm().validate_on_submit():
        try:
            service.refuse_if_locked(user)
        except AccountLocked as exc:
            return _locked_out(exc)
        _employer, sent = employers_service.send_sign_in_code(
            user, _code_policy(), client_address=client_address()
        )
        # The stage's clock restarts: waiting for an SMS is progress, not abandonment.
        session[PENDING_SINCE] = time.time()
        if sent.allowed:
            flash(_("A new code is on its way. Earlier codes no longer work."), "success")
        else:
            flash(code_withheld(sent), "error")
    return redirect(url_for("auth.sms_code"))


# Shown whether or not the account exists or may reset its password (no enumeration).
_RESET_SENT = N_(
    "If this is an employer administrator's account with a confirmed mobile number, a "
    "six-digit code is on its way to that number by SMS. Enter it below with your new "
    "password. Agency staff: ask a CA administrator to reset your password."
)


@bp.route("/reset", methods=["GET", "POST"])
def reset_request() -> Page:
    form = ResetRequestForm()
    if form.validate_on_submit():
        username = (form.username.data or "").strip()
        asked = employers_service.request_password_reset(
            username, _code_policy(), client_address=client_address()
        )
        session[RESET_USERNAME] = username
        if asked.allowed:
            flash(_(_RESET_SENT), "success")
        else:
            # As unrevealing as _RESET_SENT: the count is the username's, account or not.
            message = _(
                "No new code was sent: too many codes were asked for this username in a short "
                "time. If this is an employer administrator's account with a confirmed mobile "
                "number, the code sent earlier still works: enter it below with your new "
                "password. You can ask for a new code in %(wait)s.",
                wait=wait_text(asked.retry_after),
            )
            flash(str(message), "error")
        return redirect(url_for("auth.reset_confirm"))
    return render_template("auth/reset.html", form=form), 400 if form.errors else 200


@bp.route("/reset/confirm", methods=["GET", "POST"])
def reset_confirm() -> Page:
    username = session.get(RESET_USERNAME)
    if not isinstance(username, str) or not username:
        flash(_("Start with your username: a code is sent to your mobile number."), "error")
        return redirect(url_for("auth.reset_request"))
    form = ResetPasswordForm()
    status = 400 if form.is_submitted() else 200
    if form.validate_on_submit():
        try:
            service.reset_password_by_code(
                username=username,
                code=form.code.data or "",
                new_password=form.password.data or "",
                secret_key=_secret_key(),
            )
        except (AuthenticationFailed, ValidationError) as exc:
            flash(exc.message, "error")
            status = exc.status_code
        else:
            session.pop(RESET_USERNAME, None)
            flash(_("Your password is changed; sign in."), "success")
            return redirect(url_for("auth.login"))
    return render_template("auth/reset_confirm.html", form=form, username=username), status


@bp.post("/cancel")
def cancel() -> Response:
    """Abandon a half-finished sign-in."""
    _clear_pending()
    return redirect(url_for("auth.login"))


@bp.post("/logout")
@login_required  # type: ignore[untyped-decorator]  # flask-login ships no types
def logout() -> Response:
    record_event(service.actor_of(current_user), "auth.logout", current_user.username, {})
    logout_user()
    session.clear()
    flash(_("You are signed out."), "success")
    return redirect(url_for("auth.login"))


@bp.get("/home")
@login_required  # type: ignore[untyped-decorator]
def home() -> str:
    raw = session.get(PREVIOUS_LOGIN)
    previous = dt.datetime.fromisoformat(raw) if raw else None
    user: User = current_user._get_current_object()
    if user.role.is_employer_member and user.employer_id is not None:
        # An employer administrator or HR operator lands on the dashboard: what to renew
        # comes first. (An administrator account made by `ca-service user create` has no
        # employer yet.)
        return render_template(
            "portal/dashboard.html",
            user=user,
            previous_login=previous,
            dashboard=portal.employer_dashboard(user=user, settings=settings_of(current_app)),
            progress_steps=portal.PROGRESS_STEPS,
        )
    return render_template("auth/home.html", user=user, previous_login=previous)


@bp.route("/password", methods=["GET", "POST"])
@login_required  # type: ignore[untyped-decorator]
def change_password() -> Page:
    form = ChangePasswordForm()
    if form.validate_on_submit():
        user: User = current_user._get_current_object()
        try:
            service.change_own_password(
                user=user,
                current_password=form.current.data or "",
                new_password=form.password.data or "",
            )
        except (AuthenticationFailed, ValidationError) as exc:
            flash(exc.message, "error")
            return render_template("auth/change_password.html", form=form), exc.status_code
        # The new session_version ended every session of this user; this one carries on.
        login_user(user)
        flash(_("Your password is changed. Your other sessions were signed out."), "success")
        return redirect(url_for("auth.home"))
    return render_template("auth/change_password.html", form=form)
