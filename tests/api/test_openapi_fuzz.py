"""schemathesis against /api/v1/openapi.json, in-process (WSGI): generated requests to every
operation, signed out and with an employer administrator's bearer token, answer no 500 and
nothing the document does not declare (status code, content type, body schema, headers).

Bounded: a few derandomised examples per operation, so the run is the same every time and
takes seconds. Requests that the document allows but the service refuses (a random id: 404,
a random CSR: 400) are fine as long as the refusal is declared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import API, ApiEmployer, bearer, new_application

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES = settings(
    max_examples=6,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


# Revoking the token would turn every later call into a 401: it goes last.
_LAST = "DELETE /auth/token"


def _failures(
    app: Flask, headers: dict[str, str], known: Mapping[str, int | str] | None = None
) -> list[str]:
    """Each operation's failures (one line per failing operation). ``known`` path parameters
    (an existing application's id) replace the generated ones in half the examples, so that
    answers about real resources are checked too, not only 404s."""
    schema = schemathesis.openapi.from_wsgi(f"{API}/openapi.json", app)
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda operation: operation.label == _LAST,
    )
    found = []
    for operation in operations:

        @given(case=operation.as_strategy(), use_known=st.booleans())
        @EXAMPLES
        def check(case: Case, use_known: bool) -> None:
            if use_known and known and case.path_parameters:
                for name in case.path_parameters.keys() & known.keys():
                    case.path_parameters[name] = known[name]
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            check()
        except FailureGroup as group:
            found.append(f"{operation.label}: {group.exceptions[0]}")
    return found


def test_signed_out(app: Flask) -> None:
    assert _failures(app, {}) == []


def test_employer_token(
    app: Flask, client: FlaskClient, api_employer: Callable[[], ApiEmployer]
) -> None:
    employer = api_employer()
    draft = new_application(client, employer.token)
    assert _failures(app, bearer(employer.token), {"application_id": draft}) == []


def test_officer_token(
    app: Flask,
    client: FlaskClient,
    api_employer: Callable[[], ApiEmployer],
    officer_token: Callable[[], str],
) -> None:
    draft = new_application(client, api_employer().token)
    assert _failures(app, bearer(officer_token()), {"application_id": draft}) == []
