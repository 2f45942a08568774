"""Database faults at each statement of a revocation (issue #16, scope 2), from the JSON API
(an officer by serial), the officer console and the employer portal (forms): the n-th
statement of the request fails as when the database goes away, for every n until the request
no longer reaches it, and then its COMMIT fails. Each time the client gets a clear 503 (JSON for
the API, a translated page for the forms), never a 500; the certificate is revoked either
fully (status, reason, time, blocked key, audit event, notices, OCSP and CRL) or not at all;
the retry revokes it exactly once; the audit chain verifies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.x509 import ocsp
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ca_service.audit.models import AuditEvent
from ca_service.authorities.service import ISSUING_SLUG
from ca_service.db import db
from ca_service.models import Certificate
from ca_service.outbox.models import OutboxMessage
from ca_service.revocation.models import BlockedKey, PendingCRL
from ca_service.revocation.service import latest_crl
from tests.api.conftest import officer_token  # noqa: F401  (fixture used below)
from tests.auth.conftest import make_officer  # noqa: F401  (officer_token's fixture)
from tests.auth.flows import csrf_token
from tests.conftest import CliInvoke
from tests.issuance.conftest import (  # noqa: F401  (fixtures used by name)
    EmployerAccount,
    Issued,
    MakeEmployer,
    employer_login,
    issue_employer_certificate,
    make_employer,
    officer_client,
)
from tests.revocation.ocsp_tools import OCSP_REQUEST, ca_certificates, ocsp_request
from tests.statements import failing_commit, failing_statement

API = "/api/v1"
# Far more than a revocation runs; the loop stops at the first n the request does not reach.
MAX_STATEMENTS = 80
REASON = x509.ReasonFlags.key_compromise.value  # the longest path: the key is blocked too
SPANISH = {"Accept-Language": "es"}
SPANISH_UNAVAILABLE = "La base de datos no está disponible. Inténtelo de nuevo en breve."


@dataclass(frozen=True)
class Flow:
    """One way of revoking: the request, and how its success and its 503 look."""

    revoke: Callable[[Issued], TestResponse]
    succeeded: int  # the status of a revocation that went through
    json: bool  # whether errors are JSON (the API) or pages (the forms)


def _revoked(app: Flask, client: FlaskClient, issued: Issued) -> bool:
    """Whether the certificate is revoked, checking that it is so fully or not at all."""
    with app.app_context():
        row = db.session.get(Certificate, issued.certificate_id)
        assert row is not None
        events = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "certificate.revoked", AuditEvent.target == row.serial)
        )
        blocked = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(BlockedKey)
            .where(BlockedKey.certificate_id == row.id)
        )
        notices = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.dedupe_key.like(f"revocation:{row.id}:%"))
        )
        crl = x509.load_der_x509_crl(latest_crl(ISSUING_SLUG).der)
        pending = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(PendingCRL)
            .where(PendingCRL.issuer_id == row.issuer_id)
        )
        revoked = row.revoked_at is not None
        in_crl = crl.get_revoked_certificate_by_serial_number(int(row.serial, 16)) is not None
        facts = (row.revocation_reason, events, blocked, notices > 0, in_crl)
        if revoked:
            assert facts[:4] == (REASON, 1, 1, True), facts
            assert in_crl or pending, "neither in the newest CRL nor a CRL pending"
        else:
            assert facts == (None, 0, 0, False, False), facts
            assert row.invalidity_date is None
    _, issuing, _ = ca_certificates(app)
    answer = client.post(
        "/ocsp", data=ocsp_request(issued.certificate, issuing), headers=OCSP_REQUEST
    )
    assert answer.status_code == 200
    status = ocsp.load_der_ocsp_response(answer.data).certificate_status
    assert status is (ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD)
    return revoked


def _unavailable(flow: Flow, response: TestResponse, context: object) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code == 503, (context, body)
    if flow.json:
        assert response.get_json()["error"]["code"] == "database_unavailable", body
    else:
        assert response.mimetype == "text/html", (context, response.mimetype)
        assert SPANISH_UNAVAILABLE in body, (context, body)


def _run(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    flow: Flow,
    new_certificate: Callable[[], Issued],
) -> None:
    """Fail each statement of ``flow``'s revocation in turn, then its commit."""
    reached_end = False
    for n in range(1, MAX_STATEMENTS + 1):
        issued = new_certificate()
        with failing_statement(app, n) as failed:
            response = flow.revoke(issued)
        if not failed:
            assert response.status_code == flow.succeeded, response.get_data(as_text=True)
            assert _revoked(app, client, issued)
            reached_end = True
            break
        _unavailable(flow, response, (n, failed))
        assert not _revoked(app, client, issued), (n, failed)
        _retry_revokes_once(app, client, flow, issued, (n, failed))
    assert reached_end, f"a revocation ran more than {MAX_STATEMENTS} statements"
    assert n > 15, n  # the faults did hit the revocation's statements, one after another
    # Every statement ran: now the COMMIT fails.
    issued = new_certificate()
    with failing_commit(app) as failed_commits:
        response = flow.revoke(issued)
    assert failed_commits, "the request did not commit"
    _unavailable(flow, response, "commit")
    assert not _revoked(app, client, issued)
    _retry_revokes_once(app, client, flow, issued, "commit")
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output


