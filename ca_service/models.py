"""Models shared by every feature: the CA hierarchy and the certificates our CAs signed."""

from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ca_service.db import Base, created_at, enum_column, intpk


class CertificateKind(enum.StrEnum):
    ROOT_CA = "root_ca"
    ISSUING_CA = "issuing_ca"
    OCSP_RESPONDER = "ocsp_responder"
    END_ENTITY = "end_entity"


class CertificateStatus(enum.StrEnum):
    """Lifecycle of a row; revocation is recorded separately (revoked_at)."""

    PENDING = "pending"  # serial reserved and committed, HSM signature not yet stored
    ISSUED = "issued"
    FAILED = "failed"  # signing failed; the serial stays burnt, never reused


class Authority(Base):
    """A certificate authority of ours whose signing key lives in the HSM."""

    __tablename__ = "authorities"

    id: Mapped[intpk]
    slug: Mapped[str] = mapped_column(sa.String(32), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("authorities.id"))
    key_label: Mapped[str] = mapped_column(sa.String(64), unique=True)
    key_algorithm: Mapped[str] = mapped_column(sa.String(16))
    # The authority's current certificate. The FK is added after both tables exist (use_alter)
    # because a root's certificate is issued by the root itself.
    certificate_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("certificates.id", use_alter=True, name="fk_authorities_certificate_id")
    )
    created_at: Mapped[created_at]

    parent: Mapped[Authority | None] = relationship(remote_side="Authority.id")
    certificate: Mapped[Certificate | None] = relationship(foreign_keys=[certificate_id])

    __table_args__ = (sa.CheckConstraint("slug <> ''", name="slug_not_empty"),)


class Certificate(Base):
    """A certificate signed by one of our authorities (CA, OCSP responder or employer)."""

    __tablename__ = "certificates"

    id: Mapped[intpk]
    issuer_id: Mapped[int] = mapped_column(sa.ForeignKey("authorities.id"), index=True)
    # Serial as lowercase hex without leading zeros: 159-bit values do not fit BIGINT, and hex
    # is what openssl, OCSP tools and people compare.
    serial: Mapped[str] = mapped_column(sa.String(40))
    kind: Mapped[CertificateKind] = mapped_column(enum_column(CertificateKind))
    status: Mapped[CertificateStatus] = mapped_column(enum_column(CertificateStatus))
    subject: Mapped[str] = mapped_column(sa.String(1000))
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime] = mapped_column(index=True)
    # Label of the key in our HSM for certificates whose key we hold (CAs, OCSP responders).
    key_label: Mapped[str | None] = mapped_column(sa.String(64))
    # The employer an end-entity certificate identifies.
    employer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("employers.id"), index=True)
    der: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    fingerprint_sha256: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[created_at]
    issued_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    revocation_reason: Mapped[str | None] = mapped_column(sa.String(32))
    invalidity_date: Mapped[dt.datetime | None]
    # Lineage: the certificate this one renews (None for a first issuance).
    renews_id: Mapped[int | None] = mapped_column(sa.ForeignKey("certificates.id"), index=True)
    # When the expiry run next looks at this row (the next warning threshold, then notAfter to
    # mark it expired); None once there is nothing left to do. Indexed: an idle run reads nothing.
    next_notice_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    # When the expiry run recorded that notAfter passed.
    expired_at: Mapped[dt.datetime | None]

    issuer: Mapped[Authority] = relationship(foreign_keys=[issuer_id])

    __table_args__ = (
        sa.UniqueConstraint("issuer_id", "serial", name="uq_certificates_issuer_serial"),
        sa.CheckConstraint("status <> 'issued' OR der IS NOT NULL", name="issued_has_der"),
        sa.CheckConstraint("serial <> '' AND serial NOT LIKE '0%'", name="serial_canonical_hex"),
        sa.CheckConstraint("not_before < not_after", name="validity_ordered"),
    )

    def usable_at(self, now: dt.datetime) -> bool:
        """Issued, not revoked and inside its validity at ``now``."""
        return (
            self.status is CertificateStatus.ISSUED
            and self.revoked_at is None
            and self.not_before <= now < self.not_after
        )

    @property
    def serial_number(self) -> int:
        return int(self.serial, 16)


class ExpiryNotice(Base):
    """One expiry warning threshold (days before notAfter) sent for a certificate: at most once."""

    __tablename__ = "expiry_notices"

    id: Mapped[intpk]
    certificate_id: Mapped[int] = mapped_column(sa.ForeignKey("certificates.id"))
    threshold_days: Mapped[int]
    created_at: Mapped[created_at]

    __table_args__ = (
        sa.UniqueConstraint(
            "certificate_id", "threshold_days", name="uq_expiry_notices_certificate_threshold"
        ),
        sa.CheckConstraint("threshold_days > 0", name="threshold_positive"),
    )
