"""Revocation records and CRL publication.

A revocation is visible in OCSP the moment it commits: the certificate's pre-signed responses
are re-signed in the same transaction. CRL publication is coalesced: a revocation publishes
the issuer's CRL at once only when the newest one is older than CRL_COALESCE_SECONDS;
otherwise the issuer is marked pending and the next revocation after the interval,
`ca-service crl publish --pending` or a `crl publish --watch SECONDS` worker publishes it.
A burst of revocations thus signs one CRL, not one each.
"""

from __future__ import annotations

import datetime as dt
import gc
import secrets
import sqlite3
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask_babel import gettext as _
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler

from ca_service.audit.service import lock_audit_log, record_event
from ca_service.authorities.service import (
    ROOT_SLUG,
    current_certificate,
    get_authority,
    load_certificate,
)
from ca_service.authorities.signing import hash_for, normalise_serial
from ca_service.config import Settings
from ca_service.db import db, utcnow
from ca_service.errors import Conflict, NotFound, ValidationError, echoed
from ca_service.models import Authority, Certificate, CertificateStatus
from ca_service.revocation.blocked_keys import block_certificate_key
from ca_service.revocation.models import PendingCRL, PublishedCRL
from ca_service.revocation.ocsp import presign_for_certificate
from hsm import KeyAlgorithm, Token

# RFC 5280 §5.3.1 reasons an operator may give; removeFromCRL only releases a hold.
REASONS: dict[str, x509.ReasonFlags] = {
    flag.value: flag for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
}


@dataclass(frozen=True)
class StatusChange:
    """A revocation (or release of a hold) and the CRL it published, if it published one
    (None: coalesced, the issuer's CRL is pending)."""

    certificate: Certificate
    crl: PublishedCRL | None


def find_certificate(issuer: Authority, serial: str) -> Certificate:
    """An issued certificate of ``issuer`` by hex serial.

    :raises NotFound: when this issuer never issued it.
    """
    normalised = normalise_serial(serial)
    row = db.session.scalar(
        sa.select(Certificate).where(
            Certificate.issuer_id == issuer.id,
            Certificate.serial == normalised,
            Certificate.status == CertificateStatus.ISSUED,
        )
    )
    if row is None:
        raise NotFound(
            _(
                "%(name)s issued no certificate with serial %(serial)s",
                name=issuer.name,
                serial=serial,
            )
        )
    return row


def revoke_certificate(
    *,
    token: Token,
    settings: Settings,
    certificate: Certificate,
    reason: str,
    invalidity_date: dt.datetime | None,
    actor: str,
    publish_now: bool = False,
) -> StatusChange:
    """Record a revocation (RFC 5280 reason), re-sign the certificate's OCSP responses and
    publish its issuer's CRL (at once with ``publish_now``, else coalesced); flushes.

    :raises ValidationError: for an unknown reason or an invalidity date in the future.
    :raises Conflict: when the certificate is already revoked (a hold may become permanent).
    """
    flag = REASONS.get(reason)
    if flag is None:
        raise ValidationError(
            _(
                "unknown revocation reason %(reason)s; one of %(value)s",
                reason=echoed(reason),
                value=", ".join(REASONS),
            )
        )
    now = utcnow()
    if invalidity_date is not None and invalidity_date > now:
        raise ValidationError(_("the invalidity date cannot be in the future"))
    if certificate.revoked_at is not None:
        on_hold = certificate.revocation_reason == x509.ReasonFlags.certificate_hold.value
        if not on_hold or flag is x509.ReasonFlags.certificate_hold:
            raise Conflict(
                _(
                    "certificate %(serial)s is already revoked (%(reason)s) since %(when)s",
                    serial=certificate.serial,
                    reason=certificate.revocation_reason,
                    when=f"{certificate.revoked_at:%Y-%m-%d %H:%M}",
                )
            )
    certificate.revoked_at = now
    certificate.revocation_reason = flag.value
    certificate.invalidity_date = invalidity_date
    db.session.flush()
    record_event(
        actor,
        "certificate.revoked",
        certificate.serial,
        {"reason": flag.value, "issuer_id": certificate.issuer_id, "subject": certificate.subject},
    )
    if flag is x509.ReasonFlags.key_compromise:
        # Of any kind (an OCSP responder's key too): the key is never certified again.
        block_certificate_key(db.session(), certificate, reason=flag.value, actor=actor)
    return _status_changed(token, settings, certificate, actor, publish_now=publish_now)


