"""The OCSP fast path and the worker's memory of answers: what is answered without Flask, the
database or the HSM, that its responses equal the views', and that revocations still show."""

from __future__ import annotations

import base64
import datetime as dt
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import Client

from ca_service.db import db, utcnow
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.models import Certificate
from ca_service.revocation import ocsp as responder_module
from ca_service.revocation import views
from ca_service.revocation.answer_cache import AnswerCache
from ca_service.revocation.fastpath import OcspFastPath
from ca_service.revocation.ocsp import OCSPAnswer, ocsp_epoch
from ca_service.revocation.service import revoke_certificate
from tests.conftest import CliInvoke, serving
from tests.revocation.conftest import MakeCertificate
from tests.revocation.ocsp_tools import (
    OCSP_REQUEST,
    assert_same_headers,
    ca_certificates,
    ocsp_request,
)
from tests.statements import counted_statements


@pytest.fixture
def statements(app: Flask) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs during the test."""
    with counted_statements(app) as seen:
        yield seen


@pytest.fixture
def no_views(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if a request reaches the Flask OCSP views."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the request reached the Flask view")

    monkeypatch.setattr(views, "answer_ocsp_request", refuse)


def _unknown_serial_request(app: Flask, nonce: bytes | None = None) -> bytes:
    """A request with the issuing CA's CertID hashes and a serial it never issued."""
    _, issuing, responder = ca_certificates(app)
    ours = ocsp.load_der_ocsp_request(ocsp_request(responder, issuing))
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        issuer_name_hash=ours.issuer_name_hash,
        issuer_key_hash=ours.issuer_key_hash,
        serial_number=0x7654321,
        algorithm=hashes.SHA1(),  # noqa: S303  (a CertID hash: it identifies)
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def _status(client: FlaskClient, body: bytes) -> ocsp.OCSPCertStatus:
    response = client.post("/ocsp", data=body, headers=OCSP_REQUEST)
    assert response.status_code == 200
    return ocsp.load_der_ocsp_response(response.data).certificate_status


def test_stored_answer_is_served_without_flask_then_from_memory(
    app: Flask,
    client: FlaskClient,
    make_certificate: MakeCertificate,
    statements: list[str],
    request: pytest.FixtureRequest,
) -> None:
    _, issuing, _ = ca_certificates(app)
    body = ocsp_request(make_certificate().certificate, issuing)
    request.getfixturevalue("no_views")

    statements.clear()
    assert _status(client, body) is ocsp.OCSPCertStatus.GOOD  # from storage, one read
    assert statements
    statements.clear()
    assert _status(client, body) is ocsp.OCSPCertStatus.GOOD  # from memory
    assert statements == []


