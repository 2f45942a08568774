"""Approvals and renewals racing across processes (issue #16, scope 1): eight client threads
send every approval and every renewal twice, at once, over HTTP to `ca-service serve` with
two gunicorn workers (two OS processes on the same database and the same SoftHSM token),
while OCSP requests that must be signed and stored come in between and a third process runs
`ca-service crl publish`. Every answer is a certificate or a clear 409 — never a 500, a 503
or a "database is locked" — and afterwards nothing is lost or duplicated: one certificate per
application and per renewal, unique serials and CRL numbers, an intact audit chain. Twenty
officers' requests approving ONE application at once give exactly one certificate.

On SQLite the same run is the "concurrent writers" test: writers queue on the write lock
(BEGIN IMMEDIATE, busy timeout) and OCSP reads that turn into writes leave their deferred
snapshot first, so no caller ever sees "database is locked".

Sizes: ``CA_TEST_RACE_ATTEMPTS`` approval and renewal attempts (default 100 on PostgreSQL,
a quarter of it on SQLite, whose writers queue one by one), bounded for CI; the issue's 200
(``CA_TEST_RACE_ATTEMPTS=200``) take about a minute on PostgreSQL. ``CA_TEST_RACE_THREADS``
client threads (default 8).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import queue
import random
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from flask import Flask
from flask.testing import FlaskClient

from ca_service.db import db
from ca_service.issuance.models import Application, ApplicationStatus
from ca_service.models import Certificate
from tests.api.conftest import request_token, token_of
from tests.auth.conftest import make_officer  # noqa: F401  (fixture used below)
from tests.auth.flows import MakeOfficer, code_at
from tests.conftest import CliInvoke, process_env, serving
from tests.issuance.conftest import (  # noqa: F401  (make_employer: a fixture)
    EmployerAccount,
    Issued,
    MakeEmployer,
    csr_pem,
    issue_employer_certificate,
    make_employer,
    submitted_application,
)
from tests.revocation.ocsp_tools import ca_certificates
from tests.test_concurrency_races import assert_nothing_lost_or_duplicated

API = "/api/v1"
ATTEMPTS = int(os.environ.get("CA_TEST_RACE_ATTEMPTS", "100"))
THREADS = int(os.environ.get("CA_TEST_RACE_THREADS", "8"))
ONE_APPLICATION_APPROVALS = 20
# Inside the 60-day renewal window of a one-year certificate, on the server's real clock.
ISSUED_DAYS_AGO = 340


@dataclass(frozen=True)
class Call:
    kind: Literal["approve", "renew", "ocsp"]
    path: str
    token: str | None = None
    body: dict[str, Any] | None = None
    target: str = ""  # what a pair races for: the application or the certificate


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


def _send(base: str, call: Call) -> Answer:
    headers = {"Authorization": f"Bearer {call.token}"} if call.token else {}
    data = None
    if call.body is not None:
        data = json.dumps(call.body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(  # noqa: S310  (the loopback URL of the test server)
        base + call.path, data=data, headers=headers, method="POST" if data or call.token else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            return Answer(response.status, response.read().decode(errors="replace"))
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read().decode(errors="replace"))


def _send_all(base: str, calls: list[Call], threads: int) -> list[tuple[Call, Answer]]:
    """Send ``calls`` from ``threads`` threads, each taking the next call as soon as it is
    free (a pair of adjacent calls is sent at once)."""
    todo: queue.SimpleQueue[Call] = queue.SimpleQueue()
    for call in calls:
        todo.put(call)
    answers: list[tuple[Call, Answer]] = []
    broken: list[BaseException] = []

    def work() -> None:
        try:
            while True:
                try:
                    call = todo.get_nowait()
                except queue.Empty:
                    return
                answers.append((call, _send(base, call)))
        except BaseException as exc:  # reported below
            broken.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert broken == [], broken
    return answers


@pytest.fixture
def server(app: Flask, app_overrides: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    """`ca-service serve --workers 2` (two processes, gunicorn threads) on the test database."""
    log = tmp_path / "server.log"
    with serving(app_overrides, log, "--threads", str(max(THREADS // 2, 2))) as (base, _):
        yield base
    assert " 500 " not in log.read_text()  # nothing the clients missed either


_addresses = itertools.count(1)


def _token(app: Flask, username: str, password: str, totp_code: str | None = None) -> str:
    """A bearer token, asked for from an address of its own (sign-ins are rate-limited per
    address, and these are many users at once, not one guessing)."""
    n = next(_addresses)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = f"10.16.{n // 250}.{n % 250 + 1}"
    return token_of(request_token(client, username, password, totp_code))


def _officer_tokens(app: Flask, make_officer: MakeOfficer, count: int) -> list[str]:  # noqa: F811
    officers = [make_officer() for _ in range(count)]
    return [_token(app, o.user.username, o.password, code_at(o.seed)) for o in officers]


def _ocsp_get(issued: Issued, issuer: Any) -> str:
    """The RFC 5019 GET path of an OCSP request (no nonce) for ``issued``."""
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(issued.certificate, issuer, hashes.SHA1())  # noqa: S303  (RFC 5019 CertID)
        .build()
    )
    return "/ocsp/" + base64.b64encode(request.public_bytes(Encoding.DER)).decode()


def _attempts_for_backend(database_url: str) -> int:
    # SQLite serialises writers: the same run, smaller, keeps the module bounded.
    return ATTEMPTS if not database_url.startswith("sqlite") else max(ATTEMPTS // 4, 8)


def test_approvals_and_renewals_racing_across_processes_lose_and_duplicate_nothing(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    server: str,
    app_overrides: dict[str, Any],
    database_url: str,
    make_employer: MakeEmployer,  # noqa: F811
    make_officer: MakeOfficer,  # noqa: F811
) -> None:
    per_kind = _attempts_for_backend(database_url) // 4  # targets of each kind, tried twice
    tokens = _officer_tokens(app, make_officer, 2)
    approver = make_officer().user.id  # of the first certificates
    first = [
        issue_employer_certificate(app, make_employer(), approver, days_ago=ISSUED_DAYS_AGO)
        for _ in range(per_kind)
    ]
    applicants = [make_employer() for _ in range(per_kind)]
    applications = [submitted_application(app, account) for account in applicants]
    employer_tokens = {
        issued.serial: _token(app, issued.account.username, issued.account.password)
        for issued in first
    }
    superseded = {issued.serial for issued in first[::2]}
    _root, issuing, _responder = ca_certificates(app)

    pairs: list[tuple[Call, Call]] = []
    for application_id in applications:
        path = f"{API}/review/{application_id}/approve"
        target = f"application {application_id}"
        pairs.append(
            (
                Call("approve", path, tokens[0], {}, target),
                Call("approve", path, tokens[1], {}, target),
            )
        )
    for issued in first:
        path = f"{API}/certificates/{issued.serial}/renewal"
        target = f"certificate {issued.serial}"
        flags = {"supersede": issued.serial in superseded}
        pairs.append(
            tuple(  # type: ignore[arg-type]
                Call(
                    "renew",
                    path,
                    employer_tokens[issued.serial],
                    {"csr_pem": csr_pem(ec.generate_private_key(ec.SECP256R1())), **flags},
                    target,
                )
                for _ in range(2)
            )
        )
    random.Random(16).shuffle(pairs)  # noqa: S311  (a test plan, not a secret)
    # Between the pairs: OCSP requests whose stored answers are stale (signed 340 days ago),
    # so the responder signs and stores a new one: a read that turns into a write.
    ocsp_calls = [Call("ocsp", _ocsp_get(issued, issuing)) for issued in first]
    calls: list[Call] = []
    for index, (one, other) in enumerate(pairs):
        calls += [one, other]
        if index < len(ocsp_calls):
            calls.append(ocsp_calls[index])

    # A third process publishes CRLs while the server's workers revoke and publish.
    publisher = subprocess.Popen(
        [sys.executable, "-m", "ca_service", "crl", "publish"],
        env=process_env(app_overrides),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        answers = _send_all(server, calls, THREADS)
    finally:
        published, _ = publisher.communicate(timeout=120)
    assert publisher.returncode == 0, published.decode()

    unexpected = [
        (call.kind, call.target, answer.status, answer.body[:300])
        for call, answer in answers
        if answer.status not in (200, 201, 409) or "locked" in answer.body
    ]
    assert unexpected == []
    assert all(a.status == 200 for c, a in answers if c.kind == "ocsp")
    outcomes: dict[str, list[int]] = {}
    for call, answer in answers:
        if call.kind != "ocsp":
            outcomes.setdefault(call.target, []).append(answer.status)
    assert len(outcomes) == len(pairs)
    wins = {target: sorted(statuses) for target, statuses in outcomes.items()}
    assert all(s in ([200, 409], [201, 409]) for s in wins.values()), wins

    published_again = cli("crl", "publish")  # the newest CRL lists every revocation
    assert published_again.exit_code == 0, published_again.output
    assert_nothing_lost_or_duplicated(
        app, list(zip(applicants, applications, strict=True)), first, superseded
    )
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output


def test_twenty_approvals_of_one_application_at_once_issue_one_certificate(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    server: str,
    make_employer: MakeEmployer,  # noqa: F811
    make_officer: MakeOfficer,  # noqa: F811
) -> None:
    account = make_employer()
    application_id = submitted_application(app, account)
    tokens = _officer_tokens(app, make_officer, ONE_APPLICATION_APPROVALS)
    path = f"{API}/review/{application_id}/approve"
    barrier = threading.Barrier(ONE_APPLICATION_APPROVALS)
    answers: list[Answer] = []

    def approve(token: str) -> None:
        barrier.wait(timeout=60)
        answers.append(_send(server, Call("approve", path, token, {})))

    threads = [threading.Thread(target=approve, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a.status for a in answers) == [200] + [409] * (ONE_APPLICATION_APPROVALS - 1), [
        (a.status, a.body[:200]) for a in answers
    ]
    refusals = {json.loads(a.body)["error"]["code"] for a in answers if a.status == 409}
    assert refusals == {"conflict"}
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        assert application.status is ApplicationStatus.ISSUED
        certificates = db.session.scalars(
            sa.select(Certificate.id).where(Certificate.employer_id == account.employer_id)
        ).all()
        assert certificates == [application.certificate_id]
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output
