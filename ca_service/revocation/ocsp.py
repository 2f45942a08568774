"""OCSP responder (RFC 6960, RFC 5019 profile) for the employer issuing CA.

Responses are signed by the delegated responder certificate whose key is in the HSM. Requests
without a nonce (the RFC 5019 lightweight profile) are answered from pre-signed responses kept
in ``ocsp_responses``, so answering them needs no HSM; a request with a nonce is signed live
because the nonce must be echoed. Every path that changes a certificate's status (revocation,
release of a hold) re-signs its stored responses in the same transaction, so a revocation shows
in OCSP the moment it commits.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp
from flask import current_app, has_app_context
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from ca_service.audit.service import record_event
from ca_service.authorities.service import (
    ISSUING_SLUG,
    CertificateSummary,
    Commit,
    PkiParameters,
    current_certificate,
    current_ocsp_responder,
    ensure_ocsp_responder,
    get_authority,
    load_certificate,
)
from ca_service.config import Settings
from ca_service.db import about_to_write, db, utcnow
from ca_service.models import Authority, Certificate, CertificateStatus
from ca_service.revocation.models import OCSPCertStatus, OCSPEpoch, StoredOCSPResponse
from hsm import HSMPrivateKey, Token

MAX_REQUEST_BYTES = 8 * 1024
# app.extensions key of the worker's AnswerCache (answer_cache.py).
ANSWER_CACHE = "ocsp_answers"
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}
# CertID hash algorithms we pre-sign for: SHA-1 is what RFC 5019 clients send (§2.1.1),
# SHA-256 what newer ones do. Both are answered from storage; see StoredOCSPResponse.
PRESIGNED_HASHES: tuple[str, ...] = ("sha1", "sha256")
# Rows per batch when refreshing many stored responses (bounded memory, one upsert per batch).
_BATCH = 1000


@dataclass(frozen=True)
class OCSPAnswer:
    """The DER response and, for successful answers, its validity (what caches may rely on)."""

    der: bytes
    next_update: dt.datetime | None
    this_update: dt.datetime | None = None
    # May a worker answer an identical request (the same DER: the same CertID, no nonce) with
    # it from memory (answer_cache)? Not unsuccessful statuses, nor answers echoing a nonce.
    reusable: bool = False


@dataclass(frozen=True)
class RefreshReport:
    """What `ca-service ocsp refresh` did."""

    rotated: CertificateSummary | None
    signed: int
    removed: int


@dataclass(frozen=True)
class _Signer:
    """What signing responses for one issuer needs, looked up once per batch."""

    issuer_id: int
    issuer_der: bytes
    responder_id: int
    responder: x509.Certificate
    key: HSMPrivateKey


def _key_bits(public_key: object) -> bytes:
    """The subjectPublicKey BIT STRING contents that issuerKeyHash covers (RFC 6960 §4.1.1)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.public_bytes(Encoding.DER, PublicFormat.PKCS1)
    raise TypeError(f"unsupported issuer key {type(public_key).__name__}")


def unsuccessful(status: ocsp.OCSPResponseStatus) -> OCSPAnswer:
    """An unsigned OCSP response with an error status (RFC 6960 §4.2.1): malformedRequest,
    internalError, tryLater, unauthorized."""
    return OCSPAnswer(
        ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER), None
    )


