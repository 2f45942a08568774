"""Renewal throughput through the HTTP API, against bare HSM signing in the same run.

For each issuing-CA key (RSA-2048, EC P-256) and each database (SQLite; PostgreSQL too with
``--postgres URL``: a scratch database is created on that server and dropped afterwards), a
throw-away SoftHSM token and database get the CA hierarchy and N employers whose certificate is
inside its renewal window. Each employer's application goes through the services (draft, CSR
attached, the six documents on record as the renewal tests record them, submitted, approved by
an officer) and is issued by ``issue_certificates`` with a 30-day validity, so that the renewal
window (``RENEWAL_WINDOW_DAYS``, 60) is open at once. Then ``ca-service serve`` (gunicorn,
``--workers`` 2, the default event-loop worker, ``--no-access-log``) on loopback, and:

- renewals: every employer signs in as ``ca-client login`` does (a challenge signed with its
  certificate's key, ``POST /api/v1/auth/certificate``, a bearer token; not measured, and
  with ``LOGIN_RATE_LIMIT`` raised: every client comes from 127.0.0.1 here); then
  ``--clients`` (16) client threads, each with its own kept-alive connection, send
  ``POST /api/v1/certificates/<serial>/renewal`` with a new key's CSR. Every answer must be
  201 with the new certificate, issued at once (record unchanged, documents valid), for the
  new key;
- bare: the same certificate builder signed with the same HSM key through the adapter
  (``Token.private_key``), nothing stored, in as many processes as the server has workers with
  ``--clients`` threads between them: the HSM's own rate through our adapter with the
  server's parallelism (the adapter serialises the calls of one process into the module).

The two take turns in rounds of ``--round`` (50) renewals / signatures, the first of each pair
alternating, so that a busy spell of the machine falls on both alike; only one is loaded at any
moment. Besides the rates: p50/p99 of the renewals' latencies, and CPU milliseconds per renewal
(the server's process group: gunicorn and its workers, not the database server) and per bare
signature (the signing processes), which a machine shared with other work slows less.

Run: ``.venv/bin/python bench/renewal.py [-n 400] [--round 50] [--clients 16] [--postgres URL]
[--no-sqlite] [--keys rsa-2048,ec-p256] [--quick]``.
Goal (issue #14): renewals >= 30 % of bare signing with RSA-2048, >= 10 % with P-256.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import http.client
import json
import multiprocessing
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import _common
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.cli import SERVE_THREADS

GOALS = {"rsa-2048": 0.30, "ec-p256": 0.10}
SEED_VALIDITY_DAYS = 30  # inside the 60-day renewal window from the start
WARM_RENEWALS = 32  # per case, before measuring: worker imports, PKCS#11 sessions, pools


@dataclasses.dataclass
class Employer:
    """One employer of the benchmark: its certificate in the window, and its new key's CSR."""

    username: str
    serial: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    new_key: ec.EllipticCurvePrivateKey
    body: bytes  # the renewal request's JSON
    token: str = ""


def _csr_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(Encoding.PEM)
    )


def _seed(app: Any, count: int) -> list[Employer]:
    """``count`` employers, each with an issued certificate inside its renewal window."""
    from ca_service.auth.models import Role, User
    from ca_service.auth.service import hash_password
    from ca_service.db import db
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token
    from ca_service.issuance import service
    from ca_service.issuance.models import Document, DocumentType, KeySource
    from ca_service.issuance.seals import SealVerdict

    password_hash = hash_password(secrets.token_urlsafe(16))
    officer = User(
        username="bench-officer",
        email="officer@bench.test",
        full_name="Bench Officer",
        role=Role.RA_OFFICER,
        password_hash=password_hash,
        password_is_temporary=False,
    )
    db.session.add(officer)
    db.session.flush()
    keys, application_ids = [], []
    for i in range(count):
        _employer, user = _common.new_employer(i, password_hash)
        key = ec.generate_private_key(ec.SECP256R1())
        application = service.create_application(user=user, key_source=KeySource.CSR)
        service.attach_request(user=user, application=application, data=_csr_pem(key))
        # Sealed PDFs are verified on upload; the renewal tests record the verdicts the same way.
        db.session.add_all(
            Document(
                application_id=application.id,
                doc_type=doc_type,
                filename=f"{doc_type.value}.pdf",
                media_type="application/pdf",
                size=100,
                sha256=secrets.token_hex(32),
                verdict=SealVerdict.VERIFIED,
                verdict_detail="verified",
            )
            for doc_type in DocumentType
        )
        db.session.flush()
        db.session.expire(application, ["documents"])
        service.submit_application(user=user, application=application)
        service.approve_application(officer=officer, application=application, dual_control=False)
        keys.append((user.username, key))
        application_ids.append(application.id)
        if i % 50 == 49:
            db.session.commit()
    db.session.commit()
    # Short-lived certificates, so that their renewal window is open now.
    profile = dataclasses.replace(
        service.EmployerProfile.from_settings(settings_of(app)), validity_days=SEED_VALIDITY_DAYS
    )
    employers = []
    for start in range(0, count, 50):
        issued = service.issue_certificates(
            applications=sorted(
                service.applications_by_id(application_ids[start : start + 50]),
                key=lambda application: application.id,
            ),
            token=app_token(),
            profile=profile,
            commit=db.session.commit,
            actor="bench",
        )
        for (username, key), result in zip(keys[start : start + 50], issued, strict=True):
            if result.certificate is None or result.certificate.der is None:
                raise SystemExit(f"seeding failed: {result.error}")
            new_key = ec.generate_private_key(ec.SECP256R1())
            employers.append(
                Employer(
                    username=username,
                    serial=result.certificate.serial,
                    certificate=x509.load_der_x509_certificate(result.certificate.der),
                    key=key,
                    new_key=new_key,
                    body=json.dumps({"csr_pem": _csr_pem(new_key).decode()}).encode(),
                )
            )
        db.session.expunge_all()
    return employers


