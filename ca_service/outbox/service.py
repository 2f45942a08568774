"""Queue notifications in the caller's transaction; deliver them after it committed.

A notification is a row written in the same transaction as the event it reports, so it is
never lost (the mail server being down only delays it) and never sent for an event that rolled
back. ``deliver_due`` runs from `ca-service outbox deliver` (a worker or cron job).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import cache
from typing import cast

import sqlalchemy as sa
from flask_babel import force_locale
from sqlalchemy.dialects import postgresql, sqlite

from ca_service.db import db, utcnow
from ca_service.dml import Write
from ca_service.employers.models import Employer
from ca_service.i18n import normalise_language
from ca_service.outbox.models import Channel, MessageStatus, OutboxMessage
from ca_service.outbox.senders import DeliveryFailed, Sender

BLANKED = "(delivered; the body held a one-time code and was removed)"


def _message(
    *, channel: Channel, recipient: str, subject: str, body: str, dedupe_key: str, sensitive: bool
) -> dict[str, object]:
    now = utcnow()
    return {
        "channel": channel,
        "recipient": recipient,
        "subject": subject,
        "body": body,
        "dedupe_key": dedupe_key,
        "sensitive": sensitive,
        "status": MessageStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


@cache
def _insert_statement(dialect: str) -> Write:
    # INSERT … ON CONFLICT (dedupe_key) DO NOTHING on both backends: a duplicate (a retried
    # request, a concurrent one) is skipped, not an error. Built once, on the table rather than
    # the ORM class: compiling it, or the ORM's bulk-insert layer, cost more than running it.
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return Write(
        insert(cast("sa.Table", OutboxMessage.__table__)).on_conflict_do_nothing(
            index_elements=["dedupe_key"]
        )
    )


def _insert(messages: list[dict[str, object]]) -> None:
    """All ``messages`` in one executemany (psycopg sends them in one pipeline)."""
    connection = db.session.connection()
    _insert_statement(connection.dialect.name).execute(connection, messages)


def enqueue(
    *,
    channel: Channel,
    recipient: str,
    subject: str,
    body: str,
    dedupe_key: str,
    sensitive: bool = False,
) -> None:
    """Add a message unless one with ``dedupe_key`` exists."""
    _insert(
        [
            _message(
                channel=channel,
                recipient=recipient,
                subject=subject,
                body=body,
                dedupe_key=dedupe_key,
                sensitive=sensitive,
            )
        ]
    )


@contextmanager
def in_language(language: str | None) -> Iterator[None]:
    """Texts made inside (``gettext``, dates) are in ``language`` (a stored employer setting),
    whatever the language of the page that caused them."""
    with force_locale(normalise_language(language)):
        yield


def in_language_of(employer: Employer) -> AbstractContextManager[None]:
    """``in_language`` of the employer: e-mail and SMS follow the employer's setting."""
    return in_language(employer.language)


def notify_employer(employer: Employer, *, subject: str, body: str, dedupe_key: str) -> None:
    """E-mail and SMS to the employer's administrator."""
    notify_contact(
        email=employer.email,
        mobile=employer.mobile,
        subject=subject,
        body=body,
        dedupe_key=dedupe_key,
    )


@dataclass(frozen=True)
class Notice:
    """An e-mail and an SMS about one event to one contact (see ``notify_contacts``)."""

    email: str
    mobile: str
    subject: str
    body: str
    dedupe_key: str


def notify_contact(*, email: str, mobile: str, subject: str, body: str, dedupe_key: str) -> None:
    """``notify_employer`` for a caller that read the employer's addresses, not the object."""
    notify_contacts([Notice(email, mobile, subject, body, dedupe_key)])


def notify_contacts(notices: Iterable[Notice]) -> None:
    """E-mail and SMS for each notice, every message in one executemany."""
    messages: list[dict[str, object]] = []
    for notice in notices:
        sms = f"{notice.subject}. {notice.body.splitlines()[0] if notice.body else ''}".strip()
        messages += [
            _message(
                channel=Channel.EMAIL,
                recipient=notice.email,
                subject=notice.subject,
                body=notice.body,
                dedupe_key=f"{notice.dedupe_key}:email",
                sensitive=False,
            ),
            _message(
                channel=Channel.SMS,
                recipient=notice.mobile,
                subject=notice.subject,
                body=sms,
                dedupe_key=f"{notice.dedupe_key}:sms",
                sensitive=False,
            ),
        ]
    if messages:
        _insert(messages)


def backoff(attempts: int) -> dt.timedelta:
    """1, 2, 4 … minutes, at most 6 hours."""
    return dt.timedelta(minutes=min(2 ** max(attempts - 1, 0), 360))


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    retried: int
    failed: int


def deliver_due(
    senders: Mapping[Channel, Sender], *, max_attempts: int, limit: int = 100
) -> DeliveryReport:
    """Try each due message once; flushes (the command commits).

    Rows are claimed with SKIP LOCKED where the database has it, so several workers can run.
    """
    now = utcnow()
    query = (
        sa.select(OutboxMessage)
        .where(OutboxMessage.status == MessageStatus.PENDING, OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    sent = retried = failed = 0
    for message in db.session.scalars(query).all():
        message.attempts += 1
        sender = senders[message.channel]
        try:
            sender.send(message)
        except DeliveryFailed as exc:
            message.last_error = str(exc)[:500]
            if message.attempts >= max_attempts:
                message.status = MessageStatus.FAILED
                failed += 1
            else:
                message.next_attempt_at = now + backoff(message.attempts)
                retried += 1
            continue
        message.status = MessageStatus.SENT
        message.sent_at = now
        message.last_error = None
        if message.sensitive and sender.external:
            message.body = BLANKED
        sent += 1
    db.session.flush()
    return DeliveryReport(sent=sent, retried=retried, failed=failed)


def list_messages(
    *, recipient: str | None = None, status: MessageStatus | None = None, limit: int = 50
) -> list[OutboxMessage]:
    """Newest first."""
    query = sa.select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if recipient:
        query = query.where(OutboxMessage.recipient == recipient)
    if status:
        query = query.where(OutboxMessage.status == status)
    return list(db.session.scalars(query))


def retry_failed(message_id: int) -> OutboxMessage | None:
    """Put a failed message back in the queue."""
    message = db.session.get(OutboxMessage, message_id)
    if message is None or message.status is not MessageStatus.FAILED:
        return None
    message.status = MessageStatus.PENDING
    message.attempts = 0
    message.next_attempt_at = utcnow()
    db.session.flush()
    return message