@functools.lru_cache(maxsize=16)
def _issuer_hashes(issuer_der: bytes, algorithm: str) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of a CA certificate; computed once per CA and hash."""
    issuer_cert = x509.load_der_x509_certificate(issuer_der)
    return (
        hashlib.new(algorithm, issuer_cert.subject.public_bytes()).digest(),
        hashlib.new(algorithm, _key_bits(issuer_cert.public_key())).digest(),
    )


def _matches(request: ocsp.OCSPRequest, issuer_der: bytes) -> bool:
    name = request.hash_algorithm.name
    if name not in _HASHES:
        return False
    return (request.issuer_name_hash, request.issuer_key_hash) == _issuer_hashes(issuer_der, name)


def response_lifetime(settings: Settings) -> dt.timedelta:
    """How long one OCSP response is valid (its nextUpdate - thisUpdate)."""
    return dt.timedelta(hours=int(settings["OCSP_RESPONSE_HOURS"]))


def resign_margin(lifetime: dt.timedelta) -> dt.timedelta:
    """A stored response with less than this left (a quarter of its lifetime) is re-signed on
    demand (and stored) instead of served: a missed `ocsp refresh` never serves a lapsing
    answer."""
    return lifetime / 4


def _signer_for(token: Token, issuer: Authority, at: dt.datetime | None = None) -> _Signer | None:
    """The current responder of ``issuer`` and its key, or None when it has none usable."""
    responder_row = current_ocsp_responder(issuer, at)
    if responder_row is None or responder_row.key_label is None:
        return None
    issuer_der = current_certificate(issuer).der
    if issuer_der is None:
        return None
    return _Signer(
        issuer_id=issuer.id,
        issuer_der=issuer_der,
        responder_id=responder_row.id,
        responder=load_certificate(responder_row),
        key=token.private_key(responder_row.key_label),
    )


def _status(
    revoked_at: dt.datetime | None, reason: str | None, moment: dt.datetime
) -> tuple[OCSPCertStatus, dt.datetime | None, x509.ReasonFlags | None]:
    if revoked_at is None or revoked_at > moment:
        return OCSPCertStatus.GOOD, None, None
    flag = x509.ReasonFlags(reason or "unspecified")
    # RFC 5280 §5.3.1: unspecified is expressed by leaving the reason out.
    return (
        OCSPCertStatus.REVOKED,
        revoked_at,
        None if flag is x509.ReasonFlags.unspecified else flag,
    )


_OCSP_STATUS = {
    OCSPCertStatus.GOOD: ocsp.OCSPCertStatus.GOOD,
    OCSPCertStatus.REVOKED: ocsp.OCSPCertStatus.REVOKED,
}


def _sign(
    signer: _Signer,
    *,
    serial: int,
    algorithm: str,
    cert_status: ocsp.OCSPCertStatus,
    revocation_time: dt.datetime | None,
    reason: x509.ReasonFlags | None,
    moment: dt.datetime,
    lifetime: dt.timedelta,
    nonce: bytes | None = None,
) -> tuple[bytes, dt.datetime]:
    """One signed single-response OCSP answer and its nextUpdate."""
    name_hash, key_hash = _issuer_hashes(signer.issuer_der, algorithm)
    next_update = min(moment + lifetime, signer.responder.not_valid_after_utc)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=serial,
            algorithm=_HASHES[algorithm](),
            cert_status=cert_status,
            this_update=moment,
            next_update=next_update,
            revocation_time=revocation_time,
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.responder)
        .certificates([signer.responder])
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    response = builder.sign(signer.key, hashes.SHA256())
    return response.public_bytes(Encoding.DER), next_update


def _stored_values(
    signer: _Signer,
    *,
    serial: str,
    algorithm: str,
    revoked_at: dt.datetime | None,
    reason: str | None,
    moment: dt.datetime,
    lifetime: dt.timedelta,
) -> dict[str, Any]:
    """Sign one response for storage; the row's values for the upsert."""
    status, revocation_time, flag = _status(revoked_at, reason, moment)
    der, next_update = _sign(
        signer,
        serial=int(serial, 16),
        algorithm=algorithm,
        cert_status=_OCSP_STATUS[status],
        revocation_time=revocation_time,
        reason=flag,
        moment=moment,
        lifetime=lifetime,
    )
    name_hash, key_hash = _issuer_hashes(signer.issuer_der, algorithm)
    return {
        "issuer_id": signer.issuer_id,
        "serial": serial,
        "hash_algorithm": algorithm,
        "issuer_name_hash": name_hash,
        "issuer_key_hash": key_hash,
        "cert_status": status,
        "this_update": moment,
        "next_update": next_update,
        "responder_id": signer.responder_id,
        "der": der,
    }


_CHANGED = "ocsp_responses_changed"  # a flag in db.session.info until the commit


