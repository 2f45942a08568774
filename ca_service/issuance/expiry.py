"""Expiry warnings and expiry marking: what `ca-service expiry run` does.

Each issued certificate carries ``next_notice_at``: when the run must next look at it (its next
warning threshold, then its notAfter to mark it expired, then NULL). The run reads only rows
whose time has come through that index, so an idle run (nothing due) costs one index probe, and
running it from cron every minute is cheap.

Exactly once: a warning is one ``expiry_notices`` row (unique per certificate and threshold),
its outbox messages (dedupe keys) and its audit event, written in one transaction with the
row's new ``next_notice_at``. Two runs at once never take the same rows: PostgreSQL claims them
with ``FOR UPDATE SKIP LOCKED``; SQLite runs every write transaction ``BEGIN IMMEDIATE``, so the
second run waits for the first and then finds nothing due. The unique row stops a duplicate
even if a claim were ever lost.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from flask import render_template
from flask_babel import force_locale, ngettext
from flask_babel import gettext as _
from sqlalchemy.dialects import postgresql, sqlite

from ca_service.audit.service import NewEvent, record_events
from ca_service.auth.access import ensure_role
from ca_service.auth.models import Role, User
from ca_service.config import Settings
from ca_service.db import db
from ca_service.employers.models import Employer
from ca_service.errors import ValidationError
from ca_service.i18n import DEFAULT_LANGUAGE, normalise_language
from ca_service.models import (
    Authority,
    Certificate,
    CertificateKind,
    CertificateStatus,
    ExpiryNotice,
)
from ca_service.outbox.models import Channel
from ca_service.outbox.service import Notice, enqueue, notify_contacts

DEFAULT_WARNING_DAYS: tuple[int, ...] = (30, 14, 7, 1)
ACTOR = "expiry-run"
DAY = dt.timedelta(days=1)
OFFICER_ROLES = (Role.RA_OFFICER, Role.CA_ADMIN)
CA_KINDS = (CertificateKind.ROOT_CA, CertificateKind.ISSUING_CA, CertificateKind.OCSP_RESPONDER)


def first_notice_at(not_after: dt.datetime, thresholds: Sequence[int]) -> dt.datetime:
    """When the expiry run first looks at a certificate ending at ``not_after``: its largest
    warning threshold before the end."""
    return not_after - max(thresholds) * DAY


def renewal_url(base_url: str, serial: str) -> str:
    """The absolute address of the renewal page of the certificate ``serial`` (hex)."""
    return f"{base_url.rstrip('/')}/renewal/{serial}"


def days_left(not_after: dt.datetime, now: dt.datetime) -> int:
    """Whole days until ``not_after``, rounded up (a warning sent a few minutes late for the
    30-day threshold still says 30)."""
    return max(0, math.ceil((not_after - now) / DAY))


@dataclass(frozen=True)
class ExpiryPolicy:
    """What the run needs from the settings, passed explicitly."""

    warning_days: tuple[int, ...]  # largest first
    alert_email: str
    base_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ExpiryPolicy:
        return cls(
            warning_days=settings.warning_days,
            alert_email=str(settings["EXPIRY_ALERT_EMAIL"]).strip(),
            base_url=settings.public_base_url,
        )


@dataclass(frozen=True)
class Step:
    """What the run does with one due certificate at ``now``."""

    threshold: int | None  # the warning to send (the nearest threshold crossed), if any
    next_notice_at: dt.datetime | None


def plan(not_after: dt.datetime, now: dt.datetime, thresholds: Sequence[int]) -> Step:
    """The nearest threshold crossed at ``now`` (thresholds missed while the run was down are
    not sent: only the nearest one), and when to look again: the next smaller threshold, then
    notAfter. Recomputed from ``now``, so a change of EXPIRY_WARNING_DAYS takes effect."""
    if not_after <= now:
        return Step(None, None)
    crossed = [days for days in thresholds if not_after - days * DAY <= now]
    upcoming = [not_after - days * DAY for days in thresholds if not_after - days * DAY > now]
    return Step(min(crossed) if crossed else None, min(upcoming, default=not_after))


@dataclass
class ExpiryReport:
    sent: int = 0  # warnings to employers
    alerts: int = 0  # warnings about our own CA and OCSP responder certificates
    expired: int = 0
    skipped: int = 0  # due, but revoked or already renewed: nothing sent

    def summary(self) -> str:
        return (
            f"sent {self.sent}, CA alerts {self.alerts}, expired {self.expired}, "
            f"skipped {self.skipped}"
        )


_certificates = cast("sa.Table", Certificate.__table__)
_RESCHEDULE = (
    sa.update(_certificates)
    .where(_certificates.c.id == sa.bindparam("row_id"))
    .values(next_notice_at=sa.bindparam("next_at"))
)
_MARK_EXPIRED = (
    sa.update(_certificates)
    .where(_certificates.c.id == sa.bindparam("row_id"))
    .values(next_notice_at=None, expired_at=sa.bindparam("expired"))
)
_DUE_COLUMNS = (
    Certificate.id,
    Certificate.serial,
    Certificate.kind,
    Certificate.status,
    Certificate.issuer_id,
    Certificate.subject,
    Certificate.not_after,
    Certificate.revoked_at,
    Employer.email,
    Employer.mobile,
    Employer.language,
    Employer.legal_name,
)


def _due(now: dt.datetime, limit: int) -> list[sa.Row[Any]]:
    query = (
        sa.select(*_DUE_COLUMNS)
        .outerjoin(Employer, Employer.id == Certificate.employer_id)
        .where(Certificate.next_notice_at <= now)
        .order_by(Certificate.next_notice_at)
        .limit(limit)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        # Another run's rows are skipped, not waited for: each run takes its own.
        query = query.with_for_update(skip_locked=True, of=_certificates)
    return list(db.session.execute(query))


def _renewed(ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` a valid (issued, not revoked) certificate renews."""
    return set(
        db.session.scalars(
            sa.select(Certificate.renews_id).where(
                Certificate.renews_id.in_(ids),
                Certificate.status == CertificateStatus.ISSUED,
                Certificate.revoked_at.is_(None),
            )
        )
    )


