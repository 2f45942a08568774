"""Per-client-address rate limits on the sign-in steps (Flask-Limiter).

One ``Limiter`` per app, kept in ``app.extensions``, instead of the usual module-level instance
with ``@limiter.limit`` decorators: the app factory builds several apps in one process (tests,
the CLI), and a shared instance would share one counter store and the last app's settings
between them. The limited views are wrapped when the app is built, which is what the decorator
would do at import time.
"""

from __future__ import annotations

from typing import cast

from flask import Flask
from flask.typing import RouteCallable
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

# The POST of each step where a guess can be made (password, TOTP or SMS code, current
# password, a certificate) or that sends an SMS (registration, a new code, a password reset
# code).
LIMITED_ENDPOINTS = (
    "auth.login",
    "auth.totp_code",
    "auth.change_password",
    "auth.confirm_mobile",
    "auth.resend_mobile_code",
    "auth.sms_code",
    "auth.resend_sms_code",
    "auth.reset_request",
    "auth.reset_confirm",
    "auth.certificate_tls",
    "employers.register",
)
MESSAGE = "Too many attempts from your address. Wait a minute, then try again."


def init_app(app: Flask, rate: str) -> None:
    """Limit each sign-in POST to ``rate`` per client address.

    Storage comes from ``app.config["RATELIMIT_STORAGE_URI"]`` (Flask-Limiter reads it); a
    breach raises ``RateLimitExceeded`` (an HTTP 429), which the shared error handler renders.
    Call after the blueprint is registered.
    """
    # Behind a reverse proxy the address is the proxy's unless the app is wrapped in ProxyFix.
    limiter = Limiter(key_func=get_remote_address, strategy="moving-window")
    limiter.init_app(app)
    _without_request_hook(app, limiter)
    app.extensions["auth_limiter"] = limiter
    limit = limiter.limit(rate, methods=["POST"], error_message=MESSAGE)
    for endpoint in LIMITED_ENDPOINTS:
        # The wrapper keeps the view's signature; the cast restores Flask's view type, which
        # flask-limiter's overloads do not carry through.
        app.view_functions[endpoint] = cast(RouteCallable, limit(app.view_functions[endpoint]))


def _without_request_hook(app: Flask, limiter: Limiter) -> None:
    """Take Flask-Limiter's ``before_request`` check off every request.

    Every limit here wraps a view, and the wrapper checks its limits itself when the view is
    called. The hook evaluates only application, default, blueprint and meta limits, of which
    this limiter has none (nor can a setting give it one: the app's configuration holds no
    ``RATELIMIT_DEFAULT``, ``_APPLICATION`` or ``_META``), yet it resolved them for every
    request: about 0.1-0.2 ms of CPU each, for nothing. tests/auth/test_login.py checks that
    the limiter holds only view limits.
    """
    hooks = app.before_request_funcs.get(None, [])
    app.before_request_funcs[None] = [f for f in hooks if f != limiter._check_request_limit]
