"""Per-client rate limits on the sign-in steps.

The `limits` library (the engine under Flask-Limiter) is used directly: Flask-Limiter's
decorators bind to one module-level instance, while this app factory may build several apps in
one process (tests, the CLI), each with its own limits and storage.
"""

from __future__ import annotations

from flask import Flask, current_app, request
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from werkzeug.exceptions import TooManyRequests


class RateLimits:
    def __init__(self, storage_uri: str, rate: str) -> None:
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self.rate = parse(rate)


def init_app(app: Flask, storage_uri: str, rate: str) -> None:
    app.extensions["auth_rate_limits"] = RateLimits(storage_uri, rate)


def enforce_rate_limit(scope: str) -> None:
    """Count one attempt from this client address.

    :raises TooManyRequests: when the address is over the limit.
    """
    limits: RateLimits = current_app.extensions["auth_rate_limits"]
    address = request.remote_addr or "unknown"
    if not limits.limiter.hit(limits.rate, scope, address):
        raise TooManyRequests("Too many attempts from your address. Wait a minute and retry.")
