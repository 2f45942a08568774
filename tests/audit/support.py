"""Helpers of the audit tests: verify, raw SQL as an attacker would run it, an independent hash."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from flask import Flask

from ca_service.audit.models import AuditEvent, AuditHead
from ca_service.audit.service import AUDIT_KEY_LABEL, VerificationReport, verify_chain
from ca_service.db import db
from ca_service.hsm_access import app_token


def verify(app: Flask, max_unsigned_events: int | None = None) -> VerificationReport:
    with app.app_context():
        return verify_chain(
            app_token().public_key(AUDIT_KEY_LABEL), max_unsigned_events=max_unsigned_events
        )


def run_sql(app: Flask, *statements: sa.Executable) -> None:
    """Execute and commit, the way someone with database access tampers."""
    with app.app_context():
        for statement in statements:
            db.session.execute(statement)
        db.session.commit()


def documented_hash(row: AuditEvent) -> str:
    """The event hash re-implemented from the service's docstring, not from its code."""
    fields = [
        str(row.seq),
        row.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        row.actor,
        row.action,
        row.target,
        row.details,
        row.prev_hash,
    ]
    payload = "ca-service-audit-v1\n" + "\n".join(f"{len(f)}:{f}" for f in fields)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def rewrite_chain(app: Flask, changes: dict[int, dict[str, Any]]) -> None:
    """Alter events and recompute every hash and the head, as an attacker without the HSM key."""
    with app.app_context():
        prev = "0" * 64
        events = list(db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)))
        for event in events:
            for name, value in changes.get(event.seq, {}).items():
                setattr(event, name, value)
            event.prev_hash = prev
            event.hash = documented_hash(event)
            prev = event.hash
        head = db.session.get(AuditHead, 1)
        assert head is not None
        head.seq, head.hash = len(events), prev
        db.session.commit()


def append_in_process(overrides: dict[str, Any], worker: int, count: int) -> int:
    """Run in a separate (spawned) process: append ``count`` events, each in its own commit."""
    from ca_service.app import create_app
    from ca_service.audit.service import record_event

    app = create_app(overrides)
    with app.app_context():
        for i in range(count):
            record_event("tests", "test.process", f"w{worker}-{i}", {"worker": worker, "i": i})
            db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return count
