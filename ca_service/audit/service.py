"""Appending to and verifying the hash-chained audit log.

Event hash (version 1), for an auditor who wants to re-implement it::

    SHA-256( "ca-service-audit-v1" LF seq LF occurred_at LF actor LF action LF target LF
             details LF prev_hash )

where ``seq`` is decimal, ``occurred_at`` is ISO 8601 UTC with seconds (``2026-01-02T03:04:05Z``),
``details`` is canonical JSON (sorted keys, no spaces, UTF-8) and ``prev_hash`` is the previous
event's hash in lowercase hex (64 zeros before the first event). Each text field is
length-prefixed (``len:value``) so no field can bleed into the next.

Checkpoint signature (version 1): the HSM audit key signs
``"ca-service-audit-checkpoint-v1" LF seq LF hash`` with ECDSA/RSA and SHA-256.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from flask import current_app

from ca_service.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from ca_service.db import db, utcnow
from hsm import KeyAlgorithm, SignatureScheme, Token

AUDIT_KEY_LABEL = "audit-checkpoint"
GENESIS_HASH = "0" * 64
_SECRET_WORDS = ("password", "pin", "secret", "token", "otp", "code", "private")


def canonical_json(details: Mapping[str, object]) -> str:
    """Canonical JSON of event details (what the hash covers)."""
    return json.dumps(
        details, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    )


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise TypeError(f"audit details cannot hold {type(value).__name__}")


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_hash(event: AuditEvent) -> str:
    """The version-1 hash of one event, from its stored fields (see the module docstring)."""
    fields = [
        str(event.seq),
        _timestamp(event.occurred_at),
        event.actor,
        event.action,
        event.target,
        event.details,
        event.prev_hash,
    ]
    payload = "ca-service-audit-v1\n" + "\n".join(f"{len(f)}:{f}" for f in fields)
    return hashlib.sha256(payload.encode()).hexdigest()


def checkpoint_message(seq: int, head_hash: str) -> bytes:
    """The bytes an audit checkpoint signs."""
    return f"ca-service-audit-checkpoint-v1\n{seq}\n{head_hash}".encode()


def _refuse_secrets(details: Mapping[str, object]) -> None:
    for key in details:
        lowered = key.lower()
        if any(word in lowered for word in _SECRET_WORDS):
            raise ValueError(f"audit details must not carry secrets (key {key!r})")


def _lock_head() -> AuditHead:
    """Take the head row's write lock first, so concurrent appenders queue on it."""
    updated = db.session.execute(
        sa.update(AuditHead)
        .where(AuditHead.id == 1)
        .values(events_since_checkpoint=AuditHead.events_since_checkpoint + 1)
        .returning(AuditHead.id)
    ).first()
    head = db.session.get(AuditHead, 1, populate_existing=True)
    if updated is None or head is None:
        # The migration creates the genesis row, so appenders never race to create it.
        raise RuntimeError("the audit head row is missing: run `ca-service db upgrade`")
    return head


def record_event(actor: str, action: str, target: str, details: Mapping[str, object]) -> AuditEvent:
    """Append one event to the chain; flushes, the caller's boundary commits.

    :raises ValueError: when ``details`` names something that looks like a secret.
    """
    _refuse_secrets(details)
    head = _lock_head()
    event = AuditEvent(
        seq=head.seq + 1,
        occurred_at=utcnow(),
        actor=actor,
        action=action,
        target=target,
        details=canonical_json(details),
        prev_hash=head.hash,
    )
    event.hash = event_hash(event)
    head.seq, head.hash = event.seq, event.hash
    db.session.add(event)
    db.session.flush()
    every = int(current_app.extensions["ca_settings"]["AUDIT_CHECKPOINT_EVERY"])
    if head.events_since_checkpoint >= every:
        from ca_service.hsm_access import app_token

        token = app_token()
        if token.has_key(AUDIT_KEY_LABEL):
            sign_checkpoint(token, AUDIT_KEY_LABEL)
    return event


def _scheme_for(token: Token, key_label: str) -> SignatureScheme:
    algorithm = token.find_key(key_label).algorithm
    return SignatureScheme.RSA_PKCS1_SHA256 if algorithm.is_rsa else SignatureScheme.ECDSA_SHA256