def _responses_changed() -> None:
    """Stored responses change in this transaction: its commit increments the OCSP epoch, so
    every worker forgets the answers it remembers (answer_cache); this one forgets at once."""
    db.session.info[_CHANGED] = True
    if has_app_context():
        cache = current_app.extensions.get(ANSWER_CACHE)
        if cache is not None:
            cache.clear()


@sa.event.listens_for(Session, "before_commit")
def _increment_epoch(session: Session) -> None:
    if not session.info.pop(_CHANGED, False):
        return
    table = cast(sa.Table, OCSPEpoch.__table__)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    session.execute(
        insert.values(id=1, value=1).on_conflict_do_update(
            index_elements=["id"], set_={"value": table.c.value + 1}
        )
    )


@sa.event.listens_for(Session, "after_rollback")
def _nothing_changed(session: Session) -> None:
    session.info.pop(_CHANGED, None)


_EPOCH_QUERY = sa.select(OCSPEpoch.value).where(OCSPEpoch.id == 1)


def ocsp_epoch(connection: sa.Connection) -> int:
    """The OCSP epoch: it moves whenever committed OCSP responses change."""
    return connection.execute(_EPOCH_QUERY).scalar() or 0


def _upsert(values: Sequence[dict[str, Any]]) -> None:
    """Insert or replace stored responses by (issuer, serial, algorithm); one executemany.

    Two workers may sign the same missing response at once: the later one simply wins.
    """
    if not values:
        return
    _responses_changed()
    table = cast(sa.Table, StoredOCSPResponse.__table__)
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    keys = ("issuer_id", "serial", "hash_algorithm")
    statement = insert.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: insert.excluded[name] for name in values[0] if name not in keys},
    )
    db.session.execute(statement, list(values))


def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def parse_ocsp_request(data: bytes) -> ocsp.OCSPRequest | OCSPAnswer:
    """The DER OCSP request with every field this responder reads decoded, or the
    malformedRequest answer (too long, not DER, an unknown CertID hash, broken extensions)."""
    if len(data) > MAX_REQUEST_BYTES:
        return unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    try:
        request = ocsp.load_der_ocsp_request(data)
        # cryptography decodes these lazily: read here, so that one it cannot read is refused
        # now and not as a 500 further on (an unknown hash OID raises UnsupportedAlgorithm).
        _ = (request.serial_number, request.issuer_name_hash, request.issuer_key_hash)
        _ = request.hash_algorithm.name
        _nonce(request)
    except (ValueError, UnsupportedAlgorithm):
        return unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    return request


def _triage(connection: sa.Connection, data: bytes) -> OCSPAnswer | tuple[ocsp.OCSPRequest, int]:
    """The parsed request and the issuing CA's id, or the unsuccessful answer it gets
    (malformedRequest; unauthorized for a CA this responder does not speak for)."""
    request = parse_ocsp_request(data)
    if isinstance(request, OCSPAnswer):
        return request
    # Core, with statements built once: on the hot path SQLAlchemy's per-call statement
    # construction (the responder alias above all) cost more than the queries themselves.
    issuer_row = connection.execute(_ISSUER_QUERY).first()
    if issuer_row is None or issuer_row.der is None:
        return unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
    if not _matches(request, issuer_row.der):
        # Not a CA this responder speaks for (another CA, or a name/key hash that is off).
        return unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    return request, issuer_row.id


def answer_from_storage(
    connection: sa.Connection,
    data: bytes,
    *,
    lifetime: dt.timedelta,
    now: dt.datetime | None = None,
) -> OCSPAnswer | None:
    """The answer to a DER OCSP request when it needs no signature: an unsuccessful status, or
    the fresh stored response to a request without a nonce. None: it must be signed
    (``answer_ocsp_request``). Reads only, on any connection: no session, no HSM."""
    triaged = _triage(connection, data)
    if isinstance(triaged, OCSPAnswer):
        return triaged
    request, issuer_id = triaged
    if _nonce(request) is not None:
        return None
    return _fresh_stored(
        connection,
        issuer_id=issuer_id,
        request=request,
        moment=now or utcnow(),
        lifetime=lifetime,
    )


