"""Certificate-login verification throughput, against bare signature verification in the same run.

For each database (SQLite; PostgreSQL too with ``--postgres URL``: a scratch database
on that server, dropped afterwards) a throw-away SoftHSM token and database get the CA hierarchy, N
employers with our certificates (issued through the issuance service), a tax CA (root +
intermediate, trusted as anchors, CRLs stored) and N tax certificates bound to the same
employers. Then, one process, one thread (one core):

- ours: ``verify_certificate`` + ``account_for`` per certificate — path validation to our root,
  usage checks, revocation from the database, mapping to the employer's administrator;
- tax: the same for the bound tax certificates — path to the tax root through the intermediate,
  revocation from both CAs' CRLs (parsed once; which CRL is stored, and whether it is current,
  is read at every login in the same query as the mapping through the binding);
- bare: ``verify_directly_issued_by`` on the same certificates (one signature check each, the
  floor of any verification), for each kind;
- floor: ``SELECT 1`` in a transaction of its own through the same session, the least a login
  in its own transaction can cost on this database (pool check-out with its ping, BEGIN, the
  statement, ROLLBACK or COMMIT). Its rate shows how fast the machine was during the run:
  compare the logins' per-CPU-second figures with it when runs on a busy machine differ. The
  cases take turns in short slices, so a busy spell falls on all of them alike.

Each login's transaction is committed, as a sign-in request commits (its audit record, which
is not part of what is measured). ``--rollback`` rolls it back instead: on PostgreSQL psycopg
then forgets its prepared statements at every ROLLBACK, so the server plans the login's query
afresh each time and psycopg prepares it again every few logins (and deallocates it).

Run: ``.venv/bin/python bench/login.py [-n 200] [--seconds 3] [--postgres URL] [--rollback]``.
Goal (issue #5): >= 1,000 logins/s per core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

GOAL = 1000.0


SLICE_SECONDS = 0.25


def _rates(
    cases: dict[str, Callable[[int], None]], count: int, seconds: float
) -> dict[str, tuple[float, float]]:
    """Calls of each case's ``work(i)``, cycling over ``count`` items for about ``seconds``
    each, the cases taking turns in slices of SLICE_SECONDS (so that a busy spell of the
    machine falls on all of them alike): (per second of wall time in this one thread, per
    second of this process's CPU time — what one core does when several threads or workers
    overlap their waits on the database)."""
    totals = dict.fromkeys(cases, (0, 0.0, 0.0))
    for _ in range(max(1, round(seconds / SLICE_SECONDS))):
        for name, work in cases.items():
            calls, wall, cpu_time = totals[name]
            done, started, cpu = 0, time.perf_counter(), time.process_time()
            deadline = started + SLICE_SECONDS
            while True:
                work((calls + done) % count)
                done += 1
                if done % 10 == 0 and time.perf_counter() >= deadline:
                    break
            totals[name] = (
                calls + done,
                wall + time.perf_counter() - started,
                cpu_time + time.process_time() - cpu,
            )
    return {name: (calls / wall, calls / cpu) for name, (calls, wall, cpu) in totals.items()}


def _populate(app: Any, count: int) -> tuple[list[x509.Certificate], list[x509.Certificate], Any]:
    """(our certificates, bound tax certificates, the tax CA)."""

    from ca_service.auth.service import hash_password
    from ca_service.auth.verification import verify_certificate
    from ca_service.binding import bindings, tax_crls
    from ca_service.binding.models import TrustPurpose
    from ca_service.binding.service import add_trust_anchor
    from ca_service.db import db, utcnow
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token
    from ca_service.issuance import service
    from ca_service.issuance.models import Application, ApplicationStatus, KeySource
    from tests.binding.tax_ca import TaxCA

    tax = TaxCA(name="Bench Tax Bureau")
    for pem, url in (
        (tax.root_pem, tax.root_crl_url),
        (tax.intermediate_pem, tax.intermediate_crl_url),
    ):
        add_trust_anchor(actor="bench", purpose=TrustPurpose.TAX, data=pem, crl_url=url)
    db.session.flush()
    from ca_service.binding.service import list_anchors

    anchors = {a.subject: a for a in list_anchors(TrustPurpose.TAX)}
    root_anchor = next(a for s, a in anchors.items() if "Root" in s)
    issuing_anchor = next(a for s, a in anchors.items() if "Issuing" in s)
    # Both CAs' CRLs list revoked certificates, as real ones do (none of ours).
    revoked = [(x509.random_serial_number(), x509.ReasonFlags.key_compromise) for _ in range(1000)]
    tax_crls.store_crl(
        actor="bench",
        anchor=root_anchor,
        der_or_pem=tax.crl(issuer="root"),
        source="bench",
        now=utcnow(),
    )
    tax_crls.store_crl(
        actor="bench",
        anchor=issuing_anchor,
        der_or_pem=tax.crl(revoked=revoked),
        source="bench",
        now=utcnow(),
    )

    profile = service.EmployerProfile.from_settings(settings_of(app))
    password_hash = hash_password("bench-password-unused")
    ours, taxes = [], []
    for i in range(count):
        employer, user = _common.new_employer(i, password_hash)
        number = employer.registration_number
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bench")]))
            .sign(key, hashes.SHA256())
        )
        db.session.flush()
        application = Application(
            employer_id=employer.id,
            status=ApplicationStatus.APPROVED,
            key_source=KeySource.CSR,
            csr_der=csr.public_bytes(Encoding.DER),
            created_by_id=user.id,
        )
        db.session.add(application)
        db.session.commit()
        row = service.issue_certificate(
            application=application,
            token=app_token(),
            profile=profile,
            commit=db.session.commit,
            actor="bench",
        )
        ours.append(x509.load_der_x509_certificate(row.der or b""))
        certificate, _ = tax.issue(f"NTRCN-{number}")
        verified = verify_certificate([certificate], settings=settings_of(app), now=utcnow())
        bindings.bind_certificate(user=user, verified=verified, method="bench", now=utcnow())
        db.session.commit()
        taxes.append(certificate)
    return ours, taxes, tax


def measure(
    env: _common.BenchEnv, count: int, seconds: float, *, commit: bool
) -> dict[str, tuple[float, float]]:
    from ca_service.auth.verification import account_for, verify_certificate
    from ca_service.authorities.service import (
        ISSUING_SLUG,
        current_certificate,
        get_authority,
        load_certificate,
    )
    from ca_service.db import db
    from ca_service.extensions import settings_of

    with _common.app_context(env) as app:
        ours, taxes, tax = _populate(app, count)
        settings = settings_of(app)
        end = db.session.commit if commit else db.session.rollback
        issuing = load_certificate(current_certificate(get_authority(ISSUING_SLUG)))

        def login(certificates: list[x509.Certificate]) -> Callable[[int], None]:
            def once(i: int) -> None:
                now = dt.datetime.now(dt.UTC)
                account_for(verify_certificate([certificates[i]], settings=settings, now=now))
                end()  # each login is its own request / transaction

            return once

        def bare(
            certificates: list[x509.Certificate], issuer: x509.Certificate
        ) -> Callable[[int], None]:
            return lambda i: certificates[i].verify_directly_issued_by(issuer)

        def floor(_: int) -> None:
            db.session.execute(sa.select(1)).scalar()
            end()

        for i in range(count):  # warm the caches as a running worker has them
            login(ours)(i), login(taxes)(i)
        return _rates(
            {
                "ours": login(ours),
                "tax": login(taxes),
                "floor": floor,
                "ours_bare": bare(ours, issuing),
                "tax_bare": bare(taxes, tax.intermediate),
            },
            count,
            seconds,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="employers (certificates of each kind)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case")
    parser.add_argument(
        "--postgres", default=None, help="PostgreSQL server URL (a scratch DB is made there)"
    )
    parser.add_argument(
        "--rollback",
        action="store_true",
        help="roll each login's transaction back (instead of committing it as a request does)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args()
    databases = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-login-") as tmp:
        conf, label = _common.make_token(Path(tmp))
        for number, (db_name, url) in enumerate(databases):
            var_dir = Path(tmp)
            database_url = (
                _common.sqlalchemy_url(url) if url else f"sqlite:///{var_dir / f'case-{number}.db'}"
            )
            if number:
                label = _common.add_token(conf)
            env = _common.prepare(var_dir, conf, label, database_url)
            rates = measure(env, args.n, args.seconds, commit=not args.rollback)
            floor = rates["floor"][1]
            for kind, title in (("ours", "agency certificate"), ("tax", "bound tax certificate")):
                (wall, cpu), (bare, _) = rates[kind], rates[f"{kind}_bare"]
                rows.append(
                    {
                        "certificate": title,
                        "database": db_name,
                        "logins/s, 1 thread": f"{wall:.0f}",
                        "logins per CPU-second": f"{cpu:.0f}",
                        "bare signature checks/s": f"{bare:.0f}",
                        "ratio (1 thread)": f"{wall / bare:.0%}",
                        "SELECT 1 transactions per CPU-second": f"{floor:.0f}",
                        "goal >= 1,000/s per core": "met" if cpu >= GOAL else "MISSED",
                    }
                )
                print(
                    f"{title} {db_name}: {wall:.0f}/s ({cpu:.0f} per CPU-second) vs bare "
                    f"{bare:.0f}/s; SELECT 1 transactions {floor:.0f} per CPU-second",
                    flush=True,
                )
    print()
    print(_common.table(rows, list(rows[0])))
    _common.write_json(args.json, rows)


if __name__ == "__main__":
    main()
