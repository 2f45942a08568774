"""OCSP throughput: our responder (`ca-service serve`: gunicorn, 2 workers, of the default
event-loop kind or another one with ``--worker``) against `openssl ocsp -multi 2` over the same
certificate statuses, driven by the same load.

Creates a throw-away SoftHSM token and database (SQLite; PostgreSQL too with ``--postgres URL``
— a scratch database on that server, dropped afterwards), inserts certificates of the issuing
CA (good and revoked), pre-signs their responses
(``refresh_ocsp_responses``, as `ca-service ocsp refresh` does), and writes the same statuses
as an openssl ``index.txt``. openssl's responder needs a software key: the benchmark issues it
a responder certificate signed by the issuing CA's HSM key (in the throw-away token only).

Both servers get the same request mix — POST ``application/ocsp-request``, no nonce, SHA-1
CertIDs, a rotating set of pre-built bodies: 80 % good, 10 % revoked, 10 % unknown — from
``wrk`` with a small Lua script (install it with ``apt-get install wrk``; it is a benchmark
tool, not a project dependency): 2 threads, ``--connections`` (16), one request per connection.

Both servers run on their own ports for the whole measure, are checked to answer each status
correctly and warmed with every body five times; then they take turns, only one loaded at any
moment: ``--rounds`` (5) rounds of one ``--seconds`` (3) wrk run against each, the first server
alternating between rounds (ours, openssl, openssl, ours, ours, …), so that the machine's drift
over tens of seconds falls on both alike. Per server: req/s = all its responses / all its
measured seconds; p50 and p99 of the pooled latencies of all its runs (wrk's ``done()`` hands
the whole latency histogram to the script, which prints it); errors = socket errors and non-2xx
answers, summed (any is flagged). The spread is shown too: the range of each server's per-run
req/s and of ours/openssl within each round. Before every run both servers must be idle, and
openssl's responder is restarted after each of its runs (see ``run_wrk`` for why).

Run: ``.venv/bin/python bench/ocsp.py [--rounds 5] [--seconds 3] [--connections 16]
[--worker event-loop|threads|sync] [--threads 4] [--postgres URL]``.
Goal (issue #4): our throughput >= 1.5x openssl's, with p99 <= 10 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import _common
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

GOOD, REVOKED, UNKNOWN = 400, 50, 50  # distinct serials per status
OCSP_TYPE = "application/ocsp-request"
BODIES = 200  # distinct request bodies the load generator rotates through

LUA = """
local bodies = {}
local count = %(count)d
function init(args)
  for i = 1, count do
    local f = io.open(string.format("%(dir)s/req-%%04d.der", i - 1), "rb")
    bodies[i] = f:read("*all")
    f:close()
  end
end
local n = 0
function request()
  n = n %% count + 1
  -- One request per connection, as most OCSP clients do: OpenSSL 3.0's responder stops
  -- answering wrk on a kept-alive connection, so both servers get "Connection: close".
  return wrk.format("POST", "/ocsp", {
    ["Content-Type"] = "application/ocsp-request",
    ["Connection"] = "close",
  }, bodies[n])
end
function done(summary, latency, requests)
  -- The whole latency histogram, so that runs can be pooled before taking percentiles:
  -- latency(i) is the i-th distinct latency (microseconds) and how many requests took it.
  local hist = {}
  for i = 1, #latency do
    local us, n = latency(i)
    hist[i] = string.format("[%%d,%%d]", us, n)
  end
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"errors": %%d, "status": %%d, "hist": [%%s]}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, table.concat(hist, ",")))
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serial() -> int:
    return secrets.randbits(159) | (1 << 158)


