"""Accounts, sign-in (password, TOTP), roles."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import Flask
from flask_login import LoginManager, current_user

from ca_service.auth.models import Role, User
from ca_service.errors import Forbidden

P = ParamSpec("P")
R = TypeVar("R")


def _load_user(session_id: str) -> User | None:
    from ca_service.db import db

    user_id, _, version = session_id.partition(":")
    if not (user_id.isdigit() and version.isdigit()):
        return None
    user = db.session.get(User, int(user_id))
    if user is None or user.session_version != int(version) or user.disabled:
        return None
    return user


def require_role(*roles: Role) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """View decorator: signed in with one of ``roles`` (401 → login page; else 403)."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            from flask import current_app

            if not current_user.is_authenticated:
                return current_app.login_manager.unauthorized()  # type: ignore[attr-defined,no-any-return]
            if current_user.role not in roles:
                raise Forbidden("Your role does not allow this page.")
            return view(*args, **kwargs)

        return wrapper

    return decorate


def init_app(app: Flask) -> None:
    from ca_service.app import settings_of
    from ca_service.auth import ratelimit
    from ca_service.auth.views import bp

    settings = settings_of(app)
    manager = LoginManager()
    manager.login_view = "auth.login"
    manager.login_message = "Sign in to see that page."
    manager.login_message_category = "error"
    manager.session_protection = "strong"
    manager.user_loader(_load_user)
    manager.init_app(app)
    ratelimit.init_app(
        app, str(settings["RATELIMIT_STORAGE_URI"]), str(settings["LOGIN_RATE_LIMIT"])
    )
    app.register_blueprint(bp)