def _superseded_ca(rows: Sequence[sa.Row[Any]]) -> set[int]:
    """Our CA and responder certificates that are no longer current (an authority moved to a
    new certificate, a responder was rotated): their end is no longer news."""
    ca_rows = [r for r in rows if r.kind in CA_KINDS]
    if not ca_rows:
        return set()
    current = set(
        db.session.scalars(
            sa.select(Authority.certificate_id).where(Authority.certificate_id.is_not(None))
        )
    )
    newest_responder = dict(
        db.session.execute(
            sa.select(Certificate.issuer_id, sa.func.max(Certificate.not_after))
            .where(
                Certificate.kind == CertificateKind.OCSP_RESPONDER,
                Certificate.status == CertificateStatus.ISSUED,
                Certificate.revoked_at.is_(None),
            )
            .group_by(Certificate.issuer_id)
        ).all()
    )
    superseded = set()
    for row in ca_rows:
        if row.kind is CertificateKind.OCSP_RESPONDER:
            newest = newest_responder.get(row.issuer_id)
            if newest is not None and newest > row.not_after:
                superseded.add(row.id)
        elif row.id not in current:
            superseded.add(row.id)
    return superseded


def _insert_notices(warnings: Sequence[tuple[int, int]], now: dt.datetime) -> set[int]:
    """Record each (certificate id, threshold) warning; the ids whose row is new (a warning
    recorded before is never sent again)."""
    if not warnings:
        return set()
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = cast("sa.Table", ExpiryNotice.__table__)
    statement = (
        insert(table)
        .on_conflict_do_nothing(index_elements=["certificate_id", "threshold_days"])
        .returning(table.c.certificate_id)
    )
    values = [
        {"certificate_id": cid, "threshold_days": days, "created_at": now} for cid, days in warnings
    ]
    return set(db.session.connection().execute(statement, values).scalars())


