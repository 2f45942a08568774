"""Per-client-address rate limits on the sign-in steps (Flask-Limiter).

One ``Limiter`` per app, kept in ``app.extensions``, instead of the usual module-level instance
with ``@limiter.limit`` decorators: the app factory builds several apps in one process (tests,
the CLI), and a shared instance would share one counter store and the last app's settings
between them. The limited views are wrapped when the app is built, which is what the decorator
would do at import time.
"""

from __future__ import annotations

import bisect
import functools
import threading
import time
import urllib.parse
from typing import cast

from flask import Flask
from flask.typing import RouteCallable
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits.storage import MemoryStorage

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

# The scheme under which ``InlineExpiryMemoryStorage`` is registered with ``limits``;
# ``init_app`` gives it to Flask-Limiter for ``memory://`` (the default setting).
INLINE_MEMORY_SCHEME = "ca-inline-memory"


class InlineExpiryMemoryStorage(MemoryStorage):
    """``limits``' memory storage, with expired counters and entries removed inline instead of
    by timer threads.

    Why a subclass of a maintained library's storage: ``MemoryStorage`` starts a
    ``threading.Timer`` thread (10 ms, one sweep) on every counted hit that finds the last one
    finished, that is one thread for nearly every sign-in POST of a real deployment, and a
    thread's start and sweep cost more CPU than the rest of the limit check. Here that hook
    sweeps in the calling thread, at most once a ``SWEEP_SECONDS``. The sweep only bounds
    memory (and, unlike the library's, forgets keys whose entries have all expired): no
    answer depends on it, since counters are checked against their expiry when read and
    moving-window entries by their time, and ``get_expiry`` and ``get_moving_window`` drop
    what has expired first, so their answers are those of a store swept that instant. One
    lock over the whole store makes each operation and the sweep atomic with respect to each
    other (the library's per-key locks are dropped by its sweep while another thread may
    still wait on them); each takes microseconds.

    It relies on these private parts of ``limits.storage.memory`` (tested by
    tests/auth/test_ratelimit_storage.py, which fails when an upgrade changes them): the
    name-mangled method ``_MemoryStorage__schedule_expiry``, which ``incr``, ``decr`` and
    ``acquire_entry`` call before counting; and the attributes ``storage`` and
    ``expirations`` (a counter and its expiry time per key), ``events`` (a list of ``Entry``
    per key, newest first, each with its ``atime`` and ``expiry`` times), ``locks`` and
    ``timer``.
    """

    # limits' registry reads it when the class is made; the base types it as a plain list.
    STORAGE_SCHEME = [INLINE_MEMORY_SCHEME]  # noqa: RUF012
    SWEEP_SECONDS = 1.0

    def __init__(
        self, uri: str | None = None, wrap_exceptions: bool = False, **options: str
    ) -> None:
        self._store_lock = threading.RLock()
        self._next_sweep = 0.0
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        # The constructor starts one timer (once, not per hit); stop it before it sweeps
        # without the store's lock.
        self.timer.cancel()

    def __getstate__(self) -> dict[str, object]:
        state = super().__getstate__()
        del state["_store_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self._store_lock = threading.RLock()
        super().__setstate__(state)
        self.timer.cancel()

    def _MemoryStorage__schedule_expiry(self) -> None:
        # In place of starting a timer; always called with the store's lock held.
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_SECONDS
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        for key, events in list(self.events.items()):
            # Entries a second past their expiry: out of every window, whatever the rounding.
            kept = bisect.bisect_left(events, -(now - 1.0), key=lambda entry: -entry.expiry)
            if kept == 0:
                del self.events[key]
                self.locks.pop(key, None)
            elif kept < len(events):
                self.events[key] = events[:kept]
        for key, expiry in list(self.expirations.items()):
            if expiry <= now:  # as ``get`` tests it
                self.storage.pop(key, None)
                del self.expirations[key]
                self.locks.pop(key, None)

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        with self._store_lock:
            return super().incr(key, expiry, amount)

    def decr(self, key: str, amount: int = 1) -> int:
        with self._store_lock:
            return super().decr(key, amount)

    def get(self, key: str) -> int:
        with self._store_lock:
            return super().get(key)

    def get_expiry(self, key: str) -> float:
        with self._store_lock:
            self.get(key)  # drops the counter if it has expired: its expiry is then now
            return super().get_expiry(key)

    def clear(self, key: str) -> None:
        with self._store_lock:
            super().clear(key)

    def reset(self) -> int | None:
        with self._store_lock:
            return super().reset()

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        with self._store_lock:
            return super().acquire_entry(key, limit, expiry, amount)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        with self._store_lock:
            # With only expired entries left, the library gives the oldest one's time as the
            # window's start (a reset time in the past) until a sweep has removed them. Those
            # ``acquire_entry`` no longer counts go (it counts an entry of exactly ``expiry``
            # seconds ago, which the window's count below does not).
            if events := self.events.get(key):
                start = time.time() - expiry
                kept = bisect.bisect_right(events, -start, key=lambda entry: -entry.atime)
                if kept < len(events):
                    self.events[key] = events[:kept]
            return super().get_moving_window(key, limit, expiry)


def init_app(app: Flask, rate: str) -> None:
    """Limit each sign-in POST to ``rate`` per client address.

    Storage comes from ``app.config["RATELIMIT_STORAGE_URI"]`` (Flask-Limiter reads it); a
    breach raises ``RateLimitExceeded`` (an HTTP 429), which the shared error handler renders.
    Call after the blueprint is registered.
    """
    # Behind a reverse proxy the address is the proxy's unless the app is wrapped in ProxyFix.
    limiter = Limiter(
        key_func=get_remote_address,
        strategy="moving-window",
        storage_uri=_storage_uri(str(app.config["RATELIMIT_STORAGE_URI"])),
    )
    limiter.init_app(app)
    _without_request_hooks(app, limiter)
    app.extensions["auth_limiter"] = limiter
    limit = limiter.limit(rate, methods=["POST"], error_message=MESSAGE)
    for endpoint in LIMITED_ENDPOINTS:
        # The wrapper keeps the view's signature; the cast restores Flask's view type, which
        # flask-limiter's overloads do not carry through.
        app.view_functions[endpoint] = cast(RouteCallable, limit(app.view_functions[endpoint]))


def _storage_uri(configured: str) -> str:
    """The storage Flask-Limiter is to build: ``InlineExpiryMemoryStorage`` for ``memory://``
    (which names no place, so there is nothing else to keep), else the configured one."""
    if urllib.parse.urlparse(configured).scheme == "memory":
        return f"{INLINE_MEMORY_SCHEME}://"
    return configured


def _without_request_hooks(app: Flask, limiter: Limiter) -> None:
    """Take Flask-Limiter's ``before_request`` check, ``after_request`` header hook and
    ``teardown_request`` reset off every request.

    Every limit here wraps a view, and the wrapper checks its limits itself when the view is
    called. The ``before_request`` hook evaluates only application, default, blueprint and
    meta limits, of which this limiter has none (nor can a setting give it one: the app's
    configuration holds no ``RATELIMIT_DEFAULT``, ``_APPLICATION`` or ``_META``), yet it
    resolved them for every request: about 0.1-0.2 ms of CPU each, for nothing. The
    ``after_request`` hook adds ``X-RateLimit-*`` headers, which are off (no
    ``RATELIMIT_HEADERS_ENABLED``), and makes the deductions of limits with a ``deduct_when``,
    of which there are none; the teardown resets state Flask-Limiter keeps on the request
    context, which goes with it. Together another 10-15 µs of CPU on every request.
    tests/auth/test_login.py checks that the limiter holds only view limits, none with a
    ``deduct_when``, and sends no headers.
    """
    before = app.before_request_funcs.get(None, [])
    app.before_request_funcs[None] = [f for f in before if f != limiter._check_request_limit]
    after = app.after_request_funcs.get(None, [])
    app.after_request_funcs[None] = [f for f in after if not _is_header_hook(f, limiter)]
    teardown = app.teardown_request_funcs.get(None, [])
    release = limiter._Limiter__release_context  # type: ignore[attr-defined]
    app.teardown_request_funcs[None] = [f for f in teardown if f != release]


def _is_header_hook(hook: object, limiter: Limiter) -> bool:
    # Flask-Limiter registers ``partial(Limiter.__inject_headers, limiter)``.
    return (
        isinstance(hook, functools.partial)
        and hook.func is getattr(Limiter, "_Limiter__inject_headers", None)
        and hook.args == (limiter,)
    )
