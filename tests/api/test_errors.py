"""Every error under /api/ is JSON with the right status, never an HTML page."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hsm import HSMUnavailable
from tests.api.conftest import API, ApiEmployer, bearer, error_of


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", f"{API}/no/such/thing", 404),
        ("POST", f"{API}/no/such/thing", 404),
        ("PATCH", f"{API}/applications", 405),
        ("GET", f"{API}/applications/not-a-number", 404),
        ("GET", f"{API}/certificates/zz-not-hex/status", 404),
    ],
)
def test_routing_errors_are_json(client: FlaskClient, method: str, path: str, status: int) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert error_of(response)["message"]


def test_bad_bodies(client: FlaskClient) -> None:
    token = f"{API}/auth/token"
    invalid = client.post(token, data="{not json", content_type="application/json")
    assert invalid.status_code == 400
    assert "not valid JSON" in error_of(invalid)["message"]
    form = client.post(token, data={"username": "a", "password": "b"})
    assert form.status_code == 415
    assert "application/json" in error_of(form)["message"]
    array = client.post(token, json=["username"])
    assert array.status_code == 400
    missing = client.post(token, json={"username": "someone"})
    assert missing.status_code == 400
    assert "'password'" in error_of(missing)["message"]
    wrong_type = client.post(token, json={"username": "someone", "password": 12345678})
    assert wrong_type.status_code == 400
    assert "'password' must be a string" in error_of(wrong_type)["message"]
    unknown = client.post(token, json={"username": "a", "password": "b", "pasword": "c"})
    assert unknown.status_code == 400
    assert "pasword" in error_of(unknown)["message"]
    registration = client.post(f"{API}/employers", json={"registration_number": "1"})
    assert registration.status_code == 400
    assert "'legal_name'" in error_of(registration)["message"]


def test_registration_errors_come_from_the_service(client: FlaskClient) -> None:
    response = client.post(
        f"{API}/employers",
        json={
            "registration_number": "not a number",
            "legal_name": "X Co",
            "administrator_name": "Admin",
            "mobile": "+8613800138000",
            "email": "hr@example.test",
            "password": "a long enough password",
        },
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_input"


def test_too_large_body_is_413_json(app: Flask, client: FlaskClient) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 1024
    response = client.post(
        f"{API}/employers", data=b"{" + b" " * 4096 + b"}", content_type="application/json"
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_entity_too_large"


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (RuntimeError("secret internals"), 500, "internal_error"),
        (HSMUnavailable("token did not answer"), 503, "hsm_unavailable"),
    ],
)
def test_failures_are_json(app: Flask, exc: Exception, status: int, code: str) -> None:
    def fail() -> str:
        raise exc

    app.add_url_rule(f"{API}/_test/fail", "test_api_fail", fail)
    app.testing = False  # as in production: the handler, not the debugger, answers
    response = app.test_client().get(f"{API}/_test/fail")
    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert b"secret internals" not in response.data


def test_nul_characters_and_huge_ids_are_refused_not_500(
    client: FlaskClient, api_employer: Callable[[], ApiEmployer]
) -> None:
    """Found by schemathesis on PostgreSQL, which refuses NUL in text and ids past INTEGER:
    both were 500s there."""
    response = client.post(
        f"{API}/employers/confirm-mobile",
        json={"username": "a\x00b", "password": "x", "code": "123456"},
    )
    assert response.status_code == 400
    assert "NUL" in error_of(response)["message"]
    response = client.post(f"{API}/auth/token", json={"username": "a\x00", "password": "p"})
    assert response.status_code == 400
    response = client.get("/auth/login?next=%00")
    assert response.status_code == 400
    response = client.post("/auth/login", data={"username": "a\x00", "password": "p"})
    assert response.status_code == 400
    headers = bearer(api_employer().token)
    assert client.delete(f"{API}/bindings/16342926458", headers=headers).status_code == 404
    assert client.get(f"{API}/applications/{2**31}", headers=headers).status_code == 404