def _employer_notices(
    rows: Sequence[tuple[sa.Row[Any], int]], policy: ExpiryPolicy, now: dt.datetime
) -> list[Notice]:
    """The warnings, each rendered in its employer's language (templates through gettext)."""
    by_language: dict[str, list[tuple[sa.Row[Any], int]]] = defaultdict(list)
    for row, threshold in rows:
        by_language[normalise_language(row.language)].append((row, threshold))
    notices = []
    for language, group in by_language.items():
        with force_locale(language):
            for row, threshold in group:
                left = days_left(row.not_after, now)
                context = {
                    "legal_name": row.legal_name,
                    "serial": row.serial,
                    "not_after": row.not_after,
                    "days_left": left,
                    "renewal_url": renewal_url(policy.base_url, row.serial),
                }
                notices.append(
                    Notice(
                        email=row.email,
                        mobile=row.mobile,
                        subject=ngettext(
                            "Your organisation certificate expires in %(num)d day",
                            "Your organisation certificate expires in %(num)d days",
                            left,
                        ),
                        body=render_template("issuance/expiry_warning.txt", **context),
                        dedupe_key=f"expiry:{row.id}:{threshold}",
                    )
                )
    return notices


def _alert_administrators(
    rows: Sequence[tuple[sa.Row[Any], int]], policy: ExpiryPolicy, now: dt.datetime
) -> None:
    if not policy.alert_email or not rows:
        return  # no address configured: the audit event is the record
    with force_locale(DEFAULT_LANGUAGE):
        _enqueue_alerts(rows, policy, now)


def _enqueue_alerts(
    rows: Sequence[tuple[sa.Row[Any], int]], policy: ExpiryPolicy, now: dt.datetime
) -> None:
    for row, threshold in rows:
        left = days_left(row.not_after, now)
        enqueue(
            channel=Channel.EMAIL,
            recipient=policy.alert_email,
            subject=ngettext(
                "CA certificate %(subject)s expires in %(num)d day",
                "CA certificate %(subject)s expires in %(num)d days",
                left,
                subject=row.subject[:120],
            ),
            body=render_template(
                "issuance/expiry_alert.txt",
                kind=row.kind.value,
                subject=row.subject,
                serial=row.serial,
                not_after=row.not_after,
                days_left=left,
            ),
            dedupe_key=f"expiry:{row.id}:{threshold}:admin",
        )


def run_batch(policy: ExpiryPolicy, now: dt.datetime, limit: int, report: ExpiryReport) -> int:
    """Handle up to ``limit`` due certificates; the number handled (0: nothing left). Flushes."""
    rows = _due(now, limit)
    if not rows:
        return 0
    renewed = _renewed([r.id for r in rows if r.kind is CertificateKind.END_ENTITY])
    superseded = _superseded_ca(rows)
    expired: list[dict[str, object]] = []
    rescheduled: list[dict[str, object]] = []
    warnings: list[tuple[sa.Row[Any], int]] = []
    events: list[NewEvent] = []
    for row in rows:
        if row.status is not CertificateStatus.ISSUED or row.revoked_at is not None:
            rescheduled.append({"row_id": row.id, "next_at": None})  # revoked: nothing more
            report.skipped += 1
            continue
        step = plan(row.not_after, now, policy.warning_days)
        if row.not_after <= now:
            expired.append({"row_id": row.id, "expired": now})
            events.append(
                NewEvent(
                    "certificate.expired",
                    row.serial,
                    {"kind": row.kind.value, "not_after": row.not_after.isoformat()},
                )
            )
            continue
        if row.id in renewed or row.id in superseded:
            # No warnings; still looked at once more, at notAfter, to be marked expired.
            rescheduled.append({"row_id": row.id, "next_at": row.not_after})
            report.skipped += 1
            continue
        rescheduled.append({"row_id": row.id, "next_at": step.next_notice_at})
        if step.threshold is not None:
            warnings.append((row, step.threshold))
    connection = db.session.connection()
    if rescheduled:
        connection.execute(_RESCHEDULE, rescheduled)
    if expired:
        connection.execute(_MARK_EXPIRED, expired)
        report.expired += len(expired)
    new = _insert_notices([(row.id, days) for row, days in warnings], now)
    fresh = [(row, days) for row, days in warnings if row.id in new]
    employer = [(row, days) for row, days in fresh if row.kind is CertificateKind.END_ENTITY]
    ours = [(row, days) for row, days in fresh if row.kind is not CertificateKind.END_ENTITY]
    notify_contacts(_employer_notices(employer, policy, now))
    _alert_administrators(ours, policy, now)
    report.sent += len(employer)
    report.alerts += len(ours)
    events += [
        NewEvent(
            "expiry.warned",
            row.serial,
            {
                "kind": row.kind.value,
                "threshold_days": days,
                "days_left": days_left(row.not_after, now),
                "not_after": row.not_after.isoformat(),
                "to": row.email if row.kind is CertificateKind.END_ENTITY else policy.alert_email,
            },
        )
        for row, days in fresh
    ]
    record_events(ACTOR, events)
    return len(rows)


