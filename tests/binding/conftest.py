"""Fixtures of the binding tests: a tax CA (``tax_ca``), the same CA trusted by the app under
test (``trusted_tax_ca``), an HTTP server for its CRLs (``crl_server``) and signed-in clients of
agency staff (``staff_client``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.models import Role
from ca_service.binding.models import TrustPurpose
from ca_service.binding.service import add_trust_anchor
from ca_service.db import db
from tests.auth.conftest import make_officer  # noqa: F401  (fixture re-exported)
from tests.auth.flows import MakeOfficer, code_at, enter_code, login
from tests.binding.tax_ca import TaxCA


@dataclass
class CrlServer:
    """A real HTTP server on a loopback port serving ``files`` by path ("/tax/root.crl").

    ``fail(path, status)`` makes a path answer with an error status, ``hang(path, seconds)``
    makes it answer only after ``seconds`` (past a fetch's timeout); ``requests`` lists the
    paths asked for, in order.
    """

    base_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def publish(self, path: str, body: bytes) -> str:
        """Serve ``body`` at ``path`` (and stop failing or hanging there); its URL."""
        self.files[path] = body
        self.statuses.pop(path, None)
        self.delays.pop(path, None)
        return self.url(path)

    def fail(self, path: str, status: int = 500) -> str:
        self.statuses[path] = status
        return self.url(path)

    def hang(self, path: str, seconds: float = 30.0) -> str:
        self.delays[path] = seconds
        return self.url(path)


def _handler(server_state: CrlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path
            server_state.requests.append(path)
            delay = server_state.delays.get(path)
            if delay is not None:
                server_state.released.wait(delay)  # the fixture's teardown ends the wait
            status = server_state.statuses.get(path)
            body = server_state.files.get(path)
            if status is None and body is None:
                status = 404
            if status is not None:
                self.send_error(status)
                return
            assert body is not None
            self.send_response(200)
            self.send_header("Content-Type", "application/pkix-crl")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a hanging answer closed the connection: expected


@pytest.fixture
def crl_server() -> Iterator[CrlServer]:
    """Serve CRLs over HTTP on 127.0.0.1 for the test (a thread; stopped afterwards)."""
    state = CrlServer(base_url="")
    server = _QuietServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="crl-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def tax_ca() -> TaxCA:
    """A fresh tax CA (root + intermediate, P-256) per test: key generation is cheap."""
    return TaxCA()


@dataclass(frozen=True)
class TrustedTaxCA:
    """A tax CA whose root and intermediate are tax trust anchors of the app under test."""

    ca: TaxCA
    root_id: int
    intermediate_id: int


@pytest.fixture
def trusted_tax_ca(app: Flask, tax_ca: TaxCA) -> TrustedTaxCA:
    """``tax_ca`` added as two tax anchors, each with the CRL URL it publishes at."""
    with app.app_context():
        root = add_trust_anchor(
            actor="tests",
            purpose=TrustPurpose.TAX,
            data=tax_ca.root_pem,
            crl_url=tax_ca.root_crl_url,
        )
        intermediate = add_trust_anchor(
            actor="tests",
            purpose=TrustPurpose.TAX,
            data=tax_ca.intermediate_pem,
            crl_url=tax_ca.intermediate_crl_url,
        )
        db.session.commit()
        return TrustedTaxCA(tax_ca, root.id, intermediate.id)


StaffClient = Callable[[Role], FlaskClient]


@pytest.fixture
def staff_client(app: Flask, make_officer: MakeOfficer) -> StaffClient:  # noqa: F811
    """A new test client signed in (password + TOTP) as a new agency user of ``role``."""

    def make(role: Role) -> FlaskClient:
        officer = make_officer(role)
        client = app.test_client()
        login(client, officer.user.username, officer.password)
        response = enter_code(client, code_at(officer.seed))
        assert response.status_code == 302, response.get_data(as_text=True)
        return client

    return make