def _status_changed(
    token: Token, settings: Settings, certificate: Certificate, actor: str, *, publish_now: bool
) -> StatusChange:
    # OCSP first and in this transaction: it is what makes the change visible within a second
    # (the CRL may be coalesced with the next ones and published a few seconds later).
    presign_for_certificate(token=token, certificate=certificate, settings=settings)
    issuer = certificate.issuer
    lifetime = crl_lifetime(settings, issuer.slug)
    crl: PublishedCRL | None
    if publish_now:
        crl = publish_crl(token=token, issuer=issuer, lifetime=lifetime, actor=actor)
    else:
        crl = publish_crl_unless_recent(
            token=token,
            issuer=issuer,
            lifetime=lifetime,
            interval=dt.timedelta(seconds=int(settings["CRL_COALESCE_SECONDS"])),
            actor=actor,
        )
    return StatusChange(certificate=certificate, crl=crl)


def release_hold(
    *,
    token: Token,
    settings: Settings,
    certificate: Certificate,
    actor: str,
    publish_now: bool = False,
) -> StatusChange:
    """Take a certificate off hold (removeFromCRL), re-sign its OCSP responses and publish its
    issuer's CRL like a revocation does; flushes.

    :raises Conflict: when it is not on hold.
    """
    if certificate.revocation_reason != x509.ReasonFlags.certificate_hold.value:
        raise Conflict(_("certificate %(serial)s is not on hold", serial=certificate.serial))
    certificate.revoked_at = None
    certificate.revocation_reason = None
    certificate.invalidity_date = None
    db.session.flush()
    record_event(actor, "certificate.hold_released", certificate.serial, {})
    return _status_changed(token, settings, certificate, actor, publish_now=publish_now)


# Rows per read from PostgreSQL: a round trip is rare, and a batch of driver rows stays a few
# megabytes next to the entries being built.
_ROW_BATCH = 10_000

# (hex serial, revocation date, reason value, invalidity date); naive UTC dates.
_RevokedRow = tuple[str, dt.datetime, str | None, dt.datetime | None]


@contextmanager
def _revoked_rows(issuer: Authority, now: dt.datetime) -> Iterator[Iterable[_RevokedRow]]:
    """The issuer's unexpired revoked certificates as plain tuples, streamed from the driver's
    cursor in the session's transaction.

    Naive datetimes instead of the UTC column type, and no ORM or result processing: at a
    million rows any per-value conversion costs as much as building the entries, and
    cryptography reads a naive datetime as UTC. SQLite stores naive UTC text already;
    PostgreSQL converts with timezone('UTC', ...).
    """
    connection = db.session.connection()
    on_postgresql = connection.dialect.name == "postgresql"

    def naive(
        column: InstrumentedAttribute[dt.datetime | None],
    ) -> sa.ColumnElement[Any] | InstrumentedAttribute[dt.datetime | None]:
        return sa.func.timezone("UTC", column, type_=sa.DateTime()) if on_postgresql else column

    query = sa.select(
        Certificate.serial,
        naive(Certificate.revoked_at),
        Certificate.revocation_reason,
        naive(Certificate.invalidity_date),
    ).where(
        Certificate.issuer_id == issuer.id,
        Certificate.revoked_at.is_not(None),
        Certificate.not_after > now,
    )
    rows = _postgresql_rows if on_postgresql else _sqlite_rows
    with rows(connection, query) as streamed:
        yield streamed


