"""Certificate lineage: what a renewal relies on (the last officer approval, the documents in
force), shared by renewal and by the officer review of a renewal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ca_service.db import db
from ca_service.issuance.models import Application, Document, DocumentType
from ca_service.models import Certificate
from ca_service.prepared import Entity, PreparedQuery

# How far back a lineage is followed to find the approval and documents a renewal relies on.
_MAX_LINEAGE = 200


@dataclass(frozen=True)
class Basis:
    """What a renewal relies on: the last officer approval of the lineage and the documents."""

    approved_at: dt.datetime | None
    documents: dict[str, Document]


# One step of a lineage: the application a certificate came from (only the columns the next
# step needs) with its documents, one row per document (one row without a document when it has
# none). No Application entity is loaded: its ORM load with joined documents cost more than
# the query. Compiled once and run without the ORM's statement and loading machinery
# (``prepared``: through ``session.execute`` it cost twice the rest of the step); the
# documents are made persistent instances as the ORM would load them.
_APPLICATIONS = Application.__table__
_DOCUMENTS = Document.__table__
_DOCUMENT = Entity(Document, "document")
_LINEAGE_STEP = PreparedQuery(
    sa.select(
        _APPLICATIONS.c.decided_by_id,
        _APPLICATIONS.c.decided_at,
        _APPLICATIONS.c.renews_id,
        *_DOCUMENT.columns,
    )
    .select_from(_APPLICATIONS)
    .outerjoin(_DOCUMENTS, _DOCUMENTS.c.application_id == _APPLICATIONS.c.id)
    .where(_APPLICATIONS.c.certificate_id == sa.bindparam("certificate_id"))
    .order_by(_DOCUMENTS.c.id)
)


def lineage_basis(certificate: Certificate) -> Basis:
    """Follow the lineage back to the last officer approval and the documents in force.

    One query per step: the application a certificate came from, with its documents (joined);
    the next step is the application of the certificate it renewed (only its id is needed)."""
    approved_at: dt.datetime | None = None
    documents: dict[str, Document] = {}
    certificate_id: int | None = certificate.id
    session = db.session()
    for _step in range(_MAX_LINEAGE):
        if certificate_id is None:
            break
        rows = _LINEAGE_STEP.rows(session, {"certificate_id": certificate_id})
        if not rows:
            break
        for row in rows:
            document = _DOCUMENT.load(session, row, 3)
            if document is not None:
                documents.setdefault(document.doc_type.value, document)
        decided_by_id, decided_at, renews_id = rows[0][:3]
        if approved_at is None and decided_by_id is not None:
            approved_at = decided_at
        certificate_id = renews_id
    return Basis(approved_at, documents)


@dataclass(frozen=True)
class DocumentTerm:
    """A document of record as a renewal weighs it: its type and its recorded validity end."""

    doc_type: DocumentType
    valid_until: dt.date | None


@dataclass(frozen=True)
class LineageStep:
    """One step of a lineage as a renewal reads it: the application a certificate came from
    (who decided it and when, the certificate it renewed) and its documents' terms."""

    decided_by_id: int | None
    decided_at: dt.datetime | None
    renews_id: int | None
    documents: tuple[DocumentTerm, ...]  # in the order of their ids


@dataclass(frozen=True)
class RenewalBasis:
    """``Basis`` as a renewal needs it: the last officer approval and the documents' terms."""

    approved_at: dt.datetime | None
    documents: dict[str, DocumentTerm]


def step_columns(
    applications: sa.FromClause, documents: sa.FromClause
) -> tuple[sa.ColumnElement[Any], ...]:
    """What ``step_of`` reads of one step, from ``applications`` (the application a
    certificate came from) outer-joined to ``documents`` (its documents), ordered by the
    documents' ids: one row per document, one without a document when it has none. Plain
    columns, no entity: loading the documents cost more than the query (bench/renewal.py)."""
    return (
        applications.c.id.label("step_application_id"),
        applications.c.decided_by_id.label("step_decided_by_id"),
        applications.c.decided_at.label("step_decided_at"),
        applications.c.renews_id.label("step_renews_id"),
        documents.c.doc_type.label("step_doc_type"),
        documents.c.valid_until.label("step_valid_until"),
    )


def step_of(rows: Sequence[Sequence[Any]], start: int = 0) -> LineageStep | None:
    """The step in ``rows[i][start:]`` (``step_columns``' values); None: the certificate came
    from no application (no rows, or the outer join found none)."""
    if not rows or rows[0][start] is None:
        return None
    first = rows[0]
    return LineageStep(
        decided_by_id=first[start + 1],
        decided_at=first[start + 2],
        renews_id=first[start + 3],
        documents=tuple(
            DocumentTerm(row[start + 4], row[start + 5])
            for row in rows
            if row[start + 4] is not None
        ),
    )


_STEP = PreparedQuery(
    sa.select(*step_columns(_APPLICATIONS, _DOCUMENTS))
    .select_from(_APPLICATIONS)
    .outerjoin(_DOCUMENTS, _DOCUMENTS.c.application_id == _APPLICATIONS.c.id)
    .where(_APPLICATIONS.c.certificate_id == sa.bindparam("certificate_id"))
    .order_by(_DOCUMENTS.c.id)
)


def lineage_step(certificate_id: int) -> LineageStep | None:
    """The step of the certificate ``certificate_id`` (one query); None: it came from no
    application."""
    return step_of(_STEP.rows(db.session(), {"certificate_id": certificate_id}))


def renewal_basis(first: LineageStep | None) -> RenewalBasis:
    """``lineage_basis`` from the lineage's ``first`` step (already read: the application the
    renewed certificate came from), for the documents' terms: one query per further step."""
    approved_at: dt.datetime | None = None
    documents: dict[str, DocumentTerm] = {}
    step = first
    for number in range(_MAX_LINEAGE):
        if step is None:
            break
        for term in step.documents:
            documents.setdefault(term.doc_type.value, term)
        if approved_at is None and step.decided_by_id is not None:
            approved_at = step.decided_at
        if step.renews_id is None or number == _MAX_LINEAGE - 1:
            break
        step = lineage_step(step.renews_id)
    return RenewalBasis(approved_at, documents)


def documents_of_record(application: Application) -> list[Document]:
    """The documents an application's approval relies on: its own, and for a renewal those of
    the lineage it renews that it did not replace."""
    if application.renews_id is None:
        return list(application.documents)
    own = {d.doc_type.value: d for d in application.documents}
    renewed = db.session.get(Certificate, application.renews_id)
    inherited = lineage_basis(renewed).documents if renewed is not None else {}
    merged = {**inherited, **own}
    return sorted(merged.values(), key=lambda d: (d.doc_type.value, d.id))


def expired_documents(documents: Iterable[DocumentTerm], today: dt.date) -> list[DocumentTerm]:
    """Documents whose recorded validity ended before ``today``."""
    return [d for d in documents if d.valid_until is not None and d.valid_until < today]
