"""Published CRLs."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db import Base, created_at, intpk


class PublishedCRL(Base):
    """One signed CRL; the web serves the newest per issuer without touching the HSM."""

    __tablename__ = "crls"

    id: Mapped[intpk]
    issuer_id: Mapped[int] = mapped_column(sa.ForeignKey("authorities.id"))
    # cRLNumber, monotonically increasing per issuer; the unique constraint is what keeps two
    # workers publishing at once from ever sharing one.
    number: Mapped[int] = mapped_column(sa.BigInteger)
    this_update: Mapped[dt.datetime]
    next_update: Mapped[dt.datetime]
    entries: Mapped[int]
    der: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[created_at]

    __table_args__ = (
        sa.UniqueConstraint("issuer_id", "number", name="uq_crls_issuer_number"),
        sa.CheckConstraint("number > 0", name="number_positive"),
        sa.CheckConstraint("this_update < next_update", name="update_ordered"),
    )
