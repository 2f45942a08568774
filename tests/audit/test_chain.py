"""verify_chain detects altered, deleted, reordered, inserted and rewritten events."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from ca_service.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from ca_service.audit.service import AuditLogDamaged, record_event
from ca_service.db import db
from tests.audit.conftest import EVENTS, SIGNED_AT, MakeApp
from tests.audit.support import documented_hash, rewrite_chain, run_sql, verify


def test_long_chain_verifies(make_app: MakeApp) -> None:
    app = make_app(AUDIT_CHECKPOINT_EVERY=200)
    with app.app_context():
        for n in range(1000):
            record_event("tests", "test.bulk", f"t{n}", {"n": n})
        db.session.commit()
        rows = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq))
        assert all(documented_hash(row) == row.hash for row in rows)
    report = verify(app, max_unsigned_events=199)
    assert (report.ok, report.events_checked, report.checkpoints_checked) == (True, 1000, 5)
    assert report.unsigned_events == 0


def test_intact_chain_reports_its_unsigned_tail(chain: Flask) -> None:
    report = verify(chain)
    assert report.ok, report.problem
    assert (report.events_checked, report.checkpoints_checked) == (EVENTS, 1)
    assert report.unsigned_events == EVENTS - SIGNED_AT


@pytest.mark.parametrize(
    "change", [{"actor": "mallory"}, {"details": '{"n":999}'}, {"target": "t55"}]
)
def test_altered_row_detected(chain: Flask, change: dict[str, str]) -> None:
    run_sql(chain, sa.update(AuditEvent).where(AuditEvent.seq == 5).values(**change))
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, 5)
    assert "altered" in report.problem


@pytest.mark.parametrize("seq", [1, 4])
def test_deleted_row_detected(chain: Flask, seq: int) -> None:
    run_sql(chain, sa.delete(AuditEvent).where(AuditEvent.seq == seq))
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, seq)
    assert "deleted" in report.problem


def test_truncated_tail_detected_by_head(chain: Flask) -> None:
    run_sql(chain, sa.delete(AuditEvent).where(AuditEvent.seq > 10))
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, 11)
    assert "deleted from the end" in report.problem


def test_truncation_past_a_checkpoint_detected_even_with_the_head_fixed(chain: Flask) -> None:
    with chain.app_context():
        sixth = db.session.get(AuditEvent, 6)
        assert sixth is not None
        hash_6 = sixth.hash
    run_sql(
        chain,
        sa.delete(AuditEvent).where(AuditEvent.seq > 6),
        sa.update(AuditHead).values(seq=6, hash=hash_6, events_since_checkpoint=6),
    )
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, SIGNED_AT)
    assert "no longer exists" in report.problem


def test_reordered_rows_detected(chain: Flask) -> None:
    fields = ("occurred_at", "actor", "action", "target", "details", "prev_hash", "hash")
    with chain.app_context():
        a, b = (db.session.get(AuditEvent, seq) for seq in (3, 6))
        assert a is not None
        assert b is not None
        values_a = {f: getattr(a, f) for f in fields}
        values_b = {f: getattr(b, f) for f in fields}
    run_sql(
        chain,
        # Through a placeholder: the hash column is unique.
        sa.update(AuditEvent).where(AuditEvent.seq == 6).values(hash="x"),
        sa.update(AuditEvent).where(AuditEvent.seq == 3).values(**values_b),
        sa.update(AuditEvent).where(AuditEvent.seq == 6).values(**values_a),
    )
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert "reordered" in report.problem


def test_rewritten_chain_caught_by_signed_checkpoint(chain: Flask) -> None:
    """Event 2 altered and every later hash recomputed: only the HSM signature tells."""
    rewrite_chain(chain, {2: {"details": '{"n":999}'}})
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, SIGNED_AT)
    assert "differs from the signed checkpoint" in report.problem
    assert "rewritten after event 0" in report.problem


def test_forged_checkpoint_signature_detected(chain: Flask) -> None:
    run_sql(chain, sa.update(AuditCheckpoint).values(signature=b"\x30\x06\x02\x01\x01\x02\x01\x01"))
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, SIGNED_AT)
    assert "signature does not verify" in report.problem


def test_checkpoint_moved_to_another_event_detected(chain: Flask) -> None:
    """The signature covers seq as well as hash: relabelling a checkpoint breaks it."""
    with chain.app_context():
        tenth = db.session.get(AuditEvent, 10)
        assert tenth is not None
        hash_10 = tenth.hash
    run_sql(chain, sa.update(AuditCheckpoint).values(seq=10, hash=hash_10))
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, 10)
    assert "signature" in report.problem


def test_checkpoint_with_a_foreign_algorithm_detected(chain: Flask) -> None:
    run_sql(chain, sa.update(AuditCheckpoint).values(algorithm="rsa-pkcs1-sha256"))
    assert verify(chain).first_bad_seq == SIGNED_AT


def test_event_inserted_behind_the_heads_back_detected(chain: Flask) -> None:
    """A well-linked forged event after the last one, without updating the head."""
    with chain.app_context():
        last = db.session.get(AuditEvent, EVENTS)
        assert last is not None
        forged = AuditEvent(
            seq=EVENTS + 1,
            occurred_at=last.occurred_at,
            actor="ca-admin",
            action="user.created",
            target="mallory",
            details="{}",
            prev_hash=last.hash,
        )
        forged.hash = documented_hash(forged)
        db.session.add(forged)
        db.session.commit()
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, EVENTS + 1)
    assert "inserted" in report.problem


def test_last_event_rewritten_without_the_head_detected(chain: Flask) -> None:
    with chain.app_context():
        last = db.session.get(AuditEvent, EVENTS)
        assert last is not None
        last.actor = "mallory"
        last.hash = documented_hash(last)
        db.session.commit()
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, EVENTS)
    assert "head" in report.problem


def test_deleted_checkpoints_detected_by_the_head_counter(chain: Flask) -> None:
    run_sql(chain, sa.delete(AuditCheckpoint))
    rewrite_chain(chain, {2: {"actor": "mallory"}})
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, 1)
    assert "checkpoints deleted" in report.problem


def test_deleted_checkpoints_detected_by_the_interval(chain: Flask) -> None:
    """Even with the head's counter forged too, the tail is longer than signing allows."""
    run_sql(chain, sa.delete(AuditCheckpoint))
    rewrite_chain(chain, {2: {"actor": "mallory"}})
    run_sql(chain, sa.update(AuditHead).values(events_since_checkpoint=EVENTS))
    # Without a bound the chain alone cannot tell: this is what the bound is for.
    assert verify(chain).ok
    report = verify(chain, max_unsigned_events=SIGNED_AT - 1)
    assert (report.ok, report.first_bad_seq) == (False, 1)
    assert "more than the 7 allowed" in report.problem


def test_deleted_head_row_detected_and_appends_refused(chain: Flask) -> None:
    run_sql(chain, sa.delete(AuditHead))
    report = verify(chain)
    assert (report.ok, report.first_bad_seq) == (False, EVENTS + 1)
    assert "head row is missing" in report.problem
    with chain.app_context(), pytest.raises(AuditLogDamaged, match="tampered"):
        record_event("tests", "test.event", "t", {})
