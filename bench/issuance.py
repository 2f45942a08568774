"""Issuance throughput: the service path against the bare HSM adapter, in the same run.

For each issuing-CA key (RSA-2048, EC P-256) and each database (SQLite; PostgreSQL too with
``--postgres URL``: a scratch database on that server, dropped afterwards), a throw-away
SoftHSM token and database get the CA hierarchy and N approved applications, then:

- one by one: ``issue_certificate`` for each application, as an officer's approval issues —
  reserve the serial and a pending row, commit, sign in the HSM, store, audit, queue the e-mail
  and SMS notices, commit;
- batched: ``issue_certificates`` for the applications of a round together, as
  `ca-service issue` does — the same steps and guarantees, with one commit for all the
  reservations before the HSM signs and one for all the certificates after;
- bare: the same certificate builder signed N times with the same HSM key through the
  adapter (``Token.private_key``), nothing stored — the HSM's own rate through our adapter.

The three alternate in rounds of ``--round`` (50) certificates, so that all see the same
machine load; a batch is one round.

Run: ``.venv/bin/python bench/issuance.py [-n 300] [--round 50] [--postgres URL]``.
Goal (issue #3): service >= 40 % of bare with RSA-2048, >= 15 % with P-256.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import tempfile
import time
from pathlib import Path

import _common
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

GOALS = {"rsa-2048": 0.40, "ec-p256": 0.15}


def _csr_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bench")])
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(key, hashes.SHA256())
        .public_bytes(Encoding.DER)
    )


def _approved_applications(count: int) -> list[int]:
    from ca_service.auth.service import hash_password
    from ca_service.db import db
    from ca_service.issuance.models import Application, ApplicationStatus, KeySource

    password_hash = hash_password(secrets.token_urlsafe(16))
    ids = []
    for i in range(count):
        employer, user = _common.new_employer(i, password_hash)
        application = Application(
            employer_id=employer.id,
            status=ApplicationStatus.APPROVED,
            key_source=KeySource.CSR,
            csr_der=_csr_der(),
            created_by_id=user.id,
        )
        db.session.add(application)
        db.session.flush()
        ids.append(application.id)
    db.session.commit()
    return ids


def measure(env: _common.BenchEnv, count: int, round_size: int) -> tuple[float, float, float]:
    """(certificates/s one by one, certificates/s batched, bare signatures/s)."""
    from ca_service.audit.service import ensure_audit_key
    from ca_service.authorities import profiles
    from ca_service.authorities.service import (
        ISSUING_SLUG,
        current_certificate,
        get_authority,
        load_certificate,
    )
    from ca_service.authorities.signing import hash_for, new_serial
    from ca_service.db import db
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token
    from ca_service.issuance import service
    from ca_service.issuance.models import Application
    from hsm import KeyAlgorithm

    with _common.app_context(env) as app:
        ids = _approved_applications(2 * count)
        one_by_one_ids, batched_ids = ids[:count], ids[count:]
        token = app_token()
        # As after `ca-service init`: audit checkpoints are signed every 100 events.
        ensure_audit_key(token, KeyAlgorithm(settings_of(app)["AUDIT_KEY_ALGORITHM"]))
        profile = service.EmployerProfile.from_settings(settings_of(app))
        issuer = get_authority(ISSUING_SLUG)
        issuer_cert = load_certificate(current_certificate(issuer))
        key, algorithm = token.private_key(issuer.key_label), KeyAlgorithm(issuer.key_algorithm)
        public_key = x509.load_der_x509_csr(_csr_der()).public_key()
        subject = profiles.employer_subject(
            country="CN", legal_name="Bench Employer Co., Ltd.", registration_number="BENCH"
        )

        def bare_once() -> None:
            now = dt.datetime.now(dt.UTC)
            profiles.employer_builder(
                subject=subject,
                public_key=public_key,
                issuer=issuer_cert,
                issuer_slug=ISSUING_SLUG,
                urls=profile.urls,
                non_repudiation=False,
            ).serial_number(new_serial()).not_valid_before(now).not_valid_after(
                now + dt.timedelta(days=365)
            ).sign(key, hash_for(algorithm))

        def issue(application_id: int) -> None:
            application = db.session.get(Application, application_id)
            assert application is not None  # noqa: S101  (created above)
            service.issue_certificate(
                application=application,
                token=token,
                profile=profile,
                commit=db.session.commit,
                actor="bench",
            )

        def issue_batch(application_ids: list[int]) -> None:
            applications = db.session.scalars(
                sa.select(Application).where(Application.id.in_(application_ids))
            ).all()
            issued = service.issue_certificates(
                applications=applications,
                token=token,
                profile=profile,
                commit=db.session.commit,
                actor="bench",
            )
            assert all(i.error is None for i in issued)  # noqa: S101

        for _ in range(10):  # warm the session pool and the key handle cache
            bare_once()
        # Interleaved in rounds, so that all rates see the same load from whatever else runs
        # on the machine (measured one after the other, a busy minute skews the ratio).
        bare_seconds = single_seconds = batched_seconds = 0.0
        for start in range(0, count, round_size):
            started = time.perf_counter()
            for _ in range(min(round_size, count - start)):
                bare_once()
            bare_seconds += time.perf_counter() - started
            started = time.perf_counter()
            for application_id in one_by_one_ids[start : start + round_size]:
                issue(application_id)
            single_seconds += time.perf_counter() - started
            started = time.perf_counter()
            issue_batch(batched_ids[start : start + round_size])
            batched_seconds += time.perf_counter() - started
            db.session.expunge_all()
    return count / single_seconds, count / batched_seconds, count / bare_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="certificates per case")
    parser.add_argument("--round", type=int, default=50, help="certificates per round and batch")
    parser.add_argument(
        "--postgres", default=None, help="PostgreSQL server URL (a scratch DB is made there)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args()
    databases = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-issuance-") as tmp:
        # SoftHSM reads its configuration once per process: one configuration, a new token
        # (and database) per case.
        conf, first_label = _common.make_token(Path(tmp))
        cases = [(a, g, d, u) for a, g in GOALS.items() for d, u in databases]
        for number, (algorithm, goal, db_name, url) in enumerate(cases):
            var_dir = Path(tmp)
            label = first_label if number == 0 else _common.add_token(conf)
            os.environ["CA_ISSUING_KEY_ALGORITHM"] = algorithm
            database_url = (
                _common.sqlalchemy_url(url) if url else f"sqlite:///{var_dir / f'case-{number}.db'}"
            )
            env = _common.prepare(var_dir, conf, label, database_url)
            single, batched, bare = measure(env, args.n, args.round)
            for mode, ours in (("one by one", single), (f"batches of {args.round}", batched)):
                ratio = ours / bare
                rows.append(
                    {
                        "issuing key": algorithm,
                        "database": db_name,
                        "issued": mode,
                        "service (certs/s)": f"{ours:.0f}",
                        "bare HSM signing (/s)": f"{bare:.0f}",
                        "ratio": f"{ratio:.0%}",
                        "goal": f">= {goal:.0%} {'met' if ratio >= goal else 'MISSED'}",
                    }
                )
                print(
                    f"{algorithm} {db_name} {mode}: {ours:.0f}/s vs {bare:.0f}/s ({ratio:.0%})",
                    flush=True,
                )
    print()
    print(_common.table(rows, list(rows[0])))
    _common.write_json(args.json, rows)


if __name__ == "__main__":
    main()
