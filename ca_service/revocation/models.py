"""Published CRLs, pending CRL publications and pre-signed OCSP responses."""

from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db import Base, created_at, enum_column, intpk


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


class PendingCRL(Base):
    """An issuer whose revocations are not in its newest CRL yet (publication coalesced).

    One row per issuer at most: a burst of revocations marks it once, the next publication of
    that issuer's CRL deletes it.
    """

    __tablename__ = "pending_crls"

    issuer_id: Mapped[int] = mapped_column(sa.ForeignKey("authorities.id"), primary_key=True)
    due_since: Mapped[dt.datetime]
    # A new random value with every revocation: a publisher deletes the row only if the value
    # is still the one it saw before reading the revoked certificates, so a revocation that
    # commits while a CRL is being signed (and is not in it) keeps the issuer pending.
    marker: Mapped[str] = mapped_column(sa.String(32))


class OCSPCertStatus(enum.StrEnum):
    GOOD = "good"
    REVOKED = "revoked"


class StoredOCSPResponse(Base):
    """A pre-signed OCSP response (RFC 5019): answering a request without a nonce reads it
    instead of asking the HSM to sign.

    Keyed by (issuer, serial, CertID hash algorithm): the CertID inside the signed response
    carries the hash algorithm and the issuer name/key hashes made with it, and a client
    matches the CertID it sent, so a SHA-1 request cannot be answered with the SHA-256
    response. Each stored certificate has one row per algorithm we answer (SHA-1, which
    RFC 5019 clients send, and SHA-256).
    """

    __tablename__ = "ocsp_responses"

    id: Mapped[intpk]
    issuer_id: Mapped[int] = mapped_column(sa.ForeignKey("authorities.id"))
    serial: Mapped[str] = mapped_column(sa.String(40))
    hash_algorithm: Mapped[str] = mapped_column(sa.String(8))
    # The CertID's issuer hashes, compared with the request's: a response made for an earlier
    # issuer certificate (another key or name) is never served for the current one.
    issuer_name_hash: Mapped[bytes] = mapped_column(sa.LargeBinary(64))
    issuer_key_hash: Mapped[bytes] = mapped_column(sa.LargeBinary(64))
    cert_status: Mapped[OCSPCertStatus] = mapped_column(enum_column(OCSPCertStatus, 16))
    this_update: Mapped[dt.datetime]
    next_update: Mapped[dt.datetime] = mapped_column(index=True)
    # The responder certificate that signed it: rotation re-signs what the old one signed, and
    # a response of a revoked responder is never served.
    responder_id: Mapped[int] = mapped_column(sa.ForeignKey("certificates.id"), index=True)
    der: Mapped[bytes] = mapped_column(sa.LargeBinary)

    __table_args__ = (
        sa.UniqueConstraint(
            "issuer_id", "serial", "hash_algorithm", name="uq_ocsp_responses_issuer_serial_hash"
        ),
        sa.CheckConstraint("hash_algorithm IN ('sha1', 'sha256')", name="hash_algorithm_known"),
        sa.CheckConstraint("this_update < next_update", name="update_ordered"),
    )


class OCSPEpoch(Base):
    """One counter, incremented by every commit that stores or drops OCSP responses.

    Workers answer repeated OCSP requests from memory (``answer_cache``) and forget them when
    the counter moves; being written in the changing transaction, it moves exactly when the
    change becomes visible. Written once per commit (not per response), at commit time, so
    concurrent transactions wait on its row only for the instant of their commits.
    """

    __tablename__ = "ocsp_epoch"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(sa.BigInteger)

    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)


class BlockedKey(Base):
    """A public key that must never be certified again: its certificate was revoked for
    keyCompromise. Keyed by the SHA-256 of the DER SubjectPublicKeyInfo (hex), the value
    ``applications.public_key_sha256`` holds, so a check is one indexed lookup."""

    __tablename__ = "blocked_keys"

    id: Mapped[intpk]
    spki_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # The revoked certificate that put the key here (the first one, if several carried it).
    certificate_id: Mapped[int | None] = mapped_column(sa.ForeignKey("certificates.id"))
    reason: Mapped[str] = mapped_column(sa.String(32))
    blocked_at: Mapped[dt.datetime]
