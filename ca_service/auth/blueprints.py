"""What the auth package adds to an app: its blueprint, Flask-Login, the sign-in rate
limits and the limits on sending SMS codes.

Its own module rather than the package's ``__init__``, so that importing any module of the
package does not import its views (tests/test_import_graph.py)."""

from __future__ import annotations

from flask import Flask
from flask_login import LoginManager

from ca_service.auth import certificate_views, code_limits, ratelimit  # noqa: F401  (routes)
from ca_service.auth.models import User
from ca_service.auth.views import bp, end_certificate_sessions
from ca_service.db import db
from ca_service.extensions import settings_of


def _load_user(session_id: str) -> User | None:
    # The id is "<user id>:<session_version>" (User.get_id): a bumped version ends the session.
    user_id, _, version = session_id.partition(":")
    if not (user_id.isdigit() and version.isdigit()):
        return None
    user = db.session.get(User, int(user_id))
    if user is None or user.session_version != int(version) or user.disabled:
        return None
    return user


def init_app(app: Flask) -> None:
    """Register the ``auth`` blueprint, Flask-Login, the sign-in rate limits and the limits on
    sending SMS codes."""
    manager = LoginManager()
    manager.login_view = "auth.login"
    manager.login_message = "Sign in to see that page."
    manager.login_message_category = "error"
    # A session cookie replayed from another address or browser is dropped.
    manager.session_protection = "strong"
    manager.user_loader(_load_user)
    manager.init_app(app)
    app.register_blueprint(bp)
    app.before_request(end_certificate_sessions)
    ratelimit.init_app(app, str(settings_of(app)["LOGIN_RATE_LIMIT"]))
    code_limits.init_app(app, app.extensions["auth_limiter"])
