"""Appending to and verifying the hash-chained audit log.

Event hash, version 1 (what an auditor re-implements to check the log without this code)::

    payload = "ca-service-audit-v1" LF
              L(seq) LF L(occurred_at) LF L(actor) LF L(action) LF L(target) LF
              L(details) LF L(prev_hash)
    L(v)    = <number of Unicode code points in v, decimal> ":" v
    hash    = lowercase hex of SHA-256(UTF-8(payload))

with the fields exactly as stored in ``audit_events``: ``seq`` in decimal; ``occurred_at`` in
UTC to the second as ``YYYY-MM-DDTHH:MM:SSZ``; ``details`` the stored canonical JSON text (keys
sorted, separators ``,`` and ``:``, no other white space, non-ASCII characters unescaped);
``prev_hash`` the previous event's hash, or 64 ``0`` characters before event 1. The length prefix
makes the encoding unambiguous whatever a field contains (line feeds included). Example: event 1
by ``alice``, action ``a``, target ``t``, details ``{}``, at 2026-01-02 03:04:05 UTC, hashes
``1:1\\n20:2026-01-02T03:04:05Z\\n5:alice\\n1:a\\n1:t\\n2:{}\\n64:000…0`` (after the
``ca-service-audit-v1\\n`` line); the tests pin the resulting hash.

Checkpoint signature, version 1: the HSM audit key signs the ASCII bytes
``"ca-service-audit-checkpoint-v1" LF seq LF hash`` (``seq`` decimal, ``hash`` the event's
lowercase hex hash, no trailing line feed). ``audit_checkpoints.algorithm`` names the scheme
(``ecdsa-sha256``, ``ecdsa-sha384`` or ``rsa-pkcs1-sha256``; ECDSA signatures are DER), so
``openssl dgst -sha256 -verify audit.pem -signature sig.der message`` checks one by hand.

Appends are serialised on the single ``audit_head`` row: every writer updates it first, so
concurrent writers (threads, gunicorn workers, machines on PostgreSQL) queue on its row lock; on
SQLite every transaction begins IMMEDIATE (see ``ca_service.db``). The head also counts the
events since the last checkpoint, which ``verify_chain`` checks against the checkpoints present.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import cast

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from flask import current_app

from ca_service.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from ca_service.db import db, pipelined, utcnow
from ca_service.dml import Write
from ca_service.errors import CAError
from hsm import KeyAlgorithm, PublicKey, SignatureScheme, Token
from hsm.errors import HSMError

log = logging.getLogger(__name__)

AUDIT_KEY_LABEL = "audit-checkpoint"
GENESIS_HASH = "0" * 64
EVENT_HASH_PREFIX = "ca-service-audit-v1\n"
CHECKPOINT_MESSAGE_PREFIX = "ca-service-audit-checkpoint-v1\n"
_HEAD_ID = 1

# Words that name a secret in a details key ("password", "new_password", "smsCode", "user-pin").
# Matched as whole words, so "pinned", "decoded" or "shipping" pass; the longer words also match
# as a suffix of a run-together word ("newpassword", "apitoken").
_SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "pin", "secret", "token", "otp", "code", "private"}
)
_SECRET_SUFFIXES = ("password", "passwd", "passphrase", "secret", "token")
_KEY_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


class AuditLogDamaged(CAError):
    """The audit log cannot be appended to because its structure was tampered with."""

    status_code = 500
    code = "audit_log_damaged"


# -- encodings --------------------------------------------------------------------------------


def canonical_json(details: Mapping[str, object]) -> str:
    """Canonical JSON of event details (what the hash covers).

    :raises TypeError: for a value JSON cannot hold (other than datetimes, dates and enums).
    :raises ValueError: for a naive datetime or a NaN/infinite float.
    """
    return json.dumps(
        details,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("audit details need timezone-aware datetimes")
        return _timestamp(value, keep_microseconds=True)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"audit details cannot hold {type(value).__name__}")


def _timestamp(moment: dt.datetime, *, keep_microseconds: bool = False) -> str:
    utc = moment.astimezone(dt.UTC)
    if keep_microseconds and utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def event_hash(event: AuditEvent) -> str:
    """The version-1 hash of one event, from its stored fields (see the module docstring)."""
    fields = (
        str(event.seq),
        _timestamp(event.occurred_at),
        event.actor,
        event.action,
        event.target,
        event.details,
        event.prev_hash,
    )
    payload = EVENT_HASH_PREFIX + "\n".join(f"{len(f)}:{f}" for f in fields)
    return hashlib.sha256(payload.encode()).hexdigest()


def checkpoint_message(seq: int, head_hash: str) -> bytes:
    """The bytes a version-1 audit checkpoint signs."""
    return f"{CHECKPOINT_MESSAGE_PREFIX}{seq}\n{head_hash}".encode()


# -- appending --------------------------------------------------------------------------------


@lru_cache(maxsize=1024)  # the same few detail keys on every event: split into words once
def _is_secret_name(key: str) -> bool:
    words = [w.lower() for w in _KEY_WORD.findall(key)]
    return any(w in _SECRET_WORDS or w.endswith(_SECRET_SUFFIXES) for w in words)


def _refuse_secrets(value: object, path: str = "details") -> None:
    """A cheap guard against a caller logging a secret; walks nested mappings and lists."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            if _is_secret_name(name):
                raise ValueError(f"audit details must not carry secrets ({path}[{name!r}])")
            _refuse_secrets(item, f"{path}[{name!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _refuse_secrets(item, f"{path}[{index}]")
    elif isinstance(value, str) and "PRIVATE KEY-----" in value:
        raise ValueError(f"audit details must not carry secrets ({path} holds a private key)")


@cache
def _column_length(name: str) -> int:
    column_type = AuditEvent.__table__.c[name].type
    if not isinstance(column_type, sa.String) or column_type.length is None:
        raise TypeError(f"audit_events.{name} is not a bounded string column")
    return column_type.length


def _check_lengths(**fields: str) -> None:
    # SQLite would store an over-long value and PostgreSQL would refuse it: refuse it on both.
    for name, value in fields.items():
        limit = _column_length(name)
        if len(value) > limit:
            raise ValueError(f"audit {name} is longer than {limit} characters")


# The three statements of an append, built once: every issuance, login and decision appends,
# and building (or flushing ORM objects into) them each time cost more than running them.
_head = cast("sa.Table", AuditHead.__table__)
_CLAIM_HEAD = (
    sa.update(_head)
    .where(_head.c.id == _HEAD_ID)
    .values(events_since_checkpoint=_head.c.events_since_checkpoint + sa.bindparam("appending"))
    .returning(_head.c.seq, _head.c.hash, _head.c.events_since_checkpoint)
)
# inline(): no RETURNING of the new key (nothing reads it; a queued statement must not).
_INSERT_EVENT = sa.insert(cast("sa.Table", AuditEvent.__table__)).inline()
_ADVANCE_HEAD = sa.update(_head).where(_head.c.id == _HEAD_ID)  # SET seq, hash from the params


_AUDIT_EVENT_CLASS = sa.inspect(AuditEvent).class_manager
# Compiled once per dialect and run on the cursor (see ca_service.dml).
_CLAIM, _INSERT, _ADVANCE = Write(_CLAIM_HEAD), Write(_INSERT_EVENT), Write(_ADVANCE_HEAD)


@dataclass(frozen=True)
class _ClaimedHead:
    seq: int
    hash: str
    events_since_checkpoint: int


def _claim_head(appending: int) -> _ClaimedHead | None:
    """Take the head row's write lock, count ``appending`` more events since the checkpoint
    and return the row fresh, or None when the row is missing.

    Updating the row first (rather than reading it) is what makes concurrent appenders queue:
    PostgreSQL re-reads the row after the lock is granted, so each writer sees the last
    committed head.
    """
    rows = _CLAIM.rows(db.session.connection(), {"appending": appending})
    if not rows:
        return None
    ((seq, head_hash, since_checkpoint),) = rows
    return _ClaimedHead(seq, head_hash, since_checkpoint)


def _create_genesis_head() -> None:
    """Create the head row of an empty log; safe when several writers try at once.

    :raises AuditLogDamaged: when events exist without a head (someone deleted the row).
    """
    try:
        with db.session.begin_nested():
            # A row, not an ORM object: appends move the head by statements, and an object
            # left in the identity map would go stale.
            db.session.connection().execute(
                sa.insert(_head).values(
                    id=_HEAD_ID, seq=0, hash=GENESIS_HASH, events_since_checkpoint=0
                )
            )
    except sa.exc.IntegrityError:
        # Another writer created it after our UPDATE (PostgreSQL made us wait for its commit);
        # its row is the one we want.
        return
    # Checked only once our row is in: before it, another writer's first event may commit.
    if db.session.scalar(sa.select(AuditEvent.seq).limit(1)) is not None:
        raise AuditLogDamaged(
            "the audit head row is missing although events exist: the log has been tampered "
            "with; run `ca-service audit verify`"
        )


def _lock_head(appending: int) -> _ClaimedHead:
    head = _claim_head(appending)
    if head is None:
        # The migration inserts the genesis row; this covers a schema made any other way.
        _create_genesis_head()
        head = _claim_head(appending)
    if head is None:
        raise AuditLogDamaged("the audit head row cannot be created")
    return head


def lock_audit_log() -> None:
    """Take the audit log's write lock now (held until the transaction ends), as the next
    event would. For a writer that takes other row locks before its event: taking
    this one first keeps every writer's lock order the same (audit log, then the rest), so
    two of them cannot deadlock."""
    _lock_head(0)


@dataclass(frozen=True)
class NewEvent:
    """One event of ``record_events``: what happened to what, and who did it when not the
    batch's actor (a batch of renewals appends the events of several employers at once)."""

    action: str
    target: str
    details: Mapping[str, object]
    actor: str | None = None


def record_event(actor: str, action: str, target: str, details: Mapping[str, object]) -> AuditEvent:
    """Append one event to the chain (written at once); the caller's boundary commits.

    Signs a checkpoint when AUDIT_CHECKPOINT_EVERY events have accumulated since the last one
    (if the audit key exists; an HSM failure is logged and retried at the next event, since a
    later checkpoint covers every event before it). The event returned is not in the session:
    it is what was written, to read (``db.session.get`` loads the stored row).

    :raises ValueError: when ``details`` names something that looks like a secret, or a field
        is longer than its column.
    """
    (event,) = record_events(actor, [NewEvent(action, target, details)])
    return event


def record_events(actor: str, events: Sequence[NewEvent]) -> list[AuditEvent]:
    """Append several events by one actor, in order, under one claim of the head: one
    statement to lock the head, one multi-row INSERT and one to advance it, however many
    events (a batch issuance appends one per certificate). See ``record_event``.

    :raises ValueError: as ``record_event``, before anything is written.
    """
    return PendingEvents(actor, events).append()


class PendingEvents:
    """Events checked and ready to append (``record_events`` in two steps): ``lock_head``
    claims the head and may run inside ``db.pipelined`` with a transaction's other writes
    (its row is read at once, which sends what was queued before it in the same round trip);
    ``append`` writes the events under that claim (or claims the head itself).

    :raises ValueError: as ``record_event``, when made: before anything is written.
    """

    def __init__(self, actor: str, events: Sequence[NewEvent]) -> None:
        _check_lengths(actor=actor)
        self._rows: list[tuple[NewEvent, str]] = []
        for new in events:
            _refuse_secrets(new.details)
            _check_lengths(action=new.action, target=new.target, actor=new.actor or actor)
            # Before the lock: bad input must not hold it.
            self._rows.append((new, canonical_json(new.details)))
        self._actor = actor
        self._head: _ClaimedHead | None = None

    def lock_head(self) -> None:
        """Take the head's write lock now for these events (held until the transaction ends).
        A missing head row is left for ``append`` to create (not inside a pipeline)."""
        if self._rows and self._head is None:
            self._head = _claim_head(len(self._rows))

    def append(self) -> list[AuditEvent]:
        """Write the events (the head claimed by ``lock_head``, or now); see
        ``record_events``."""
        rows = self._rows
        if not rows:
            return []
        # The caller's pending changes go first, as they did when the event was an ORM object.
        db.session.flush()
        head = self._head or _lock_head(len(rows))
        self._head = None  # one claim, one append
        occurred_at = utcnow()
        written: list[AuditEvent] = []
        prev_hash, seq = head.hash, head.seq
        for new, details_json in rows:
            seq += 1
            # Transient, to read: made without the constructor's attribute events.
            event = _AUDIT_EVENT_CLASS.new_instance()
            event.__dict__.update(
                seq=seq,
                occurred_at=occurred_at,
                actor=new.actor or self._actor,
                action=new.action,
                target=new.target,
                details=details_json,
                prev_hash=prev_hash,
            )
            event.__dict__["hash"] = prev_hash = event_hash(event)
            written.append(event)
        # The events and the new head in one round trip (PostgreSQL): nothing is read back.
        with pipelined():
            connection = db.session.connection()
            _INSERT.execute(
                connection,
                [
                    {
                        "seq": e.seq,
                        "occurred_at": e.occurred_at,
                        "actor": e.actor,
                        "action": e.action,
                        "target": e.target,
                        "details": e.details,
                        "prev_hash": e.prev_hash,
                        "hash": e.hash,
                    }
                    for e in written
                ],
            )
            _ADVANCE.execute(connection, {"seq": seq, "hash": prev_hash})
        if head.events_since_checkpoint >= _checkpoint_every():
            _checkpoint_automatically()
        return written


def _checkpoint_every() -> int:
    # An infrastructure setting, read the way the database session is; not request state.
    return int(current_app.extensions["ca_settings"]["AUDIT_CHECKPOINT_EVERY"])


def _checkpoint_automatically() -> None:
    from ca_service.hsm_access import app_token

    token = app_token()
    try:
        if not token.has_key(AUDIT_KEY_LABEL):
            log.warning("no audit key %r in the HSM: checkpoint not signed", AUDIT_KEY_LABEL)
            return
        sign_checkpoint(token, AUDIT_KEY_LABEL)
    except HSMError:
        # sign_checkpoint changes nothing in the database before the HSM has signed.
        log.exception("audit checkpoint not signed; the next event retries")


# -- checkpoints ------------------------------------------------------------------------------


def scheme_for(algorithm: KeyAlgorithm) -> SignatureScheme:
    """The signature scheme checkpoints use with an audit key of this algorithm."""
    if algorithm.is_rsa:
        return SignatureScheme.RSA_PKCS1_SHA256
    if algorithm == KeyAlgorithm.EC_P384:
        return SignatureScheme.ECDSA_SHA384
    return SignatureScheme.ECDSA_SHA256


def ensure_audit_key(token: Token, algorithm: KeyAlgorithm) -> bool:
    """Create the audit checkpoint key in the HSM unless it exists; True when created."""
    if token.has_key(AUDIT_KEY_LABEL):
        return False
    token.generate_key(AUDIT_KEY_LABEL, algorithm)
    return True


def sign_checkpoint(token: Token, key_label: str = AUDIT_KEY_LABEL) -> AuditCheckpoint | None:
    """Sign the current chain head with the HSM audit key; None on an empty log.

    Returns the existing checkpoint when the head is already signed.

    :raises hsm.errors.HSMError: when the HSM cannot sign (nothing is changed then).
    """
    # FOR UPDATE keeps appenders out until we commit, so the head we sign stays the head
    # (SQLite: the IMMEDIATE transaction already excludes them).
    head = db.session.scalars(
        sa.select(AuditHead)
        .where(AuditHead.id == _HEAD_ID)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if head is None or head.seq == 0:
        return None
    existing = db.session.scalar(sa.select(AuditCheckpoint).where(AuditCheckpoint.seq == head.seq))
    if existing is not None:
        head.events_since_checkpoint = 0
        db.session.flush()
        return existing
    scheme = scheme_for(token.find_key(key_label).algorithm)
    signature = token.sign(key_label, checkpoint_message(head.seq, head.hash), scheme)
    checkpoint = AuditCheckpoint(
        seq=head.seq,
        hash=head.hash,
        signed_at=utcnow(),
        key_label=key_label,
        algorithm=scheme.value,
        signature=signature,
    )
    head.events_since_checkpoint = 0
    db.session.add(checkpoint)
    db.session.flush()
    return checkpoint


def checkpoint_signature_valid(public_key: PublicKey, checkpoint: AuditCheckpoint) -> bool:
    """Whether the checkpoint's signature over (seq, hash) verifies with the audit public key."""
    try:
        scheme = SignatureScheme(checkpoint.algorithm)
    except ValueError:
        return False
    algorithm = hashes.SHA384() if scheme.hash_name == "sha384" else hashes.SHA256()
    message = checkpoint_message(checkpoint.seq, checkpoint.hash)
    try:
        if isinstance(public_key, rsa.RSAPublicKey) and not scheme.is_ecdsa:
            pad: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size)
                if scheme.is_pss
                else padding.PKCS1v15()
            )
            public_key.verify(checkpoint.signature, message, pad, algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and scheme.is_ecdsa:
            public_key.verify(checkpoint.signature, message, ec.ECDSA(algorithm))
        else:
            return False  # the scheme does not fit the key: never a valid checkpoint
    except InvalidSignature:
        return False
    return True


# -- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VerificationReport:
    """Outcome of ``verify_chain``: intact, or the first bad event and what is wrong.

    ``unsigned_events`` counts the events after the last signed checkpoint: the part of the log
    that only the hash chain protects (an attacker with database access could rewrite it).
    """

    ok: bool
    events_checked: int
    checkpoints_checked: int
    first_bad_seq: int | None = None
    problem: str = ""
    unsigned_events: int = 0


@dataclass(frozen=True)
class _Head:
    seq: int
    hash: str
    events_since_checkpoint: int


def _read_head() -> _Head | None:
    # Columns, not the ORM object: a second read must not come from the identity map.
    row = db.session.execute(
        sa.select(AuditHead.seq, AuditHead.hash, AuditHead.events_since_checkpoint).where(
            AuditHead.id == _HEAD_ID
        )
    ).one_or_none()
    return None if row is None else _Head(row.seq, row.hash, row.events_since_checkpoint)


def verify_chain(
    public_key: PublicKey, *, max_unsigned_events: int | None = None
) -> VerificationReport:
    """Recompute the chain and check the signed checkpoints; streams events in seq order.

    Safe to run while others append: the head is read before and after the events, so events
    committed meanwhile are neither missed nor mistaken for forgeries. ``max_unsigned_events``
    (the CLI passes AUDIT_CHECKPOINT_EVERY - 1) bounds how many events may follow the last
    signed checkpoint; more means checkpoints were deleted so that the chain could be rewritten.
    """
    head_before = _read_head()
    checkpoints = {c.seq: c for c in db.session.scalars(sa.select(AuditCheckpoint))}
    rows = db.session.execute(
        sa.select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=1000)
    ).scalars()
    try:
        walk = _ChainWalk(public_key, checkpoints, head_before)
        problem = walk.run(rows)
    finally:
        rows.close()  # a server-side cursor on PostgreSQL: close it even on an early return
    if problem is None:
        problem = walk.check_ends(_read_head(), max_unsigned_events)
    return walk.report(problem)


