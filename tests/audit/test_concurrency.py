"""Concurrent appenders (threads, processes) keep one unbroken chain; verify runs alongside."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import sqlalchemy as sa
from flask import Flask

from ca_service.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from ca_service.audit.service import VerificationReport, record_event
from ca_service.db import db
from tests.audit.conftest import MakeApp
from tests.audit.support import append_in_process, run_sql, verify


def _run_threads(target: Callable[[int], None], count: int) -> None:
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:  # re-raised below in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _count(app: Flask, model: type[Any]) -> int:
    with app.app_context():
        return int(db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


def test_threads_keep_one_chain(make_app: MakeApp) -> None:
    """Each thread has its own app context and session; checkpoints are signed meanwhile."""
    app = make_app(AUDIT_CHECKPOINT_EVERY=7)

    def append(n: int) -> None:
        with app.app_context():
            for i in range(10):
                record_event("tests", "test.concurrent", f"{n}-{i}", {"i": i})
                db.session.commit()

    _run_threads(append, 4)
    report = verify(app, max_unsigned_events=6)
    assert report.ok, (report.first_bad_seq, report.problem)
    assert (report.events_checked, report.checkpoints_checked) == (40, 5)
    assert _count(app, AuditEvent) == 40


def test_threads_racing_to_create_the_head(app: Flask) -> None:
    run_sql(app, sa.delete(AuditHead))

    def append(n: int) -> None:
        with app.app_context():
            record_event("tests", "test.concurrent", str(n), {})
            db.session.commit()

    _run_threads(append, 4)
    report = verify(app)
    assert report.ok, report.problem
    assert report.events_checked == 4


def test_processes_keep_one_chain(app: Flask, app_overrides: dict[str, Any]) -> None:
    """Separate processes, as gunicorn workers or other machines would append."""
    overrides = {**app_overrides, "AUDIT_CHECKPOINT_EVERY": 9}
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: its own PKCS#11 state
    with ProcessPoolExecutor(max_workers=3, mp_context=spawn) as pool:
        futures = [pool.submit(append_in_process, overrides, worker, 15) for worker in range(3)]
        assert [f.result(timeout=120) for f in futures] == [15, 15, 15]
    report = verify(app, max_unsigned_events=8)
    assert report.ok, (report.first_bad_seq, report.problem)
    assert (report.events_checked, report.checkpoints_checked) == (45, 5)
    assert _count(app, AuditCheckpoint) == 5


def test_verify_while_others_append_reports_no_tampering(make_app: MakeApp) -> None:
    """Events committed during a verification are neither missed nor taken for forgeries."""
    app = make_app(AUDIT_CHECKPOINT_EVERY=10)
    with app.app_context():
        for i in range(200):
            record_event("tests", "test.event", str(i), {})
        db.session.commit()
    stop = threading.Event()
    reports: list[VerificationReport] = []

    def work(n: int) -> None:
        with app.app_context():
            if n == 0:
                for _ in range(15):
                    reports.append(verify(app, max_unsigned_events=9))
                stop.set()
                return
            while not stop.is_set():
                record_event("tests", "test.concurrent", str(n), {})
                db.session.commit()

    _run_threads(work, 3)
    assert [r for r in reports if not r.ok] == []
    assert _count(app, AuditEvent) > 200
