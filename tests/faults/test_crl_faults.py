"""Faults during CRL publication (issue #16, scope 2): `ca-service crl publish` and a revocation
that publishes at once (the API, coalescing off), with the database failing at each statement
in turn and with the CA's SoftHSM token taken away at the signing step. Each time the
publication fails cleanly (the command with one line and exit 1, the API with a 503), the
previous CRL is still served, the committed CRL numbers of every issuer stay 1, 2, 3… (none
used twice: a number belongs to a CRL only once it commits, the next publication takes the
next one), and the retry publishes the next number."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ca_service.authorities.service import ISSUING_SLUG, ROOT_SLUG
from ca_service.db import db
from ca_service.revocation.models import PublishedCRL
from hsm.token import RESCAN_INTERVAL
from tests.api.conftest import officer_token  # noqa: F401  (fixture used below)
from tests.auth.conftest import make_officer  # noqa: F401  (officer_token's fixture)
from tests.conftest import CliInvoke, HsmEnv
from tests.hsm.support import token_away
from tests.issuance.conftest import (  # noqa: F401  (make_employer: a fixture)
    MakeEmployer,
    issue_employer_certificate,
    make_employer,
)
from tests.statements import failing_statement

API = "/api/v1"
MAX_STATEMENTS = 80
SLUGS = (ROOT_SLUG, ISSUING_SLUG)


def _served(client: FlaskClient) -> dict[str, int]:
    """The CRL number each CA's CRL endpoint serves now."""
    numbers = {}
    for slug in SLUGS:
        response = client.get(f"/pki/crl/{slug}.crl")
        assert response.status_code == 200, response.get_data(as_text=True)
        crl = x509.load_der_x509_crl(response.data)
        numbers[slug] = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    return numbers


def _numbers_in_sequence(app: Flask) -> None:
    """Every issuer's committed CRL numbers are 1..k: none twice, none skipped."""
    with app.app_context():
        rows = db.session.execute(
            sa.select(PublishedCRL.issuer_id, PublishedCRL.number).order_by(
                PublishedCRL.issuer_id, PublishedCRL.number
            )
        ).all()
    by_issuer: dict[int, list[int]] = {}
    for issuer_id, number in rows:
        by_issuer.setdefault(issuer_id, []).append(number)
    assert len(by_issuer) == len(SLUGS)
    for numbers in by_issuer.values():
        assert numbers == list(range(1, len(numbers) + 1)), by_issuer


def _one_more(before: dict[str, int], slugs: tuple[str, ...] = SLUGS) -> dict[str, int]:
    return {slug: number + (slug in slugs) for slug, number in before.items()}


def _until_back(attempt: Callable[[], bool]) -> None:
    """Retry ``attempt`` until the layer has found the token again (it rescans)."""
    deadline = time.monotonic() + 20 * RESCAN_INTERVAL
    while not attempt():
        assert time.monotonic() < deadline, "the token was not picked up again"
        time.sleep(RESCAN_INTERVAL / 4)


def _publish_failed(result: Any, context: object) -> None:
    assert result.exit_code == 1, (context, result.output)
    assert isinstance(result.exception, SystemExit), (context, result.exception)
    assert result.output.startswith("error: "), (context, result.output)
    assert "Traceback" not in result.output, (context, result.output)


@pytest.mark.slow
def test_crl_publish_with_the_database_failing_at_any_statement(
    app: Flask, client: FlaskClient, cli: CliInvoke
) -> None:
    reached_end = False
    for n in range(1, MAX_STATEMENTS + 1):
        before = _served(client)
        # Every engine: the command builds its own app (and engine) in this process.
        with failing_statement(sa.Engine, n) as failed:
            result = cli("crl", "publish")
        if not failed:
            assert result.exit_code == 0, result.output
            assert _served(client) == _one_more(before)
            reached_end = True
            break
        _publish_failed(result, (n, failed))
        assert "the database is unavailable" in result.output, (n, result.output)
        assert _served(client) == before, (n, failed)
        _numbers_in_sequence(app)
        retry = cli("crl", "publish")
        assert retry.exit_code == 0, (n, failed, retry.output)
        assert _served(client) == _one_more(before), (n, failed)
        _numbers_in_sequence(app)
    assert reached_end, f"crl publish ran more than {MAX_STATEMENTS} statements"
    assert n > 8, n
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output


def test_crl_publish_with_the_token_removed_publishes_nothing_and_the_retry_publishes(
    app: Flask, client: FlaskClient, cli: CliInvoke, hsm_env: HsmEnv, tmp_path: Path
) -> None:
    before = _served(client)
    with token_away(hsm_env, tmp_path):
        result = cli("crl", "publish")
        _publish_failed(result, "token away")
        assert hsm_env.ca_token_label in result.output, result.output
        # Served from the database: a CRL needs no HSM to be served.
        assert _served(client) == before
    _numbers_in_sequence(app)
    assert _served(client) == before

    def publish() -> bool:
        return cli("crl", "publish").exit_code == 0

    _until_back(publish)
    assert _served(client) == _one_more(before)
    _numbers_in_sequence(app)


@pytest.fixture
def publishing_app(app: Flask, app_overrides: dict[str, Any]) -> Iterator[Flask]:
    """An app on the test database whose revocations publish the CRL at once, every time."""
    from ca_service.app import create_app

    other = create_app({**app_overrides, "CRL_COALESCE_SECONDS": 0})
    other.config["TESTING"] = True
    yield other
    with other.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.mark.slow
def test_a_revocation_that_publishes_with_the_database_or_the_token_failing(
    publishing_app: Flask,
    cli: CliInvoke,
    make_employer: MakeEmployer,  # noqa: F811
    officer_token: Callable[[], str],  # noqa: F811
    hsm_env: HsmEnv,
    tmp_path: Path,
) -> None:
    app = publishing_app
    client = app.test_client()
    account = make_employer()
    headers = {"Authorization": f"Bearer {officer_token()}"}

    def revoke(serial: str) -> TestResponse:
        return client.post(
            f"{API}/review/certificates/{serial}/revoke",
            json={"reason": "cessationOfOperation"},
            headers=headers,
        )

    def published(response: TestResponse, before: dict[str, int], context: object) -> None:
        assert response.status_code == 200, (context, response.get_data(as_text=True))
        after = _one_more(before, (ISSUING_SLUG,))
        assert response.get_json()["crl_number"] == after[ISSUING_SLUG], context
        assert _served(client) == after, context
        _numbers_in_sequence(app)

    reached_end = False
    for n in range(1, MAX_STATEMENTS + 1):
        serial = issue_employer_certificate(app, account, None).serial
        before = _served(client)
        with failing_statement(app, n) as failed:
            response = revoke(serial)
        if not failed:
            published(response, before, n)
            reached_end = True
            break
        assert response.status_code == 503, (n, failed, response.get_data(as_text=True))
        assert response.get_json()["error"]["code"] == "database_unavailable"
        assert _served(client) == before, (n, failed)
        _numbers_in_sequence(app)
        published(revoke(serial), before, (n, failed))
    assert reached_end, f"a revocation ran more than {MAX_STATEMENTS} statements"
    assert n > 15, n

    serial = issue_employer_certificate(app, account, None).serial
    before = _served(client)
    with token_away(hsm_env, tmp_path):
        response = revoke(serial)
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.get_json()["error"]["code"] == "hsm_unavailable"
        assert _served(client) == before
    _numbers_in_sequence(app)
    retried: list[TestResponse] = []

    def retry() -> bool:
        retried.append(revoke(serial))
        return retried[-1].status_code != 503

    _until_back(retry)
    published(retried[-1], before, "token back")
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output
