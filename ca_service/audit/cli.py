"""`ca-service audit ...`: verify, checkpoint and list the audit log."""

from __future__ import annotations

import click
import sqlalchemy as sa
from flask import current_app

from ca_service.audit.models import AuditEvent
from ca_service.audit.service import AUDIT_KEY_LABEL, sign_checkpoint, verify_chain
from ca_service.cli_support import app_command, echo_table, fail
from ca_service.db import db, read_first
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token


@click.group("audit")
def audit_cli() -> None:
    """The hash-chained audit log."""


@audit_cli.command("verify")
@app_command
def verify() -> None:
    """Recompute the chain and check the HSM-signed checkpoints; exit 1 when tampered."""
    every = int(settings_of(current_app)["AUDIT_CHECKPOINT_EVERY"])
    # Checkpoints are signed automatically every `every` events, so a longer unsigned tail
    # means checkpoints were deleted (letting someone rewrite the chain without the HSM key).
    public_key = app_token().public_key(AUDIT_KEY_LABEL)
    # Only reads: on SQLite a deferred transaction, so a long verification never holds the
    # write lock the service's writers queue on.
    with read_first():
        report = verify_chain(public_key, max_unsigned_events=every - 1)
    if not report.ok:
        fail(f"audit log tampered at event {report.first_bad_seq}: {report.problem}")
    click.echo(
        f"audit log intact: {report.events_checked} events, "
        f"{report.checkpoints_checked} signed checkpoints verified, "
        f"{report.unsigned_events} events after the last checkpoint"
    )


@audit_cli.command("checkpoint")
@app_command
def checkpoint() -> None:
    """Sign the current head of the chain with the HSM audit key now."""
    signed = sign_checkpoint(app_token())
    if signed is None:
        click.echo("the audit log is empty; nothing to sign")
    else:
        click.echo(f"checkpoint signed at event {signed.seq} ({signed.hash})")


@audit_cli.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--action", default=None, help="Only events with this action.")
@app_command
def list_events(limit: int, action: str | None) -> None:
    """Show the most recent events."""
    query = sa.select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit)
    if action:
        query = query.where(AuditEvent.action == action)
    rows = [
        {
            "seq": e.seq,
            "time": f"{e.occurred_at:%Y-%m-%d %H:%M:%S}",
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "details": e.details,
        }
        for e in db.session.scalars(query)
    ]
    echo_table(list(reversed(rows)), ["seq", "time", "actor", "action", "target", "details"])
