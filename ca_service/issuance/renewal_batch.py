"""Renewals issued at once, gathered per process into batches.

Each renewal issued at once commits twice (the reserved serial before the HSM signs, the stored
certificate after) and appends to the audit chain, whose head every writer queues on; on SQLite
every writing transaction also holds the one write lock. Renewals that arrive together would
queue one behind the other on those locks for their whole write work. Instead, a request checks
its renewal in a read transaction (``renewal.plan_renewal``, which takes no write lock) and hands
the plan to its process's batch thread, which writes every plan waiting at that moment in one
batch (``renewal.renew_planned``: one reservation commit, one signature each, one storing
commit), then answers each request. Nothing waits to fill a batch: a lone renewal is a batch of
one, and batches grow only while the previous one is being written (group commit).

The guarantees are those of ``issue_certificates``: one certificate per renewal, its serial
reserved before the HSM signs. A plan whose facts changed since it was read, that asks to
supersede, or whose batch failed before anything was committed comes back as "not done" and is
carried out by the request itself, one by one, which gives the exact refusal or renews.

The batch thread has its own application context and session: it is its own transaction
boundary, like a CLI command. It starts on the first renewal in each process (after a fork).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass, field

from flask import Flask
from flask_babel import gettext as _

from ca_service.auth.models import User
from ca_service.db import db, read_first
from ca_service.errors import CAError, ServiceUnavailable
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import renewal
from ca_service.issuance.renewal import BatchRenewal, RenewalOutcome, RenewalPlan
from ca_service.issuance.service import signing_failed_error
from ca_service.models import Certificate

log = logging.getLogger(__name__)

MAX_BATCH = 32  # plans written in one batch at most (the HSM signs them one after the other)
WAIT_SECONDS = 120.0  # a request gives up waiting for its batch (503) after this long


@dataclass
class _Waiting:
    plan: RenewalPlan
    done: threading.Event = field(default_factory=threading.Event)
    result: BatchRenewal | None = None
    error: BaseException | None = None
    committed: bool = False  # something of its batch was committed before the failure


class RenewalBatcher:
    """The batch thread of one process for one app."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._queue: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def renew(self, plan: RenewalPlan) -> BatchRenewal | None:
        """Carry out ``plan`` (issued at once) in the next batch and wait for it; None when the
        request must carry it out itself (nothing was written for it).

        :raises CAError: the batch refused it (an HSM failure: 503, the application stays
            approved as after ``issue_certificate``).
        :raises ServiceUnavailable: the batch failed after committing its reservations, or did
            not answer in time.
        """
        waiting = _Waiting(plan)
        self._start()
        self._queue.put(waiting)
        if not waiting.done.wait(WAIT_SECONDS):
            raise ServiceUnavailable(
                _("The renewal took too long; look at your certificates before retrying.")
            )
        if waiting.error is not None:
            if not waiting.committed:
                return None  # rolled back whole: the request renews one by one
            raise ServiceUnavailable(
                _("The renewal could not be completed; look at your certificates before retrying.")
            ) from waiting.error
        return waiting.result

    def _start(self) -> None:
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if alive and self._pid == os.getpid():
                return
            # First renewal of this process (a forked worker inherits no thread).
            self._queue = queue.SimpleQueue() if self._pid != os.getpid() else self._queue
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="renewal-batch", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except Exception as exc:  # the session's own clean-up failed (database gone)
                log.exception("renewal batch could not be finished")
                for waiting in batch:
                    if not waiting.done.is_set():
                        # Whether anything was committed is unknown: a 503, never a retry.
                        waiting.error, waiting.committed = exc, True
                        waiting.done.set()

    def _write(self, batch: list[_Waiting]) -> None:
        committed = False

        def commit() -> None:
            nonlocal committed
            db.session.commit()
            committed = True

        with self._app.app_context():
            # The rows handed back stay loaded through the commit, then leave the session
            # (read by the requests' threads, never written there).
            db.session().expire_on_commit = False
            try:
                results = renewal.renew_planned(
                    [waiting.plan for waiting in batch],
                    token=app_token(self._app),
                    settings=settings_of(self._app),
                    commit=commit,
                )
                db.session.commit()
                db.session.expunge_all()
            except Exception as exc:  # answered to every request of the batch, never lost
                db.session.rollback()
                if committed:
                    log.exception("renewal batch failed after its reservation commit")
                for waiting in batch:
                    waiting.error, waiting.committed = exc, committed
                    waiting.done.set()
                return
            finally:
                db.session.remove()
        for waiting, result in zip(batch, results, strict=True):
            waiting.result = result
            waiting.done.set()


def batcher_of(app: Flask) -> RenewalBatcher:
    """The app's renewal batcher (one per app and process)."""
    batcher = app.extensions.get("renewal_batcher")
    if batcher is None:
        batcher = app.extensions.setdefault("renewal_batcher", RenewalBatcher(app))
    return batcher  # type: ignore[no-any-return]


def _raise_refusal(result: BatchRenewal) -> None:
    """Raise the refusal a batch recorded for a request, in the request's language."""
    error = result.error
    if error is None:
        return
    if isinstance(error, ServiceUnavailable) and error.__cause__ is not None:
        raise signing_failed_error() from error.__cause__
    if isinstance(error, CAError):
        raise error


def renew(
    app: Flask,
    *,
    user: User,
    certificate: Certificate,
    csr: bytes,
    supersede: bool,
    contacts_confirmed: bool,
    lineage: renewal.LineageIds | None = None,
) -> RenewalOutcome:
    """Renew ``certificate`` with the key of ``csr`` (``renewal.request_renewal``'s contract):
    checked in a read transaction, then issued in the process's next batch when nothing needs
    review, else carried out in this request's transaction. The caller's boundary commits.
    ``lineage``: as read with ``certificate`` (``renewal.renewal_target``) in the request's
    read transaction, which this continues.

    Begin the request's transaction in ``read_first`` (the account and certificate reads) so
    that nothing holds SQLite's write lock while the renewal is checked.
    """
    settings = settings_of(app)
    with read_first():
        plan = renewal.plan_renewal(
            user=user,
            certificate=certificate,
            csr=csr,
            supersede=supersede,
            contacts_confirmed=contacts_confirmed,
            settings=settings,
            lineage=lineage,
        )
    # The read snapshot ends here: the batch commits in another session, read next; or this
    # request writes (an IMMEDIATE transaction on SQLite, begun afresh).
    db.session.rollback()
    # A resumed renewal is issued one by one: its application exists already.
    if not plan.reasons and not plan.supersede and plan.resume_id is None:
        result = batcher_of(app).renew(plan)
        if result is not None:
            _raise_refusal(result)
            if result.certificate is None:
                raise RuntimeError("a renewal batch answered without its certificate")
            return RenewalOutcome(result.application, result.certificate, [], result.delivery)
    return renewal.request_renewal(
        user=user,
        certificate=certificate,
        csr=csr,
        supersede=supersede,
        contacts_confirmed=contacts_confirmed,
        token=app_token(app),
        settings=settings,
        commit=db.session.commit,
    )
