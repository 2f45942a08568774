"""An application's history notes as a code with parameters.

- ``application_events.note_code`` and ``note_params``: what happened as a stable code and its
  facts (serial, key, reasons...), shown in the reader's language (issuance/notes.py). Rows
  written before this revision keep their English ``note`` and no code: shown as stored.
  ``note`` now holds only what a person typed (an officer's reason or approval note).

Nothing is backfilled. The downgrade writes the English sentence of each coded row into
``note`` (before what was typed), as the older code wrote it, so no history is lost.

Revision ID: 0012_history_note_codes
Revises: 0011_document_verdict_reason
Create Date: 2026-12-07 10:20:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012_history_note_codes"
down_revision: str | None = "0011_document_verdict_reason"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The English sentences of the codes of this revision (a migration keeps its own copy: the
# application's registry may change later).
_ENGLISH = {
    "draft_created": "Draft created.",
    "request_attached": "Certificate request attached (%(key)s).",
    "counter_key": "Key generated at the counter (%(key)s).",
    "submitted": "Submitted for review.",
    "approved": "Approved.",
    "first_approval": "Approved; waiting for a second officer's confirmation.",
    "rejected": "Rejected:",
    "issued": "Certificate issued (serial %(serial)s).",
    "renewal_requested": "Renewal of certificate %(serial)s requested.",
    "renewal_needs_review": "Needs review: %(reasons)s.",
    "renewal_approved": (
        "Approved without review: employer record unchanged and documents still valid."
    ),
}
_ENGLISH_REASONS = {
    "no_approval": "no officer approval was found for this certificate",
    "employer_changed": "your employer record changed on %(date)s, after the last approval",
    "document_expired": "“%(document)s” expired on %(date)s: upload a current one",
}

_ENGLISH_DOCUMENTS = {
    "application_form": "Certificate application form",
    "declaration_form": "Online-declaration application form",
    "commitment_letter": "User commitment letter",
    "business_licence": "Business licence (copy)",
    "social_security_registration": "Social-security registration certificate",
    "legal_representative_id": "Legal representative's ID",
}

_events = sa.table(
    "application_events",
    sa.column("id", sa.Integer),
    sa.column("note", sa.Text),
    sa.column("note_code", sa.String(40)),
    sa.column("note_params", sa.JSON(none_as_null=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("application_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("note_code", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("note_params", sa.JSON(none_as_null=True), nullable=True))


def _english(code: str, params: dict[str, Any] | None, typed: str | None) -> str:
    values = dict(params or {})
    if isinstance(values.get("reasons"), list):
        values["reasons"] = "; ".join(
            _ENGLISH_REASONS.get(str(r.get("code")), str(r.get("code")))
            % {**r, "document": _ENGLISH_DOCUMENTS.get(r.get("document"), r.get("document"))}
            for r in values["reasons"]
        )
    try:
        sentence = _ENGLISH[code] % values if code in _ENGLISH else code
    except (KeyError, TypeError, ValueError):
        sentence = code
    return f"{sentence} {typed}" if typed else sentence


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_events.c.id, _events.c.note_code, _events.c.note_params, _events.c.note).where(
            _events.c.note_code.is_not(None)
        )
    ).all()
    for row in rows:
        connection.execute(
            sa.update(_events)
            .where(_events.c.id == row.id)
            .values(note=_english(row.note_code, row.note_params, row.note))
        )
    with op.batch_alter_table("application_events", schema=None) as batch_op:
        batch_op.drop_column("note_params")
        batch_op.drop_column("note_code")
