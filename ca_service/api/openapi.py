"""The OpenAPI 3.1 document of API v1, assembled from the app's route table.

Paths, methods and path parameters come from ``app.url_map``; each handler's ``@documented``
declaration (``ca_service.api.spec``) gives its summary, request body, query parameters and
answers; the schemas are the pydantic models of ``ca_service.api.schemas``. A route under
``/api/v1`` without a declaration stops the document from being built (``UndeclaredRoute``),
so tests/api/test_openapi.py fails for it. Each operationId is the handler's endpoint name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import CoreSchema

from ca_service.api import schemas
from ca_service.api.spec import TAGS, Body, Operation, Reply, Schema, operation_of
from ca_service.extensions import settings_of

JSON = dict[str, Any]
PREFIX = "/api/v1"
_REF = "#/components/schemas/{model}"

ERROR_RESPONSES = {
    400: ("BadRequest", "Malformed JSON, a missing or wrong field (the message names it)."),
    401: ("Unauthorized", "No valid bearer token, or wrong credentials."),
    403: ("Forbidden", "The account's role (or state) does not allow this."),
    404: ("NotFound", "No such resource (also another employer's application)."),
    409: ("Conflict", "The resource's state does not allow this (already decided, submitted)."),
    413: ("TooLarge", "The request body is larger than the service accepts."),
    415: ("UnsupportedMediaType", "The body's Content-Type is not accepted here."),
    423: ("Locked", "The account is locked after too many failed attempts."),
    429: ("TooManyRequests", "Too many attempts from this address; wait a minute."),
    503: ("ServiceUnavailable", "The HSM or the database is unavailable; retry later."),
}

# Path parameters: their schema by the route's converter, their description by name.
_CONVERTER_SCHEMAS: dict[str, JSON] = {
    "int": {"type": "integer", "minimum": 1},
    "default": {"type": "string"},
    "string": {"type": "string"},
}
_PATH_DESCRIPTIONS = {
    "serial": "Serial number in hexadecimal (leading zeros and 0x are ignored).",
}
_RULE_ARGUMENT = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})


class UndeclaredRoute(LookupError):
    """An API route whose handler has no ``@documented`` declaration."""


class _Generator(GenerateJsonSchema):
    # Property titles would only repeat the field names.
    def field_title_should_be_set(self, schema: CoreSchema) -> bool:
        return False


def _operations(app: Flask) -> Iterator[tuple[str, str, str, list[JSON], Operation]]:
    """(OpenAPI path, method, endpoint, path parameters, declaration) of every API route.

    :raises UndeclaredRoute: a route's handler declares nothing.
    """
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(f"{PREFIX}/"):
            continue
        operation = operation_of(app.view_functions[rule.endpoint])
        if operation is None:
            raise UndeclaredRoute(
                f"{rule.rule} ({rule.endpoint}) has no @documented declaration "
                "(ca_service.api.spec)."
            )
        path = _RULE_ARGUMENT.sub(r"{\g<name>}", rule.rule.removeprefix(PREFIX))
        for method in sorted((rule.methods or set()) - _IGNORED_METHODS):
            yield path, method.lower(), rule.endpoint, _path_parameters(rule.rule), operation


def _path_parameters(rule_path: str) -> list[JSON]:
    return [
        {
            "name": match["name"],
            "in": "path",
            "required": True,
            **(
                {"description": _PATH_DESCRIPTIONS[match["name"]]}
                if match["name"] in _PATH_DESCRIPTIONS
                else {}
            ),
            "schema": _CONVERTER_SCHEMAS[match["converter"] or "default"],
        }
        for match in _RULE_ARGUMENT.finditer(rule_path)
    ]


def _models(operations: list[Operation]) -> list[type[BaseModel]]:
    found: dict[type[BaseModel], None] = {schemas.Error: None}

    def add(schema: Schema | Body | None) -> None:
        if isinstance(schema, type):
            found[schema] = None
        elif schema is not None:
            for value in schema.values():
                if isinstance(value, type):
                    found[value] = None

    for operation in operations:
        add(operation.body)
        add(operation.query)
        for reply in operation.responses.values():
            add(reply.model)
            add(reply.media)
    return list(found)


def _not_null(schema: JSON) -> JSON:
    """A query parameter's schema without its null alternative (a URL has no null)."""
    alternatives = [s for s in schema.get("anyOf", ()) if s != {"type": "null"}]
    if len(alternatives) == 1:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**alternatives[0], **rest}
    return schema