def run_expiry(
    policy: ExpiryPolicy,
    *,
    now: dt.datetime,
    commit: Callable[[], None],
    batch_size: int = 500,
) -> ExpiryReport:
    """Send the warnings due at ``now`` and mark expired certificates, committing after each
    batch of ``batch_size`` rows (a long run keeps its locks and transactions short).

    Idempotent: a second run at the same ``now`` finds nothing due.
    """
    report = ExpiryReport()
    while run_batch(policy, now, batch_size, report):
        commit()
    return report


# -- what officers see ------------------------------------------------------------------------

MAX_HORIZON_DAYS = 365
PAGE_SIZE = 50
CHART_WEEKS = 26


def parse_horizon(raw: str | None) -> int:
    """The ``days`` of the officer's list: 1..365, 30 when absent.

    :raises ValidationError: for anything else.
    """
    if raw is None or raw == "":
        return 30
    text = raw.strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_HORIZON_DAYS:
        raise ValidationError(
            _("The number of days must be a whole number from 1 to %(max)s.", max=MAX_HORIZON_DAYS)
        )
    return int(text)


@dataclass(frozen=True)
class Expiring:
    serial: str
    employer: str
    registration_number: str
    not_after: dt.datetime
    days_left: int


def _valid_employer_certificates(now: dt.datetime) -> sa.Select[Any]:
    return sa.select(Certificate.not_after).where(
        Certificate.kind == CertificateKind.END_ENTITY,
        Certificate.status == CertificateStatus.ISSUED,
        Certificate.revoked_at.is_(None),
        Certificate.not_after > now,
    )


def expiring_certificates(
    *, officer: User, days: int, page: int, now: dt.datetime
) -> tuple[list[Expiring], int]:
    """Valid employer certificates ending within ``days``, soonest first, one page of them,
    and how many there are in all."""
    ensure_role(officer, *OFFICER_ROLES)
    end = now + days * DAY
    base = _valid_employer_certificates(now).where(Certificate.not_after <= end)
    total = int(db.session.scalar(sa.select(sa.func.count()).select_from(base.subquery())) or 0)
    rows = db.session.execute(
        sa.select(
            Certificate.serial,
            Employer.legal_name,
            Employer.registration_number,
            Certificate.not_after,
        )
        .join(Employer, Employer.id == Certificate.employer_id)
        .where(
            Certificate.kind == CertificateKind.END_ENTITY,
            Certificate.status == CertificateStatus.ISSUED,
            Certificate.revoked_at.is_(None),
            Certificate.not_after > now,
            Certificate.not_after <= end,
        )
        .order_by(Certificate.not_after, Certificate.id)
        .offset((page - 1) * PAGE_SIZE)
        .limit(PAGE_SIZE)
    )
    return [
        Expiring(serial, name, number, not_after, days_left(not_after, now))
        for serial, name, number, not_after in rows
    ], total


def weekly_expiries(*, officer: User, now: dt.datetime, weeks: int = CHART_WEEKS) -> list[int]:
    """How many valid employer certificates end in each of the next ``weeks`` weeks."""
    ensure_role(officer, *OFFICER_ROLES)
    ends = db.session.scalars(
        _valid_employer_certificates(now).where(Certificate.not_after <= now + weeks * 7 * DAY)
    )
    counts = [0] * weeks
    for end in ends:
        counts[min(int((end - now) / (7 * DAY)), weeks - 1)] += 1
    return counts
