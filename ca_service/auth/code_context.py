"""What sending or checking a one-time code needs from the current request: the app's code
policy and the client's address. Shared by the sign-in pages, registration and the JSON API."""

from __future__ import annotations

from flask import current_app, request

from ca_service.auth.code_limits import code_throttle
from ca_service.employers.service import CodePolicy
from ca_service.extensions import settings_of


def code_policy() -> CodePolicy:
    """The app's code settings and limits."""
    return CodePolicy.from_settings(
        settings_of(current_app), str(current_app.config["SECRET_KEY"]), code_throttle(current_app)
    )


def client_address() -> str | None:
    """The address the limits on codes count against (the one the sign-in limiter uses)."""
    # Behind a reverse proxy this is the proxy's unless the app is wrapped in ProxyFix.
    return request.remote_addr
