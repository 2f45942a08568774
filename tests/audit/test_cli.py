"""`ca-service audit verify | checkpoint | list`."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from flask import Flask

from ca_service.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from ca_service.audit.service import record_event
from ca_service.db import db
from tests.audit.conftest import EVENTS, SIGNED_AT
from tests.audit.support import run_sql
from tests.conftest import CliInvoke


def test_verify_intact(chain: Flask, cli: CliInvoke) -> None:
    result = cli("audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"audit log intact: {EVENTS} events, 1 signed checkpoints verified, "
        f"{EVENTS - SIGNED_AT} events after the last checkpoint"
    )


def test_verify_tampered_names_the_event(chain: Flask, cli: CliInvoke) -> None:
    run_sql(chain, sa.update(AuditEvent).where(AuditEvent.seq == 5).values(actor="mallory"))
    result = cli("audit", "verify")
    assert result.exit_code == 1
    assert "audit log tampered at event 5: content does not match its hash" in result.output


def test_verify_flags_a_tail_longer_than_the_checkpoint_interval(
    chain: Flask, app_overrides: dict[str, Any]
) -> None:
    """Checkpoints deleted and the head's counter forged to match: the interval still tells."""
    from ca_service.cli import main

    def verify_every(every: int) -> Result:
        overrides = {**app_overrides, "AUDIT_CHECKPOINT_EVERY": every}
        return CliRunner().invoke(main, ["audit", "verify"], obj={"overrides": overrides})

    assert verify_every(EVENTS - SIGNED_AT + 1).exit_code == 0
    run_sql(
        chain,
        sa.delete(AuditCheckpoint),
        sa.update(AuditHead).values(events_since_checkpoint=AuditHead.seq),
    )
    result = verify_every(EVENTS - SIGNED_AT + 1)
    assert result.exit_code == 1
    assert (
        f"tampered at event 1: {EVENTS} events follow the last signed checkpoint, "
        f"more than the {EVENTS - SIGNED_AT} allowed"
    ) in result.output


def test_checkpoint_command(app: Flask, cli: CliInvoke) -> None:
    result = cli("audit", "checkpoint")
    assert result.exit_code == 0, result.output
    assert "empty" in result.output
    with app.app_context():
        event = record_event("tests", "test.event", "t", {})
        db.session.commit()
        head_hash = event.hash
    result = cli("audit", "checkpoint")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"checkpoint signed at event 1 ({head_hash})"
    assert "1 signed checkpoints verified" in cli("audit", "verify").output


def test_list_filters_and_limits(chain: Flask, cli: CliInvoke) -> None:
    with chain.app_context():
        record_event("officer", "test.other", "x", {"k": "v"})
        db.session.commit()
    result = cli("audit", "list", "--limit", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "DETAILS"]
    assert [line.split()[0] for line in lines[1:]] == ["11", "12", "13"]
    result = cli("audit", "list", "--action", "test.other")
    assert len(result.output.splitlines()) == 2
    assert '{"k":"v"}' in result.output


def test_verify_never_holds_the_sqlite_write_lock(
    chain: Flask, cli: CliInvoke, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL readers never block writers")
    from ca_service.audit import service

    checked = service.checkpoint_signature_valid
    writer_got_in: list[bool] = []

    def while_verifying(public_key: Any, checkpoint: AuditCheckpoint) -> bool:
        # Half-way through the chain: another connection asks for the write lock at once.
        other = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            writer_got_in.append(True)
        except sqlite3.OperationalError:
            writer_got_in.append(False)
        finally:
            other.close()
        return checked(public_key, checkpoint)

    monkeypatch.setattr(service, "checkpoint_signature_valid", while_verifying)
    result = cli("audit", "verify")
    assert result.exit_code == 0, result.output
    assert writer_got_in == [True]
