"""Sign-in flow: password, then (as needed) new password, TOTP enrolment, TOTP code.

Until every factor has passed, the user is only *pending* in the session (user id + stage);
``login_user`` runs at the very end, so a half-signed-in browser reaches no other page.
"""

from __future__ import annotations

import datetime as dt
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
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from ca_service.app import settings_of
from ca_service.audit.service import record_event
from ca_service.auth import service, totp
from ca_service.auth.forms import CodeForm, LoginForm, SetPasswordForm
from ca_service.auth.models import User
from ca_service.auth.ratelimit import enforce_rate_limit
from ca_service.db import db
from ca_service.errors import AccountLocked, AuthenticationFailed, ValidationError

bp = Blueprint("auth", __name__, url_prefix="/auth")

PENDING_USER = "pending_user"
PENDING_STAGE = "pending_stage"
PENDING_SEED = "pending_totp_seed"
NEXT = "next_url"


def _policy() -> service.LoginPolicy:
    settings = settings_of(current_app)
    return service.LoginPolicy(
        max_failures=int(settings["LOGIN_MAX_FAILURES"]),
        lockout=dt.timedelta(minutes=int(settings["LOCKOUT_MINUTES"])),
    )


def _safe_next(target: str | None) -> str | None:
    """Only local paths: never an open redirect to another site."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def _pending_user(stage: str) -> User | None:
    if session.get(PENDING_STAGE) != stage:
        return None
    user_id, version = session.get(PENDING_USER, (None, None))
    user = db.session.get(User, user_id) if user_id is not None else None
    if user is None or user.session_version != version or user.disabled:
        return None
    return user


_STAGE_ENDPOINTS = {
    "set_password": "auth.set_password",
    "totp_enrol": "auth.totp_enrol",
    "totp": "auth.totp_code",
}


def _advance(user: User) -> Response:
    """Move a pending user to the next stage, or sign them in."""
    stage = service.next_login_stage(user)
    if stage is None:
        return _sign_in(user)
    session[PENDING_USER] = (user.id, user.session_version)
    session[PENDING_STAGE] = stage
    return redirect(url_for(_STAGE_ENDPOINTS[stage]))


def _sign_in(user: User) -> Response:
    """Every factor passed: a fresh session (no fixation), then Flask-Login's."""
    target = _safe_next(session.get(NEXT))
    session.clear()
    session.permanent = True
    service.complete_login(user)
    login_user(user)
    return redirect(target or url_for("auth.home"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("auth.home"))
    if request.method == "GET":
        # A fresh start drops any half-finished sign-in (the session itself is renewed once
        # every factor has passed, in _sign_in).
        for key in (PENDING_USER, PENDING_STAGE, PENDING_SEED, NEXT):
            session.pop(key, None)
        next_url = _safe_next(request.args.get("next"))
        if next_url:
            session[NEXT] = next_url
    form = LoginForm()
    if form.validate_on_submit():
        enforce_rate_limit("login")
        try:
            user = service.check_password(
                username=form.username.data or "",
                password=form.password.data or "",
                policy=_policy(),
            )
        except (AuthenticationFailed, AccountLocked) as exc:
            flash(exc.message, "error")
            return render_template("auth/login.html", form=form), exc.status_code
        next_url = session.get(NEXT)
        session.clear()
        if next_url:
            session[NEXT] = next_url
        return _advance(user)
    return render_template("auth/login.html", form=form)


@bp.route("/set-password", methods=["GET", "POST"])
def set_password() -> Response | str | tuple[str, int]:
    user = _pending_user("set_password")
    if user is None:
        return redirect(url_for("auth.login"))
    form = SetPasswordForm()
    if form.validate_on_submit():
        try:
            service.change_password(user=user, new_password=form.password.data or "")
        except ValidationError as exc:
            flash(exc.message, "error")
            return render_template("auth/set_password.html", form=form), 400
        flash("Your password is set.", "success")
        return _advance(user)
    return render_template("auth/set_password.html", form=form)


@bp.route("/totp/enrol", methods=["GET", "POST"])
def totp_enrol() -> Response | str | tuple[str, int]:
    user = _pending_user("totp_enrol")
    if user is None:
        return redirect(url_for("auth.login"))
    seed = session.get(PENDING_SEED) or totp.new_seed()
    session[PENDING_SEED] = seed
    form = CodeForm()
    status = 200
    if form.validate_on_submit():
        try:
            service.enrol_totp(
                user=user,
                seed=seed,
                code=form.code.data or "",
                secret_key=current_app.config["SECRET_KEY"],
            )
        except ValidationError as exc:
            flash(exc.message, "error")
            status = 400
        else:
            session.pop(PENDING_SEED, None)
            return _sign_in(user)
    uri = totp.provisioning_uri(seed, user.username)
    page = render_template(
        "auth/totp_enrol.html", form=form, seed=seed, qr=totp.qr_svg_data_uri(uri), uri=uri
    )
    return page, status


@bp.route("/totp", methods=["GET", "POST"])
def totp_code() -> Response | str | tuple[str, int]:
    user = _pending_user("totp")
    if user is None:
        return redirect(url_for("auth.login"))
    form = CodeForm()
    if form.validate_on_submit():
        enforce_rate_limit("totp")
        try:
            service.check_totp(
                user=user,
                code=form.code.data or "",
                secret_key=current_app.config["SECRET_KEY"],
                policy=_policy(),
            )
        except (AuthenticationFailed, AccountLocked) as exc:
            flash(exc.message, "error")
            return render_template("auth/totp.html", form=form), exc.status_code
        return _sign_in(user)
    return render_template("auth/totp.html", form=form)


@bp.post("/logout")
@login_required  # type: ignore[untyped-decorator]  # flask-login ships no types
def logout() -> Response:
    record_event(service.actor_of(current_user), "auth.logout", current_user.username, {})
    logout_user()
    session.clear()
    flash("You are signed out.", "success")
    return redirect(url_for("auth.login"))


@bp.get("/home")
@login_required  # type: ignore[untyped-decorator]  # flask-login ships no types
def home() -> str:
    return render_template("auth/home.html", user=current_user)
