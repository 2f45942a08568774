"""Where the verification core keeps each process's trust contexts, and the one way to make it
forget them (``invalidate_trust_cache``).

A module of its own so that code which changes trust material (the trust-anchor service) can
invalidate the cache without importing the verification core, which itself reaches the
tax-CRL code when it checks a path: no import goes back from there.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, cast

from flask import current_app

__all__ = ["TrustCache", "invalidate_trust_cache", "trust_cache"]

_CACHE_KEY = "ca_trust_contexts"


@dataclasses.dataclass
class TrustCache:
    """Per source (agency, tax): when its trust context was built, and the context (None when
    there is no trust material). The context's type belongs to the verification core."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    entries: dict[Any, tuple[float, Any]] = dataclasses.field(default_factory=dict)


def trust_cache() -> TrustCache:
    """This app's trust cache (one per app, which is one per worker process in production, and
    one per test app)."""
    cache = current_app.extensions.get(_CACHE_KEY)
    if cache is None:
        cache = current_app.extensions.setdefault(_CACHE_KEY, TrustCache())
    return cast("TrustCache", cache)


def invalidate_trust_cache() -> None:
    """Forget this process's cached trust material (after an anchor changes here; other
    processes notice within the verification core's TRUST_CACHE_SECONDS)."""
    cache = trust_cache()
    with cache.lock:
        cache.entries.clear()
