"""A worker's memory of OCSP answers, keyed by the request's DER.

Relying parties ask about the same certificates again and again, with byte-identical requests
(RFC 5019 clients send no nonce). Answering such a request from memory skips the database and
the web framework; it is what lets the responder answer faster than it can look anything up.

An answer is remembered (``OCSPAnswer.reusable``: not an unsuccessful status, not an answer
echoing a nonce) for at most ``MAX_SECONDS``, never into the last part of its validity in which
storage re-signs it, and only until the responses change: every commit that stores or drops
OCSP responses (a revocation, a release of a hold, a first answer for a new certificate, a
refresh) increments the OCSP epoch in the database, and the fast path forgets everything when
it sees a new epoch (it looks every ``OCSP_CHANGE_CHECK_MS``). The worker that made the change
forgets at once. (An "unknown" remembered for a serial that is issued afterwards lasts its
minute: serials are unguessable until issued, and "unknown" is refused by relying parties.)

Generations close the race between a reader and a change: an answer read from the database
before a change committed is put only if no change was seen since the read began.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

from ca_service.revocation.ocsp import OCSPAnswer

MAX_SECONDS = 60.0
# Bounded memory: when full it starts afresh (requests are small, answers ~1-2 KiB each).
MAX_ENTRIES = 20_000


class AnswerCache:
    """Answers by request DER. Thread-safe: gunicorn's threads share one per worker."""

    def __init__(
        self,
        lapse_margin: dt.timedelta,
        *,
        max_seconds: float = MAX_SECONDS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``lapse_margin``: an answer is not remembered into the last ``lapse_margin`` before
        its nextUpdate (storage re-signs it then; see ``ocsp._stale_before``)."""
        self._lapse_margin = lapse_margin
        self._max_seconds = max_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[bytes, tuple[float, OCSPAnswer]] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, request: bytes) -> OCSPAnswer | None:
        """The remembered answer to this exact request, or None."""
        entry = self._entries.get(request)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def put(
        self,
        request: bytes,
        answer: OCSPAnswer,
        generation: int,
        now: dt.datetime | None = None,
    ) -> None:
        """Remember ``answer``, read while ``generation`` was current, if it is reusable and
        nothing changed since."""
        if not answer.reusable or answer.next_update is None:
            return
        now = now or dt.datetime.now(dt.UTC)
        usable = (answer.next_update - self._lapse_margin - now).total_seconds()
        seconds = min(self._max_seconds, usable)
        if seconds <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self._max_entries:
                self._entries = {}
            self._entries[request] = (self._clock() + seconds, answer)

    def clear(self) -> None:
        """Forget everything: OCSP responses changed."""
        with self._lock:
            self.generation += 1
            self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)
