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
  adapter (``Token.private_key``), nothing stored — the HSM's own rate through our adapter;
- durability floor: the bare signature between two durable commits of a trivial row (reserved
  before the signature, given the certificate after) on a connection of the service's own
  engine in the same database — SQLite's WAL with synchronous=FULL, PostgreSQL's
  synchronous_commit — the most any implementation of the design ("Nothing signed is lost":
  two durable commits per certificate) could reach one by one on this machine.

The four take turns in rounds of ``--round`` (50) certificates, so that all see the same
machine load; a batch is one round. Each case's wall time and this process's CPU time
(``time.process_time``: SoftHSM signs in-process; a PostgreSQL server's own CPU is not in it)
are summed over its rounds; the output ends with how one by one's time per certificate splits
into the bare signature, the two commits (floor minus bare), our code's CPU (one by one's CPU
minus the floor's) and the rest (waiting beyond the floor's), with the arithmetic shown.

Run: ``.venv/bin/python bench/issuance.py [-n 300] [--round 50] [--postgres URL]``.
Goal (issue #3): service >= 40 % of bare with RSA-2048, >= 15 % with P-256.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class Timing:
    """Wall-clock and process CPU seconds spent in one case, over all its rounds."""

    count: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @contextmanager
    def measure(self, count: int) -> Iterator[None]:
        """Time ``count`` certificates (or signatures) of this case."""
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.seconds += time.perf_counter() - wall
        self.cpu_seconds += time.process_time() - cpu
        self.count += count

    @property
    def rate(self) -> float:
        """Per second, wall-clock."""
        return self.count / self.seconds

    @property
    def ms(self) -> float:
        """Wall-clock milliseconds each."""
        return 1000 * self.seconds / self.count

    @property
    def cpu_ms(self) -> float:
        """Milliseconds of this process's CPU (all its threads; SoftHSM signs in-process,
        a PostgreSQL server's own processes are not counted) each."""
        return 1000 * self.cpu_seconds / self.count


@dataclass
class Measured:
    """The four cases of one issuing key and database, measured taking turns."""

    bare: Timing = field(default_factory=Timing)
    floor: Timing = field(default_factory=Timing)
    single: Timing = field(default_factory=Timing)
    batched: Timing = field(default_factory=Timing)


# The durability floor's table: a trivial row reserved (committed) before the HSM signs and
# given the signed certificate (committed) after, which is all the design's two durable
# commits must store at the least.
_floor_table = sa.Table(
    "bench_durability_floor",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("der", sa.LargeBinary, nullable=True),
)


class DurabilityFloor:
    """The least the design asks of one certificate: a trivial row committed durably before
    the HSM signs, the bare signature, the row given the certificate and committed durably.

    On a connection of the service's engine: the same driver, the same connection set-up
    (ca_service/db.py: SQLite's WAL with synchronous=FULL; on PostgreSQL the server's
    defaults, synchronous_commit on) and the service's way of running a write
    (ca_service/dml.py), in the benchmark's own database. Each commit is one statement in
    its own transaction (autocommit): one round trip to PostgreSQL and one durable flush of
    the log, the least a durable commit can take (a BEGIN, the INSERT and a COMMIT, as the
    service sends them, took about 10-20 % longer here)."""

    def __init__(self, connection: sa.Connection, sign: Callable[[], x509.Certificate]) -> None:
        from ca_service.dml import Write

        self._connection, self._sign = connection, sign
        self._reserve = Write(sa.insert(_floor_table))
        self._store = Write(
            sa.update(_floor_table)
            .where(_floor_table.c.id == sa.bindparam("row"))
            .values(state=sa.bindparam("issued"), der=sa.bindparam("certificate"))
        )
        self._rows = itertools.count(1)
        _floor_table.create(connection)
        connection.commit()
        connection.execution_options(isolation_level="AUTOCOMMIT")  # this connection's own

    def once(self) -> None:
        connection, row = self._connection, next(self._rows)
        self._reserve.execute(connection, {"id": row, "state": "pending"})  # durable: committed
        der = self._sign().public_bytes(Encoding.DER)
        self._store.execute(connection, {"row": row, "issued": "issued", "certificate": der})

    def check(self, count: int) -> None:
        """Every row reserved so far stored, committed (seen from another connection)."""
        with self._connection.engine.connect() as other:
            stored = other.scalar(
                sa.select(sa.func.count()).where(_floor_table.c.state == "issued")
            )
        if stored != count:
            raise RuntimeError(f"durability floor: {stored} rows stored, {count} expected")


def _bare_signer(app: Any, token: Any) -> Callable[[], x509.Certificate]:
    """The issuing CA's certificate for a fixed subject and key, built and signed with the
    HSM key through the adapter (``Token.private_key``), nothing stored."""
    from ca_service.authorities import profiles
    from ca_service.authorities.service import (
        ISSUING_SLUG,
        current_certificate,
        get_authority,
        load_certificate,
    )
    from ca_service.authorities.signing import hash_for, new_serial
    from ca_service.extensions import settings_of
    from ca_service.issuance import service
    from hsm import KeyAlgorithm

    urls = service.EmployerProfile.from_settings(settings_of(app)).urls
    issuer = get_authority(ISSUING_SLUG)
    issuer_cert = load_certificate(current_certificate(issuer))
    key = token.private_key(issuer.key_label)
    digest = hash_for(KeyAlgorithm(issuer.key_algorithm))
    public_key = x509.load_der_x509_csr(_csr_der()).public_key()
    subject = profiles.employer_subject(
        country="CN", legal_name="Bench Employer Co., Ltd.", registration_number="BENCH"
    )

    def sign() -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        return (
            profiles.employer_builder(
                subject=subject,
                public_key=public_key,
                issuer=issuer_cert,
                issuer_slug=ISSUING_SLUG,
                urls=urls,
                non_repudiation=False,
            )
            .serial_number(new_serial())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(key, digest)
        )

    return sign


def measure(env: _common.BenchEnv, count: int, round_size: int) -> Measured:
    """Time bare signing, the durability floor, one by one and batched issuance, in turns."""
    from ca_service.audit.service import ensure_audit_key
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
        bare_once = _bare_signer(app, token)
        # End the set-up's transaction: on SQLite it holds the write lock (BEGIN IMMEDIATE),
        # which the durability floor's own connection would wait for.
        db.session.commit()

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

        floor_connection = db.engine.connect()
        floor = DurabilityFloor(floor_connection, bare_once)

        for _ in range(10):  # warm the session pool, the key handle cache and the floor's table
            bare_once()
            floor.once()
        # Interleaved in rounds, so that all cases see the same load from whatever else runs
        # on the machine (measured one after the other, a busy minute skews the ratio).
        measured = Measured()
        try:
            for start in range(0, count, round_size):
                size = min(round_size, count - start)
                with measured.bare.measure(size):
                    for _ in range(size):
                        bare_once()
                with measured.floor.measure(size):
                    for _ in range(size):
                        floor.once()
                with measured.single.measure(size):
                    for application_id in one_by_one_ids[start : start + size]:
                        issue(application_id)
                with measured.batched.measure(size):
                    issue_batch(batched_ids[start : start + size])
                db.session.expunge_all()
            floor.check(10 + count)
        finally:
            floor_connection.close()
    return measured


def gap(m: Measured, goal: float) -> dict[str, float]:
    """How one by one's time per certificate splits: the bare signature, the design's two
    durable commits (the floor's time beyond the bare signature), our code's CPU beyond the
    floor's, and the rest (waiting beyond the floor's: more statements and round trips, more
    pages written, locks). Milliseconds, and the ratios."""
    commits = m.floor.ms - m.bare.ms
    code_cpu = m.single.cpu_ms - m.floor.cpu_ms
    return {
        "goal": goal,
        "bare_ms": m.bare.ms,
        "bare_cpu_ms": m.bare.cpu_ms,
        "floor_ms": m.floor.ms,
        "floor_cpu_ms": m.floor.cpu_ms,
        "one_by_one_ms": m.single.ms,
        "one_by_one_cpu_ms": m.single.cpu_ms,
        "batched_ms": m.batched.ms,
        "batched_cpu_ms": m.batched.cpu_ms,
        "commits_ms": commits,
        "commits_cpu_ms": m.floor.cpu_ms - m.bare.cpu_ms,
        "code_cpu_ms": code_cpu,
        "other_wait_ms": m.single.ms - m.floor.ms - code_cpu,
        "floor_ratio": m.bare.ms / m.floor.ms,
        "one_by_one_ratio": m.bare.ms / m.single.ms,
        # The same ratios in CPU time alone: what they would be where waiting (for the disk, a
        # round trip, a core on a busy machine) cost nothing.
        "floor_cpu_ratio": m.bare.cpu_ms / m.floor.cpu_ms,
        "one_by_one_cpu_ratio": m.bare.cpu_ms / m.single.cpu_ms,
        # The most a certificate may take one by one to meet the goal, and what of it is left
        # to our code once the bare signature and the two commits are paid.
        "budget_ms": m.bare.ms / goal,
        "budget_left_ms": m.bare.ms / goal - m.floor.ms,
    }


def explain(algorithm: str, db_name: str, g: dict[str, Any]) -> str:
    """The arithmetic of ``gap``, printed."""
    verdict = (
        f"so no implementation of the design reaches the goal of {g['goal']:.0%} here"
        if g["floor_ratio"] < g["goal"]
        else f"leaving our code {g['budget_left_ms']:.2f} ms for the goal of {g['goal']:.0%}"
        f" ({g['bare_ms']:.2f} / {g['goal']:.2f} = {g['budget_ms']:.2f} ms a certificate)"
    )
    return "\n".join(
        [
            f"{algorithm} {db_name}:",
            f"  bare signature {g['bare_ms']:.2f} ms (CPU {g['bare_cpu_ms']:.2f} ms)",
            f"  floor {g['floor_ms']:.2f} ms = {g['bare_ms']:.2f} signature"
            f" + {g['commits_ms']:.2f} two durable commits"
            f" (CPU {g['floor_cpu_ms']:.2f} ms, {g['commits_cpu_ms']:.2f} of it the commits')"
            f" -> at most {g['bare_ms']:.2f} / {g['floor_ms']:.2f} = {g['floor_ratio']:.0%}"
            f" one by one, {verdict}",
            f"  one by one {g['one_by_one_ms']:.2f} ms (CPU {g['one_by_one_cpu_ms']:.2f} ms)"
            f" = {g['floor_ms']:.2f} floor + {g['code_cpu_ms']:.2f} our code's CPU"
            f" ({g['one_by_one_cpu_ms']:.2f} - {g['floor_cpu_ms']:.2f})"
            f" + {g['other_wait_ms']:.2f} other waiting"
            f" -> {g['bare_ms']:.2f} / {g['one_by_one_ms']:.2f} = {g['one_by_one_ratio']:.0%}",
            f"  beyond the signature one by one spends {g['one_by_one_ms'] - g['bare_ms']:.2f} ms:"
            f" {g['commits_ms']:.2f} the two durable commits"
            f" ({g['commits_ms'] / (g['one_by_one_ms'] - g['bare_ms']):.0%}),"
            f" {g['code_cpu_ms']:.2f} our code's CPU"
            f" ({g['code_cpu_ms'] / (g['one_by_one_ms'] - g['bare_ms']):.0%}),"
            f" {g['other_wait_ms']:.2f} other waiting"
            f" ({g['other_wait_ms'] / (g['one_by_one_ms'] - g['bare_ms']):.0%})",
            f"  in CPU time alone (no waiting): floor {g['bare_cpu_ms']:.2f} /"
            f" {g['floor_cpu_ms']:.2f} = {g['floor_cpu_ratio']:.0%},"
            f" one by one {g['bare_cpu_ms']:.2f} /"
            f" {g['one_by_one_cpu_ms']:.2f} = {g['one_by_one_cpu_ratio']:.0%}",
        ]
    )


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
    rows: list[dict[str, str]] = []
    figures: list[dict[str, Any]] = []
    explanations: list[str] = []
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
            m = measure(env, args.n, args.round)
            bare = m.bare
            for mode, timing, judged in (
                ("one by one", m.single, True),
                (f"batches of {args.round}", m.batched, True),
                ("floor: bare + 2 durable commits", m.floor, False),
            ):
                ratio = timing.rate / bare.rate
                rows.append(
                    {
                        "issuing key": algorithm,
                        "database": db_name,
                        "issued": mode,
                        "service (certs/s)": f"{timing.rate:.0f}",
                        "CPU ms/cert": f"{timing.cpu_ms:.2f}",
                        "bare HSM signing (/s)": f"{bare.rate:.0f}",
                        "CPU ms/signature": f"{bare.cpu_ms:.2f}",
                        "ratio": f"{ratio:.0%}",
                        "goal": (
                            f">= {goal:.0%} {'met' if ratio >= goal else 'MISSED'}"
                            if judged
                            else "- (the design's ceiling one by one)"
                        ),
                    }
                )
                print(
                    f"{algorithm} {db_name} {mode}: {timing.rate:.0f}/s,"
                    f" {timing.cpu_ms:.2f} ms CPU each, vs {bare.rate:.0f}/s,"
                    f" {bare.cpu_ms:.2f} ms CPU each ({ratio:.0%})",
                    flush=True,
                )
            figures.append({"issuing key": algorithm, "database": db_name, **gap(m, goal)})
            explanations.append(explain(algorithm, db_name, figures[-1]))
    print()
    print(_common.table(rows, list(rows[0])))
    print()
    print("Where one by one's time goes (milliseconds per certificate):")
    print("\n".join(explanations))
    _common.write_json(args.json, rows, figures=figures)


if __name__ == "__main__":
    main()