@contextmanager
def _postgresql_rows(
    connection: sa.Connection, query: sa.ClauseElement
) -> Iterator[Iterable[_RevokedRow]]:
    """The rows of ``query`` from psycopg directly: binary results (timestamps arrive as
    integers, not text to parse) and a chunked stream, so the server produces the next rows
    while this process builds entries from the last ones, where a server-side cursor would
    leave one of the two idle at each FETCH."""
    driver = connection.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(f"expected a psycopg connection, got {type(driver).__name__}")
    # The parameters reach psycopg as they are, without SQLAlchemy's type processing: an int
    # and an aware datetime, which psycopg adapts itself.
    compiled = query.compile(dialect=connection.dialect)
    with driver.cursor(binary=True) as cursor:
        rows = cursor.stream(
            compiled.string,
            compiled.params,
            size=_ROW_BATCH if psycopg.capabilities.has_stream_chunked() else 1,
        )
        try:
            yield rows
        except psycopg.Error as exc:
            # Raised as SQLAlchemy would have: error handlers know its exceptions (an
            # OperationalError is "the database is unavailable", a 503).
            raise sa.exc.DBAPIError.instance(
                compiled.string, compiled.params, exc, psycopg.Error, dialect=connection.dialect
            ) from exc
        finally:
            # When the caller stopped early: cancels and drains the query, so that the
            # transaction can still roll back. (stream() is a generator, typed as Iterator.)
            cast(Generator[_RevokedRow, None, None], rows).close()


@contextmanager
def _sqlite_rows(
    connection: sa.Connection, query: sa.ClauseElement
) -> Iterator[Iterable[_RevokedRow]]:
    """The rows of ``query`` from the sqlite3 cursor of the session's transaction, the dates
    parsed with ``datetime.fromisoformat``: less than half of what SQLAlchemy's result
    processing costs per row, and at a million rows that is seconds. (The parameters still go
    through their types' bind processors: a date is compared as the text it is stored as.)"""
    dialect = connection.dialect
    compiled = cast(SQLCompiler, query.compile(dialect=dialect))
    parameters = []
    for name in compiled.positiontup or ():
        value = compiled.params[name]
        process = compiled.binds[name].type.bind_processor(dialect)
        parameters.append(process(value) if process is not None else value)
    driver = connection.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        raise TypeError(f"expected a sqlite3 connection, got {type(driver).__name__}")
    cursor = driver.execute(compiled.string, parameters)
    parse = dt.datetime.fromisoformat
    try:
        yield (
            (serial, parse(revoked_at), reason, invalidity and parse(invalidity))
            for serial, revoked_at, reason, invalidity in cursor
        )
    finally:
        cursor.close()


def _revoked_entries(issuer: Authority, now: dt.datetime) -> list[x509.RevokedCertificate]:
    """The entries of the issuer's CRL, built in one pass over the streamed rows.

    At a million entries this loop is most of the cost of a CRL: each entry goes straight to
    the builder's constructor (no chain of copying setters), and the reason extensions, of
    which there are a handful, are made once.
    """
    reasons: dict[str | None, list[x509.Extension[x509.ExtensionType]]] = {
        value: [x509.Extension(x509.CRLReason.oid, False, x509.CRLReason(flag))]
        for value, flag in REASONS.items()
    }
    # RFC 5280 §5.3.1: unspecified is expressed by leaving the reason out.
    reasons[None] = reasons[x509.ReasonFlags.unspecified.value] = []
    entries = []
    build = x509.RevokedCertificateBuilder
    # The entries hold no reference cycles, yet each of the collector's full passes walks all
    # of them: at a million entries that is a third of the time. Paused for the loop only
    # (process-wide, so a web worker's other threads just collect a few seconds later).
    collecting = gc.isenabled()
    gc.disable()
    try:
        with _revoked_rows(issuer, now) as rows:
            for serial, revoked_at, reason, invalidity in rows:
                extensions = reasons.get(reason)
                if extensions is None:
                    raise ValueError(f"certificate {serial}: unknown revocation reason {reason!r}")
                if invalidity is not None:
                    date = x509.InvalidityDate(invalidity)
                    extensions = [*extensions, x509.Extension(date.oid, False, date)]
                entries.append(
                    build(
                        serial_number=int(serial, 16),
                        revocation_date=revoked_at,
                        extensions=extensions,
                    ).build()
                )
    finally:
        if collecting:
            gc.enable()
    return entries