def populate(env: _common.BenchEnv) -> tuple[list[int], list[int], list[int], x509.Certificate]:
    """Insert good and revoked certificates, pre-sign their responses; returns the serials
    (good, revoked, unknown) and the issuing CA certificate."""
    from ca_service.authorities.service import (
        ISSUING_SLUG,
        current_certificate,
        get_authority,
        load_certificate,
    )
    from ca_service.db import db, utcnow
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token
    from ca_service.models import Certificate
    from ca_service.revocation.ocsp import refresh_ocsp_responses, response_lifetime

    good = [_serial() for _ in range(GOOD)]
    revoked = [_serial() for _ in range(REVOKED)]
    unknown = [_serial() for _ in range(UNKNOWN)]
    with _common.app_context(env) as app:
        issuer = get_authority(ISSUING_SLUG)
        now = utcnow()
        rows = [
            {
                "issuer_id": issuer.id,
                "serial": format(serial, "x"),
                "kind": "end_entity",
                "status": "issued",
                "subject": "CN=bench",
                "not_before": now - dt.timedelta(days=1),
                "not_after": now + dt.timedelta(days=300),
                "der": b"\x30\x00",  # never parsed by the responder
                "created_at": now,
                "revoked_at": now - dt.timedelta(hours=1) if serial in revoked else None,
                "revocation_reason": "keyCompromise" if serial in revoked else None,
            }
            for serial in good + revoked
        ]
        db.session.execute(sa.insert(cast("sa.Table", Certificate.__table__)), rows)
        db.session.commit()
        settings = settings_of(app)
        report = refresh_ocsp_responses(
            token=app_token(),
            settings=settings,
            margin=response_lifetime(settings) / 2,
            commit=db.session.commit,
            actor="bench",
        )
        db.session.commit()
        print(f"pre-signed {report.signed} responses", file=sys.stderr)
        issuing = load_certificate(current_certificate(issuer))
    return good, revoked, unknown, issuing


