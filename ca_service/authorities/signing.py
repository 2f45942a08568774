"""Signing certificates with HSM keys without ever losing or reusing a serial.

The order is the contract (DESIGN.md, "Nothing signed is lost"):
1. ``reserve_certificate`` inserts a PENDING row with a fresh random serial;
2. the caller commits (the early commit that protects the irreversible HSM step);
3. ``sign_reserved`` signs with the HSM and stores the DER on the row, if it is still PENDING;
   the caller commits again before the certificate is shown to anyone.
A failure between 2 and 3 leaves a PENDING row that ``ca-service reconcile`` finds.

Both writes are single Core statements built once at import, and the ``Certificate`` objects
they return are attached to the session as already-loaded rows: issuance runs them for every
certificate, and the ORM's unit of work (change tracking, flush planning, re-reads) cost more
than the statements themselves (bench/issuance.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from ca_service.db import db, pipelined, utcnow
from ca_service.dml import Write
from ca_service.errors import Conflict
from ca_service.issuance.expiry import DEFAULT_WARNING_DAYS, first_notice_at
from ca_service.models import Authority, Certificate, CertificateKind, CertificateStatus
from hsm import KeyAlgorithm, Token

SERIAL_BITS = 159
# Names for attributes RFC 4514 has no short name for, as pages and logs show them.
READABLE_NAMES = {
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}


def new_serial() -> int:
    """A positive 159-bit serial from the CSPRNG (RFC 5280 allows 20 octets; CABF wants 64 bits
    of entropy; 159 bits keep the DER INTEGER at 20 octets without a sign byte)."""
    while True:
        serial = secrets.randbits(SERIAL_BITS)
        if serial > 0:
            return serial


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def normalise_serial(serial: str) -> str:
    """A serial as typed by a person or tool (``0x``, leading zeros, upper case) in the stored
    form: lowercase hex without leading zeros."""
    return serial.strip().lower().removeprefix("0x").lstrip("0")


def hash_for(algorithm: KeyAlgorithm) -> hashes.SHA256 | hashes.SHA384:
    """The signature hash that matches a key's strength."""
    if algorithm in (KeyAlgorithm.EC_P384, KeyAlgorithm.RSA_3072, KeyAlgorithm.RSA_4096):
        return hashes.SHA384()
    return hashes.SHA256()


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


_certificates = cast("sa.Table", Certificate.__table__)
# Ids in the order of the rows given, whatever order the database inserts them in.
_INSERT_RESERVATIONS = sa.insert(_certificates).returning(
    _certificates.c.id, sort_by_parameter_order=True
)
_INSERT_RESERVATION = Write(sa.insert(_certificates).returning(_certificates.c.id))
# Only a PENDING row takes a signature: `reconcile` (or a retried issuance after the grace
# period) may have marked it failed meanwhile, and a failed serial stays failed.
_STORE_SIGNED = sa.update(_certificates).where(
    _certificates.c.id == sa.bindparam("reserved_id"),
    _certificates.c.status == CertificateStatus.PENDING,
)

_STORE = Write(_STORE_SIGNED)


def reserve_certificate(
    *,
    issuer: Authority,
    kind: CertificateKind,
    subject: x509.Name,
    not_before: dt.datetime,
    not_after: dt.datetime,
    key_label: str | None = None,
    employer_id: int | None = None,
) -> Certificate:
    """Insert a PENDING certificate row with a new unique serial; never commits."""
    (row,) = reserve_serials(
        issuer_id=issuer.id,
        kind=kind,
        reservations=[Reservation(subject, not_before, not_after, key_label, employer_id)],
    )
    return row


@dataclass(frozen=True)
class Reservation:
    """What a PENDING row records before the HSM signs (see ``reserve_serials``)."""

    subject: x509.Name
    not_before: dt.datetime
    not_after: dt.datetime
    key_label: str | None = None
    employer_id: int | None = None
    renews_id: int | None = None  # the certificate this one renews (lineage)


def reserve_serials(
    *, issuer_id: int, kind: CertificateKind, reservations: Sequence[Reservation]
) -> list[Certificate]:
    """Insert a PENDING row with a new unique serial for each reservation, in one multi-row
    INSERT; the rows come back in the order given. Never commits."""
    # No look-up first: a collision among 2**159 random values does not happen in practice,
    # and the unique constraint (issuer_id, serial) makes the INSERT fail if it ever did.
    created_at = utcnow()
    values: list[dict[str, Any]] = [
        {
            "issuer_id": issuer_id,
            "serial": serial_hex(new_serial()),
            "kind": kind,
            "status": CertificateStatus.PENDING,
            "subject": reservation.subject.rfc4514_string(READABLE_NAMES),
            "not_before": reservation.not_before,
            "not_after": reservation.not_after,
            "key_label": reservation.key_label,
            "employer_id": reservation.employer_id,
            "der": None,
            "fingerprint_sha256": None,
            "created_at": created_at,
            "issued_at": None,
            "revoked_at": None,
            "revocation_reason": None,
            "invalidity_date": None,
            "renews_id": reservation.renews_id,
            "next_notice_at": None,
            "expired_at": None,
        }
        for reservation in reservations
    ]
    if not values:
        return []
    connection = db.session.connection()
    if len(values) == 1:  # one by one: compiled once (see ca_service.dml)
        ids = [row_id for (row_id,) in _INSERT_RESERVATION.rows(connection, values[0])]
    else:
        ids = list(connection.execute(_INSERT_RESERVATIONS, values).scalars().all())
    return [_attached(row_id, row_values) for row_id, row_values in zip(ids, values, strict=True)]