def publish_crl(
    *, token: Token, issuer: Authority, lifetime: dt.timedelta, actor: str
) -> PublishedCRL:
    """Sign and store the issuer's next CRL; flushes (the caller commits). Clears the issuer's
    pending mark unless a revocation came in meanwhile.

    The revoked list goes to cryptography's builder constructor in one piece: adding entries
    one by one (add_revoked_certificate) copies the list each time, quadratic at scale.
    """
    issuer_cert = load_certificate(current_certificate(issuer))
    # Read before the entries: see PendingCRL.marker.
    pending_marker = db.session.scalar(
        sa.select(PendingCRL.marker).where(PendingCRL.issuer_id == issuer.id)
    )
    now = utcnow()
    next_update = min(now + lifetime, issuer_cert.not_valid_after_utc)
    entries = _revoked_entries(issuer, now)
    # The scope (user or CA certificates) without a distribution point name: a name would put
    # certificates without a CRL distribution point (the nocheck OCSP responder's) out of this
    # CRL's scope (RFC 5280 §6.3.3 b.2), and the CRL is complete for its scope anyway.
    scope = x509.IssuingDistributionPoint(
        full_name=None,
        relative_name=None,
        only_contains_user_certs=issuer.slug != ROOT_SLUG,
        only_contains_ca_certs=issuer.slug == ROOT_SLUG,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
        issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    )
    # Publishers of one issuer queue on its row (PostgreSQL FOR UPDATE; SQLite writers are
    # serialised already), so each takes the next number; the unique constraint still
    # guarantees that no two CRLs of an issuer ever share one. The audit log's lock comes
    # first, as in a revocation (its event, then this CRL): publishing takes the issuer's row
    # and then the log for its own event, and in the other order a revocation and a
    # publication deadlocked on PostgreSQL. FOR NO KEY UPDATE, not FOR UPDATE: an issuance
    # inserting a certificate of this issuer holds a KEY SHARE lock on the row (its foreign
    # key) until it commits, and a plain FOR UPDATE waited for it — while that issuance waited
    # for the audit log this publication held: a deadlock.
    lock_audit_log()
    db.session.execute(
        sa.select(Authority.id).where(Authority.id == issuer.id).with_for_update(key_share=True)
    )
    number = (
        db.session.scalar(
            sa.select(sa.func.max(PublishedCRL.number)).where(PublishedCRL.issuer_id == issuer.id)
        )
        or 0
    ) + 1
    extensions = [
        x509.Extension(aki.oid, False, aki),
        x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
        x509.Extension(scope.oid, True, scope),
    ]
    crl = x509.CertificateRevocationListBuilder(
        issuer_name=issuer_cert.subject,
        last_update=now,
        next_update=next_update,
        extensions=extensions,
        revoked_certificates=entries,
    ).sign(token.private_key(issuer.key_label), hash_for(KeyAlgorithm(issuer.key_algorithm)))
    row = PublishedCRL(
        issuer_id=issuer.id,
        number=number,
        this_update=now,
        next_update=next_update,
        entries=len(entries),
        der=crl.public_bytes(Encoding.DER),
    )
    _prefer_lz4_compression()
    db.session.add(row)
    if pending_marker is not None:
        db.session.execute(
            sa.delete(PendingCRL).where(
                PendingCRL.issuer_id == issuer.id, PendingCRL.marker == pending_marker
            )
        )
    db.session.flush()
    record_event(actor, "crl.published", issuer.slug, {"number": number, "entries": len(entries)})
    return row


