"""The sign-in limiter's memory storage (``ratelimit.InlineExpiryMemoryStorage``): no thread per
counted hit, the same answers as ``limits``' ``MemoryStorage`` for the moving and fixed windows,
expiry to the moment, one consistent count under concurrent threads; Redis left as it was.

The storage overrides private parts of ``limits.storage.memory``; the first test fails when an
upgrade of ``limits`` renames or removes them (the thread counts would say so too)."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import time_machine
from flask import Flask
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage, storage_from_string
from limits.storage.memory import Entry
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from ca_service.auth.ratelimit import INLINE_MEMORY_SCHEME, InlineExpiryMemoryStorage
from tests.auth.flows import csrf_token

T0 = 1_900_000_000.0  # a moment to travel to (2030-03-17), far from the wall clock's


@pytest.fixture
def threads_started(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """Every thread started while the test runs (whatever starts it)."""
    started: list[threading.Thread] = []
    original = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread)
        original(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    return started


def test_the_private_parts_of_limits_it_relies_on_are_there() -> None:
    # ``MemoryStorage.incr``, ``decr`` and ``acquire_entry`` call ``self.__schedule_expiry()``;
    # the subclass's method of that mangled name must be the one they reach.
    assert callable(getattr(MemoryStorage, "_MemoryStorage__schedule_expiry", None))
    assert callable(getattr(MemoryStorage, "_MemoryStorage__expire_events", None))
    storage = InlineExpiryMemoryStorage()
    assert isinstance(storage.timer, threading.Timer)
    assert isinstance(storage.events, dict)
    entry = Entry(5)
    assert entry.expiry - entry.atime == 5
    assert type(storage_from_string(f"{INLINE_MEMORY_SCHEME}://")) is InlineExpiryMemoryStorage
    # The library's own scheme is left alone.
    assert type(storage_from_string("memory://")) is MemoryStorage


@pytest.mark.parametrize("strategy", [MovingWindowRateLimiter, FixedWindowRateLimiter])
def test_counted_hits_start_no_thread(
    strategy: Callable[[Any], MovingWindowRateLimiter | FixedWindowRateLimiter],
    threads_started: list[threading.Thread],
) -> None:
    """``MemoryStorage`` starts a timer thread at a hit whenever the previous one (10 ms) has
    finished: nearly one per hit when hits are further apart than that."""
    storage = InlineExpiryMemoryStorage()
    storage.SWEEP_SECONDS = 0.01  # sweep at most hits, as often as the library's timer would
    limiter = strategy(storage)
    threads_started.clear()  # the constructor's one timer (stopped at once) is not per hit
    item = RateLimitItemPerSecond(1000, 60)
    for i in range(20):
        assert limiter.hit(item, "address", str(i % 3))
        assert limiter.test(item, "address", str(i % 3))
        time.sleep(0.015)
    assert threads_started == []


def test_sign_in_posts_start_no_thread(app: Flask, threads_started: list[threading.Thread]) -> None:
    assert type(app.extensions["auth_limiter"].storage) is InlineExpiryMemoryStorage
    client = app.test_client()
    token = csrf_token(client, "/auth/login")
    data = {"username": "nobody", "password": "wrong password", "csrf_token": token}
    for _ in range(10):
        assert client.post("/auth/login", data=data).status_code == 401
        time.sleep(0.015)
    assert threads_started == []


def _both() -> list[MemoryStorage]:
    return [MemoryStorage(), InlineExpiryMemoryStorage()]


def test_moving_window_answers_as_the_library_does() -> None:
    """Three hits in any 10 seconds, at the same moments for both storages. (Not at a moment
    exactly 10 seconds after a hit: the library's timer may sweep at any moment, and the entry
    is then in the window or not depending on whether it has.)"""
    item = RateLimitItemPerSecond(3, 10)
    answers: list[list[object]] = []
    for storage in _both():
        limiter = MovingWindowRateLimiter(storage)
        seen: list[object] = []
        with time_machine.travel(T0, tick=False) as clock:
            for step in (0.0, 1.0, 2.0, 3.0, 9.999, 10.001, 10.5, 11.5, 12.001, 12.5):
                clock.move_to(T0 + step)
                seen.append((step, limiter.test(item, "a"), limiter.hit(item, "a")))
                seen.append(limiter.get_window_stats(item, "a"))
            # Another key is counted on its own.
            seen.append(limiter.hit(item, "b"))
        answers.append(seen)
    assert answers[0] == answers[1]
    hits = [entry[2] for entry in answers[1] if isinstance(entry, tuple) and len(entry) == 3]
    assert hits == [True, True, True, False, False, True, False, True, True, False]


def test_a_moving_window_entry_counts_until_its_expiry_has_passed() -> None:
    # ``acquire_entry`` counts an entry until strictly more than the window's length ago.
    storage = InlineExpiryMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerSecond(1, 10)
    with time_machine.travel(T0, tick=False) as clock:
        assert limiter.hit(item, "a")
        clock.move_to(T0 + 10)
        assert limiter.test(item, "a")  # the library's count leaves it out already
        assert not limiter.hit(item, "a")
        clock.move_to(T0 + 10.001)
        assert limiter.hit(item, "a")


def test_a_moving_window_whose_entries_all_expired_resets_from_now() -> None:
    storage = InlineExpiryMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerSecond(2, 10)
    with time_machine.travel(T0, tick=False) as clock:
        assert limiter.hit(item, "a")
        assert limiter.hit(item, "a")
        assert not limiter.hit(item, "a")
        stats = limiter.get_window_stats(item, "a")
        assert (stats.reset_time, stats.remaining) == (T0 + 10, 0)
        clock.move_to(T0 + 10.5)
        # Nothing counted in the last 10 seconds: the whole limit, a window from now (the
        # library says the oldest entry's time until its timer has swept).
        stats = limiter.get_window_stats(item, "a")
        assert (stats.reset_time, stats.remaining) == (T0 + 20.5, 2)
        assert limiter.test(item, "a")


def test_fixed_window_answers_as_the_library_does() -> None:
    item = RateLimitItemPerSecond(2, 5)
    answers: list[list[object]] = []
    for storage in _both():
        limiter = FixedWindowRateLimiter(storage)
        seen: list[object] = []
        with time_machine.travel(T0, tick=False) as clock:
            for step in (0.0, 1.0, 2.0, 4.999, 5.0, 5.5, 6.0, 7.0, 10.0):
                clock.move_to(T0 + step)
                seen.append((step, limiter.test(item, "a"), limiter.hit(item, "a")))
                seen.append(limiter.get_window_stats(item, "a").remaining)
        answers.append(seen)
    assert answers[0] == answers[1]
    hits = [entry[2] for entry in answers[1] if isinstance(entry, tuple)]
    assert hits == [True, True, False, False, True, True, False, False, True]


def test_a_fixed_window_expires_to_the_moment() -> None:
    storage = InlineExpiryMemoryStorage()
    limiter = FixedWindowRateLimiter(storage)
    item = RateLimitItemPerSecond(1, 5)
    with time_machine.travel(T0, tick=False) as clock:
        assert limiter.hit(item, "a")
        assert limiter.get_window_stats(item, "a").reset_time == T0 + 5
        clock.move_to(T0 + 4.999)
        assert not limiter.hit(item, "a")
        clock.move_to(T0 + 5)
        # Expired, though no sweep has run: the reset is now, not a moment past.
        stats = limiter.get_window_stats(item, "a")
        assert (stats.reset_time, stats.remaining) == (T0 + 5, 1)
        assert limiter.hit(item, "a")


def test_expired_keys_are_swept_at_a_later_hit() -> None:
    storage = InlineExpiryMemoryStorage()
    moving, fixed = MovingWindowRateLimiter(storage), FixedWindowRateLimiter(storage)
    short, long = RateLimitItemPerSecond(5, 2), RateLimitItemPerSecond(5, 60)
    with time_machine.travel(T0, tick=False) as clock:
        assert moving.hit(short, "gone")
        assert fixed.hit(short, "gone-too")
        assert moving.hit(long, "kept")
        clock.move_to(T0 + 5)
        assert moving.hit(long, "other")
    keys = set(storage.events) | set(storage.storage) | set(storage.expirations)
    assert keys == {long.key_for("kept"), long.key_for("other")}


def test_concurrent_threads_count_exactly_the_limit() -> None:
    """Eight threads, 1,200 attempts at a limit of 500, sweeps as often as possible: exactly
    500 counted."""
    storage = InlineExpiryMemoryStorage()
    storage.SWEEP_SECONDS = 0.0
    moving, fixed = MovingWindowRateLimiter(storage), FixedWindowRateLimiter(storage)
    item = RateLimitItemPerSecond(500, 60)

    def attempts(_: int) -> tuple[int, int]:
        return (
            sum(moving.hit(item, "moving") for _ in range(150)),
            sum(fixed.hit(item, "fixed") for _ in range(150)),
        )

    with ThreadPoolExecutor(8) as pool:
        counted = list(pool.map(attempts, range(8)))
    assert sum(m for m, _ in counted) == 500
    assert sum(f for _, f in counted) == 500
    assert storage.get(item.key_for("fixed")) == 1200  # a fixed window counts refusals too


def test_pickles_with_its_counts() -> None:
    storage = InlineExpiryMemoryStorage()
    item = RateLimitItemPerSecond(1, 60)
    assert MovingWindowRateLimiter(storage).hit(item, "a")
    copy = pickle.loads(pickle.dumps(storage))  # noqa: S301  (our own object, just made)
    assert not MovingWindowRateLimiter(copy).hit(item, "a")
    assert MovingWindowRateLimiter(copy).hit(item, "b")


def test_other_storages_are_built_as_configured(app_overrides: dict[str, Any], app: Flask) -> None:
    from ca_service.app import create_app

    other = create_app({**app_overrides, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0"})
    try:
        assert type(other.extensions["auth_limiter"].storage) is RedisStorage
        assert other.config["RATELIMIT_STORAGE_URI"] == "redis://127.0.0.1:1/0"
        assert app.config["RATELIMIT_STORAGE_URI"] == "memory://"
    finally:
        from ca_service.db import db

        with other.app_context():
            db.engine.dispose()
