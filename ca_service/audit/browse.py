"""Reading the audit log page by page, with filters: the auditors' viewer (read-only)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import gettext as _

from ca_service.audit.models import AuditCheckpoint, AuditEvent
from ca_service.auth.access import ensure_role
from ca_service.auth.models import Role, User
from ca_service.db import db
from ca_service.errors import ValidationError, echoed
from ca_service.paging import parse_page

READERS: tuple[Role, ...] = (Role.AUDITOR, Role.CA_ADMIN)
PAGE_SIZE = 50
_TEXT_LIMIT = 128  # the longest actor column; longer filters cannot match anything


@dataclass(frozen=True)
class EventFilter:
    """What the viewer narrows the log to. ``action`` matches exactly, or every action of a
    family when it ends in "." ("auth."); ``actor`` and ``target`` match as substrings;
    ``since`` and ``until`` are inclusive UTC dates."""

    action: str = ""
    actor: str = ""
    target: str = ""
    since: dt.date | None = None
    until: dt.date | None = None
    page: int = 1

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> EventFilter:
        """The filter from a query string.

        :raises ValidationError: for a date that is not YYYY-MM-DD, a range that ends before it
            starts, an over-long text or a page that is not a whole number from 1.
        """
        texts = {name: (args.get(name) or "").strip() for name in ("action", "actor", "target")}
        for name, value in texts.items():
            if len(value) > _TEXT_LIMIT:
                raise ValidationError(
                    _(
                        "The %(field)s filter is too long (at most %(max)s characters).",
                        field=name,
                        max=_TEXT_LIMIT,
                    )
                )
        since, until = _date(args, "since"), _date(args, "until")
        if since and until and until < since:
            raise ValidationError(_("The end date is before the start date."))
        return cls(since=since, until=until, page=parse_page(args.get("page")), **texts)

    def query_args(self, page: int) -> dict[str, str | int]:
        """The filter as query-string arguments (for the paging links), at ``page``."""
        args: dict[str, str | int] = {
            name: value
            for name, value in (
                ("action", self.action),
                ("actor", self.actor),
                ("target", self.target),
            )
            if value
        }
        if self.since:
            args["since"] = self.since.isoformat()
        if self.until:
            args["until"] = self.until.isoformat()
        args["page"] = page
        return args


def _date(args: Mapping[str, str], name: str) -> dt.date | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw) if len(raw) == 10 else _bad_date(raw)
    except ValueError:
        return _bad_date(raw)


def _bad_date(raw: str) -> dt.date:
    raise ValidationError(_("Dates are written YYYY-MM-DD, not %(value)s.", value=echoed(raw)))


@dataclass(frozen=True)
class EventPage:
    events: list[AuditEvent]
    total: int
    page: int
    pages: int
    head_seq: int  # the newest event of the whole log (0 when empty)
    checkpoint: AuditCheckpoint | None  # the newest signed checkpoint


def _conditions(filters: EventFilter) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.action.endswith("."):
        conditions.append(AuditEvent.action.startswith(filters.action, autoescape=True))
    elif filters.action:
        conditions.append(AuditEvent.action == filters.action)
    if filters.actor:
        conditions.append(AuditEvent.actor.contains(filters.actor, autoescape=True))
    if filters.target:
        conditions.append(AuditEvent.target.contains(filters.target, autoescape=True))
    if filters.since:
        conditions.append(
            AuditEvent.occurred_at >= dt.datetime.combine(filters.since, dt.time(), dt.UTC)
        )
    if filters.until:
        end = dt.datetime.combine(filters.until + dt.timedelta(days=1), dt.time(), dt.UTC)
        conditions.append(AuditEvent.occurred_at < end)
    return conditions


def search_events(*, user: User, filters: EventFilter) -> EventPage:
    """One page of the events that match ``filters``, newest first.

    :raises Forbidden: for anyone but auditors and CA administrators.
    """
    ensure_role(user, *READERS)
    conditions = _conditions(filters)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(*conditions))
    total = int(total or 0)
    events = list(
        db.session.scalars(
            sa.select(AuditEvent)
            .where(*conditions)
            .order_by(AuditEvent.seq.desc())
            .limit(PAGE_SIZE)
            .offset((filters.page - 1) * PAGE_SIZE)
        )
    )
    newest = db.session.scalar(sa.select(sa.func.max(AuditEvent.seq)))
    checkpoint = db.session.scalar(
        sa.select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1)
    )
    return EventPage(
        events=events,
        total=total,
        page=filters.page,
        pages=max(1, -(-total // PAGE_SIZE)),
        head_seq=int(newest or 0),
        checkpoint=checkpoint,
    )


def action_names() -> list[str]:
    """Every action the log holds, for the viewer's choice list."""
    return list(
        db.session.scalars(sa.select(AuditEvent.action).distinct().order_by(AuditEvent.action))
    )


def action_families(actions: list[str]) -> list[str]:
    """The families of ``actions`` ("auth." for "auth.login"), for filtering a whole family."""
    return sorted({name.split(".", 1)[0] + "." for name in actions if "." in name})
