"""The officers' review queue: search, filters, sort and pages over submitted applications."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from sqlalchemy.orm import contains_eager, selectinload

from ca_service.auth.access import ensure_role
from ca_service.auth.models import User
from ca_service.authorities.signing import normalise_serial
from ca_service.db import db
from ca_service.employers.models import Employer
from ca_service.errors import ValidationError, echoed
from ca_service.issuance.models import Application, ApplicationStatus
from ca_service.issuance.service import OFFICERS
from ca_service.models import Certificate
from ca_service.paging import parse_page

PAGE_SIZE = 25
SEARCH_LIMIT = 100  # longer than any legal name or registration number we keep
_HEX = re.compile("[0-9a-f]{1,40}")
_MAX_ID = 2**31 - 1  # an application id is a 32-bit integer on PostgreSQL

# The statuses an officer still has to decide on: the default view of the queue.
OPEN_STATUSES = (ApplicationStatus.SUBMITTED, ApplicationStatus.AWAITING_CONFIRMATION)
OPEN = "open"
ALL = "all"
# Drafts are the employer's own and never in the queue.
LISTED_STATUSES = tuple(s for s in ApplicationStatus if s is not ApplicationStatus.DRAFT)
E = TypeVar("E", bound=enum.StrEnum)


class ApplicationKind(enum.StrEnum):
    ALL = "all"
    NEW = "new"  # a first application
    RENEWAL = "renewal"  # a renewal that needs an officer (changed records, or documents)

    @property
    def label(self) -> str:
        return str(_KIND_LABELS[self])


class QueueOrder(enum.StrEnum):
    OLDEST = "oldest"  # first come, first served: the default
    NEWEST = "newest"

    @property
    def label(self) -> str:
        return str(_ORDER_LABELS[self])


_KIND_LABELS = {
    ApplicationKind.ALL: lazy_gettext("new and renewals"),
    ApplicationKind.NEW: lazy_gettext("new applications"),
    ApplicationKind.RENEWAL: lazy_gettext("renewals"),
}
_ORDER_LABELS = {
    QueueOrder.OLDEST: lazy_gettext("oldest first"),
    QueueOrder.NEWEST: lazy_gettext("newest first"),
}


def status_choices() -> list[tuple[str, str]]:
    """The status filter's values with their labels, in the current language."""
    return [
        (OPEN, _("to decide")),  # submitted or awaiting confirmation
        *((s.value, s.label) for s in LISTED_STATUSES),
        (ALL, _("all")),
    ]


@dataclass(frozen=True)
class QueueFilter:
    """What the queue shows. ``search`` matches the employer's legal name or registration
    number as a case-insensitive substring, or the application number exactly ("42" or
    "#42"), or the serial of the certificate it yielded; ``status`` is a status value,
    "open" (the default) or "all"."""

    search: str = ""
    status: str = OPEN
    kind: ApplicationKind = ApplicationKind.ALL
    order: QueueOrder = QueueOrder.OLDEST
    page: int = 1

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> QueueFilter:
        """The filter from a query string; absent or empty values take the defaults.

        :raises ValidationError: for an unknown status, kind or order, an over-long search or
            a page that is not a whole number from 1.
        """
        search = (args.get("q") or "").strip()
        if len(search) > SEARCH_LIMIT:
            raise ValidationError(
                _("The search is too long (at most %(max)s characters).", max=SEARCH_LIMIT)
            )
        status = (args.get("status") or OPEN).strip()
        if status not in {OPEN, ALL, *(s.value for s in LISTED_STATUSES)}:
            raise ValidationError(
                _(
                    "There is no status %(value)s; choose one of %(choices)s.",
                    value=echoed(status),
                    choices=", ".join(value for value, _label in status_choices()),
                )
            )
        return cls(
            search=search,
            status=status,
            kind=_choice(args, "kind", ApplicationKind, ApplicationKind.ALL),
            order=_choice(args, "sort", QueueOrder, QueueOrder.OLDEST),
            page=parse_page(args.get("page")),
        )

    @property
    def narrowed(self) -> bool:
        """Whether anything but the default view was asked for (the empty state says so)."""
        return bool(self.search) or self.status != OPEN or self.kind is not ApplicationKind.ALL

    def query_args(self, page: int | None = None, **changes: str) -> dict[str, str | int]:
        """The filter as query-string arguments at ``page`` (paging, sort and tab links);
        defaults are left out so links stay short."""
        args: dict[str, str | int] = {
            "q": self.search,
            "status": self.status,
            "kind": self.kind.value,
            "sort": self.order.value,
        }
        args.update(changes)
        defaults = {"q": "", "status": OPEN, "kind": "all", "sort": "oldest"}
        shown: dict[str, str | int] = {k: v for k, v in args.items() if v != defaults[k]}
        if page is not None and page != 1:
            shown["page"] = page
        return shown


