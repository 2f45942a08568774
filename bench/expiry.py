"""Expiry run cost: `expiry run` over a large certificates table against a bare indexed SELECT
of the same rows, in the same run.

A throw-away SoftHSM token and database (SQLite by default; ``--database-url URL`` for
PostgreSQL: a scratch database on that server, dropped afterwards) get the CA hierarchy,
1,000 employers and ``--rows`` (1,000,000) issued certificate rows, bulk-inserted, of which 1 %
are due for their 30-day warning. Then:

- due run: ``run_expiry`` sends the due warnings (e-mail + SMS in the outbox, audit events,
  reschedules each row), against the bare ``SELECT ... WHERE next_notice_at <= now`` of the
  same rows through the same index;
- idle run: ``run_expiry`` again with nothing due, against the same bare SELECT (no rows).

Run: ``.venv/bin/python bench/expiry.py [--rows 1000000] [--database-url URL]``.
Goal (issue #14): the idle run costs <= 50 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import _common
import sqlalchemy as sa

IDLE_GOAL_MS = 50.0
EMPLOYERS = 1_000
CHUNK = 20_000


def _populate(rows: int, now: dt.datetime) -> int:
    """Insert the employers and ``rows`` certificates (1 % due); the number due."""
    from ca_service.auth.service import hash_password
    from ca_service.db import db
    from ca_service.issuance.expiry import first_notice_at
    from ca_service.models import Authority, Certificate, CertificateKind, CertificateStatus

    password_hash = hash_password(secrets.token_urlsafe(16))
    employer_ids = [_common.new_employer(i, password_hash)[0].id for i in range(EMPLOYERS)]
    issuer_id = db.session.scalar(sa.select(Authority.id).where(Authority.parent_id.is_not(None)))
    db.session.commit()
    table = cast("sa.Table", Certificate.__table__)
    connection = db.session.connection()
    due = 0
    for start in range(0, rows, CHUNK):
        values: list[dict[str, Any]] = []
        for i in range(start, min(start + CHUNK, rows)):
            is_due = i % 100 == 0
            due += is_due
            # Due rows end in 20 days (the 30-day threshold has passed); the others in 40..400.
            not_after = now + dt.timedelta(days=20 if is_due else 40 + i % 360, seconds=i % 86400)
            values.append(
                {
                    "issuer_id": issuer_id,
                    "serial": format(secrets.randbits(150) | (1 << 150), "x"),
                    "kind": CertificateKind.END_ENTITY,
                    "status": CertificateStatus.ISSUED,
                    "subject": f"CN=Bench {i}",
                    "not_before": not_after - dt.timedelta(days=365),
                    "not_after": not_after,
                    "employer_id": employer_ids[i % EMPLOYERS],
                    "der": b"bench",
                    "created_at": now,
                    "issued_at": now,
                    "next_notice_at": first_notice_at(not_after, (30, 14, 7, 1)),
                }
            )
        connection.execute(sa.insert(table), values)
        db.session.commit()
        connection = db.session.connection()
    # Fresh statistics after the bulk load, as autovacuum would gather: without them
    # PostgreSQL plans the bare SELECT as a full scan.
    connection.execute(sa.text("ANALYZE"))
    db.session.commit()
    return due


def _bare_select(now: dt.datetime) -> tuple[float, int]:
    from ca_service.db import db
    from ca_service.models import Certificate

    started = time.perf_counter()
    found = db.session.execute(
        sa.select(Certificate.id, Certificate.serial, Certificate.not_after)
        .where(Certificate.next_notice_at <= now)
        .order_by(Certificate.next_notice_at)
    ).all()
    db.session.commit()
    return time.perf_counter() - started, len(found)


def measure(env: _common.BenchEnv, rows: int) -> list[dict[str, str]]:
    from ca_service.db import db, utcnow
    from ca_service.extensions import settings_of
    from ca_service.issuance.expiry import ExpiryPolicy, run_expiry

    with _common.app_context(env) as app:
        now = utcnow()
        started = time.perf_counter()
        due = _populate(rows, now)
        print(
            f"inserted {rows:,} certificates ({due:,} due) in {time.perf_counter() - started:.1f} s"
        )
        policy = ExpiryPolicy.from_settings(settings_of(app))
        bare_due, selected = _bare_select(now)
        if selected < due:
            raise SystemExit(f"bare SELECT found {selected} rows, {due} are due")
        started = time.perf_counter()
        report = run_expiry(policy, now=now, commit=db.session.commit)
        db.session.commit()
        run_due = time.perf_counter() - started
        if report.sent != due:
            raise SystemExit(f"expiry run sent {report.sent} warnings, {due} were due")
        idle, bare_idle = [], []
        for _ in range(20):
            started = time.perf_counter()
            idle_report = run_expiry(policy, now=now, commit=db.session.commit)
            db.session.commit()
            idle.append(time.perf_counter() - started)
            if idle_report.sent:
                raise SystemExit(f"the idle run sent {idle_report.sent} warnings")
            bare_idle.append(_bare_select(now)[0])
    idle_ms, bare_idle_ms = statistics.median(idle) * 1000, statistics.median(bare_idle) * 1000
    return [
        {
            "case": f"due run ({due:,} warnings)",
            "expiry run": f"{run_due * 1000:.0f} ms",
            "bare SELECT": f"{bare_due * 1000:.1f} ms",
            "ratio": f"{run_due / bare_due:.0f}x",
            "goal": "-",
        },
        {
            "case": "idle run (nothing due, median of 20)",
            "expiry run": f"{idle_ms:.2f} ms",
            "bare SELECT": f"{bare_idle_ms:.2f} ms",
            "ratio": f"{idle_ms / bare_idle_ms:.1f}x",
            "goal": f"<= {IDLE_GOAL_MS:.0f} ms: {'met' if idle_ms <= IDLE_GOAL_MS else 'MISSED'}",
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL server URL (a scratch DB is made there)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        var_dir = Path(tmp)
        conf, label = _common.make_token(var_dir)
        url = (
            _common.sqlalchemy_url(args.database_url)
            if args.database_url
            else f"sqlite:///{var_dir / 'bench.db'}"
        )
        env = _common.prepare(var_dir, conf, label, url)
        rows = measure(env, args.rows)
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{backend}, {args.rows:,} certificates")
    print(_common.table(rows, list(rows[0])))
    _common.write_json(args.json, rows, backend=backend, certificates=args.rows)


if __name__ == "__main__":
    main()
