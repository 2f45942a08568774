"""Certificate lineage: what a renewal relies on (the last officer approval, the documents in
force), shared by renewal and by the officer review of a renewal."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from ca_service.db import db
from ca_service.issuance.models import Application, Document
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


def expired_documents(documents: list[Document], today: dt.date) -> list[Document]:
    """Documents whose recorded validity ended before ``today``."""
    return [d for d in documents if d.valid_until is not None and d.valid_until < today]
