"""The OpenAPI document describes exactly the routes the app serves, and is valid OpenAPI."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from tests.api.conftest import API

_CONVERTER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def _served(app: Flask) -> dict[tuple[str, str], str]:
    """(OpenAPI path, method) -> endpoint for every /api/v1 route."""
    routes = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(f"{API}/"):
            continue
        path = _CONVERTER.sub(r"{\1}", rule.rule.removeprefix(API))
        for method in rule.methods or ():
            if method not in {"HEAD", "OPTIONS"}:
                routes[path, method.lower()] = rule.endpoint
    return routes


def test_document_matches_the_routes(app: Flask, client: FlaskClient) -> None:
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    described = {
        (path, method): operation["operationId"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    }
    served = _served(app)
    assert set(described) == set(served)
    # operationId is the endpoint name, so a renamed handler shows up here too.
    assert {k: f"api.{v}" for k, v in described.items()} == served
    for (path, _), operation_id in described.items():
        declared = {p["name"] for p in document["paths"][path][_].get("parameters", [])}
        assert set(re.findall(r"{([a-z_]+)}", path)) <= declared, operation_id
    assert document["servers"] == [{"url": f"http://ca.test{API}"}]


def test_document_is_valid_openapi(client: FlaskClient) -> None:
    validate(client.get(f"{API}/openapi.json").get_json())
