"""What the JSON API adds to an app: its blueprint and the rate limits of its calls.

Its own module rather than the package's ``__init__``, so that importing any module of the
package does not import its views (tests/test_import_graph.py)."""

from __future__ import annotations

from typing import cast

from flask import Flask
from flask.typing import RouteCallable
from flask_limiter import Limiter

from ca_service.api import (  # noqa: F401  (routes)
    applications,
    auth,
    certificates,
    employers,
    public,
    renewal,
    review,
    revocation,
)
from ca_service.api.http import bp
from ca_service.auth.ratelimit import MESSAGE
from ca_service.extensions import csrf, settings_of

# The calls where a password or code can be guessed, or that send an SMS: rate-limited per
# client address like the web's sign-in steps.
LIMITED_ENDPOINTS = (
    "api.create_token",
    "api.register",
    "api.confirm_employer_mobile",
    "api.resend_mobile_code",
    "api.revoke_own_certificate",  # re-authenticates with the password
    "api.create_challenge",
    "api.certificate_login",
    "api.tls_token",
    "api.bind",
)


def init_app(app: Flask) -> None:
    """Register the API blueprint (exempt from CSRF: no cookie authenticates it) and its rate
    limits. Call after ``ca_service.auth.blueprints.init_app``, whose limiter it shares."""
    csrf.exempt(bp)
    app.register_blueprint(bp)
    # The auth package's limiter wraps its own views when it is set up, before this blueprint
    # exists; these views get the same limiter and rate here.
    limiter: Limiter = app.extensions["auth_limiter"]
    limit = limiter.limit(
        str(settings_of(app)["LOGIN_RATE_LIMIT"]), methods=["POST"], error_message=MESSAGE
    )
    for endpoint in LIMITED_ENDPOINTS:
        app.view_functions[endpoint] = cast(RouteCallable, limit(app.view_functions[endpoint]))
