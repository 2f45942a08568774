"""External trust anchors: the seal CA (document seals) and the tax bureau's CAs."""

from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db import Base, created_at, enum_column, intpk


class TrustPurpose(enum.StrEnum):
    SEAL = "seal"  # signers of sealed application documents
    TAX = "tax"  # the tax bureau's CA, whose certificates employers bind and log in with


class TrustAnchor(Base):
    """A CA certificate trusted for one purpose (a root, or an intermediate to help paths)."""

    __tablename__ = "trust_anchors"

    id: Mapped[intpk]
    purpose: Mapped[TrustPurpose] = mapped_column(enum_column(TrustPurpose))
    subject: Mapped[str] = mapped_column(sa.String(1000))
    fingerprint_sha256: Mapped[str] = mapped_column(sa.String(64))
    der: Mapped[bytes] = mapped_column(sa.LargeBinary)
    not_after: Mapped[dt.datetime]
    # Where this CA publishes its CRL (from the certificate's CRL DP or set by the admin).
    crl_url: Mapped[str | None] = mapped_column(sa.String(500))
    enabled: Mapped[bool] = mapped_column(default=True)
    added_by: Mapped[str] = mapped_column(sa.String(100))
    created_at: Mapped[created_at]

    __table_args__ = (
        sa.UniqueConstraint("purpose", "fingerprint_sha256", name="uq_trust_anchors_purpose_fp"),
    )
