"""Authorisation by role, checked twice: in the view (``require_role``) and in the service
(``ensure_role``), so the JSON API and the CLI cannot skip the check a web page makes."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import current_app
from flask_babel import gettext as _
from flask_login import current_user

from ca_service.auth.models import Role, User
from ca_service.errors import Forbidden

P = ParamSpec("P")
R = TypeVar("R")


def ensure_role(user: User, *roles: Role) -> None:
    """Service-level check that ``user`` holds one of ``roles``.

    :raises Forbidden: when the user has none of them, or the account is disabled.
    """
    if user.disabled or user.role not in roles:
        raise Forbidden(_("Your role does not allow this action."))


def require_role(*roles: Role) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """View decorator: signed in (else the login page) with one of ``roles`` (else 403)."""
    if not roles:
        raise ValueError("require_role needs at least one role")

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not current_user.is_authenticated:
                # Flask-Login's redirect to auth.login with ?next=; typed as the view's result.
                return current_app.login_manager.unauthorized()  # type: ignore[attr-defined,no-any-return]
            if current_user.role not in roles:
                raise Forbidden(_("Your role does not allow this page."))
            return view(*args, **kwargs)

        return wrapper

    return decorate
