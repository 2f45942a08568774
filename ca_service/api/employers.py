"""Employer registration and mobile confirmation, before the administrator has a token."""

from __future__ import annotations

from flask import Response, current_app, jsonify, make_response
from flask_babel import gettext as _

from ca_service.api import schemas
from ca_service.api.auth import password_user
from ca_service.api.http import bp, json_body, text_field
from ca_service.api.serialise import employer_json
from ca_service.api.spec import REGISTRATION, Reply, documented
from ca_service.auth.access import ensure_role
from ca_service.auth.code_context import client_address, code_policy
from ca_service.auth.code_limits import wait_text
from ca_service.auth.models import Role, User
from ca_service.employers.models import Employer
from ca_service.employers.service import (
    Registration,
    confirm_mobile,
    employer_of,
    register_employer,
    send_mobile_code,
)
from ca_service.errors import Conflict
from ca_service.extensions import settings_of


@bp.post("/employers")
@documented(
    tag=REGISTRATION,
    public=True,
    body=schemas.Registration,
    responses={201: Reply(schemas.Registered, "Registered; confirm the mobile number next.")},
    errors=(400, 409, 415, 429),
)
def register() -> Response:
    """Register an employer and its administrator; an SMS code confirms the mobile."""
    data = json_body(schemas.Registration)
    registration = Registration(
        registration_number=text_field(data, "registration_number"),
        legal_name=text_field(data, "legal_name"),
        administrator_name=text_field(data, "administrator_name"),
        mobile=text_field(data, "mobile"),
        email=text_field(data, "email"),
        password=text_field(data, "password"),
        legal_representative_id=text_field(data, "legal_representative_id", required=False),
    )
    employer, user, sent = register_employer(
        registration,
        scheme=str(settings_of(current_app)["REGISTRATION_NUMBER_SCHEME"]),
        codes=code_policy(),
        client_address=client_address(),
    )
    body: dict[str, object] = {
        "employer": employer_json(employer),
        "username": user.username,
        "code_sent": sent.allowed,
        "next": "confirm the SMS code at POST /api/v1/employers/confirm-mobile",
    }
    if not sent.allowed:
        body["retry_after_seconds"] = sent.retry_after
        body["next"] = str(
            _(
                "No code was sent yet: too many codes were asked for this mobile number in a "
                "short time. Ask for one at POST /api/v1/employers/resend-code in %(wait)s.",
                wait=wait_text(sent.retry_after),
            )
        )
    return make_response(body, 201)


def _unconfirmed_employer(user: User) -> Employer:
    ensure_role(user, Role.EMPLOYER_ADMIN)
    employer = employer_of(user)
    if employer.active:
        raise Conflict("This mobile number is already confirmed; request a token instead.")
    return employer


@bp.post("/employers/confirm-mobile")
@documented(
    tag=REGISTRATION,
    public=True,
    body=schemas.MobileConfirmation,
    responses={200: Reply(schemas.MobileConfirmed, "Confirmed; request a token next.")},
    errors=(400, 401, 403, 404, 409, 415, 423, 429),
)
def confirm_employer_mobile() -> Response:
    """Confirm the reserved mobile number with the SMS code (password-authenticated)."""
    data = json_body(schemas.MobileConfirmation)
    code = text_field(data, "code")
    user = password_user(text_field(data, "username"), text_field(data, "password"))
    _unconfirmed_employer(user)
    employer = confirm_mobile(user, code, code_policy())
    return jsonify(
        employer=employer_json(employer),
        next="request a token at POST /api/v1/auth/token",
    )


@bp.post("/employers/resend-code")
@documented(
    tag=REGISTRATION,
    public=True,
    body=schemas.Credentials,
    responses={
        202: Reply(
            schemas.CodeResent,
            "A new code is queued for delivery, or (code_sent false) the limits on SMS codes "
            "held it back.",
        )
    },
    errors=(400, 401, 403, 404, 409, 415, 423, 429),
)
def resend_mobile_code() -> tuple[Response, int]:
    """Send a new SMS confirmation code (password-authenticated)."""
    data = json_body(schemas.Credentials)
    user = password_user(text_field(data, "username"), text_field(data, "password"))
    employer = _unconfirmed_employer(user)
    sent = send_mobile_code(user, employer, code_policy(), client_address=client_address())
    if sent.allowed:
        return jsonify(
            message="A new code is on its way. Earlier codes no longer work.", code_sent=True
        ), 202
    # The same 202 as a send (the request was fine), saying nothing was sent and until when.
    message = _(
        "No new code was sent: too many codes were asked for in a short time. The code sent "
        "earlier still works; you can ask for a new one in %(wait)s.",
        wait=wait_text(sent.retry_after),
    )
    response = jsonify(message=str(message), code_sent=False, retry_after_seconds=sent.retry_after)
    response.headers["Retry-After"] = str(sent.retry_after)
    return response, 202
