"""The OpenAPI document describes exactly the routes the app serves, and is valid OpenAPI.

It is built from the route table and the handlers' ``@documented`` declarations; these tests
check what the builder cannot take for granted: that a route without a declaration is refused,
that each path parameter is described, that the bodies are the schemas' models."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from ca_service.api import schemas
from ca_service.api.openapi import UndeclaredRoute, build_document
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


def test_a_route_without_a_declaration_is_refused(app: Flask) -> None:
    app.add_url_rule(f"{API}/undeclared", "api.undeclared", lambda: "")
    with pytest.raises(UndeclaredRoute, match="undeclared"):
        build_document(app)


def test_request_bodies_are_the_models(client: FlaskClient) -> None:
    """A JSON body is a request model: unknown fields refused, as json_body refuses them."""
    document = client.get(f"{API}/openapi.json").get_json()
    components = document["components"]["schemas"]
    prefix = "#/components/schemas/"
    bodies = 0
    for item in document["paths"].values():
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in ("application/json", "multipart/form-data"):
                if media not in content:
                    continue
                name = content[media]["schema"]["$ref"].removeprefix(prefix)
                assert issubclass(getattr(schemas, name), schemas.RequestBody), name
                assert components[name]["additionalProperties"] is False, name
                bodies += 1
    assert bodies >= 15


def test_path_parameters_follow_the_converters(client: FlaskClient) -> None:
    document = client.get(f"{API}/openapi.json").get_json()
    operation = document["paths"]["/review/{application_id}/documents/{document_id}/validity"]
    parameters = {p["name"]: p for p in operation["put"]["parameters"]}
    assert parameters["application_id"]["schema"] == {"type": "integer", "minimum": 1}
    assert parameters["document_id"]["in"] == "path"
    serial = document["paths"]["/certificates/{serial}/status"]["get"]["parameters"][0]
    assert serial["schema"] == {"type": "string"}
    assert "hexadecimal" in serial["description"]