def answer_ocsp_request(
    data: bytes, *, token: Token, lifetime: dt.timedelta, now: dt.datetime | None = None
) -> OCSPAnswer:
    """Answer one DER OCSP request: good / revoked / unknown, or an unsuccessful status.

    Without a nonce the stored response is served when there is a fresh one; otherwise the
    answer is signed here, and stored when it is about one of our unexpired certificates.
    """
    connection = db.session.connection()
    triaged = _triage(connection, data)
    if isinstance(triaged, OCSPAnswer):
        return triaged
    request, issuer_id = triaged
    moment = now or utcnow()
    nonce = _nonce(request)
    if nonce is None:
        stored = _fresh_stored(
            connection, issuer_id=issuer_id, request=request, moment=moment, lifetime=lifetime
        )
        if stored is not None:
            return stored
    # Signing (and storing) from here: leave the read-only snapshot the view may have begun.
    about_to_write()
    issuer = db.session.get(Authority, issuer_id)
    signer = None if issuer is None else _signer_for(token, issuer, moment)
    if signer is None:
        return unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
    return _live_answer(signer, request, nonce=nonce, moment=moment, lifetime=lifetime)


def _live_answer(
    signer: _Signer,
    request: ocsp.OCSPRequest,
    *,
    nonce: bytes | None,
    moment: dt.datetime,
    lifetime: dt.timedelta,
) -> OCSPAnswer:
    """Sign the answer now; store it when it is about one of our unexpired certificates and
    has no nonce (the next request is then served from storage)."""
    algorithm = request.hash_algorithm.name
    serial = format(request.serial_number, "x")
    row = db.session.execute(
        sa.select(
            Certificate.revoked_at, Certificate.revocation_reason, Certificate.not_after
        ).where(
            Certificate.issuer_id == signer.issuer_id,
            Certificate.serial == serial,
            Certificate.status == CertificateStatus.ISSUED,
        )
    ).first()
    if row is not None and nonce is None and row.not_after > moment:
        values = _stored_values(
            signer,
            serial=serial,
            algorithm=algorithm,
            revoked_at=row.revoked_at,
            reason=row.revocation_reason,
            moment=moment,
            lifetime=lifetime,
        )
        _upsert([values])
        return OCSPAnswer(values["der"], values["next_update"], moment, reusable=True)
    if row is None:
        # Never issued by this CA. Not stored: the serial may be a reservation about to be
        # issued, and an "unknown" kept until nextUpdate would then be wrong.
        cert_status, revocation_time, flag = ocsp.OCSPCertStatus.UNKNOWN, None, None
    else:
        status, revocation_time, flag = _status(row.revoked_at, row.revocation_reason, moment)
        cert_status = _OCSP_STATUS[status]
    der, next_update = _sign(
        signer,
        serial=request.serial_number,
        algorithm=algorithm,
        cert_status=cert_status,
        revocation_time=revocation_time,
        reason=flag,
        moment=moment,
        lifetime=lifetime,
        nonce=nonce,
    )
    return OCSPAnswer(der, next_update, moment, reusable=nonce is None)


def _fresh_stored(
    connection: sa.Connection,
    *,
    issuer_id: int,
    request: ocsp.OCSPRequest,
    moment: dt.datetime,
    lifetime: dt.timedelta,
) -> OCSPAnswer | None:
    """The stored answer to this CertID, unless it is about to lapse or its signer was
    revoked since (a compromised responder's answers are never served)."""
    stored = connection.execute(
        _STORED_QUERY,
        {
            "issuer_id": issuer_id,
            "serial": format(request.serial_number, "x"),
            "hash_algorithm": request.hash_algorithm.name,
            "issuer_name_hash": request.issuer_name_hash,
            "issuer_key_hash": request.issuer_key_hash,
        },
    ).first()
    if stored is None or stored.next_update - moment <= resign_margin(lifetime):
        return None
    return OCSPAnswer(stored.der, stored.next_update, stored.this_update, reusable=True)