class _Builder:
    def __init__(self, operations: list[Operation]) -> None:
        models = _models(operations)
        refs, top = models_json_schema(
            [(model, "validation") for model in models],
            ref_template=_REF,
            schema_generator=_Generator,
        )
        self.refs = {model: refs[model, "validation"] for model in models}
        self.schemas: JSON = top.get("$defs", {})

    def schema(self, schema: Schema) -> JSON:
        return self.refs[schema] if isinstance(schema, type) else schema

    def content(self, body: Body) -> JSON:
        media = {"application/json": body} if isinstance(body, type) else body
        return {name: {"schema": self.schema(schema)} for name, schema in media.items()}

    def reply(self, reply: Reply) -> JSON:
        answer: JSON = {"description": reply.description}
        media = dict(reply.media)
        if reply.model is not None:
            media["application/json"] = reply.model
        if media:
            answer["content"] = self.content(media)
        return answer

    def query_parameters(self, model: type[BaseModel]) -> list[JSON]:
        schema = self.schemas[model.__name__]
        required = set(schema.get("required", ()))
        parameters = []
        for name, declared in schema["properties"].items():
            parameter: JSON = {"name": name, "in": "query", "required": name in required}
            prop = dict(declared)
            if "description" in prop:
                parameter["description"] = prop.pop("description")
            parameter["schema"] = _not_null(prop)
            parameters.append(parameter)
        return parameters

    def operation(self, endpoint: str, parameters: list[JSON], declared: Operation) -> JSON:
        responses = {str(status): self.reply(reply) for status, reply in declared.responses.items()}
        for status in declared.errors:
            responses[str(status)] = {
                "$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"
            }
        operation: JSON = {
            "operationId": endpoint.removeprefix("api."),
            "summary": declared.summary,
            "tags": [declared.tag],
            "responses": responses,
        }
        if declared.description:
            operation["description"] = declared.description
        if declared.public:
            operation["security"] = []
        parameters = list(parameters)
        if declared.query is not None:
            parameters += self.query_parameters(declared.query)
        if parameters:
            operation["parameters"] = parameters
        if declared.body is not None:
            operation["requestBody"] = {
                "required": declared.body_required,
                "content": self.content(declared.body),
            }
        return operation


def build_document(app: Flask) -> JSON:
    """The OpenAPI 3.1 document of ``app``'s API routes, with its public URL as the server.

    :raises UndeclaredRoute: an API route's handler has no declaration.
    """
    found = list(_operations(app))
    builder = _Builder([operation for *_, operation in found])
    paths: dict[str, JSON] = {}
    for path, method, endpoint, parameters, declared in found:
        paths.setdefault(path, {})[method] = builder.operation(endpoint, parameters, declared)
    for query in {declared.query for *_, declared in found if declared.query is not None}:
        builder.schemas.pop(query.__name__, None)  # described as parameters instead
    base = settings_of(app).public_base_url.rstrip("/")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Employer certificate authority API",
            "version": "1.0.0",
            "description": "Register an employer, apply for an organisation certificate with "
            "sealed documents, review applications (RA officers) and download certificates. "
            'Errors are JSON: {"error": {"code": ..., "message": ...}}.',
        },
        "servers": [{"url": base + PREFIX}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": tag} for tag in TAGS],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from POST /auth/token.",
                }
            },
            "schemas": builder.schemas,
            "responses": {
                name: {
                    "description": description,
                    "content": {"application/json": {"schema": builder.refs[schemas.Error]}},
                }
                for name, description in ERROR_RESPONSES.values()
            },
        },
    }


def openapi_document(app: Flask) -> JSON:
    """``build_document(app)``, built once per app (the route table does not change)."""
    document: JSON | None = app.extensions.get("api_openapi")
    if document is None:
        document = app.extensions["api_openapi"] = build_document(app)
    return document
