"""What `ca-service reconcile` does with reservations a crash or a hung HSM left pending.

Issuance commits a PENDING row with its serial before the HSM signs, and stores the signature
on that row in a second commit before anyone sees the certificate (DESIGN.md, "Nothing signed
is lost"). A worker killed between the two leaves the row PENDING and its application claimed
by it. The signature, if the HSM made one, existed only in the memory of the process that
died: it was never stored, returned, published or logged, so no one holds that certificate.
Reconciling therefore burns the serial for good (FAILED: never reused, OCSP answers
"unknown" for it, it never appears as issued) and releases the application, which is still
approved, so that its certificate is issued again with a new serial — by `reconcile --issue`,
`ca-service issue`, the officer's retry, or the employer's retried renewal.

Only rows pending longer than the signing window are touched, and each change is conditional
on the row still being PENDING (and the application still holding it), so reconciling while
the service serves never undoes a signature stored meanwhile.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa

from ca_service.audit.service import NewEvent, record_events
from ca_service.db import db, utcnow
from ca_service.issuance.models import Application, ApplicationStatus
from ca_service.models import Certificate, CertificateKind, CertificateStatus

_certificates = cast("sa.Table", Certificate.__table__)
_applications = cast("sa.Table", Application.__table__)

_FAIL_IF_PENDING = (
    _certificates.update()
    .where(
        _certificates.c.id == sa.bindparam("row_id"),
        _certificates.c.status == CertificateStatus.PENDING,
    )
    .values(status=CertificateStatus.FAILED)
)
# The approved application that still holds the burnt reservation lets go of it.
_RELEASE = (
    _applications.update()
    .where(
        _applications.c.certificate_id == sa.bindparam("row_id"),
        _applications.c.status == ApplicationStatus.APPROVED,
    )
    .values(certificate_id=None)
    .returning(_applications.c.id)
)


@dataclass(frozen=True)
class Reconciled:
    """One reservation reconciled: its burnt serial, and the application released (if any)."""

    serial: str
    kind: CertificateKind
    subject: str
    application_id: int | None


def reconcile_pending(
    *, older_than: dt.timedelta, actor: str, now: dt.datetime | None = None
) -> list[Reconciled]:
    """Burn every reservation pending longer than ``older_than`` and release its application;
    audits each (``certificate.reconciled_failed``). Flushes; the caller commits.

    Idempotent: a second run finds nothing; a row stored or burnt meanwhile is skipped.
    """
    cutoff = (now or utcnow()) - older_than
    connection = db.session.connection()
    stale = connection.execute(
        sa.select(
            _certificates.c.id,
            _certificates.c.serial,
            _certificates.c.kind,
            _certificates.c.subject,
        )
        .where(
            _certificates.c.status == CertificateStatus.PENDING,
            _certificates.c.created_at <= cutoff,  # "at least": utcnow() is to the second
        )
        .order_by(_certificates.c.id)
    ).all()
    done: list[Reconciled] = []
    events: list[NewEvent] = []
    for row in stale:
        burnt = cast(
            "sa.CursorResult[Any]", connection.execute(_FAIL_IF_PENDING, {"row_id": row.id})
        )
        if burnt.rowcount != 1:
            continue  # stored (or burnt) by someone else since we read it
        application_id = connection.execute(_RELEASE, {"row_id": row.id}).scalar()
        kind = CertificateKind(row.kind)
        done.append(Reconciled(row.serial, kind, row.subject, application_id))
        details: dict[str, object] = {"kind": kind.value}
        if application_id is not None:
            details["application"] = application_id
        events.append(NewEvent("certificate.reconciled_failed", row.serial, details))
    if events:
        record_events(actor, events)
    # The ORM may hold these rows from before: what it shows must be what was written.
    db.session.expire_all()
    return done
