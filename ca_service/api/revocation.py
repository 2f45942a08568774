"""Revocation through the API: an officer by serial (any RFC 5280 reason, a hold and its
release), an employer administrator its own application's certificate (password again)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from flask import current_app

from ca_service.api import schemas
from ca_service.api.auth import bearer_user, login_policy
from ca_service.api.http import JSON, bp, json_body, text_field
from ca_service.api.serialise import certificate_json, timestamp
from ca_service.api.spec import EMPLOYER, OFFICER, Reply, documented
from ca_service.auth.models import Role
from ca_service.errors import ValidationError, echoed
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance.service import employer_application
from ca_service.revocation import portal
from ca_service.revocation.service import StatusChange


def datetime_field(data: Mapping[str, Any], name: str) -> dt.datetime | None:
    """An optional ISO 8601 date-time (UTC when it names no offset), or null.

    :raises ValidationError: not a string, or not a date-time.
    """
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"The field {name!r} must be an ISO 8601 date-time or null.")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"The field {name!r} is not an ISO 8601 date-time (2026-01-02T03:04:05Z): "
            f"{echoed(value)}."
        ) from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _status_change_json(change: StatusChange) -> JSON:
    return {
        "certificate": certificate_json(change.certificate),
        # null: coalesced with other revocations, published within CRL_COALESCE_SECONDS.
        "crl_number": change.crl.number if change.crl is not None else None,
        "crl_published_at": timestamp(change.crl.this_update) if change.crl is not None else None,
    }


@bp.post("/review/certificates/<serial>/revoke")
@documented(
    tag=OFFICER,
    body=schemas.OfficerRevocation,
    responses={200: Reply(schemas.StatusChange, "The certificate's new status.")},
    errors=(400, 401, 403, 404, 409, 415, 503),
)
def revoke_certificate(serial: str) -> JSON:
    """Revoke, hold or release an employer certificate (RA officers and CA administrators;
    the employer is notified)."""
    officer = bearer_user(*portal.REVOKING_ROLES)
    data = json_body(schemas.OfficerRevocation)
    change = portal.revoke_by_officer(
        officer=officer,
        serial=serial,
        reason=text_field(data, "reason"),
        invalidity_date=datetime_field(data, "invalidity_date"),
        token=app_token(),
        settings=settings_of(current_app),
    )
    return _status_change_json(change)


@bp.post("/applications/<int:application_id>/revoke")
@documented(
    tag=EMPLOYER,
    body=schemas.EmployerRevocation,
    responses={200: Reply(schemas.StatusChange, "Revoked; OCSP answers say so now.")},
    errors=(400, 401, 403, 404, 409, 415, 423, 429, 503),
)
def revoke_own_certificate(application_id: int) -> JSON:
    """Revoke the application's certificate (the password again; the employer is
    notified)."""
    user = bearer_user(Role.EMPLOYER_ADMIN)
    employer_application(user=user, application_id=application_id)  # 404 before the body's 400
    data = json_body(schemas.EmployerRevocation)
    change = portal.revoke_own_certificate(
        user=user,
        application_id=application_id,
        reason=text_field(data, "reason"),
        password=text_field(data, "password"),
        policy=login_policy(),
        token=app_token(),
        settings=settings_of(current_app),
    )
    return _status_change_json(change)
