"""The OCSP layer of the event-loop worker (`revocation.fastpath.OcspAsgi`), driven as uvicorn
drives it: remembered answers from the loop, equal to the views'; everything else, body
included, on through the real WSGI bridge to the app."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from flask import Flask
from werkzeug.test import Client

from ca_service.revocation.fastpath import OcspAsgi, OcspFastPath
from ca_service.serving import event_loop_app
from tests.conftest import CliInvoke, serving
from tests.revocation.conftest import MakeCertificate
from tests.revocation.ocsp_tools import assert_same_headers, ca_certificates, ocsp_request


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def _scope(method: str, path: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    fields = {"host": "ca.test", **{k.lower(): v for k, v in headers.items()}}
    if method == "POST":
        fields.setdefault("content-length", str(len(body)))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fields.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 5000),
    }


async def _call(app: Any, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
    """One request as an ASGI server makes it: the body in two parts, a disconnect only after
    the response (as when the client waits for it)."""
    parts = [body[: len(body) // 2], body[len(body) // 2 :]]
    done = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if parts:
            return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(_scope(method, path, headers, body), receive, send)
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    return Reply(
        status=start["status"],
        headers={k.decode().lower(): v.decode() for k, v in start["headers"]},
        body=b"".join(m.get("body", b"") for m in bodies),
    )


def call(
    app: Any, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b""
) -> Reply:
    return asyncio.run(_call(app, method, path, headers or {}, body))


POST = {"Content-Type": "application/ocsp-request"}
SKIP = {"date", "server"}


@pytest.fixture
def asgi(app: Flask) -> OcspAsgi:
    layer = event_loop_app(app, threads=2)
    assert isinstance(layer, OcspAsgi)
    return layer


class Refuse:
    """A downstream that fails the test if a request reaches it."""

    async def __call__(self, *args: object) -> None:
        raise AssertionError("the request left the event loop")


def test_remembered_answers_come_from_the_loop_and_equal_the_views(
    app: Flask, asgi: OcspAsgi, make_certificate: MakeCertificate
) -> None:
    _, issuing, _ = ca_certificates(app)
    body = ocsp_request(make_certificate().certificate, issuing)
    fast = app.wsgi_app
    assert isinstance(fast, OcspFastPath)
    flask_only = Client(fast.downstream)
    get_path = f"/ocsp/{base64.b64encode(body).decode()}"

    for method, path, headers, data in (
        ("POST", "/ocsp", POST, body),
        ("GET", get_path, {}, b""),
    ):
        first = call(asgi, method, path, headers, data)  # through the bridge; remembered
        downstream, asgi.downstream = asgi.downstream, Refuse()
        try:
            second = call(asgi, method, path, headers, data)  # from the loop
        finally:
            asgi.downstream = downstream
        theirs = flask_only.open(path, method=method, headers=headers, data=data)
        expected = {k.lower(): v for k, v in theirs.headers.items() if k.lower() not in SKIP}
        for reply in (first, second):
            assert reply.status == theirs.status_code == 200
            assert reply.body == theirs.data
            ours = {k: v for k, v in reply.headers.items() if k not in SKIP}
            assert_same_headers(ours, expected, method)
        assert ocsp.load_der_ocsp_response(second.body).certificate_status is (
            ocsp.OCSPCertStatus.GOOD
        )


def test_everything_else_goes_on_with_its_body(
    app: Flask, asgi: OcspAsgi, make_certificate: MakeCertificate
) -> None:
    _, issuing, _ = ca_certificates(app)
    certificate = make_certificate().certificate
    plain = ocsp_request(certificate, issuing)
    call(asgi, "POST", "/ocsp", POST, plain)  # remembered now, for a request without a nonce

    nonce = b"fresh-nonce-0123"
    with_nonce = ocsp_request(certificate, issuing, nonce=nonce)
    reply = call(asgi, "POST", "/ocsp", POST, with_nonce)
    assert reply.status == 200
    answer = ocsp.load_der_ocsp_response(reply.body)  # the view read the replayed body
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce

    assert call(asgi, "POST", "/ocsp", {"Content-Type": "text/plain"}, plain).status == 415
    assert call(asgi, "POST", "/ocsp", POST, b"\x30" * 9000).status == 413
    assert call(asgi, "POST", "/ocsp", POST, b"\x30\x03abc").status == 200  # malformedRequest
    get_path = f"/ocsp/{base64.b64encode(plain).decode()}"
    etag = call(asgi, "GET", get_path).headers["etag"]
    assert call(asgi, "GET", get_path, {"If-None-Match": etag}).status == 304
    page = call(asgi, "GET", "/auth/login")
    assert page.status == 200
    assert b"<form" in page.body


def test_a_revocation_elsewhere_shows_within_the_check_interval(
    app: Flask, asgi: OcspAsgi, make_certificate: MakeCertificate, cli: CliInvoke
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    body = ocsp_request(issued.certificate, issuing)

    def status() -> ocsp.OCSPCertStatus:
        reply = call(asgi, "POST", "/ocsp", POST, body)
        return ocsp.load_der_ocsp_response(reply.body).certificate_status

    assert status() is ocsp.OCSPCertStatus.GOOD
    assert status() is ocsp.OCSPCertStatus.GOOD  # from the loop's memory
    result = cli("revoke", issued.serial, "--reason", "keyCompromise")  # another "worker"
    assert result.exit_code == 0, result.output
    revoked_at = time.monotonic()
    while status() is not ocsp.OCSPCertStatus.REVOKED:
        assert time.monotonic() - revoked_at < 1.0, "still good after OCSP_CHANGE_CHECK_MS"
        time.sleep(0.05)


def test_requests_waiting_for_a_due_check_share_one(
    app: Flask, asgi: OcspAsgi, make_certificate: MakeCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, issuing, _ = ca_certificates(app)
    body = ocsp_request(make_certificate().certificate, issuing)
    call(asgi, "POST", "/ocsp", POST, body)  # remembered
    checks = []
    real = asgi.fastpath.up_to_date

    def counted(ahead: float) -> bool:
        checks.append(1)
        time.sleep(0.05)  # a slow database: the others arrive while it runs
        return real(ahead)

    monkeypatch.setattr(asgi.fastpath, "up_to_date", counted)
    monkeypatch.setattr(asgi.fastpath, "_next_check", 0.0)  # a check is due
    asgi.downstream = Refuse()

    async def many() -> list[Reply]:
        return await asyncio.gather(*(_call(asgi, "POST", "/ocsp", POST, body) for _ in range(20)))

    replies = asyncio.run(many())
    assert len(checks) == 1
    assert {r.status for r in replies} == {200}
    assert len({r.body for r in replies}) == 1


def test_the_check_starts_early_and_nobody_waits_for_it_meanwhile(
    app: Flask, asgi: OcspAsgi, make_certificate: MakeCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, issuing, _ = ca_certificates(app)
    body = ocsp_request(make_certificate().certificate, issuing)
    call(asgi, "POST", "/ocsp", POST, body)  # remembered
    started, release = threading.Event(), threading.Event()
    real = asgi.fastpath.up_to_date

    def blocked(ahead: float) -> bool:
        started.set()
        assert release.wait(10)
        return real(ahead)

    monkeypatch.setattr(asgi.fastpath, "up_to_date", blocked)
    # Due in 50 ms: within the half of OCSP_CHANGE_CHECK_MS (500) that it starts early.
    monkeypatch.setattr(asgi.fastpath, "_next_check", time.monotonic() + 0.05)
    asgi.downstream = Refuse()

    async def answered_while_checking() -> Reply:
        reply = await _call(asgi, "POST", "/ocsp", POST, body)
        assert started.wait(5)  # the early check began (in its thread)
        check = asgi._check
        assert check is not None
        assert not check.done()  # answered from memory while the check still runs
        release.set()
        assert await check
        return reply

    assert asyncio.run(answered_while_checking()).status == 200
    assert not asgi.fastpath.check_due(0.2)  # the check moved the deadline on


def test_a_failed_check_leaves_the_answer_to_the_app(
    app: Flask, asgi: OcspAsgi, make_certificate: MakeCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, issuing, _ = ca_certificates(app)
    body = ocsp_request(make_certificate().certificate, issuing)
    call(asgi, "POST", "/ocsp", POST, body)
    monkeypatch.setattr(asgi.fastpath, "check_due", lambda ahead=0.0: True)
    monkeypatch.setattr(asgi.fastpath, "up_to_date", lambda ahead=0.0: False)  # database down
    reached = []
    downstream = asgi.downstream

    async def counting(*args: Any) -> None:
        reached.append(1)
        await downstream(*args)

    asgi.downstream = counting
    assert call(asgi, "POST", "/ocsp", POST, body).status == 200
    assert reached == [1]


def test_serve_runs_event_loop_workers_by_default(
    app: Flask, app_overrides: dict[str, Any], make_certificate: MakeCertificate, tmp_path: Path
) -> None:
    import urllib.request

    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    log = tmp_path / "server.log"
    with serving(app_overrides, log) as (base, _):
        for _ in range(3):
            request = urllib.request.Request(  # noqa: S310  (loopback URL built by serving)
                f"{base}/ocsp", data=ocsp_request(issued.certificate, issuing), headers=POST
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                assert "server" not in {k.lower() for k in response.headers}
                answer = ocsp.load_der_ocsp_response(response.read())
            assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    output = log.read_text()
    assert "Using worker: EventLoopWorker" in output
    assert "Control socket" not in output  # two servers on a host would share one
    assert "POST /ocsp" in output  # the access log is on by default


def test_tls_client_certificates_need_the_threads_worker(cli: CliInvoke, tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("not read: refused before")
    result = cli(
        "serve", "--tls", "--tls-cert", str(pem), "--tls-key", str(pem), "--worker", "event-loop"
    )
    assert result.exit_code != 0
    assert "TLS client certificates need --worker threads" in result.output
