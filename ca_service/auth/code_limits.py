"""How often a code may be sent by SMS: per mobile number and kind of code, per client address.

Every path that sends a code (registration, mobile confirmation resend, the sign-in code on the
web and in the API token flow, a password reset) asks a ``CodeThrottle`` first. Its counters
live in the sign-in limiter's storage (``RATELIMIT_STORAGE_URI``), so the workers of one
deployment share them when that is Redis. Keys are HMAC-SHA256 digests under the app's secret
key: the store never holds a mobile number or an address in clear.

A refused request sends nothing and changes nothing: the code already sent stays valid, and the
caller says when a new one can be asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass

from flask import Flask
from flask_babel import gettext as _
from flask_limiter import Limiter
from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import Storage
from limits.strategies import MovingWindowRateLimiter

from ca_service.config import Settings
from ca_service.errors import ServiceUnavailable

_NAMESPACE = "sms-code"


@dataclass(frozen=True)
class CodeLimits:
    """The three limits, from ``SMS_CODE_INTERVAL_SECONDS`` and the two hourly settings."""

    interval_seconds: int
    per_number_hour: int
    per_address_hour: int

    @classmethod
    def from_settings(cls, settings: Settings) -> CodeLimits:
        return cls(
            interval_seconds=int(settings["SMS_CODE_INTERVAL_SECONDS"]),
            per_number_hour=int(settings["SMS_CODES_PER_NUMBER_HOUR"]),
            per_address_hour=int(settings["SMS_CODES_PER_ADDRESS_HOUR"]),
        )


@dataclass(frozen=True)
class Allowance:
    """Whether a code may be sent now; when not, which limit refused and for how long."""

    allowed: bool
    retry_after: int = 0  # seconds until a new code can be asked for
    refused_by: str = ""  # "interval", "number_hour" or "address_hour"


ALLOWED = Allowance(allowed=True)


def mobile_destination(number: str) -> str:
    """The destination name of a mobile number for ``CodeThrottle.acquire``."""
    # "+86 138-0013-8000", "8613800138000" and "008613800138000" are one phone.
    return "mobile:" + re.sub(r"\D", "", number).removeprefix("00")


def account_destination(username: str) -> str:
    """The destination name of an account whose mobile number is not to be looked at (a
    password reset is counted alike whether or not the account exists)."""
    return "account:" + username.strip()


class CodeThrottle:
    """Moving-window limits on sending codes, over a ``limits`` storage shared by workers."""

    def __init__(self, storage: Storage | None, limits: CodeLimits, secret_key: str) -> None:
        self._limits = limits
        self._secret = secret_key.encode()
        self._storage = storage
        self._window = MovingWindowRateLimiter(storage) if storage is not None else None
        self._interval: RateLimitItem | None = (
            RateLimitItemPerSecond(1, limits.interval_seconds) if limits.interval_seconds else None
        )
        self._number_hour = RateLimitItemPerHour(limits.per_number_hour)
        self._address_hour = RateLimitItemPerHour(limits.per_address_hour)

    @classmethod
    def unlimited(cls) -> CodeThrottle:
        """A throttle that allows every code: for scripts, the CLI and service-level tests."""
        return cls(None, CodeLimits(0, 1, 1), "")

    @classmethod
    def for_app(cls, app: Flask, limiter: Limiter) -> CodeThrottle:
        """The app's throttle over ``limiter``'s storage (Flask-Limiter built it from
        ``RATELIMIT_STORAGE_URI``)."""
        from ca_service.extensions import settings_of

        return cls(
            limiter.storage,
            CodeLimits.from_settings(settings_of(app)),
            str(app.config["SECRET_KEY"]),
        )

    @property
    def limits(self) -> CodeLimits:
        return self._limits

    def _key(self, kind: str, value: str) -> str:
        return hmac.new(self._secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def acquire(self, *, kind: str, destination: str, client_address: str | None) -> Allowance:
        """Count one code of ``kind`` to ``destination`` (``mobile_destination`` or
        ``account_destination``) asked for from ``client_address`` (None: not a network
        client), if every limit allows it; otherwise count nothing and say which refused.

        :raises ServiceUnavailable: the counter store cannot be reached (nothing is sent then).
        """
        if self._window is None or self._storage is None:
            return ALLOWED
        number = self._key("destination", destination)
        checks: list[tuple[str, RateLimitItem, tuple[str, ...]]] = []
        if self._interval is not None:
            checks.append(("interval", self._interval, (_NAMESPACE, kind, number)))
        checks.append(("number_hour", self._number_hour, (_NAMESPACE, kind, number)))
        if client_address:
            address = self._key("address", client_address)
            checks.append(("address_hour", self._address_hour, (_NAMESPACE, "address", address)))
        base = self._storage.base_exceptions
        failures: tuple[type[Exception], ...] = (
            StorageError,
            *(base if isinstance(base, tuple) else (base,)),
        )
        try:
            # Test every limit before counting in any, so a refusal spends nothing; a hit that
            # fails after its test passed (another worker won the race) refuses too.
            for name, item, identifiers in checks:
                if not self._window.test(item, *identifiers):
                    return _refusal(self._window, name, item, identifiers)
            for name, item, identifiers in checks:
                if not self._window.hit(item, *identifiers):
                    return _refusal(self._window, name, item, identifiers)
        except failures as exc:
            raise ServiceUnavailable(
                _(
                    "The rate-limit store is unavailable, so no code was sent (%(error)s). Try "
                    "again in a moment.",
                    error=type(exc).__name__,
                )
            ) from None
        return ALLOWED


def _refusal(
    window: MovingWindowRateLimiter, name: str, item: RateLimitItem, identifiers: tuple[str, ...]
) -> Allowance:
    stats = window.get_window_stats(item, *identifiers)
    wait = max(1, math.ceil(stats.reset_time - time.time()))
    return Allowance(allowed=False, retry_after=wait, refused_by=name)


def init_app(app: Flask, limiter: Limiter) -> None:
    """Keep the app's ``CodeThrottle`` in ``app.extensions`` (after the limiter is set up)."""
    app.extensions["code_throttle"] = CodeThrottle.for_app(app, limiter)


def code_throttle(app: Flask) -> CodeThrottle:
    """The app's throttle."""
    throttle: CodeThrottle = app.extensions["code_throttle"]
    return throttle


def wait_text(seconds: int) -> str:
    """How long until a new code can be asked for, in words (translated)."""
    from flask_babel import ngettext

    if seconds < 120:
        return str(ngettext("%(num)d second", "%(num)d seconds", seconds))
    minutes = math.ceil(seconds / 60)
    return str(ngettext("%(num)d minute", "%(num)d minutes", minutes))