def _bare_worker(overrides: dict[str, Any], threads: int, connection: Connection) -> None:
    """A process signing the renewal's certificate with the issuing key, ``n`` at a time
    (``n`` from ``connection``), in ``threads`` threads; answers each batch when done."""
    from ca_service.app import create_app
    from ca_service.authorities import profiles
    from ca_service.authorities.service import (
        ISSUING_SLUG,
        current_certificate,
        get_authority,
        load_certificate,
    )
    from ca_service.authorities.signing import hash_for, new_serial
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token
    from ca_service.issuance import service
    from hsm import KeyAlgorithm

    app = create_app(overrides)
    with app.app_context():
        profile = service.EmployerProfile.from_settings(settings_of(app))
        issuer = get_authority(ISSUING_SLUG)
        issuer_cert = load_certificate(current_certificate(issuer))
        token = app_token()
        key, algorithm = token.private_key(issuer.key_label), KeyAlgorithm(issuer.key_algorithm)
        hash_algorithm = hash_for(algorithm)
    public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    subject = profiles.employer_subject(
        country=profile.country, legal_name="Bench Employer Co., Ltd.", registration_number="BENCH"
    )

    def sign_once(_: int) -> None:
        now = dt.datetime.now(dt.UTC)
        profiles.employer_builder(
            subject=subject,
            public_key=public_key,
            issuer=issuer_cert,
            issuer_slug=ISSUING_SLUG,
            urls=profile.urls,
            non_repudiation=profile.non_repudiation,
        ).serial_number(new_serial()).not_valid_before(now).not_valid_after(
            now + dt.timedelta(days=profile.validity_days)
        ).sign(key, hash_algorithm)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(sign_once, range(10)))  # PKCS#11 sessions, key handle
        connection.send("ready")
        while (count := connection.recv()) is not None:
            cpu = time.process_time()
            list(pool.map(sign_once, range(count)))
            connection.send(time.process_time() - cpu)
    token.close()


