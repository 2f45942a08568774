"""CRL publication at scale: our `publish_crl` against bare cryptography in the same run.

Creates a throw-away SoftHSM token and database (SQLite; PostgreSQL too with ``--postgres URL``
— a scratch database on that server, dropped afterwards), inserts N revoked certificates of
the issuing CA with bulk Core inserts, then measures, each in its own process so peak memory
does not mix:

- ours: ``publish_crl`` (reads the rows, builds the entries, signs in the HSM, stores the CRL);
- bare: the same entries already in memory as Python values, built with cryptography's
  ``RevokedCertificateBuilder`` and signed by ``CertificateRevocationListBuilder`` with the
  same HSM key — the cost no implementation on cryptography + this HSM can avoid.

Run: ``.venv/bin/python bench/crl.py [--sizes 100000,1000000] [--postgres URL]``.
Goal (issue #4): ours <= 1.5x bare, peak RSS <= 1.5 GB at 1,000,000 entries.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import sqlalchemy as sa

CHUNK = 20_000
_REASONS = [
    "keyCompromise",
    "unspecified",
    "superseded",
    "cessationOfOperation",
    "affiliationChanged",
]


def insert_revoked(env: _common.BenchEnv, count: int) -> float:
    """Insert ``count`` revoked end-entity certificates of the issuing CA; returns seconds."""
    from ca_service.authorities.service import ISSUING_SLUG, get_authority
    from ca_service.db import db, utcnow
    from ca_service.models import Certificate

    started = time.perf_counter()
    with _common.app_context(env):
        issuer_id = get_authority(ISSUING_SLUG).id
        table = Certificate.__table__
        now = utcnow()
        not_before, not_after = now - dt.timedelta(days=30), now + dt.timedelta(days=335)
        for start in range(0, count, CHUNK):
            rows = []
            for i in range(start, min(start + CHUNK, count)):
                revoked_at = now - dt.timedelta(seconds=i)
                rows.append(
                    {
                        "issuer_id": issuer_id,
                        "serial": format(secrets.randbits(159) | (1 << 158), "x"),
                        "kind": "end_entity",
                        "status": "issued",
                        "subject": "CN=bench",
                        "not_before": not_before,
                        "not_after": not_after,
                        "der": b"\x30\x00",  # never parsed: the CRL needs the row's columns only
                        "created_at": not_before,
                        "issued_at": not_before,
                        "revoked_at": revoked_at,
                        "revocation_reason": _REASONS[i % len(_REASONS)],
                        "invalidity_date": revoked_at - dt.timedelta(days=1)
                        if i % 4 == 0
                        else None,
                    }
                )
            db.session.execute(sa.insert(table), rows)
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            # What autovacuum has long done to rows revoked over months: without it, the first
            # read of freshly inserted rows also writes every page (hint bits), a cost of the
            # benchmark's set-up that would land on whichever case runs first.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM (ANALYZE) certificates"))
    return time.perf_counter() - started


def case_ours(env: _common.BenchEnv) -> dict[str, Any]:
    from ca_service.authorities.service import ISSUING_SLUG, get_authority
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token
    from ca_service.revocation.service import crl_lifetime, publish_crl

    with _common.app_context(env) as app:
        issuer = get_authority(ISSUING_SLUG)
        token = app_token()
        token.private_key(issuer.key_label)  # log in before the clock starts
        started = time.perf_counter()
        row = publish_crl(
            token=token,
            issuer=issuer,
            lifetime=crl_lifetime(settings_of(app), ISSUING_SLUG),
            actor="bench",
        )
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "entries": row.entries, "bytes": len(row.der)}


def case_bare(env: _common.BenchEnv) -> dict[str, Any]:
    from cryptography import x509

    from ca_service.authorities.service import (
        ISSUING_SLUG,
        current_certificate,
        get_authority,
        load_certificate,
    )
    from ca_service.authorities.signing import hash_for
    from ca_service.db import db, utcnow
    from ca_service.hsm_access import app_token
    from ca_service.models import Certificate
    from hsm import KeyAlgorithm

    with _common.app_context(env):
        issuer = get_authority(ISSUING_SLUG)
        issuer_cert = load_certificate(current_certificate(issuer))
        now = utcnow()
        # Untimed: the entries as ready Python values (ints, flags, and naive UTC datetimes as
        # publish_crl hands them to cryptography: the same entry objects, not aware ones that
        # cryptography has to convert).
        values = [
            (
                int(serial, 16),
                revoked_at.replace(tzinfo=None),
                x509.ReasonFlags(reason),
                invalidity and invalidity.replace(tzinfo=None),
            )
            for serial, revoked_at, reason, invalidity in db.session.execute(
                sa.select(
                    Certificate.serial,
                    Certificate.revoked_at,
                    Certificate.revocation_reason,
                    Certificate.invalidity_date,
                ).where(Certificate.issuer_id == issuer.id, Certificate.revoked_at.is_not(None))
            )
        ]
        key = app_token().private_key(issuer.key_label)
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )
        idp = x509.IssuingDistributionPoint(None, None, True, False, None, False, False)
        # The same per-entry construction as ours (constructor, shared reason extensions): the
        # baseline is the fastest use of cryptography we know, not a slower straw man.
        reasons: dict[x509.ReasonFlags, list[x509.Extension[x509.ExtensionType]]] = {}
        for flag in x509.ReasonFlags:
            value = x509.CRLReason(flag)
            reasons[flag] = [x509.Extension(value.oid, False, value)]
        reasons[x509.ReasonFlags.unspecified] = []
        build = x509.RevokedCertificateBuilder
        started = time.perf_counter()
        entries = []
        for serial, revoked_at, flag, invalidity in values:
            extensions = reasons[flag]
            if invalidity is not None:
                date = x509.InvalidityDate(invalidity)
                extensions = [*extensions, x509.Extension(date.oid, False, date)]
            entries.append(
                build(
                    serial_number=serial, revocation_date=revoked_at, extensions=extensions
                ).build()
            )
        crl = x509.CertificateRevocationListBuilder(
            issuer_name=issuer_cert.subject,
            last_update=now,
            next_update=now + dt.timedelta(days=1),
            extensions=[
                x509.Extension(aki.oid, False, aki),
                x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(999_999)),
                x509.Extension(idp.oid, True, idp),
            ],
            revoked_certificates=entries,
        ).sign(key, hash_for(KeyAlgorithm(issuer.key_algorithm)))
        der = _der(crl)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "entries": len(entries), "bytes": len(der)}


def _der(crl: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return bytes(crl.public_bytes(Encoding.DER))


def run_case(env: _common.BenchEnv, case: str) -> dict[str, Any]:
    """Run one measured case in a fresh process; its result and peak RSS."""
    proc = subprocess.run(
        [sys.executable, __file__, "--case", case, "--env", json.dumps(_serialise(env))],
        env=env.environ(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _serialise(env: _common.BenchEnv) -> dict[str, Any]:
    return {"var_dir": str(env.var_dir), "conf": str(env.conf), "overrides": env.overrides}


def _child(case: str, raw: str) -> None:
    data = json.loads(raw)
    env = _common.BenchEnv(
        var_dir=Path(data["var_dir"]), conf=Path(data["conf"]), overrides=data["overrides"]
    )
    result = case_ours(env) if case == "ours" else case_bare(env)
    result["peak_rss_mb"] = _common.peak_rss_mb()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated entry counts")
    parser.add_argument("--postgres", metavar="URL", help="also on this PostgreSQL database")
    parser.add_argument(
        "--sqlite", action=argparse.BooleanOptionalAction, default=True, help="run on SQLite"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    parser.add_argument("--case", choices=["ours", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--env", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        _child(args.case, args.env)
        return

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows: list[dict[str, str]] = []
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-crl-") as tmp:
        var_dir = Path(tmp)
        conf, label = _common.make_token(var_dir)
        backends = []
        if args.sqlite:
            backends.append(("sqlite", lambda size: f"sqlite:///{var_dir / f'crl-{size}.db'}"))
        if args.postgres:
            url = _common.sqlalchemy_url(args.postgres)
            backends.append(("postgresql", lambda size: url))
        for backend, url_for in backends:
            for size in sizes:
                env = _common.prepare(var_dir, conf, label, url_for(size))
                inserted = insert_revoked(env, size)
                print(f"{backend} {size:,}: inserted in {inserted:.1f} s", file=sys.stderr)
                ours, bare = run_case(env, "ours"), run_case(env, "bare")
                if not ours["entries"] == bare["entries"] == size:
                    raise SystemExit(f"entry counts differ: {ours} {bare}")
                rows.append(
                    {
                        "backend": backend,
                        "entries": f"{size:,}",
                        "ours s": f"{ours['seconds']:.2f}",
                        "bare s": f"{bare['seconds']:.2f}",
                        "ours/bare": f"{ours['seconds'] / bare['seconds']:.2f}x",
                        "ours peak RSS": f"{ours['peak_rss_mb']:.0f} MiB",
                        "bare peak RSS": f"{bare['peak_rss_mb']:.0f} MiB",
                        "CRL size": f"{ours['bytes'] / 1e6:.1f} MB",
                    }
                )
                points.append(
                    {
                        "backend": backend,
                        "entries": size,
                        "ours_s": ours["seconds"],
                        "bare_s": bare["seconds"],
                        "ours_peak_rss_mb": ours["peak_rss_mb"],
                        "bare_peak_rss_mb": bare["peak_rss_mb"],
                    }
                )
                print(_common.table(rows[-1:], list(rows[-1])), file=sys.stderr)
    print(_common.table(rows, list(rows[0])))
    _common.write_json(args.json, rows, points=points)


if __name__ == "__main__":
    main()
