"""Certificate lineage: what a renewal relies on (the last officer approval, the documents in
force), shared by renewal and by the officer review of a renewal."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from ca_service.db import db
from ca_service.issuance.models import Application, Document
from ca_service.models import Certificate

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
# the query.
_LINEAGE_STEP = (
    sa.select(Application.decided_by_id, Application.decided_at, Application.renews_id, Document)
    .outerjoin(Document, Document.application_id == Application.id)
    .where(Application.certificate_id == sa.bindparam("certificate_id"))
    .order_by(Document.id)
)


def lineage_basis(certificate: Certificate) -> Basis:
    """Follow the lineage back to the last officer approval and the documents in force.

    One query per step: the application a certificate came from, with its documents (joined);
    the next step is the application of the certificate it renewed (only its id is needed)."""
    approved_at: dt.datetime | None = None
    documents: dict[str, Document] = {}
    certificate_id: int | None = certificate.id
    for _step in range(_MAX_LINEAGE):
        if certificate_id is None:
            break
        rows = db.session.execute(_LINEAGE_STEP, {"certificate_id": certificate_id}).all()
        if not rows:
            break
        for row in rows:
            if row.Document is not None:
                documents.setdefault(row.Document.doc_type.value, row.Document)
        step = rows[0]
        if approved_at is None and step.decided_by_id is not None:
            approved_at = step.decided_at
        certificate_id = step.renews_id
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