class BareSigners:
    """The bare-signing processes, started once per case and driven round by round."""

    def __init__(self, env: _common.BenchEnv, processes: int, threads: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes = []
        per_process = max(1, threads // processes)
        for _ in range(processes):
            parent, child = context.Pipe()
            process = context.Process(
                target=_bare_worker, args=(env.overrides, per_process, child), daemon=True
            )
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)
        for pipe in self.pipes:
            if pipe.recv() != "ready":
                raise SystemExit("a bare signer did not start")

    def sign(self, count: int) -> tuple[float, float]:
        """(seconds, CPU seconds of the processes) for ``count`` signatures shared between
        the processes."""
        shares = [
            count // len(self.pipes) + (i < count % len(self.pipes)) for i in range(len(self.pipes))
        ]
        started = time.perf_counter()
        for pipe, share in zip(self.pipes, shares, strict=True):
            pipe.send(share)
        cpu = sum(float(pipe.recv()) for pipe in self.pipes)
        return time.perf_counter() - started, cpu

    def stop(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for process in self.processes:
            process.join(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(
    env: _common.BenchEnv, args: argparse.Namespace, log: Path
) -> Iterator[tuple[str, int]]:
    """``ca-service serve`` on a free loopback port, as bench/ocsp.py runs it: (its base URL,
    its process group)."""
    port = _free_port()
    command = [
        sys.executable, "-m", "ca_service", "serve", "--port", str(port),
        "--workers", str(args.workers), "--threads", str(args.threads), "--no-access-log",
    ]  # fmt: skip
    if args.worker:
        command += ["--worker", args.worker]
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command, env=env.environ(), stdin=subprocess.DEVNULL, stdout=sink,
            stderr=subprocess.STDOUT, process_group=0,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise SystemExit(f"server exited: {log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/v1/openapi.json", timeout=2):  # noqa: S310
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"server did not start: {log.read_text()}")
        yield url, process.pid
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def _sign_in(url: str, employers: list[Employer], clients: int) -> None:
    """A bearer token for each employer, by certificate login as ``ca-client login`` does."""
    from ca_client import remote

    service = remote.Service(url)

    def sign_in(employer: Employer) -> None:
        nonce = service.new_challenge("login")
        signature = remote.sign_challenge(employer.key, "login", nonce)
        _, answer = service.post(
            "/api/v1/auth/certificate",
            remote.answer_body(nonce, [employer.certificate], signature),
        )
        employer.token = str(answer["token"])

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(sign_in, employers))


class RenewalClients:
    """``clients`` threads posting renewals, each on its own kept-alive connection (opened
    afresh for each round, so that no idle connection is closed under a request)."""

    def __init__(self, url: str, clients: int) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.pool = ThreadPoolExecutor(clients)
        self.local = threading.local()
        self.generation = 0
        self.answers: list[tuple[Employer, int, bytes]] = []
        self.latencies: list[float] = []

    def _renew(self, employer: Employer) -> tuple[Employer, int, bytes, float]:
        if getattr(self.local, "generation", -1) != self.generation:
            if getattr(self.local, "connection", None) is not None:
                self.local.connection.close()
            self.local.connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
            self.local.generation = self.generation
        connection: http.client.HTTPConnection = self.local.connection
        started = time.perf_counter()
        connection.request(
            "POST",
            f"/api/v1/certificates/{employer.serial}/renewal",
            body=employer.body,
            headers={
                "Authorization": f"Bearer {employer.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        response = connection.getresponse()
        data = response.read()
        return employer, response.status, data, time.perf_counter() - started

    def renew(self, employers: list[Employer], server: int) -> tuple[float, float]:
        """(seconds, CPU seconds of the server's process group) for renewing ``employers``
        with all the clients."""
        self.generation += 1
        cpu = _common.group_cpu_seconds(server)
        started = time.perf_counter()
        results = list(self.pool.map(self._renew, employers))
        seconds = time.perf_counter() - started
        cpu = _common.group_cpu_seconds(server) - cpu
        for employer, status, data, latency in results:
            self.answers.append((employer, status, data))
            self.latencies.append(latency)
        return seconds, cpu

    def check(self) -> None:
        """Every renewal answered 201 with a certificate for its new key, renewing its old one."""
        for employer, status, data in self.answers:
            if status != 201:
                raise SystemExit(f"renewal of {employer.serial}: {status} {data[:300]!r}")
            body = json.loads(data)
            new = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
            if new.public_key() != employer.new_key.public_key():
                raise SystemExit(f"renewal of {employer.serial}: certificate for another key")
            if new.serial_number == employer.certificate.serial_number:
                raise SystemExit(f"renewal of {employer.serial}: same serial")

    def close(self) -> None:
        self.pool.shutdown()


def measure(env: _common.BenchEnv, args: argparse.Namespace, log: Path) -> dict[str, float]:
    from ca_service.audit.service import ensure_audit_key
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token
    from hsm import KeyAlgorithm

    with _common.app_context(env) as app:
        # As after `ca-service init`: audit checkpoints are signed every 100 events.
        ensure_audit_key(app_token(), KeyAlgorithm(settings_of(app)["AUDIT_KEY_ALGORITHM"]))
        employers = _seed(app, args.n + WARM_RENEWALS)
        app_token().close()
    warm, measured = employers[:WARM_RENEWALS], employers[WARM_RENEWALS:]
    # All the clients sign in from 127.0.0.1, where employers come from addresses of their own.
    env = dataclasses.replace(
        env, overrides={**env.overrides, "LOGIN_RATE_LIMIT": "1000000 per minute"}
    )
    bare = BareSigners(env, args.workers, args.clients)
    try:
        with serving(env, args, log) as (url, server):
            _sign_in(url, employers, args.clients)
            clients = RenewalClients(url, args.clients)
            try:
                clients.renew(warm, server)
                bare.sign(WARM_RENEWALS)
                clients.answers.clear()
                clients.latencies.clear()
                renewing, signing = [0.0, 0.0], [0.0, 0.0]  # seconds, CPU seconds
                for number, start in enumerate(range(0, args.n, args.round)):
                    chunk = measured[start : start + args.round]
                    turns = [
                        (renewing, lambda chunk=chunk: clients.renew(chunk, server)),
                        (signing, lambda chunk=chunk: bare.sign(len(chunk))),
                    ]
                    for totals, run in turns if number % 2 == 0 else turns[::-1]:
                        seconds, cpu = run()
                        totals[0] += seconds
                        totals[1] += cpu
                clients.check()
                latencies = sorted(clients.latencies)
            finally:
                clients.close()
    finally:
        bare.stop()
    return {
        "renewals": args.n / renewing[0],
        "bare": args.n / signing[0],
        "renewal_cpu": renewing[1] / args.n * 1000,
        "bare_cpu": signing[1] / args.n * 1000,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=400, help="renewals (and signatures) per case")
    parser.add_argument("--round", type=int, default=50, help="renewals per round")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=2, help="`ca-service serve --workers`")
    parser.add_argument(
        "--threads", type=int, default=SERVE_THREADS, help="`ca-service serve --threads`"
    )
    parser.add_argument(
        "--worker", choices=["event-loop", "threads", "sync"], help="`ca-service serve --worker`"
    )
    parser.add_argument("--postgres", metavar="URL", help="also on a scratch database there")
    parser.add_argument(
        "--no-sqlite", action="store_true", help="only PostgreSQL (with --postgres)"
    )
    parser.add_argument(
        "--keys", default=",".join(GOALS), help=f"issuing keys, of {', '.join(GOALS)}"
    )
    parser.add_argument("--quick", action="store_true", help="-n 100 --round 25")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args()
    if args.quick:
        args.n, args.round = 100, 25
    keys = args.keys.split(",")
    if not keys or set(keys) - set(GOALS):
        parser.error(f"--keys: choose from {', '.join(GOALS)}")
    databases = [] if args.no_sqlite else [("SQLite", None)]
    databases += [("PostgreSQL", args.postgres)] if args.postgres else []
    if not databases:
        parser.error("--no-sqlite needs --postgres")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-renewal-") as tmp:
        conf, first_label = _common.make_token(Path(tmp))
        cases = [(a, g, d, u) for a, g in GOALS.items() if a in keys for d, u in databases]
        for number, (algorithm, goal, db_name, url) in enumerate(cases):
            var_dir = Path(tmp)
            label = first_label if number == 0 else _common.add_token(conf)
            os.environ["CA_ISSUING_KEY_ALGORITHM"] = algorithm
            scratch = _common.scratch_postgres(url) if url else nullcontext(None)
            with scratch as pg_url:
                database_url = pg_url or f"sqlite:///{var_dir / f'case-{number}.db'}"
                env = _common.prepare(var_dir, conf, label, database_url)
                result = measure(env, args, var_dir / f"server-{number}.log")
            ratio = result["renewals"] / result["bare"]
            rows.append(
                {
                    "issuing key": algorithm,
                    "database": db_name,
                    "renewals/s": f"{result['renewals']:.0f}",
                    "p50 ms": f"{result['p50']:.1f}",
                    "p99 ms": f"{result['p99']:.1f}",
                    "bare HSM signs/s": f"{result['bare']:.0f}",
                    "ratio": f"{ratio:.0%}",
                    "server CPU ms/renewal": f"{result['renewal_cpu']:.1f}",
                    "CPU ms/bare sign": f"{result['bare_cpu']:.2f}",
                    "goal": f">= {goal:.0%} {'met' if ratio >= goal else 'MISSED'}",
                }
            )
            print(
                f"{algorithm} {db_name}: {result['renewals']:.0f} renewals/s "
                f"(p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms) vs bare "
                f"{result['bare']:.0f} signs/s ({ratio:.0%}); CPU ms per renewal (server) "
                f"{result['renewal_cpu']:.1f}, per bare signature {result['bare_cpu']:.2f}",
                flush=True,
            )
    print()
    print(_common.table(rows, list(rows[0])))
    _common.write_json(args.json, rows)
    print(
        f"\n{args.n} renewals per case from {args.clients} clients, `ca-service serve --workers "
        f"{args.workers}`; bare: {args.workers} processes, {args.clients} threads between them; "
        f"rounds of {args.round} taking turns. CPU ms: the server's processes (gunicorn and "
        "its workers; not the database server's) per renewal, the bare signers' per signature."
    )


if __name__ == "__main__":
    main()