def _retry_revokes_once(
    app: Flask, client: FlaskClient, flow: Flow, issued: Issued, context: object
) -> None:
    retry = flow.revoke(issued)
    assert retry.status_code == flow.succeeded, (context, retry.get_data(as_text=True))
    assert _revoked(app, client, issued), context
    again = flow.revoke(issued)
    assert again.status_code == 409, (context, again.get_data(as_text=True))
    assert _revoked(app, client, issued), context  # still exactly one event, one notice set


@pytest.fixture
def account(make_employer: MakeEmployer) -> EmployerAccount:  # noqa: F811
    return make_employer()


@pytest.mark.slow
def test_a_database_fault_in_an_api_revocation_revokes_fully_or_not_at_all(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    account: EmployerAccount,
    officer_token: Callable[[], str],  # noqa: F811
) -> None:
    headers = {"Authorization": f"Bearer {officer_token()}"}

    def revoke(issued: Issued) -> TestResponse:
        return client.post(
            f"{API}/review/certificates/{issued.serial}/revoke",
            json={"reason": REASON},
            headers=headers,
        )

    _run(
        app,
        client,
        cli,
        Flow(revoke, succeeded=200, json=True),
        lambda: issue_employer_certificate(app, account, None),
    )


@pytest.mark.slow
def test_a_database_fault_in_the_officer_console_revocation_is_a_translated_page(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    account: EmployerAccount,
    officer_client: Callable[..., FlaskClient],  # noqa: F811
) -> None:
    officer = officer_client()
    token = csrf_token(officer, "/officer/")

    def revoke(issued: Issued) -> TestResponse:
        return officer.post(
            f"/officer/certificates/{issued.serial}/revoke",
            data={"csrf_token": token, "reason": REASON},
            headers=SPANISH,
        )

    _run(
        app,
        client,
        cli,
        Flow(revoke, succeeded=302, json=False),
        lambda: issue_employer_certificate(app, account, None),
    )
    # The success is said in the officer's language too (it was English whatever the page).
    done = revoke(issue_employer_certificate(app, account, None))
    page = officer.get(done.headers["Location"], headers=SPANISH).get_data(as_text=True)
    assert "las respuestas OCSP ya lo indican" in page, page


@pytest.fixture
def unthrottled_app(app: Flask, app_overrides: dict[str, Any]) -> Iterator[Flask]:
    """Another app on the test database whose password checks are not rate-limited: the
    portal's revocation asks for the password each time, some hundred times here."""
    from ca_service.app import create_app

    other = create_app({**app_overrides, "LOGIN_RATE_LIMIT": "10000 per minute"})
    other.config["TESTING"] = True
    yield other
    with other.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.mark.slow
def test_a_database_fault_in_the_employer_portal_revocation_is_a_translated_page(
    unthrottled_app: Flask, cli: CliInvoke, account: EmployerAccount
) -> None:
    app = unthrottled_app
    client = app.test_client()
    portal = employer_login(app.test_client(), account)
    token = csrf_token(portal, "/applications/")

    def revoke(issued: Issued) -> TestResponse:
        return portal.post(
            f"/applications/{issued.application_id}/revoke",
            data={"csrf_token": token, "reason": REASON, "password": account.password},
            headers=SPANISH,
        )

    _run(
        app,
        client,
        cli,
        Flow(revoke, succeeded=302, json=False),
        lambda: issue_employer_certificate(app, account, None),
    )
