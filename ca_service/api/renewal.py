"""Renewal through the API.

- ``GET /certificates`` lists the employer's certificates with their renewal state.
- ``GET /certificates/<serial>/renewal-info`` (public, like RFC 9773's renewal information)
  gives the suggested renewal window; ``ca-client renew --if-due`` renews only inside it.
- ``POST /certificates/<serial>/renewal`` renews with a new CSR: 201 with the new certificate
  when it is issued at once, 202 with the reasons when it waits for an officer or documents.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, make_response, url_for

from ca_service.api import schemas
from ca_service.api.auth import bearer_user
from ca_service.api.http import JSON, bp, json_body, text_field
from ca_service.api.serialise import application_json, certificate_json, timestamp
from ca_service.api.spec import EMPLOYER, PUBLIC, Reply, documented
from ca_service.auth.models import EMPLOYER_MEMBERS
from ca_service.db import read_first
from ca_service.errors import ValidationError
from ca_service.extensions import settings_of
from ca_service.issuance import renewal, renewal_batch
from ca_service.issuance.renewal import RenewalState, RenewalWindow

# How often a client should ask again (RFC 9773 Retry-After): the window does not move faster.
RETRY_AFTER_SECONDS = 6 * 3600


def renewal_json(window: RenewalWindow) -> JSON:
    base = str(settings_of(current_app)["PUBLIC_BASE_URL"]).rstrip("/")
    cert = window.certificate
    return {
        "serial": cert.serial,
        "not_after": timestamp(cert.not_after),
        "state": window.state.value,
        "due": window.state in (RenewalState.DUE, RenewalState.GRACE),
        "days_left": window.days_left,
        "suggested_window": {"start": timestamp(window.opens_at), "end": timestamp(cert.not_after)},
        "renewable_until": timestamp(window.closes_at),
        "renewed_by": window.successor.serial if window.successor is not None else None,
        "resumable": window.stuck is not None,
        "explanation_url": f"{base}/renewal/{cert.serial}",
    }


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise ValidationError(f"The field {name!r} must be true or false.")
    return value


@bp.get("/certificates")
@documented(
    tag=EMPLOYER,
    responses={200: Reply(schemas.CertificateList, "The certificates.")},
    errors=(401, 403),
)
def list_certificates() -> JSON:
    """The employer's certificates, newest first, with their renewal state."""
    user = bearer_user(*EMPLOYER_MEMBERS)
    settings = settings_of(current_app)
    return {
        "certificates": [
            {
                **certificate_json(row),
                "renewal": renewal_json(renewal.renewal_window(row, settings)),
            }
            for row in renewal.employer_certificates(user)
        ]
    }


@bp.get("/certificates/<serial>/renewal-info")
@documented(
    tag=PUBLIC,
    public=True,
    responses={200: Reply(schemas.RenewalInfo, "Where the certificate stands for renewal.")},
    errors=(404,),
)
def renewal_info(serial: str) -> Response:
    """Suggested renewal window of an employer certificate (as RFC 9773's renewal
    information; Retry-After says when to ask again)."""
    with read_first():
        row = renewal.certificate_by_serial(serial)
        window = renewal.renewal_window(row, settings_of(current_app))
        response = make_response(renewal_json(window), 200)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@bp.post("/certificates/<serial>/renewal")
@documented(
    tag=EMPLOYER,
    body=schemas.RenewalRequest,
    responses={
        201: Reply(schemas.RenewalResult, "Renewed: the new certificate."),
        202: Reply(schemas.RenewalResult, "Accepted; it waits (see reasons and application)."),
    },
    errors=(400, 401, 403, 404, 409, 415, 503),
)
def renew_certificate(serial: str) -> Response:
    """Renew (re-key) a certificate with a new CSR: issued at once when the employer record
    and documents are unchanged, else waiting for an officer or documents."""
    with read_first():  # checked without SQLite's write lock (renewal_batch.renew)
        user = bearer_user(*EMPLOYER_MEMBERS)
        # The employer stays referenced through the renewal, which reads it from the session.
        certificate, _employer, lineage = renewal.renewal_target(user=user, serial=serial)
        data = json_body(schemas.RenewalRequest)
        csr = text_field(data, "csr_pem").encode()
        supersede = _flag(data, "supersede")
        contacts_confirmed = _flag(data, "contacts_confirmed")
    outcome = renewal_batch.renew(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        user=user,
        certificate=certificate,
        csr=csr,
        supersede=supersede,
        contacts_confirmed=contacts_confirmed,
        lineage=lineage,
    )
    if outcome.certificate is not None:
        # Issued and committed: what is left only reads, so a transaction begun for it (none
        # is open unless the old certificate was just revoked as superseded) need not queue
        # for SQLite's write lock behind other requests.
        with read_first():
            return _renewal_answer(outcome, 201)
    return _renewal_answer(outcome, 202)


def _renewal_answer(outcome: renewal.RenewalOutcome, status: int) -> Response:
    body: JSON = {
        "application": application_json(outcome.application),
        "reasons": outcome.reasons,
    }
    if outcome.certificate is not None:
        body["certificate"] = certificate_json(outcome.certificate)
        body["certificate_pem"], body["chain_pem"] = outcome.delivery or renewal.delivery_pem(
            outcome.certificate
        )
    response = make_response(body, status)
    location = url_for(".get_application", application_id=outcome.application.id)
    response.headers["Location"] = location
    return response