_ISSUER_QUERY = (
    sa.select(Authority.id, Certificate.der)
    .join(Certificate, Certificate.id == Authority.certificate_id)
    .where(Authority.slug == ISSUING_SLUG)
)
_SIGNER = aliased(Certificate)
_STORED_QUERY = (
    sa.select(
        StoredOCSPResponse.der, StoredOCSPResponse.this_update, StoredOCSPResponse.next_update
    )
    .join(_SIGNER, _SIGNER.id == StoredOCSPResponse.responder_id)
    .where(
        StoredOCSPResponse.issuer_id == sa.bindparam("issuer_id"),
        StoredOCSPResponse.serial == sa.bindparam("serial"),
        StoredOCSPResponse.hash_algorithm == sa.bindparam("hash_algorithm"),
        StoredOCSPResponse.issuer_name_hash == sa.bindparam("issuer_name_hash"),
        StoredOCSPResponse.issuer_key_hash == sa.bindparam("issuer_key_hash"),
        _SIGNER.revoked_at.is_(None),
    )
)


# -- pre-signing -------------------------------------------------------------------------------


def presign_for_certificate(*, token: Token, certificate: Certificate, settings: Settings) -> int:
    """Sign and store the OCSP responses of one certificate (every CertID hash we answer);
    flushes. Returns how many were stored (0 when this responder does not serve its issuer,
    or there is no usable responder: the stored responses of the certificate are then dropped,
    so requests fall through to the live path).

    Revocation and release of a hold call it so the new status is what OCSP serves at once.
    Issuance does not: a new certificate's responses are signed at its first request (and
    stored then) or by `ca-service ocsp refresh`, which keeps the HSM's time on issuance.

    :raises hsm.errors.HSMError: when the HSM cannot sign.
    """
    return _presign(token, [certificate], response_lifetime(settings))


def _presign(token: Token, certificates: Iterable[Certificate], lifetime: dt.timedelta) -> int:
    moment = utcnow()
    signers: dict[int, _Signer | None] = {}
    values: list[dict[str, Any]] = []
    dropped: list[Certificate] = []
    for certificate in certificates:
        if certificate.issuer.slug != ISSUING_SLUG:
            continue  # the responder only speaks for the issuing CA (see answer_ocsp_request)
        if certificate.issuer_id not in signers:
            signers[certificate.issuer_id] = _signer_for(token, certificate.issuer, moment)
        signer = signers[certificate.issuer_id]
        usable = (
            signer is not None
            and certificate.status == CertificateStatus.ISSUED
            and certificate.not_after > moment
        )
        if signer is None or not usable:
            dropped.append(certificate)
            continue
        values.extend(
            _stored_values(
                signer,
                serial=certificate.serial,
                algorithm=algorithm,
                revoked_at=certificate.revoked_at,
                reason=certificate.revocation_reason,
                moment=moment,
                lifetime=lifetime,
            )
            for algorithm in PRESIGNED_HASHES
        )
    if dropped:
        _responses_changed()
    for certificate in dropped:
        db.session.execute(
            sa.delete(StoredOCSPResponse).where(
                StoredOCSPResponse.issuer_id == certificate.issuer_id,
                StoredOCSPResponse.serial == certificate.serial,
            )
        )
    _upsert(values)
    db.session.flush()
    return len(values)


def responder_rotation_margin(params: PkiParameters) -> dt.timedelta:
    """How long before its expiry the responder certificate is replaced: a quarter of its
    lifetime or 14 days, whichever is smaller."""
    return min(dt.timedelta(days=params.ocsp_days) / 4, dt.timedelta(days=14))


def rotate_responder_if_due(
    *, token: Token, issuer: Authority, params: PkiParameters, commit: Commit, actor: str
) -> CertificateSummary | None:
    """Issue a new responder certificate when the current one is close to expiry or missing
    (revoked); returns it, or None when the current one stays.

    ``commit`` is called around the HSM signature (ensure_ocsp_responder reserves the serial
    first), so call it only where an early commit is the command's boundary anyway.
    """
    moment = utcnow()
    current = current_ocsp_responder(issuer, moment)
    if current is not None:
        remaining = current.not_after - moment
        # A responder that already ends with the issuing CA cannot be outlived by a new one.
        capped = current.not_after >= current_certificate(issuer).not_after
        if remaining > responder_rotation_margin(params) or capped:
            return None
    return ensure_ocsp_responder(
        token=token, issuer=issuer, params=params, commit=commit, actor=actor, force=True
    )


