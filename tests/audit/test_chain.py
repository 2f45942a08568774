"""The audit chain detects altered, deleted, reordered and rewritten events."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from flask import Flask

from ca_service.audit.models import AuditEvent, AuditHead
from ca_service.audit.service import (
    AUDIT_KEY_LABEL,
    event_hash,
    record_event,
    sign_checkpoint,
    verify_chain,
)
from ca_service.db import db
from ca_service.hsm_access import app_token
from tests.conftest import CliInvoke

EVENTS = 12


@pytest.fixture
def chain(app: Flask) -> Flask:
    """A log of EVENTS events with a signed checkpoint at event 8."""
    with app.app_context():
        for n in range(1, EVENTS + 1):
            record_event("tests", "test.event", f"t{n}", {"n": n})
            if n == 8:
                sign_checkpoint(app_token())
        db.session.commit()
    return app


def _verify(app: Flask) -> tuple[bool, int | None, str]:
    with app.app_context():
        report = verify_chain(app_token().public_key(AUDIT_KEY_LABEL))
        return report.ok, report.first_bad_seq, report.problem


def _sql(app: Flask, statement: sa.Executable) -> None:
    with app.app_context():
        db.session.execute(statement)
        db.session.commit()


def test_intact_chain_verifies(chain: Flask, cli: CliInvoke) -> None:
    assert _verify(chain) == (True, None, "")
    result = cli("audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"{EVENTS} events" in result.output
    assert "1 signed checkpoints" in result.output


def test_altered_row_detected(chain: Flask, cli: CliInvoke) -> None:
    _sql(chain, sa.update(AuditEvent).where(AuditEvent.seq == 5).values(actor="mallory"))
    assert _verify(chain)[:2] == (False, 5)
    result = cli("audit", "verify")
    assert result.exit_code == 1
    assert "tampered at event 5" in result.output


def test_deleted_row_detected(chain: Flask) -> None:
    _sql(chain, sa.delete(AuditEvent).where(AuditEvent.seq == 4))
    ok, seq, problem = _verify(chain)
    assert (ok, seq) == (False, 4)
    assert "deleted" in problem


def test_truncated_tail_detected(chain: Flask) -> None:
    _sql(chain, sa.delete(AuditEvent).where(AuditEvent.seq > 10))
    ok, seq, problem = _verify(chain)
    assert (ok, seq) == (False, 11)
    assert "end" in problem


def test_reordered_rows_detected(chain: Flask) -> None:
    with chain.app_context():
        a = db.session.get(AuditEvent, 3)
        b = db.session.get(AuditEvent, 6)
        assert a is not None
        assert b is not None
        fields = ("occurred_at", "actor", "action", "target", "details", "prev_hash", "hash")
        values_a = {f: getattr(a, f) for f in fields}
        values_b = {f: getattr(b, f) for f in fields}
        # Move b's content to a placeholder first: hash is unique.
        db.session.execute(sa.update(AuditEvent).where(AuditEvent.seq == 6).values(hash="x"))
        db.session.execute(sa.update(AuditEvent).where(AuditEvent.seq == 3).values(**values_b))
        db.session.execute(sa.update(AuditEvent).where(AuditEvent.seq == 6).values(**values_a))
        db.session.commit()
    assert _verify(chain)[:2] == (False, 3)


def test_rewritten_chain_caught_by_signed_checkpoint(chain: Flask) -> None:
    """An attacker alters event 2 and recomputes every later hash (they have no HSM key)."""
    with chain.app_context():
        prev = None
        for event in db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)):
            if event.seq == 2:
                event.details = '{"n":999}'
            event.prev_hash = prev or event.prev_hash
            event.hash = event_hash(event)
            prev = event.hash
        head = db.session.get(AuditHead, 1)
        assert head is not None
        head.hash = prev or ""
        db.session.commit()
    ok, seq, problem = _verify(chain)
    assert (ok, seq) == (False, 8)
    assert "checkpoint" in problem


def test_forged_checkpoint_signature_detected(chain: Flask) -> None:
    from ca_service.audit.models import AuditCheckpoint

    _sql(chain, sa.update(AuditCheckpoint).values(signature=b"\x30\x06\x02\x01\x01\x02\x01\x01"))
    ok, seq, problem = _verify(chain)
    assert (ok, seq) == (False, 8)
    assert "signature" in problem


def test_secrets_refused_in_details(app: Flask) -> None:
    with app.app_context(), pytest.raises(ValueError, match="secrets"):
        record_event("tests", "test.event", "t", {"password": "x"})


def test_concurrent_appends_keep_one_chain(app: Flask) -> None:
    errors: list[BaseException] = []

    def append(n: int) -> None:
        try:
            with app.app_context():
                for i in range(10):
                    record_event("tests", "test.concurrent", f"{n}-{i}", {"i": i})
                    db.session.commit()
        except BaseException as exc:  # re-raised below in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ok, seq, problem = _verify(app)
    assert ok, (seq, problem)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 40


def test_checkpoint_signed_automatically(app: Flask) -> None:
    from ca_service.audit.models import AuditCheckpoint

    every = int(app.extensions["ca_settings"]["AUDIT_CHECKPOINT_EVERY"])
    with app.app_context():
        for n in range(every):
            record_event("tests", "test.event", f"t{n}", {"n": n})
        db.session.commit()
        seqs = list(db.session.scalars(sa.select(AuditCheckpoint.seq)))
    assert seqs == [every]
    assert _verify(app) == (True, None, "")