def test_fast_path_responses_equal_the_views(
    app: Flask, client: FlaskClient, make_certificate: MakeCertificate
) -> None:
    _, issuing, _ = ca_certificates(app)
    body = ocsp_request(make_certificate().certificate, issuing)
    fast = app.wsgi_app
    assert isinstance(fast, OcspFastPath)
    flask_only = Client(fast.downstream)  # the same app without the fast path in front
    encoded = base64.b64encode(body).decode()

    for method, kwargs in (
        ("POST", {"path": "/ocsp", "data": body, "headers": OCSP_REQUEST}),
        ("GET", {"path": f"/ocsp/{encoded}"}),
    ):
        ours = client.open(method=method, **kwargs)
        theirs = flask_only.open(method=method, **kwargs)
        assert ours.status_code == theirs.status_code == 200
        assert ours.data == theirs.data
        skip = {"date", "server"}
        assert_same_headers(
            {k.lower(): v for k, v in ours.headers.items() if k.lower() not in skip},
            {k.lower(): v for k, v in theirs.headers.items() if k.lower() not in skip},
            method,
        )

    # A conditional GET goes on to Werkzeug, which answers 304 to the fast path's ETag.
    etag = client.get(f"/ocsp/{encoded}").headers["ETag"]
    again = client.get(f"/ocsp/{encoded}", headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_revocation_by_this_worker_shows_at_once(
    app: Flask, client: FlaskClient, make_certificate: MakeCertificate
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    body = ocsp_request(issued.certificate, issuing)
    assert _status(client, body) is ocsp.OCSPCertStatus.GOOD  # now remembered
    with app.app_context():
        revoke_certificate(
            token=app_token(),
            settings=settings_of(app),
            certificate=db.session.get_one(Certificate, issued.id),
            reason="keyCompromise",
            invalidity_date=None,
            actor="tests",
        )
        db.session.commit()
    assert _status(client, body) is ocsp.OCSPCertStatus.REVOKED


def test_another_workers_revocation_shows_within_the_cache_time(
    app: Flask, client: FlaskClient, make_certificate: MakeCertificate, cli: CliInvoke
) -> None:
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    body = ocsp_request(issued.certificate, issuing)
    assert _status(client, body) is ocsp.OCSPCertStatus.GOOD  # remembered by this "worker"
    # `ca-service revoke` runs in an app of its own: another worker, as far as memory goes.
    result = cli("revoke", issued.serial, "--reason", "keyCompromise")
    assert result.exit_code == 0, result.output
    revoked_at = time.monotonic()
    while _status(client, body) is not ocsp.OCSPCertStatus.REVOKED:
        # OCSP_CHANGE_CHECK_MS is 500 by default.
        assert time.monotonic() - revoked_at < 1.0, "still good after OCSP_CHANGE_CHECK_MS"
        time.sleep(0.05)


def test_unknown_serial_is_remembered_and_nonces_never(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed = []
    real = responder_module._signer_for

    def counting(*args: Any, **kwargs: Any) -> Any:
        signed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(responder_module, "_signer_for", counting)
    unknown = _unknown_serial_request(app)
    assert _status(client, unknown) is ocsp.OCSPCertStatus.UNKNOWN
    assert _status(client, unknown) is ocsp.OCSPCertStatus.UNKNOWN
    assert len(signed) == 1  # the second one came from memory

    with_nonce = _unknown_serial_request(app, nonce=b"n" * 16)
    assert _status(client, with_nonce) is ocsp.OCSPCertStatus.UNKNOWN
    assert _status(client, with_nonce) is ocsp.OCSPCertStatus.UNKNOWN
    assert len(signed) == 3  # a nonce is echoed: signed every time


def test_bad_requests_still_reach_the_views(client: FlaskClient) -> None:
    assert client.post("/ocsp", data=b"\x30" * 9000, headers=OCSP_REQUEST).status_code == 413
    wrong = client.post("/ocsp", data=b"\x30\x00", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 415
    assert client.get("/ocsp/").status_code == 404


def test_sync_workers_without_access_log_serve_ocsp_and_pages(
    app: Flask, app_overrides: dict[str, Any], make_certificate: MakeCertificate, tmp_path: Path
) -> None:
    """`serve --worker sync --no-access-log`: for behind a buffering proxy."""
    _, issuing, _ = ca_certificates(app)
    issued = make_certificate()
    log = tmp_path / "server.log"
    with serving(app_overrides, log, "--worker", "sync", "--no-access-log") as (base, _):
        for _ in range(3):  # from storage, then from memory
            request = urllib.request.Request(  # noqa: S310  (loopback URL built by serving)
                f"{base}/ocsp",
                data=ocsp_request(issued.certificate, issuing),
                headers=OCSP_REQUEST,
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                answer = ocsp.load_der_ocsp_response(response.read())
            assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
        with urllib.request.urlopen(f"{base}/auth/login", timeout=10) as page:  # noqa: S310
            assert page.status == 200
    output = log.read_text()
    assert "Using worker: sync" in output
    assert "POST /ocsp" not in output  # no access log


# -- the epoch and the memory itself -----------------------------------------------------------


def test_epoch_moves_with_committed_changes_only(
    app: Flask, make_certificate: MakeCertificate
) -> None:
    def epoch() -> int:
        with app.app_context():
            return ocsp_epoch(db.session.connection())

    before = epoch()
    issued = make_certificate()  # its responses are stored and committed
    after_issue = epoch()
    assert after_issue != before
    with app.app_context():
        revoke_certificate(
            token=app_token(),
            settings=settings_of(app),
            certificate=db.session.get_one(Certificate, issued.id),
            reason="superseded",
            invalidity_date=None,
            actor="tests",
        )
        db.session.rollback()  # never happened
    assert epoch() == after_issue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _answer(next_update: dt.datetime | None, *, reusable: bool = True) -> OCSPAnswer:
    return OCSPAnswer(b"der", next_update, None, reusable=reusable)


def test_answer_cache_keeps_reusable_answers_until_a_change_or_a_minute() -> None:
    clock = Clock()
    cache = AnswerCache(dt.timedelta(minutes=15), clock=clock)
    later = utcnow() + dt.timedelta(hours=1)
    generation = cache.generation
    cache.put(b"status", _answer(later), generation)
    cache.put(b"nonce", _answer(later, reusable=False), generation)
    cache.put(b"unsuccessful", _answer(None), generation)
    assert cache.get(b"nonce") is None
    assert cache.get(b"unsuccessful") is None
    assert cache.get(b"status") is not None
    clock.now += 60
    assert cache.get(b"status") is None

    cache.put(b"status", _answer(later), cache.generation)
    cache.clear()  # the epoch moved
    assert cache.get(b"status") is None
    # Read before the change was seen: not remembered after it.
    cache.put(b"status", _answer(later), generation)
    assert cache.get(b"status") is None


def test_answer_cache_stops_before_storage_resigns_and_is_bounded() -> None:
    clock = Clock()
    cache = AnswerCache(dt.timedelta(minutes=15), clock=clock, max_entries=2)
    lapsing = utcnow() + dt.timedelta(minutes=15, seconds=2)
    cache.put(b"lapsing", _answer(lapsing), cache.generation)
    assert cache.get(b"lapsing") is not None
    clock.now += 3
    assert cache.get(b"lapsing") is None
    cache.put(b"due", _answer(utcnow() + dt.timedelta(minutes=14)), cache.generation)
    assert cache.get(b"due") is None
    later = utcnow() + dt.timedelta(hours=1)
    for key in (b"a", b"b", b"c"):
        cache.put(key, _answer(later), cache.generation)
    assert len(cache) <= 2
    assert cache.get(b"c") is not None
