"""Database faults at each statement of binding a tax-bureau certificate to an employer account
and of unbinding it (issue #16, scope 2), through the JSON API: the n-th statement of the
request fails as when the database goes away, for every n until the request no longer reaches
it, and then its COMMIT fails. Each time the client gets a clean 503 (never a 500), the binding
is there with its audit event and notices or not at all, and the retry binds (or unbinds)
exactly once."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ca_service.audit.models import AuditEvent
from ca_service.binding.models import CertificateBinding
from ca_service.db import db
from ca_service.outbox.models import OutboxMessage
from tests.api.conftest import API, ApiEmployer, api_employer  # noqa: F401  (fixture)
from tests.auth.certificates import sign
from tests.binding.conftest import CrlServer, crl_server  # noqa: F401  (fixture)
from tests.binding.test_binding import TaxWorld, bind, bind_challenge, tax  # noqa: F401  (fixture)
from tests.conftest import CliInvoke
from tests.issuance.conftest import make_employer  # noqa: F401  (api_employer's fixture)
from tests.statements import failing_commit, failing_statement

MAX_STATEMENTS = 120


def _state(app: Flask, certificate: x509.Certificate) -> tuple[bool, bool]:
    """(bound, unbound): whether a binding of the certificate is live, whether one ended;
    checking that each comes with exactly its audit event and its notices."""
    serial = format(certificate.serial_number, "x")
    with app.app_context():
        rows = db.session.scalars(
            sa.select(CertificateBinding).where(CertificateBinding.serial == serial)
        ).all()
        assert len(rows) <= 1, rows
        row = rows[0] if rows else None

        def events(action: str) -> int:
            return len(
                [
                    details
                    for details in db.session.scalars(
                        sa.select(AuditEvent.details).where(AuditEvent.action == action)
                    )
                    if row is not None and json.loads(details).get("binding_id") == row.id
                ]
            )

        def notices(suffix: str) -> int:
            if row is None:
                return 0
            return len(
                db.session.scalars(
                    sa.select(OutboxMessage.id).where(
                        OutboxMessage.dedupe_key.like(f"binding:{row.id}:{suffix}%")
                    )
                ).all()
            )

        if row is None:
            return False, False
        assert events("binding.bound") == 1
        assert notices("bound") > 0
        ended = row.unbound_at is not None
        assert (events("binding.unbound"), notices("unbound") > 0) == (
            (1, True) if ended else (0, False)
        ), row.id
        assert (row.unbound_by is not None) is ended
        return not ended, ended


def _unavailable(response: TestResponse, context: object) -> None:
    assert response.status_code == 503, (context, response.get_data(as_text=True))
    assert response.get_json()["error"]["code"] == "database_unavailable", context


def _faults(app: Flask) -> Iterator[tuple[int, AbstractContextManager[list[Any]]]]:
    """A fault at each statement in turn, until the caller stops."""
    for n in range(1, MAX_STATEMENTS + 1):
        yield n, failing_statement(app, n)
    raise AssertionError(f"the request ran more than {MAX_STATEMENTS} statements")


def _new_address(client: FlaskClient) -> None:
    """Come from another address: challenges and bindings are rate-limited per address, and
    each attempt here asks for several."""
    client.environ_base["REMOTE_ADDR"] = f"10.16.{secrets.randbelow(250)}.{secrets.randbelow(250)}"


def _answer_challenge(
    client: FlaskClient, nonce: str, certificate: x509.Certificate, key: Any
) -> TestResponse:
    return client.post(
        f"{API}/bindings",
        json={
            "challenge": nonce,
            "certificate": certificate.public_bytes(Encoding.PEM).decode(),
            "signature": sign(key, f"ca-service bind challenge: {nonce}"),
        },
    )


@pytest.mark.slow
def test_a_database_fault_in_a_binding_binds_fully_or_not_at_all(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    tax: TaxWorld,  # noqa: F811
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()

    def attempt(fault: AbstractContextManager[list[Any]], context: object) -> bool:
        """Bind a new certificate under ``fault``; whether the fault struck."""
        _new_address(client)
        certificate, key = tax.ca.issue(employer.account.number)
        nonce = bind_challenge(client, employer)  # outside the fault: the binding fails
        with fault as failed:
            response = _answer_challenge(client, nonce, certificate, key)
        if not failed:
            assert response.status_code == 201, response.get_data(as_text=True)
            assert _state(app, certificate) == (True, False)
            return False
        _unavailable(response, (context, failed))
        assert _state(app, certificate) == (False, False), (context, failed)
        retry = bind(client, employer, certificate, key)
        assert retry.status_code == 201, (context, failed, retry.get_data(as_text=True))
        assert _state(app, certificate) == (True, False), (context, failed)
        again = bind(client, employer, certificate, key)
        assert again.status_code == 409, (context, again.get_data(as_text=True))
        return True

    for n, fault in _faults(app):
        if not attempt(fault, n):
            break
    assert n > 10, n
    assert attempt(failing_commit(app), "commit"), "the binding did not commit"
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output


@pytest.mark.slow
def test_a_database_fault_in_an_unbinding_unbinds_fully_or_not_at_all(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    tax: TaxWorld,  # noqa: F811
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()

    def attempt(fault: AbstractContextManager[list[Any]], context: object) -> bool:
        """Unbind a newly bound certificate under ``fault``; whether the fault struck."""
        _new_address(client)
        certificate, key = tax.ca.issue(employer.account.number)
        bound = bind(client, employer, certificate, key)
        assert bound.status_code == 201, bound.get_data(as_text=True)
        path = f"{API}/bindings/{bound.get_json()['id']}"
        with fault as failed:
            response = client.delete(path, headers=employer.headers)
        if not failed:
            assert response.status_code == 200, response.get_data(as_text=True)
            assert _state(app, certificate) == (False, True)
            return False
        _unavailable(response, (context, failed))
        assert _state(app, certificate) == (True, False), (context, failed)
        retry = client.delete(path, headers=employer.headers)
        assert retry.status_code == 200, (context, failed, retry.get_data(as_text=True))
        assert _state(app, certificate) == (False, True), (context, failed)
        again = client.delete(path, headers=employer.headers)
        assert again.status_code == 404, (context, again.get_data(as_text=True))
        return True

    for n, fault in _faults(app):
        if not attempt(fault, n):
            break
    assert n > 5, n
    assert attempt(failing_commit(app), "commit"), "the unbinding did not commit"
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output