_CERTIFICATE_CLASS = sa.inspect(Certificate).class_manager


def _attached(row_id: int, values: dict[str, Any]) -> Certificate:
    """Put a row we just inserted with every column into the session as if loaded from it.
    Made as the ORM's loader makes one: no constructor, whose attribute events would record
    every value as a change only for ``make_transient_to_detached`` to forget them (a sixth of
    the reservation's CPU time)."""
    row = _CERTIFICATE_CLASS.new_instance()
    row.__dict__.update(values, id=row_id)
    make_transient_to_detached(row)
    db.session.add(row)
    return row


def sign_reserved(
    row: Certificate,
    builder: x509.CertificateBuilder,
    *,
    token: Token,
    issuer_key_label: str,
    issuer_algorithm: KeyAlgorithm,
    warning_days: Sequence[int] = DEFAULT_WARNING_DAYS,
) -> x509.Certificate:
    """Sign ``builder`` (serial, validity taken from ``row``) and store the result on the row.

    :raises hsm.errors.HSMError: when the HSM cannot sign; the committed PENDING row stays
        behind for ``reconcile`` and its serial is never reused.
    :raises Conflict: when the row is no longer PENDING (see ``store_signed``).
    """
    certificate = sign_reservation(
        row,
        builder,
        token=token,
        issuer_key_label=issuer_key_label,
        issuer_algorithm=issuer_algorithm,
    )
    store_signed(row, certificate, warning_days=warning_days)
    return certificate


def sign_reservation(
    row: Certificate,
    builder: x509.CertificateBuilder,
    *,
    token: Token,
    issuer_key_label: str,
    issuer_algorithm: KeyAlgorithm,
) -> x509.Certificate:
    """Sign ``builder`` with the serial and validity of the reserved ``row``; stores nothing
    (``store_signed`` or ``store_signed_many`` does).

    :raises hsm.errors.HSMError: when the HSM cannot sign.
    """
    builder = (
        builder.serial_number(row.serial_number)
        .not_valid_before(row.not_before)
        .not_valid_after(row.not_after)
    )
    return builder.sign(token.private_key(issuer_key_label), hash_for(issuer_algorithm))


class SignatureDiscarded(Conflict):
    """A signature made for a reservation that was marked failed meanwhile: never stored."""

    def __init__(self, serial: str) -> None:
        super().__init__(
            f"certificate {serial} was marked failed while the HSM signed it: the signature "
            "is discarded and the serial is never used again. Issue it again."
        )


def store_signed(
    row: Certificate,
    certificate: x509.Certificate,
    *,
    warning_days: Sequence[int] = DEFAULT_WARNING_DAYS,
) -> None:
    """Record a signed certificate on its reserved row (in the database at once), due for its
    first expiry warning ``max(warning_days)`` before its end.

    :raises Conflict: when the row is no longer PENDING (marked failed by ``reconcile`` or by a
        retry after the signing grace period): the signature is discarded, never stored or
        shown, and the serial stays burnt.
    """
    if store_signed_many([(row, certificate)], warning_days=warning_days):
        raise SignatureDiscarded(row.serial)


def store_signed_many(
    signed: Sequence[tuple[Certificate, x509.Certificate]],
    *,
    warning_days: Sequence[int] = DEFAULT_WARNING_DAYS,
) -> list[Certificate]:
    """Record signed certificates on their reserved rows, in one executemany; returns the rows
    that were no longer PENDING (see ``store_signed``), whose signatures are discarded. Each
    is due for the expiry run ``max(warning_days)`` before its end (``first_notice_at``)."""
    if not signed:
        return []
    issued_at = utcnow()
    values: list[dict[str, Any]] = []
    for row, certificate in signed:
        der = certificate.public_bytes(Encoding.DER)
        values.append(
            {
                "reserved_id": row.id,
                "der": der,
                "fingerprint_sha256": hashlib.sha256(der).hexdigest(),
                "status": CertificateStatus.ISSUED,
                "issued_at": issued_at,
                "next_notice_at": first_notice_at(row.not_after, warning_days),
            }
        )
    # Queued with the transaction's BEGIN on PostgreSQL: one round trip for both.
    with pipelined(len(values)) as pipeline:
        connection = db.session.connection()
        changed = _STORE.queue(connection, values, queued=pipeline.queued)
    stored = {v["reserved_id"] for v in values}
    if changed() != len(values):
        # Rare (a reservation marked failed while the HSM signed): which rows took our DER?
        stored = set(
            connection.execute(
                sa.select(_certificates.c.id).where(
                    _certificates.c.id.in_(stored),
                    _certificates.c.fingerprint_sha256.in_(
                        [v["fingerprint_sha256"] for v in values]
                    ),
                )
            ).scalars()
        )
    refused: list[Certificate] = []
    for (row, _), row_values in zip(signed, values, strict=True):
        if row.id not in stored:
            refused.append(row)
            continue
        for name in ("der", "fingerprint_sha256", "status", "issued_at", "next_notice_at"):
            set_committed_value(row, name, row_values[name])
    return refused


def public_key_matches(certificate: x509.Certificate, token: Token, key_label: str) -> bool:
    """Whether the certificate certifies the token's key with that label."""
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return certificate.public_key().public_bytes(*spki) == token.public_key(key_label).public_bytes(
        *spki
    )
