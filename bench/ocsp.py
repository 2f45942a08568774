"""OCSP throughput: our responder (`ca-service serve`: gunicorn, 2 workers, of the default
event-loop kind or another one with ``--worker``) against `openssl ocsp -multi 2` over the same
certificate statuses, driven by the same load.

Creates a throw-away SoftHSM token and database (SQLite; PostgreSQL too with ``--postgres URL``
— that database's public schema is dropped and recreated, so never point it at a database you
need), inserts certificates of the issuing CA (good and revoked), pre-signs their responses
(``refresh_ocsp_responses``, as `ca-service ocsp refresh` does), and writes the same statuses
as an openssl ``index.txt``. openssl's responder needs a software key: the benchmark issues it
a responder certificate signed by the issuing CA's HSM key (in the throw-away token only).

Both servers get the same request mix — POST ``application/ocsp-request``, no nonce, SHA-1
CertIDs, a rotating set of pre-built bodies: 80 % good, 10 % revoked, 10 % unknown — from
``wrk`` with a small Lua script (install it with ``apt-get install wrk``; it is a benchmark
tool, not a project dependency).

Run: ``.venv/bin/python bench/ocsp.py [--seconds 15] [--connections 16]
[--worker event-loop|threads|sync] [--threads 4] [--postgres URL]``.
Goal (issue #4): our throughput >= 1.5x openssl's, with p99 <= 10 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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
from pathlib import Path
from typing import Any

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
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"errors": %%d, "status": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
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
    from ca_service.app import settings_of
    from ca_service.authorities.service import (
        ISSUING_SLUG,
        current_certificate,
        get_authority,
        load_certificate,
    )
    from ca_service.db import db, utcnow
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
        db.session.execute(sa.insert(Certificate.__table__), rows)
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
    from ca_service.app import settings_of
    from ca_service.authorities import profiles
    from ca_service.authorities.service import (
        ISSUING_SLUG,
        current_certificate,
        get_authority,
        load_certificate,
    )
    from ca_service.authorities.signing import hash_for
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


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server we started and its workers (`openssl ocsp -multi` ignores TERM)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, Any]:
    # One wrk run per server start: when wrk stops it drops connections mid-request, and
    # OpenSSL 3.0's responder processes then spin and answer nothing more. (The warm-up is
    # done with plain requests before, see warm_up.)
    proc = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def measure(
    backend: str, database_url: str, token: tuple[Path, Path, str], args: Any
) -> list[dict[str, str]]:
    """Both servers on one backend; the table rows."""
    var_dir, conf, label = token
    env = _common.prepare(var_dir, conf, label, database_url)
    work = var_dir / f"ocsp-{backend}"
    work.mkdir()
    good, revoked, unknown, issuing = populate(env)
    files = openssl_responder_files(env, work, good, revoked)
    bodies = request_bodies(work, issuing, good, revoked, unknown)
    script = work / "post.lua"
    script.write_text(LUA % {"count": len(bodies), "dir": str(work)})

    results: dict[str, dict[str, Any]] = {}
    ours_port, openssl_port = _free_port(), _free_port()
    servers = {
        "ours": (
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
                # openssl's per-connection log goes to /dev/null below; ours is not written.
                "--no-access-log",
            ],
            ours_port,
        ),
        "openssl": (
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
        ),
    }
    for name, (command, port) in servers.items():
        log = work / f"{name}.log"
        environ = env.environ()
        environ["CA_LOG_LEVEL"] = "WARNING"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command,
                env=environ,
                stdin=subprocess.DEVNULL,
                # openssl logs every connection; a busy log would slow it down unfairly.
                stdout=subprocess.DEVNULL if name == "openssl" else sink,
                stderr=subprocess.STDOUT if name == "ours" else sink,
                process_group=0,  # its own group, so its workers stop with it
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(url, bodies[0][1], process, log)
            check_answers(url, bodies)
            warm_up(url, bodies)
            results[name] = run_wrk(url, script, args.seconds, args.connections)
        finally:
            stop(process)
    print(json.dumps(results), file=sys.stderr)
    ours, theirs = results["ours"], results["openssl"]
    return [
        {
            "backend": backend,
            "server": name,
            "req/s": f"{r['rps']:.0f}",
            "p50 ms": f"{r['p50_us'] / 1000:.2f}",
            "p99 ms": f"{r['p99_us'] / 1000:.2f}",
            "errors": str(r["errors"] + r["status"]),
            "vs openssl": f"{r['rps'] / theirs['rps']:.2f}x",
        }
        for name, r in (("ours", ours), ("openssl", theirs))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15)
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
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    rows: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ocsp-") as tmp:
        var_dir = Path(tmp)
        conf, label = _common.make_token(var_dir)
        token = (var_dir, conf, label)
        rows += measure("sqlite", f"sqlite:///{var_dir / 'ocsp.db'}", token, args)
        if args.postgres:
            url = _common.sqlalchemy_url(args.postgres)
            rows += measure("postgresql", url, token, args)
    print(_common.table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