def openssl_responder_files(
    env: _common.BenchEnv, directory: Path, good: list[int], revoked: list[int]
) -> dict[str, Path]:
    """index.txt with the same statuses, and a software-key responder certificate signed by the
    issuing CA's HSM key."""
    from ca_service.authorities import profiles
    from ca_service.authorities.service import (
        ISSUING_SLUG,
        current_certificate,
        get_authority,
        load_certificate,
    )
    from ca_service.authorities.signing import hash_for
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token
    from hsm import KeyAlgorithm

    with _common.app_context(env) as app:
        issuer = get_authority(ISSUING_SLUG)
        issuing = load_certificate(current_certificate(issuer))
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        responder = (
            profiles.ocsp_responder_builder(
                subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "openssl bench")]),
                public_key=key.public_key(),
                issuer=issuing,
                issuer_slug=ISSUING_SLUG,
                urls=profiles.PublicUrls(settings_of(app).public_base_url),
            )
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(
                app_token().private_key(issuer.key_label),
                hash_for(KeyAlgorithm(issuer.key_algorithm)),
            )
        )
    files = {
        "index": directory / "index.txt",
        "rsigner": directory / "responder.pem",
        "rkey": directory / "responder.key",
        "ca": directory / "issuing.pem",
    }
    expiry = (now + dt.timedelta(days=300)).strftime("%y%m%d%H%M%SZ")
    revoked_at = (now - dt.timedelta(hours=1)).strftime("%y%m%d%H%M%SZ")

    def hex_serial(serial: int) -> str:
        text = format(serial, "X")
        return text if len(text) % 2 == 0 else "0" + text  # as openssl's BN_bn2hex writes it

    lines = [f"V\t{expiry}\t\t{hex_serial(s)}\tunknown\t/CN=good-{i}" for i, s in enumerate(good)]
    lines += [
        f"R\t{expiry}\t{revoked_at},keyCompromise\t{hex_serial(s)}\tunknown\t/CN=revoked-{i}"
        for i, s in enumerate(revoked)
    ]
    files["index"].write_text("\n".join(lines) + "\n")
    (directory / "index.txt.attr").write_text("unique_subject = no\n")
    files["rsigner"].write_bytes(responder.public_bytes(serialization.Encoding.PEM))
    files["rkey"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files["ca"].write_bytes(issuing.public_bytes(serialization.Encoding.PEM))
    return files


def request_bodies(
    directory: Path,
    issuing: x509.Certificate,
    good: list[int],
    revoked: list[int],
    unknown: list[int],
) -> list[tuple[str, bytes]]:
    """BODIES pre-built requests (80 % good, 10 % revoked, 10 % unknown), written as files."""
    # By hash: OCSPRequestBuilder.add_certificate wants the certificate, we have serials.
    name_hash = hashes.Hash(hashes.SHA1())  # noqa: S303
    name_hash.update(issuing.subject.public_bytes())
    key_bits = issuing.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    key_hash = hashes.Hash(hashes.SHA1())  # noqa: S303
    key_hash.update(key_bits)
    issuer_name_hash, issuer_key_hash = name_hash.finalize(), key_hash.finalize()
    bodies = []
    for i in range(BODIES):
        kind, pool = (
            ("unknown", unknown)
            if i % 10 == 9
            else ("revoked", revoked)
            if i % 10 == 8
            else ("good", good)
        )
        serial = pool[i % len(pool)]
        body = (
            ocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(
                issuer_name_hash,
                issuer_key_hash,
                serial,
                hashes.SHA1(),  # noqa: S303
            )
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        (directory / f"req-{i:04d}.der").write_bytes(body)
        bodies.append((kind, body))
    return bodies


def warm_up(url: str, bodies: list[tuple[str, bytes]], rounds: int = 5) -> None:
    """Sequential requests first (worker imports, PKCS#11 sessions, database pools), each body
    several times so that every worker has seen it: the run measures the steady state, not
    each worker's first look at each certificate."""
    for i in range(rounds * len(bodies)):
        request = urllib.request.Request(  # noqa: S310  (loopback URL built here)
            f"{url}/ocsp", data=bodies[i % len(bodies)][1], headers={"Content-Type": OCSP_TYPE}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()


def check_answers(url: str, bodies: list[tuple[str, bytes]]) -> None:
    """One request of each kind: the server answers what the database says."""
    expected = {
        "good": ocsp.OCSPCertStatus.GOOD,
        "revoked": ocsp.OCSPCertStatus.REVOKED,
        "unknown": ocsp.OCSPCertStatus.UNKNOWN,
    }
    seen = set()
    for kind, body in bodies:
        if kind in seen:
            continue
        seen.add(kind)
        request = urllib.request.Request(  # noqa: S310  (loopback URL built here)
            f"{url}/ocsp", data=body, headers={"Content-Type": "application/ocsp-request"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            answer = ocsp.load_der_ocsp_response(response.read())
        if answer.certificate_status is not expected[kind]:
            raise SystemExit(f"{url} answered {answer.certificate_status} for a {kind} serial")


def wait_for(url: str, body: bytes, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()}")
        try:
            request = urllib.request.Request(  # noqa: S310  (loopback URL built here)
                f"{url}/ocsp", data=body, headers={"Content-Type": "application/ocsp-request"}
            )
            with urllib.request.urlopen(request, timeout=2):  # noqa: S310
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server did not start: {log.read_text()}")


def _processes(pgid: int) -> dict[int, float]:
    """The live processes of a process group: pid -> CPU seconds used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, …
        if int(fields[2]) == pgid and fields[0] != "Z":
            found[int(entry)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return found


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server we started and its workers (`openssl ocsp -multi` ignores TERM), and wait
    until none of them is left (so that the port is free and nothing of it runs on)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _processes(process.pid):
        if time.monotonic() > deadline:
            raise SystemExit(f"processes of group {process.pid} outlived SIGKILL")
        time.sleep(0.02)


@dataclass
class Server:
    """A server we start in its own process group (so that its workers stop with it), and the
    wrk runs against it."""

    name: str
    command: list[str]
    port: int
    environ: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, bodies: list[tuple[str, bytes]], warm_rounds: int) -> None:
        """Start it, check its answers, warm it."""
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                self.command,
                env=self.environ,
                stdin=subprocess.DEVNULL,
                # openssl logs every connection; a busy log would slow it down unfairly.
                stdout=subprocess.DEVNULL if self.name == "openssl" else sink,
                stderr=subprocess.STDOUT if self.name == "ours" else sink,
                process_group=0,
            )
        wait_for(self.url, bodies[0][1], self.process, self.log)
        check_answers(self.url, bodies)
        warm_up(self.url, bodies, warm_rounds)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def cpu_seconds(self) -> float:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return sum(_processes(self.process.pid).values())


IDLE_CPU = 0.15  # share of one core above which a server not being driven counts as busy


def ensure_idle(servers: list[Server], seconds: float = 0.5) -> None:
    """Before a run: neither server may be working (the one not driven must not compete with the
    one driven, nor may a stuck worker of the last run). Also the pause between runs in which
    the last one's in-flight requests end."""
    time.sleep(0.1)
    before = [server.cpu_seconds() for server in servers]
    time.sleep(seconds)
    for server, cpu in zip(servers, before, strict=True):
        busy = (server.cpu_seconds() - cpu) / seconds
        if busy > IDLE_CPU:
            raise SystemExit(
                f"{server.name} used {busy:.0%} of a core while not driven (a stuck worker?): "
                f"the next run would not be measured on an otherwise idle pair; see {server.log}"
            )


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, Any]:
    # When wrk stops it closes its connections wherever they are, some of them accepted (or
    # queued in the listen backlog) but before it wrote the request. Our server just closes
    # those. OpenSSL 3.0's responder worker that reads EOF before the request line spins on that
    # connection for ever (100 % of a core) and answers nothing more (upstream:
    # openssl/openssl#31129): the next run against it then gets no answer at all, and the
    # spinning workers would also steal the CPU of our next run. Killing only its workers is not
    # enough — `-multi` respawns them (after a second's pause each) and the new ones accept the
    # dead connections still queued on the inherited listening socket and spin in turn (tried:
    # stuck again at the third of five renewals). So measure() restarts openssl's responder,
    # listening socket included, after each of its runs, and ensure_idle checks that both
    # servers are idle before each run. The requests cut off when wrk stops are in no count
    # (wrk reports no error for them), for either server.
    proc = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if result["requests"] == 0:
        raise SystemExit(f"no answer from {url} in {seconds} s: {proc.stdout}")
    return result


def percentile(histogram: dict[int, int], p: float) -> int:
    """Computed as wrk's ``latency:percentile(p)`` is (stats_percentile): the smallest latency
    that at least C's round(p % of the count + 0.5) requests took no longer than. The histogram
    is wrk's own, samples its stats_correct adds for a slow response included, so that one run's
    pooled percentiles are the ones wrk reports for it."""
    rank = math.floor(p / 100 * sum(histogram.values()) + 1.0)
    total = 0
    for us in sorted(histogram):
        total += histogram[us]
        if total >= rank:
            return us
    return 0


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """All runs against one server as one: requests over measured seconds, percentiles of the
    pooled latency histogram, errors summed."""
    histogram: Counter[int] = Counter()
    for run in runs:
        for us, count in run["hist"]:
            histogram[us] += count
    rates = [run["rps"] for run in runs]
    return {
        "rps": sum(run["requests"] for run in runs)
        / (sum(run["duration_us"] for run in runs) / 1e6),
        "rps_range": (min(rates), max(rates)),
        "p50_us": percentile(histogram, 50),
        "p90_us": percentile(histogram, 90),
        "p99_us": percentile(histogram, 99),
        "errors": sum(run["errors"] for run in runs),
        "status": sum(run["status"] for run in runs),
    }


def measure(
    backend: str,
    database_url: str,
    token: tuple[Path, Path, str],
    args: Any,
    latencies: list[dict[str, Any]] | None = None,
) -> list[dict[str, str]]:
    """Both servers on one backend, taking turns; the table rows."""
    var_dir, conf, label = token
    env = _common.prepare(var_dir, conf, label, database_url)
    work = var_dir / f"ocsp-{backend}"
    work.mkdir()
    good, revoked, unknown, issuing = populate(env)
    files = openssl_responder_files(env, work, good, revoked)
    bodies = request_bodies(work, issuing, good, revoked, unknown)
    script = work / "post.lua"
    script.write_text(LUA % {"count": len(bodies), "dir": str(work)})

    environ = env.environ()
    environ["CA_LOG_LEVEL"] = "WARNING"
    ours_port, openssl_port = _free_port(), _free_port()
    ours = Server(
        "ours",
        [
            sys.executable,
            "-m",
            "ca_service",
            "serve",
            "--port",
            str(ours_port),
            "--workers",
            "2",
            "--worker",
            args.worker,
            "--threads",
            str(args.threads),
            # openssl's per-connection log goes to /dev/null; ours is not written.
            "--no-access-log",
        ],
        ours_port,
        environ,
        work / "ours.log",
    )
    openssl = Server(
        "openssl",
        [
            "openssl",
            "ocsp",
            "-index",
            str(files["index"]),
            "-port",
            str(openssl_port),
            "-rsigner",
            str(files["rsigner"]),
            "-rkey",
            str(files["rkey"]),
            "-CA",
            str(files["ca"]),
            "-multi",
            "2",
            "-nmin",
            "60",
        ],
        openssl_port,
        environ,
        work / "openssl.log",
    )
    servers = [ours, openssl]
    try:
        for server in servers:
            server.start(bodies, warm_rounds=5)
        # ours, openssl, openssl, ours, ours, openssl, …
        turns = [
            (round_, server)
            for round_ in range(args.rounds)
            for server in (servers if round_ % 2 == 0 else servers[::-1])
        ]
        for turn, (round_, server) in enumerate(turns):
            ensure_idle(servers)
            run = run_wrk(server.url, script, args.seconds, args.connections)
            server.runs.append(run)
            print(
                f"{backend} round {round_ + 1} {server.name}: {run['rps']:.0f} req/s, "
                f"p50 {run['p50_us'] / 1000:.2f} ms, p99 {run['p99_us'] / 1000:.2f} ms, "
                f"{run['errors']} errors, {run['status']} non-2xx",
                file=sys.stderr,
            )
            if server is openssl and turn < len(turns) - 1:
                # A fresh responder (see run_wrk). It has nothing for requests to warm (it
                # reads the index and keys at start), so one pass over the bodies is plenty.
                openssl.stop()
                openssl.start(bodies, warm_rounds=1)
    finally:
        for server in servers:
            server.stop()

    totals = {server.name: pooled(server.runs) for server in servers}
    ratios = [o["rps"] / t["rps"] for o, t in zip(ours.runs, openssl.runs, strict=True)]
    if latencies is not None:
        latencies += [
            {
                "backend": backend,
                "server": name,
                "rps": total["rps"],
                **{f"p{p}_ms": total[f"p{p}_us"] / 1000 for p in (50, 90, 99)},
            }
            for name, total in totals.items()
        ]
    for name, total in totals.items():
        if total["errors"] or total["status"]:
            print(
                f"WARNING: {backend} {name}: {total['errors']} socket errors, "
                f"{total['status']} non-2xx answers",
                file=sys.stderr,
            )
    return [
        {
            "backend": backend,
            "server": name,
            "req/s": f"{total['rps']:.0f}",
            "req/s per run": "{:.0f}-{:.0f}".format(*total["rps_range"]),
            "p50 ms": f"{total['p50_us'] / 1000:.2f}",
            "p99 ms": f"{total['p99_us'] / 1000:.2f}",
            "errors": str(total["errors"] + total["status"]),
            "vs openssl": f"{total['rps'] / totals['openssl']['rps']:.2f}x",
            "per round": f"{min(ratios):.2f}-{max(ratios):.2f}x" if name == "ours" else "",
        }
        for name, total in totals.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of one run against each server"
    )
    parser.add_argument("--seconds", type=int, default=3, help="length of each run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--worker",
        choices=["event-loop", "threads", "sync"],
        default="event-loop",
        help="`ca-service serve --worker` (event-loop: its default without TLS)",
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="`ca-service serve --threads`: app threads"
    )
    parser.add_argument("--postgres", metavar="URL", help="also on this PostgreSQL database")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    rows: list[dict[str, str]] = []
    latencies: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ocsp-") as tmp:
        var_dir = Path(tmp)
        conf, label = _common.make_token(var_dir)
        token = (var_dir, conf, label)
        rows += measure("sqlite", f"sqlite:///{var_dir / 'ocsp.db'}", token, args, latencies)
        if args.postgres:
            url = _common.sqlalchemy_url(args.postgres)
            rows += measure("postgresql", url, token, args, latencies)
    print(_common.table(rows, list(rows[0])))
    _common.write_json(args.json, rows, latencies=latencies)
    print(
        f"\n{args.rounds} rounds of {args.seconds} s per server, taking turns. req/s: all runs'"
        " responses over their seconds; p50, p99: of all runs' latencies pooled; errors: socket"
        " errors and non-2xx answers; per round: lowest and highest ours/openssl in one round."
    )


if __name__ == "__main__":
    main()