def _prefer_lz4_compression() -> None:
    """PostgreSQL: compress the large values this transaction stores (the CRL's DER) with lz4
    where the server has it, instead of the default pglz.

    pglz takes about a second of the server's time to store a CRL of a million entries
    (57 MB), more than reading the million rows; lz4 takes a third of that for a value some
    6 % larger. Local to the transaction; either reads back the same. (A column setting,
    ALTER TABLE crls ALTER COLUMN der SET COMPRESSION lz4, would make it permanent.)
    """
    if db.session.get_bind().dialect.name != "postgresql":
        return
    db.session.execute(
        sa.text(
            "SELECT set_config('default_toast_compression', 'lz4', true) FROM pg_settings"
            " WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
        )
    )


def mark_crl_pending(issuer: Authority) -> None:
    """Note that the issuer's newest CRL misses a status change; flushes."""
    table = cast(sa.Table, PendingCRL.__table__)
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    statement = insert.values(
        issuer_id=issuer.id, due_since=utcnow(), marker=secrets.token_hex(16)
    ).on_conflict_do_update(index_elements=["issuer_id"], set_={"marker": insert.excluded.marker})
    db.session.execute(statement)


def publish_crl_unless_recent(
    *,
    token: Token,
    issuer: Authority,
    lifetime: dt.timedelta,
    interval: dt.timedelta,
    actor: str,
) -> PublishedCRL | None:
    """Mark the issuer's CRL pending and publish it now unless its newest CRL is younger than
    ``interval`` (then the mark waits for the next revocation or `crl publish --pending`);
    flushes. Returns the CRL published, if any."""
    mark_crl_pending(issuer)
    newest = db.session.scalar(
        sa.select(sa.func.max(PublishedCRL.this_update)).where(PublishedCRL.issuer_id == issuer.id)
    )
    if newest is not None and utcnow() - newest < interval:
        return None
    return publish_crl(token=token, issuer=issuer, lifetime=lifetime, actor=actor)


def pending_crl_issuers() -> list[Authority]:
    """The issuers whose newest CRL misses a revocation, oldest mark first."""
    return list(
        db.session.scalars(
            sa.select(Authority)
            .join(PendingCRL, PendingCRL.issuer_id == Authority.id)
            .order_by(PendingCRL.due_since)
        )
    )


def publish_pending_crls(*, token: Token, settings: Settings, actor: str) -> list[PublishedCRL]:
    """Publish the CRL of every issuer marked pending (coalesced revocations); flushes."""
    return [
        publish_crl(
            token=token,
            issuer=issuer,
            lifetime=crl_lifetime(settings, issuer.slug),
            actor=actor,
        )
        for issuer in pending_crl_issuers()
    ]


def crl_lifetime(settings: Settings, slug: str) -> dt.timedelta:
    """How long a CA's CRL stays valid (root: CA certificates, rarely changes)."""
    if slug == ROOT_SLUG:
        return dt.timedelta(days=int(settings["ROOT_CRL_NEXT_UPDATE_DAYS"]))
    return dt.timedelta(hours=int(settings["CRL_NEXT_UPDATE_HOURS"]))


def publish_all_crls(*, token: Token, settings: Settings, actor: str) -> list[PublishedCRL]:
    """Publish a new CRL for every CA (cron, init)."""
    from ca_service.authorities.service import list_authorities

    return [
        publish_crl(
            token=token,
            issuer=authority,
            lifetime=crl_lifetime(settings, authority.slug),
            actor=actor,
        )
        for authority in list_authorities()
    ]


def has_crl(issuer: Authority) -> bool:
    """Whether any CRL was published for the CA."""
    query = sa.select(PublishedCRL.id).where(PublishedCRL.issuer_id == issuer.id).limit(1)
    return db.session.scalar(query) is not None


def latest_crl(slug: str) -> PublishedCRL:
    """The newest CRL of a CA.

    :raises NotFound: when none was published.
    """
    issuer = get_authority(slug)
    row = db.session.scalar(
        sa.select(PublishedCRL)
        .where(PublishedCRL.issuer_id == issuer.id)
        .order_by(PublishedCRL.number.desc())
        .limit(1)
    )
    if row is None:
        raise NotFound(
            _(
                "no CRL has been published for %(slug)s; run `ca-service crl publish`",
                slug=echoed(slug),
            )
        )
    return row