def _choice(args: Mapping[str, str], name: str, kind: type[E], default: E) -> E:
    raw = (args.get(name) or "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValidationError(
            _(
                "The %(field)s must be one of %(choices)s, not %(value)s.",
                field=name,
                choices=", ".join(member.value for member in kind),
                value=echoed(raw),
            )
        ) from None


@dataclass(frozen=True)
class QueuePage:
    applications: list[Application]
    total: int  # matching applications on all pages
    page: int
    pages: int
    # Matching applications per status value, "open" and "all" (search and kind applied,
    # the status filter not): the counts on the status tabs.
    counts: dict[str, int] = field(default_factory=dict)


def _search_conditions(filters: QueueFilter) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = [Application.status != ApplicationStatus.DRAFT]
    if filters.kind is ApplicationKind.NEW:
        conditions.append(Application.renews_id.is_(None))
    elif filters.kind is ApplicationKind.RENEWAL:
        conditions.append(Application.renews_id.is_not(None))
    if filters.search:
        # lower() on both sides: LIKE is case-sensitive on PostgreSQL, not on SQLite.
        term = filters.search.lower()
        matches: list[sa.ColumnElement[bool]] = [
            sa.func.lower(Employer.legal_name).contains(term, autoescape=True),
            sa.func.lower(Employer.registration_number).contains(term, autoescape=True),
        ]
        number = term.removeprefix("#")
        if number.isdigit() and int(number) <= _MAX_ID:
            matches.append(Application.id == int(number))
        # A certificate's serial as typed (``0x``, upper case, leading zeros): the application
        # it was issued for, so an officer finds a certificate to revoke.
        serial = normalise_serial(term)
        if _HEX.fullmatch(serial):
            matches.append(
                Application.certificate_id.in_(
                    sa.select(Certificate.id).where(Certificate.serial == serial)
                )
            )
        conditions.append(sa.or_(*matches))
    return conditions


def _status_condition(status: str) -> sa.ColumnElement[bool] | None:
    if status == OPEN:
        return Application.status.in_(OPEN_STATUSES)
    if status == ALL:
        return None
    return Application.status == ApplicationStatus(status)


def search_queue(*, officer: User, filters: QueueFilter, page_size: int = PAGE_SIZE) -> QueuePage:
    """One page of the applications that match ``filters``.

    :raises Forbidden: for anyone but RA officers.
    """
    ensure_role(officer, *OFFICERS)
    conditions = _search_conditions(filters)
    counts = _counts(conditions)
    status = _status_condition(filters.status)
    if status is not None:
        conditions.append(status)
    total = counts[filters.status]
    submitted = (
        Application.submitted_at.asc()
        if filters.order is QueueOrder.OLDEST
        else (Application.submitted_at.desc())
    )
    tie = Application.id.asc() if filters.order is QueueOrder.OLDEST else Application.id.desc()
    applications = list(
        db.session.scalars(
            sa.select(Application)
            .join(Employer, Application.employer_id == Employer.id)
            .options(contains_eager(Application.employer), selectinload(Application.certificate))
            .where(*conditions)
            .order_by(submitted, tie)
            .limit(page_size)
            .offset((filters.page - 1) * page_size)
        )
    )
    return QueuePage(
        applications=applications,
        total=total,
        page=filters.page,
        pages=max(1, -(-total // page_size)),
        counts=counts,
    )


def _counts(conditions: list[sa.ColumnElement[bool]]) -> dict[str, int]:
    rows = db.session.execute(
        sa.select(Application.status, sa.func.count())
        .join(Employer, Application.employer_id == Employer.id)
        .where(*conditions)
        .group_by(Application.status)
    )
    by_status = {status: int(count) for status, count in rows}
    counts = {s.value: by_status.get(s, 0) for s in LISTED_STATUSES}
    counts[OPEN] = sum(by_status.get(s, 0) for s in OPEN_STATUSES)
    counts[ALL] = sum(by_status.values())
    return counts