class _ChainWalk:
    """One pass over the events in seq order, then the checks on both ends of the chain."""

    def __init__(
        self,
        public_key: PublicKey,
        checkpoints: dict[int, AuditCheckpoint],
        head_before: _Head | None,
    ) -> None:
        self.public_key = public_key
        self.checkpoints = checkpoints
        self.head_before = head_before
        self.last_seq = 0
        self.last_hash = GENESIS_HASH
        self.hash_at_head: str | None = None
        self.events = 0
        self.checked_checkpoints = 0
        self.last_signed_seq = 0
        self.last_signed_within_head = 0

    def run(self, rows: Iterable[AuditEvent]) -> tuple[int, str] | None:
        """The first bad event and what is wrong with it, or None when every link holds."""
        head_seq = self.head_before.seq if self.head_before else 0
        for event in rows:
            expected = self.last_seq + 1
            if event.seq != expected:
                return expected, f"event missing (the next one present is {event.seq}): deleted"
            if event.prev_hash != self.last_hash:
                return event.seq, (
                    "does not follow the previous event (prev_hash differs): reordered, "
                    "replaced, or the event before it deleted"
                )
            if event_hash(event) != event.hash:
                return event.seq, "content does not match its hash: altered"
            checkpoint = self.checkpoints.get(event.seq)
            if checkpoint is not None:
                if not checkpoint_signature_valid(self.public_key, checkpoint):
                    return event.seq, "the checkpoint signature does not verify: forged"
                if checkpoint.hash != event.hash:
                    return event.seq, (
                        "differs from the signed checkpoint at this event: the chain was "
                        f"rewritten after event {self.last_signed_seq}"
                    )
                self.checked_checkpoints += 1
                self.last_signed_seq = event.seq
                if event.seq <= head_seq:
                    self.last_signed_within_head = event.seq
            if event.seq == head_seq:
                self.hash_at_head = event.hash
            self.last_seq, self.last_hash = event.seq, event.hash
            self.events += 1
        return None

    def check_ends(  # noqa: PLR0911  (one early return per kind of tampering reads clearest)
        self, head_after: _Head | None, max_unsigned_events: int | None
    ) -> tuple[int, str] | None:
        """Truncation, events added behind the head's back, deleted checkpoints."""
        last = self.last_seq
        if head_after is None:
            if last == 0 and not self.checkpoints:
                return None  # an empty log on a schema made without the genesis row
            return last + 1, "the audit head row is missing"
        # No head before but one now: it was created (lazily) while we read.
        before = self.head_before or _Head(0, GENESIS_HASH, 0)
        if before.seq > last:
            return last + 1, (
                f"the log ends at event {last} but the head records {before.seq}: "
                "events deleted from the end"
            )
        if before.seq > 0 and self.hash_at_head != before.hash:
            return before.seq, "differs from the hash the head records: rewritten"
        beyond = [seq for seq in self.checkpoints if seq > last]
        if beyond:
            return min(beyond), "a signed checkpoint covers this event, which no longer exists"
        # Events committed after `before` was read are legitimate only if the head, read
        # again now, accounts for them.
        if head_after.seq < last:
            return head_after.seq + 1, (
                f"events after {head_after.seq} were added without the head: inserted"
            )
        # Only "more unsigned events than the head counts" is suspicious: fewer happens when a
        # checkpoint was signed between reading the head and reading the checkpoints.
        unsigned = before.seq - self.last_signed_within_head
        if unsigned > before.events_since_checkpoint:
            return self.last_signed_within_head + 1, (
                f"{unsigned} events follow the last signed checkpoint but the head counts "
                f"{before.events_since_checkpoint}: checkpoints deleted"
            )
        if max_unsigned_events is not None and unsigned > max_unsigned_events:
            return self.last_signed_within_head + 1, (
                f"{unsigned} events follow the last signed checkpoint, more than the "
                f"{max_unsigned_events} allowed: checkpoints deleted, or signing was skipped"
            )
        return None

    def report(self, problem: tuple[int, str] | None) -> VerificationReport:
        unsigned = self.last_seq - self.last_signed_seq
        if problem is None:
            return VerificationReport(
                True, self.events, self.checked_checkpoints, unsigned_events=unsigned
            )
        seq, message = problem
        return VerificationReport(
            False, self.events, self.checked_checkpoints, seq, message, unsigned_events=unsigned
        )