def ensure_audit_key(token: Token, algorithm: KeyAlgorithm) -> bool:
    """Create the audit checkpoint key in the HSM unless it exists; True when created."""
    if token.has_key(AUDIT_KEY_LABEL):
        return False
    token.generate_key(AUDIT_KEY_LABEL, algorithm)
    return True


def sign_checkpoint(token: Token, key_label: str = AUDIT_KEY_LABEL) -> AuditCheckpoint | None:
    """Sign the current chain head with the HSM audit key; None on an empty log."""
    head = db.session.get(AuditHead, 1)
    if head is None or head.seq == 0:
        return None
    existing = db.session.scalar(sa.select(AuditCheckpoint).where(AuditCheckpoint.seq == head.seq))
    if existing is not None:
        return existing
    scheme = _scheme_for(token, key_label)
    checkpoint = AuditCheckpoint(
        seq=head.seq,
        hash=head.hash,
        signed_at=utcnow(),
        key_label=key_label,
        algorithm=scheme.value,
        signature=token.sign(key_label, checkpoint_message(head.seq, head.hash), scheme),
    )
    head.events_since_checkpoint = 0
    db.session.add(checkpoint)
    db.session.flush()
    return checkpoint


@dataclass(frozen=True)
class VerificationReport:
    """Outcome of ``verify_chain``: intact, or the first bad event and what is wrong."""

    ok: bool
    events_checked: int
    checkpoints_checked: int
    first_bad_seq: int | None = None
    problem: str = ""


def _signature_valid(
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, checkpoint: AuditCheckpoint
) -> bool:
    message = checkpoint_message(checkpoint.seq, checkpoint.hash)
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(checkpoint.signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            public_key.verify(checkpoint.signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verify_chain(
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
) -> VerificationReport:
    """Recompute the chain and check the signed checkpoints; streams events in order."""
    checkpoints = {c.seq: c for c in db.session.scalars(sa.select(AuditCheckpoint))}
    for checkpoint in checkpoints.values():
        if not _signature_valid(public_key, checkpoint):
            return VerificationReport(
                False, 0, 0, checkpoint.seq, "checkpoint signature does not verify"
            )

    rows = db.session.execute(
        sa.select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=1000)
    ).scalars()
    try:
        return _verify_events(rows, checkpoints)
    finally:
        rows.close()  # a server-side cursor on PostgreSQL: close it even on an early return


def _verify_events(  # noqa: PLR0911  (one early return per kind of tampering reads clearest)
    rows: Iterable[AuditEvent], checkpoints: dict[int, AuditCheckpoint]
) -> VerificationReport:
    expected_seq, prev_hash, count, checked_checkpoints = 1, GENESIS_HASH, 0, 0

    def bad(seq: int, problem: str) -> VerificationReport:
        return VerificationReport(False, count, checked_checkpoints, seq, problem)

    for event in rows:
        if event.seq != expected_seq:
            return bad(expected_seq, f"event missing (next present is {event.seq}): deleted")
        if event.prev_hash != prev_hash:
            return bad(event.seq, "does not follow the previous event: reordered or replaced")
        recomputed = event_hash(event)
        if recomputed != event.hash:
            return bad(event.seq, "content does not match its hash: altered")
        signed = checkpoints.get(event.seq)
        if signed is not None:
            if signed.hash != event.hash:
                return bad(event.seq, "differs from the signed checkpoint: chain rewritten")
            checked_checkpoints += 1
        prev_hash, expected_seq, count = event.hash, expected_seq + 1, count + 1

    head = db.session.get(AuditHead, 1)
    last_seq = expected_seq - 1
    if head is not None and (head.seq != last_seq or head.hash != prev_hash):
        return bad(
            last_seq + 1,
            f"log ends at event {last_seq} but the head says {head.seq}: "
            "events deleted from the end",
        )
    beyond = [seq for seq in checkpoints if seq > last_seq]
    if beyond:
        return bad(min(beyond), "a signed checkpoint covers an event that no longer exists")
    return VerificationReport(True, count, checked_checkpoints)
