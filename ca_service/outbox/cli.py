"""`ca-service outbox list|deliver|retry`."""

from __future__ import annotations

import time

import click
from flask import current_app

from ca_service.cli_support import app_command, echo_table, fail
from ca_service.db import db
from ca_service.extensions import settings_of
from ca_service.outbox import service
from ca_service.outbox.models import MessageStatus
from ca_service.outbox.senders import senders_for


@click.group("outbox")
def outbox_cli() -> None:
    """E-mail and SMS notifications waiting in, or delivered from, the outbox."""


@outbox_cli.command("list")
@click.option("--to", "recipient", default=None, help="Only messages to this address or number.")
@click.option("--status", type=click.Choice([s.value for s in MessageStatus]), default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--body/--no-body", default=True, show_default=True, help="Print message bodies.")
@app_command
def list_(recipient: str | None, status: str | None, limit: int, body: bool) -> None:
    """Newest messages first (development SMS and e-mail are read here)."""
    messages = service.list_messages(
        recipient=recipient, status=MessageStatus(status) if status else None, limit=limit
    )
    if not body:
        echo_table(
            [
                {
                    "id": m.id,
                    "channel": m.channel.value,
                    "to": m.recipient,
                    "status": m.status.value,
                    "attempts": m.attempts,
                    "subject": m.subject,
                }
                for m in messages
            ],
            ["id", "channel", "to", "status", "attempts", "subject"],
        )
        return
    for m in messages:
        click.echo(
            f"#{m.id} {m.channel.value} to {m.recipient} [{m.status.value}, "
            f"{m.attempts} attempt(s)] {m.created_at:%Y-%m-%d %H:%M:%S} UTC"
        )
        click.echo(f"  {m.subject}")
        for line in m.body.splitlines():
            click.echo(f"  | {line}")
        if m.last_error:
            click.echo(f"  last error: {m.last_error}")


def _deliver_once() -> service.DeliveryReport:
    settings = settings_of(current_app)
    report = service.deliver_due(
        senders_for(settings), max_attempts=int(settings["OUTBOX_MAX_ATTEMPTS"])
    )
    db.session.commit()
    return report


@outbox_cli.command("deliver")
@click.option(
    "--every",
    type=click.IntRange(1, 3600),
    default=None,
    help="Keep running, delivering every N seconds (a worker); default: once.",
)
@app_command
def deliver(every: int | None) -> None:
    """Send due messages, retrying failures with exponential backoff."""
    while True:
        report = _deliver_once()
        click.echo(f"sent {report.sent}, to retry {report.retried}, failed {report.failed}")
        if every is None:
            return
        time.sleep(every)


@outbox_cli.command("retry")
@click.argument("message_id", type=int)
@app_command
def retry(message_id: int) -> None:
    """Queue a failed message again."""
    if service.retry_failed(message_id) is None:
        fail(f"message {message_id} does not exist or has not failed")
    click.echo(f"message {message_id} queued")
