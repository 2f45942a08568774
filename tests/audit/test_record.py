"""record_event: the hash encoding, canonical details, the secrets guard, checkpoints."""

from __future__ import annotations

import datetime as dt
import enum
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask

from ca_service.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from ca_service.audit.service import (
    AUDIT_KEY_LABEL,
    GENESIS_HASH,
    canonical_json,
    checkpoint_message,
    event_hash,
    record_event,
    sign_checkpoint,
)
from ca_service.db import db
from ca_service.hsm_access import app_token
from hsm.errors import HSMUnavailable
from tests.audit.conftest import MakeApp
from tests.audit.support import documented_hash, run_sql, verify


class Colour(enum.Enum):
    RED = "red"


def test_hash_of_the_documented_example() -> None:
    """Pins version 1 of the encoding: changing it must be a new version."""
    event = AuditEvent(
        seq=1,
        occurred_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        actor="alice",
        action="a",
        target="t",
        details="{}",
        prev_hash=GENESIS_HASH,
    )
    expected = "c42e43a37abe959bb1643be014b2c23a9e47ba0d4f4d0a4a3b72b47627f7a982"
    assert event_hash(event) == documented_hash(event) == expected


def test_awkward_fields_hash_as_documented(app: Flask) -> None:
    with app.app_context():
        event = record_event("Zoë:1\n2", "test.awkward", "a\nb:c", {"名前": "社会保障", "x": "\n"})
        db.session.commit()
        assert event.details == '{"x":"\\n","名前":"社会保障"}'
        stored = db.session.get(AuditEvent, event.seq, populate_existing=True)
        assert stored is not None
        assert documented_hash(stored) == stored.hash
    assert verify(app).ok


def test_canonical_details() -> None:
    moment = dt.datetime(2026, 1, 2, 4, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    details = {
        "b": [1, 2.5, None, True],
        "a": {"z": moment, "y": moment.replace(microsecond=7)},
        "day": dt.date(2026, 1, 2),
        "colour": Colour.RED,
    }
    assert canonical_json(details) == (
        '{"a":{"y":"2026-01-02T03:04:05.000007Z","z":"2026-01-02T03:04:05Z"},'
        '"b":[1,2.5,null,true],"colour":"red","day":"2026-01-02"}'
    )


@pytest.mark.parametrize(
    ("details", "error"),
    [
        ({"at": dt.datetime(2026, 1, 2)}, ValueError),  # naive: refused
        ({"ratio": float("nan")}, ValueError),
        ({"blob": b"\x00"}, TypeError),
    ],
)
def test_unrepresentable_details_refused(
    app: Flask, details: dict[str, object], error: type[Exception]
) -> None:
    with app.app_context():
        with pytest.raises(error):
            record_event("tests", "test.event", "t", details)
        db.session.rollback()
        head = db.session.get(AuditHead, 1, populate_existing=True)
        assert head is not None
        assert head.seq == 0


@pytest.mark.parametrize(
    "details",
    [
        {"password": "x"},
        {"new_password": "x"},
        {"newpassword": "x"},
        {"smsCode": "123456"},
        {"user-pin": "1234"},
        {"OTP": "123456"},
        {"apiToken": "x"},
        {"client_secret": "x"},
        {"private_key": "x"},
        {"changes": {"pin": "1234"}},
        {"attempts": [{"ok": True}, {"totp_code": "1"}]},
        {"pem": "-----BEGIN PRIVATE KEY-----\nMIGH...\n-----END PRIVATE KEY-----\n"},
    ],
)
def test_secrets_refused_in_details(app: Flask, details: dict[str, object]) -> None:
    with app.app_context(), pytest.raises(ValueError, match="must not carry secrets"):
        record_event("tests", "test.event", "t", details)


def test_words_that_merely_contain_a_secret_word_pass(app: Flask) -> None:
    details = {
        "pinned": True,
        "decoded": "x",
        "shipping": "x",
        "key_label": "ocsp",
        "authenticator_removed": True,
        "options": [],
    }
    with app.app_context():
        record_event("tests", "test.event", "t", details)


def test_over_long_fields_refused(app: Flask) -> None:
    with app.app_context(), pytest.raises(ValueError, match="actor is longer than 128"):
        record_event("x" * 129, "test.event", "t", {})


def test_head_row_created_lazily(app: Flask) -> None:
    """A schema made without the migration's genesis row still starts a chain."""
    run_sql(app, sa.delete(AuditHead))
    with app.app_context():
        event = record_event("tests", "test.event", "t", {})
        db.session.commit()
        assert (event.seq, event.prev_hash) == (1, GENESIS_HASH)
    assert verify(app).ok


def test_checkpoints_signed_automatically(make_app: MakeApp) -> None:
    app = make_app(AUDIT_CHECKPOINT_EVERY=5)
    with app.app_context():
        for n in range(12):
            record_event("tests", "test.event", f"t{n}", {"n": n})
        db.session.commit()
        seqs = list(db.session.scalars(sa.select(AuditCheckpoint.seq).order_by("seq")))
    assert seqs == [5, 10]
    report = verify(app, max_unsigned_events=4)
    assert (report.ok, report.checkpoints_checked, report.unsigned_events) == (True, 2, 2)


def test_hsm_failure_delays_the_checkpoint_without_losing_the_event(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(AUDIT_CHECKPOINT_EVERY=3)
    token = app_token(app)

    def unavailable(*args: object) -> bytes:
        raise HSMUnavailable("HSM unreachable (test)")

    with app.app_context():
        with monkeypatch.context() as patch:
            patch.setattr(token, "sign", unavailable)
            for n in range(4):
                record_event("tests", "test.event", f"t{n}", {})
            db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditCheckpoint)) == 0
        record_event("tests", "test.event", "t4", {})
        db.session.commit()
        assert list(db.session.scalars(sa.select(AuditCheckpoint.seq))) == [5]
    assert verify(app, max_unsigned_events=2).ok


def test_sign_checkpoint_on_empty_log_and_twice(app: Flask) -> None:
    with app.app_context():
        assert sign_checkpoint(app_token()) is None
        record_event("tests", "test.event", "t", {})
        first = sign_checkpoint(app_token())
        again = sign_checkpoint(app_token())
        db.session.commit()
        assert first is not None
        assert again is first
        assert first.seq == 1


def test_checkpoint_signature_verifies_with_openssl(app: Flask, tmp_path: Path) -> None:
    """An auditor needs only the documented message, the public key and openssl."""
    with app.app_context():
        record_event("tests", "test.event", "t", {})
        checkpoint = sign_checkpoint(app_token())
        assert checkpoint is not None
        assert checkpoint.algorithm == "ecdsa-sha256"  # AUDIT_KEY_ALGORITHM=ec-p256
        (tmp_path / "message").write_bytes(checkpoint_message(checkpoint.seq, checkpoint.hash))
        (tmp_path / "sig.der").write_bytes(checkpoint.signature)
        public = app_token().public_key(AUDIT_KEY_LABEL)
        pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        (tmp_path / "audit.pem").write_bytes(pem)
        db.session.rollback()
    assert (tmp_path / "message").read_bytes().startswith(b"ca-service-audit-checkpoint-v1\n1\n")
    result = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "audit.pem", "-signature", "sig.der", "message"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.stdout.strip() == "Verified OK", result.stderr
