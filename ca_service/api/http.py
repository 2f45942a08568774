"""The API blueprint and its request plumbing: JSON bodies, field checks, 401 headers.

Request parsing lives here so every handler rejects bad input the same way: a 400 naming the
field, a 415 for a body of the wrong type. Business rules stay in the services.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Blueprint, Response, make_response, request
from pydantic import BaseModel
from werkzeug.exceptions import UnsupportedMediaType

from ca_service.db import db
from ca_service.errors import AuthenticationFailed, ValidationError, echoed
from ca_service.errors_views import error_response
from ca_service.web import refuse_nul

bp = Blueprint("api", __name__, url_prefix="/api/v1")

REALM = "ca-service"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

JSON = dict[str, Any]


class InvalidToken(AuthenticationFailed):
    """The bearer token is missing, unknown, expired or revoked, or its account is disabled."""

    code = "invalid_token"


class TotpRequired(AuthenticationFailed):
    """The password was right but the account also needs its authenticator's code."""

    code = "totp_required"


@bp.errorhandler(AuthenticationFailed)
def _unauthorised(exc: AuthenticationFailed) -> Response:
    # RFC 6750: a 401 names the scheme; a rejected token also says why (error="invalid_token").
    db.session.rollback()
    response = make_response(error_response(exc.status_code, exc.code, exc.message))
    challenge = f'Bearer realm="{REALM}"'
    if isinstance(exc, InvalidToken) and request.headers.get("Authorization"):
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response


@bp.after_request
def _not_cached(response: Response) -> Response:
    # Answers carry tokens and employers' data; public views that may be cached say so.
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def json_body(allowed: type[BaseModel] | Iterable[str]) -> JSON:
    """The request's JSON object, with no field that ``allowed`` (a model of
    ``ca_service.api.schemas``, or names) does not list.

    :raises UnsupportedMediaType: the body is not declared as JSON.
    :raises ValidationError: malformed JSON, not an object, or a field not in ``allowed``.
    """
    if not request.is_json:
        raise UnsupportedMediaType("Send a JSON body with Content-Type: application/json.")
    try:
        data = json.loads(request.get_data(cache=False))
    except ValueError as exc:
        raise ValidationError(f"The body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise ValidationError("The body must be a JSON object.")
    refuse_nul(data)
    names = set(allowed.model_fields) if isinstance(allowed, type) else set(allowed)
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValidationError(
            f"Unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}."
        )
    return data


def text_field(data: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    """A string field ('' when optional and absent).

    :raises ValidationError: missing when required, or not a string.
    """
    value = data.get(name)
    if value is None:
        if required:
            raise ValidationError(f"The field {name!r} is required.")
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"The field {name!r} must be a string.")
    return value


def date_field(data: Mapping[str, Any], name: str) -> dt.date | None:
    """A required field holding ``YYYY-MM-DD`` or null.

    :raises ValidationError: absent, or neither null nor a calendar date.
    """
    if name not in data:
        raise ValidationError(f"The field {name!r} is required (a YYYY-MM-DD date or null).")
    value = data[name]
    if value is None:
        return None
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValidationError(f"The field {name!r} must be a YYYY-MM-DD date or null.")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"The field {name!r} is not a calendar date: {echoed(value)}."
        ) from None


def choice(value: str, name: str, choices: Iterable[str]) -> str:
    """``value`` when it is one of ``choices``.

    :raises ValidationError: naming the field and the accepted values.
    """
    options = list(choices)
    if value not in options:
        raise ValidationError(f"The field {name!r} must be one of: {', '.join(options)}.")
    return value


def require_mimetype(*accepted: str) -> str:
    """The request's media type when it is one of ``accepted``.

    :raises UnsupportedMediaType: otherwise, listing what is accepted.
    """
    if request.mimetype not in accepted:
        given = request.mimetype or "none"
        raise UnsupportedMediaType(
            f"Content-Type {given} is not accepted here; send {' or '.join(accepted)}."
        )
    return request.mimetype


def created(body: JSON, location: str) -> Response:
    """A 201 with the new resource and its URL."""
    response = make_response(body, 201)
    response.headers["Location"] = location
    return response