def refresh_ocsp_responses(
    *,
    token: Token,
    settings: Settings,
    margin: dt.timedelta,
    commit: Commit,
    actor: str,
) -> RefreshReport:
    """Rotate the responder if due, then (re-)sign every stored response that lapses within
    ``margin``, was signed by another responder or for another issuer certificate, or is
    missing for an issued unexpired certificate; drop those of expired certificates.
    """
    issuer = get_authority(ISSUING_SLUG)
    rotated = rotate_responder_if_due(
        token=token,
        issuer=issuer,
        params=PkiParameters.from_settings(settings),
        commit=commit,
        actor=actor,
    )
    moment = utcnow()
    removed = _drop_expired(issuer, moment)
    signer = _signer_for(token, issuer, moment)
    signed = 0
    if signer is not None:
        lifetime = response_lifetime(settings)
        for algorithm in PRESIGNED_HASHES:
            signed += _resign_due(signer, algorithm, moment + margin, lifetime)
    record_event(
        actor,
        "ocsp.responses_refreshed",
        issuer.slug,
        {"signed": signed, "removed": removed, "rotated": rotated.serial if rotated else None},
    )
    return RefreshReport(rotated=rotated, signed=signed, removed=removed)


def _drop_expired(issuer: Authority, moment: dt.datetime) -> int:
    # Expired certificates are answered live again (their status stays right, only unstored).
    expired = sa.select(Certificate.serial).where(
        Certificate.issuer_id == issuer.id, Certificate.not_after <= moment
    )
    result = db.session.execute(
        sa.delete(StoredOCSPResponse).where(
            StoredOCSPResponse.issuer_id == issuer.id, StoredOCSPResponse.serial.in_(expired)
        )
    )
    removed = int(getattr(result, "rowcount", 0) or 0)
    if removed:
        _responses_changed()
    return removed


def _resign_due(
    signer: _Signer, algorithm: str, cutoff: dt.datetime, lifetime: dt.timedelta
) -> int:
    """Re-sign the responses of one CertID algorithm that need it, in keyset-paged batches
    (a batch's upserts never disturb the cursor of the query that found them)."""
    name_hash, key_hash = _issuer_hashes(signer.issuer_der, algorithm)
    stored = aliased(StoredOCSPResponse)
    status_now = sa.case(
        (Certificate.revoked_at.is_(None), OCSPCertStatus.GOOD.value),
        else_=OCSPCertStatus.REVOKED.value,
    )
    query = (
        sa.select(Certificate.serial, Certificate.revoked_at, Certificate.revocation_reason)
        .outerjoin(
            stored,
            sa.and_(
                stored.issuer_id == Certificate.issuer_id,
                stored.serial == Certificate.serial,
                stored.hash_algorithm == algorithm,
            ),
        )
        .where(
            Certificate.issuer_id == signer.issuer_id,
            Certificate.status == CertificateStatus.ISSUED,
            Certificate.not_after > utcnow(),
            sa.or_(
                stored.id.is_(None),
                stored.next_update < cutoff,
                stored.responder_id != signer.responder_id,
                stored.issuer_key_hash != key_hash,
                stored.issuer_name_hash != name_hash,
                sa.type_coerce(stored.cert_status, sa.String) != status_now,
            ),
        )
        .order_by(Certificate.serial)
        .limit(_BATCH)
    )
    signed, after = 0, ""
    while True:
        rows = db.session.execute(query.where(Certificate.serial > after)).all()
        if not rows:
            return signed
        moment = utcnow()
        _upsert(
            [
                _stored_values(
                    signer,
                    serial=serial,
                    algorithm=algorithm,
                    revoked_at=revoked_at,
                    reason=reason,
                    moment=moment,
                    lifetime=lifetime,
                )
                for serial, revoked_at, reason in rows
            ]
        )
        db.session.flush()
        signed += len(rows)
        after = rows[-1].serial
