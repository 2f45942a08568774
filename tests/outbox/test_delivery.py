"""The outbox delivers e-mail through a real SMTP server (aiosmtpd), retries with backoff while
the server is down, never sends twice, and blanks one-time codes once they left."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from click.testing import CliRunner, Result
from flask import Flask

from ca_service.cli import main
from ca_service.db import db
from ca_service.outbox.models import Channel, MessageStatus, OutboxMessage
from ca_service.outbox.service import BLANKED, enqueue
from tests.conftest import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def run_cli(overrides: dict[str, object], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj={"overrides": overrides})


def _queue(app: Flask, key: str, *, sensitive: bool = False) -> None:
    with app.app_context():
        enqueue(
            channel=Channel.EMAIL,
            recipient="hr@example.test",
            subject=f"Notice {key}",
            body=f"Body of {key}",
            dedupe_key=key,
            sensitive=sensitive,
        )
        enqueue(
            channel=Channel.EMAIL,
            recipient="hr@example.test",
            subject="duplicate",
            body="never sent",
            dedupe_key=key,
        )
        db.session.commit()


def _rows(app: Flask) -> list[OutboxMessage]:
    with app.app_context():
        rows = list(db.session.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id)))
        for row in rows:
            db.session.expunge(row)
        return rows


def test_delivery_through_smtp_once_with_codes_blanked(
    app: Flask, app_overrides: dict[str, object], smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    _queue(app, "notice-1")
    _queue(app, "code-1", sensitive=True)
    overrides = {**app_overrides, "SMTP_URL": f"smtp://127.0.0.1:{port}"}
    result = run_cli(overrides, "outbox", "deliver")
    assert result.exit_code == 0, result.output
    assert "sent 2" in result.output
    assert sorted(m["Subject"] for m in inbox.messages) == ["Notice code-1", "Notice notice-1"]
    rows = _rows(app)
    assert [r.status for r in rows] == [MessageStatus.SENT, MessageStatus.SENT]
    assert rows[1].body == BLANKED
    assert rows[0].body == "Body of notice-1"
    # Delivering again sends nothing more.
    again = run_cli(overrides, "outbox", "deliver")
    assert "sent 0" in again.output
    assert len(inbox.messages) == 2


def test_a_mail_server_outage_is_retried_with_backoff_then_marked_failed(
    app: Flask, app_overrides: dict[str, object]
) -> None:
    _queue(app, "notice-2")
    overrides = {
        **app_overrides,
        "SMTP_URL": f"smtp://127.0.0.1:{free_port()}",  # nothing listens there
        "OUTBOX_MAX_ATTEMPTS": 2,
    }
    first = run_cli(overrides, "outbox", "deliver")
    assert first.exit_code == 0, first.output
    assert "to retry 1" in first.output
    (row,) = _rows(app)
    assert row.status is MessageStatus.PENDING
    assert row.attempts == 1
    assert row.last_error
    assert row.next_attempt_at > row.created_at  # backed off
    # Not due yet: nothing is tried.
    assert "to retry 0" in run_cli(overrides, "outbox", "deliver").output
    with app.app_context():
        db.session.execute(sa.update(OutboxMessage).values(next_attempt_at=row.created_at))
        db.session.commit()
    assert "failed 1" in run_cli(overrides, "outbox", "deliver").output
    (row,) = _rows(app)
    assert row.status is MessageStatus.FAILED
    retried = run_cli(overrides, "outbox", "retry", str(row.id))
    assert retried.exit_code == 0, retried.output
    assert _rows(app)[0].status is MessageStatus.PENDING
    assert run_cli(overrides, "outbox", "retry", "999999").exit_code != 0


def test_development_sms_stays_readable_in_the_outbox(
    app: Flask, app_overrides: dict[str, object]
) -> None:
    with app.app_context():
        enqueue(
            channel=Channel.SMS,
            recipient="+8613800138000",
            subject="Mobile confirmation code",
            body="Your confirmation code is 123456.",
            dedupe_key="code:dev",
            sensitive=True,
        )
        db.session.commit()
    assert "sent 1" in run_cli(app_overrides, "outbox", "deliver").output
    listing = run_cli(app_overrides, "outbox", "list", "--to", "+8613800138000")
    assert "Your confirmation code is 123456." in listing.output
