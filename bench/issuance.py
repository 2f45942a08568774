"""Issuance throughput: the service path against the bare HSM adapter, in the same run.

For each issuing-CA key (RSA-2048, EC P-256) and each database (SQLite; PostgreSQL too with
``--postgres URL`` — that database's public schema is dropped and recreated!), a throw-away
SoftHSM token and database get the CA hierarchy and N approved applications, then:

- service: ``issue_certificate`` for each application — reserve the serial and a pending row,
  commit, sign in the HSM, store, audit, queue the e-mail and SMS notices, commit;
- bare: the same certificate builder signed N times with the same HSM key through the
  adapter (``Token.private_key``), nothing stored — the HSM's own rate through our adapter.

The two alternate in rounds of 20 certificates, so that both see the same machine load.

Run: ``.venv/bin/python bench/issuance.py [-n 300] [--postgres URL]``.
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
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

GOALS = {"rsa-2048": 0.40, "ec-p256": 0.15}
ROUND = 20  # certificates per round of each kind


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


def measure(env: _common.BenchEnv, count: int) -> tuple[float, float]:
    """(service certificates/s, bare signatures/s)."""
    from ca_service.app import settings_of
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
    from ca_service.hsm_access import app_token
    from ca_service.issuance import service
    from ca_service.issuance.models import Application
    from hsm import KeyAlgorithm

    with _common.app_context(env) as app:
        ids = _approved_applications(count)
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

        for _ in range(10):  # warm the session pool and the key handle cache
            bare_once()
        # Interleaved in rounds, so that both rates see the same load from whatever else runs
        # on the machine (measured one after the other, a busy minute skews the ratio).
        bare_seconds = ours_seconds = 0.0
        for start in range(0, count, ROUND):
            chunk = ids[start : start + ROUND]
            started = time.perf_counter()
            for _ in chunk:
                bare_once()
            bare_seconds += time.perf_counter() - started
            started = time.perf_counter()
            for application_id in chunk:
                issue(application_id)
            ours_seconds += time.perf_counter() - started
        ours, bare = count / ours_seconds, count / bare_seconds
    return ours, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="certificates per case")
    parser.add_argument("--postgres", default=None, help="PostgreSQL URL (schema is reset!)")
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
            ours, bare = measure(env, args.n)
            ratio = ours / bare
            rows.append(
                {
                    "issuing key": algorithm,
                    "database": db_name,
                    "service (certs/s)": f"{ours:.0f}",
                    "bare HSM signing (/s)": f"{bare:.0f}",
                    "ratio": f"{ratio:.0%}",
                    "goal": f">= {goal:.0%} {'met' if ratio >= goal else 'MISSED'}",
                }
            )
            print(f"{algorithm} {db_name}: {ours:.0f}/s vs {bare:.0f}/s ({ratio:.0%})", flush=True)
    print()
    print(_common.table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
