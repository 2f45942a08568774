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


class RevocationPolicy(enum.StrEnum):
    """Whether a tax path's CA certificates must each be found on their issuer's CRL.

    The taxpayer's (end-entity) certificate must be on a current CRL of its issuer under
    either policy. The policy of the anchor a path ends at applies to the whole path.
    """

    # Every CA certificate below the trust anchor needs a current CRL from its issuer.
    REQUIRE = "require"
    # As RFC 5280 relying parties (pyhanko-certvalidator's hard-fail mode) do: a CA
    # certificate is accepted unchecked when it names no CRL distribution point and its
    # issuer has neither a stored CRL nor a CRL URL; otherwise it is checked as under REQUIRE.
    WHEN_PUBLISHED = "when-published"


DEFAULT_REVOCATION_POLICY = RevocationPolicy.WHEN_PUBLISHED


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
    # Tax anchors: how the CA certificates of a path ending at this anchor are checked for
    # revocation (seal anchors carry the default and ignore it).
    revocation_policy: Mapped[RevocationPolicy] = mapped_column(
        enum_column(RevocationPolicy),
        default=DEFAULT_REVOCATION_POLICY,
        server_default=DEFAULT_REVOCATION_POLICY.value,
    )
    added_by: Mapped[str] = mapped_column(sa.String(100))
    created_at: Mapped[created_at]

    __table_args__ = (
        sa.UniqueConstraint("purpose", "fingerprint_sha256", name="uq_trust_anchors_purpose_fp"),
    )


class TaxCrl(Base):
    """The newest CRL issued by a tax-CA anchor, fetched from its distribution point or
    uploaded by a CA administrator; its signature was checked against the anchor on arrival."""

    __tablename__ = "tax_crls"

    id: Mapped[intpk]
    anchor_id: Mapped[int] = mapped_column(sa.ForeignKey("trust_anchors.id"), unique=True)
    der: Mapped[bytes] = mapped_column(sa.LargeBinary)
    # cRLNumber as lowercase hex (it may exceed BIGINT); a CRL never replaces a newer one.
    crl_number: Mapped[str | None] = mapped_column(sa.String(42))
    this_update: Mapped[dt.datetime]
    next_update: Mapped[dt.datetime]
    fetched_at: Mapped[dt.datetime]
    # "upload:<actor>" or the URL it came from.
    source: Mapped[str] = mapped_column(sa.String(500))
    # Last failed fetch (shown to administrators; the cached CRL stays until it is stale).
    last_error: Mapped[str | None] = mapped_column(sa.String(500))

    __table_args__ = (sa.CheckConstraint("this_update < next_update", name="update_ordered"),)


class CertificateBinding(Base):
    """A tax-bureau certificate bound to an employer's account after proof of possession.

    At most one live binding per certificate (partial unique index on the fingerprint), so a
    certificate bound to one employer cannot be bound to another; unbinding keeps the row.
    """

    __tablename__ = "certificate_bindings"

    id: Mapped[intpk]
    employer_id: Mapped[int] = mapped_column(sa.ForeignKey("employers.id"), index=True)
    issuer: Mapped[str] = mapped_column(sa.String(1000))
    # Serial as lowercase hex without leading zeros (the tax CA's serials, not ours).
    serial: Mapped[str] = mapped_column(sa.String(42))
    fingerprint_sha256: Mapped[str] = mapped_column(sa.String(64))
    # SHA-256 of the SubjectPublicKeyInfo (DER).
    spki_sha256: Mapped[str] = mapped_column(sa.String(64))
    subject: Mapped[str] = mapped_column(sa.String(1000))
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    der: Mapped[bytes] = mapped_column(sa.LargeBinary)
    bound_by: Mapped[str] = mapped_column(sa.String(100))
    created_at: Mapped[created_at]
    unbound_at: Mapped[dt.datetime | None]
    unbound_by: Mapped[str | None] = mapped_column(sa.String(100))

    __table_args__ = (
        sa.Index(
            "uq_certificate_bindings_live_fingerprint",
            "fingerprint_sha256",
            unique=True,
            sqlite_where=sa.text("unbound_at IS NULL"),
            postgresql_where=sa.text("unbound_at IS NULL"),
        ),
    )
