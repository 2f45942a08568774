"""Certificate login and tax-certificate binding through the API.

- ``POST /auth/challenges`` gives a nonce to sign (purpose ``login``; ``bind`` needs the
  administrator's bearer token).
- ``POST /auth/certificate`` answers a login challenge with the certificate and the signature:
  a challenge started by a browser signs that browser in; one started through the API is
  answered with a bearer token.
- ``POST /auth/tls-token``: a bearer token for the TLS client certificate of this connection.
- ``GET|POST /bindings`` and ``DELETE /bindings/<id>``: list, bind (answering a bind
  challenge) and unbind tax certificates.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any

from cryptography import x509
from flask import Response, current_app, make_response, request

from ca_service.api import schemas
from ca_service.api.auth import bearer_user, issue_token
from ca_service.api.http import JSON, InvalidToken, bp, choice, json_body, text_field
from ca_service.api.serialise import timestamp
from ca_service.api.spec import AUTHENTICATION, BINDINGS, Reply, documented
from ca_service.auth.certificate_login import answer_challenge, login_with_certificate
from ca_service.auth.challenges import new_challenge
from ca_service.auth.client_cert import presented_chain
from ca_service.auth.models import ChallengePurpose, Role
from ca_service.auth.verification import parse_chain
from ca_service.binding import bindings
from ca_service.binding.models import CertificateBinding
from ca_service.db import utcnow
from ca_service.errors import ValidationError
from ca_service.extensions import settings_of

_OFFICERS = (Role.RA_OFFICER, Role.CA_ADMIN)


def _signature(data: dict[str, Any]) -> bytes:
    text = text_field(data, "signature")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("The field 'signature' must be base64 (standard alphabet).") from None


def _chain(data: dict[str, Any]) -> list[x509.Certificate]:
    return parse_chain(text_field(data, "certificate"))


@bp.post("/auth/challenges")
@documented(
    tag=AUTHENTICATION,
    public=True,
    body=schemas.ChallengeRequest,
    body_required=False,
    responses={201: Reply(schemas.Challenge, "Sign `to_sign` before `expires_at`, once.")},
    errors=(400, 401, 403, 415, 429),
)
def create_challenge() -> Response:
    """A one-time challenge for certificate login (or, with the administrator's token, for
    binding a tax certificate)."""
    data = json_body(schemas.ChallengeRequest) if request.get_data(cache=True) else {}
    purpose = ChallengePurpose(
        choice(text_field(data, "purpose", required=False) or "login", "purpose", ("login", "bind"))
    )
    user = bearer_user(Role.EMPLOYER_ADMIN) if purpose is ChallengePurpose.BIND else None
    seconds = int(settings_of(current_app)["CHALLENGE_SECONDS"])
    challenge = new_challenge(
        purpose=purpose, lifetime=dt.timedelta(seconds=seconds), now=utcnow(), user=user
    )
    body = {
        "challenge": challenge.nonce,
        "purpose": purpose.value,
        "to_sign": challenge.to_sign,
        "expires_at": timestamp(challenge.expires_at),
        "signature_algorithms": ["ECDSA with SHA-256 or SHA-384", "RSA PKCS#1 v1.5 with SHA-256"],
    }
    return make_response(body, 201)


@bp.post("/auth/certificate")
@documented(
    tag=AUTHENTICATION,
    public=True,
    body=schemas.ChallengeAnswer,
    responses={
        201: Reply(schemas.Token, "A challenge made through the API: a token."),
        200: Reply(
            schemas.BrowserSignedIn,
            "A challenge shown by a browser's certificate sign-in page: that browser is signed "
            "in at its next reload.",
        ),
    },
    errors=(400, 403, 415, 429),
)
def certificate_login() -> Response:
    """Sign in with a certificate by answering a login challenge.

    Our employer certificates and bound tax-bureau certificates sign in. A refusal is a 403
    whose error code says why: `expired`, `not_yet_valid`, `revoked`, `untrusted_issuer`,
    `wrong_key_usage`, `not_bound`, `other_organisation`, `revocation_unknown` (the tax CA's
    CRL is out of date), `bad_signature` (signed another challenge or with another key),
    `challenge_unusable` (unknown, expired or already used), `unreadable`, `no_account`.
    """
    data = json_body(schemas.ChallengeAnswer)
    login = answer_challenge(
        nonce=text_field(data, "challenge"),
        chain=_chain(data),
        signature=_signature(data),
        settings=settings_of(current_app),
        now=utcnow(),
    )
    if login.challenge is not None and login.challenge.browser_hash is not None:
        # The browser that shows this challenge signs in at its next reload.
        return make_response(
            {"signed_in": "browser", "username": login.user.username, "method": login.method},
            200,
        )
    return issue_token(login.user, method=login.method, login=login)


@bp.post("/auth/tls-token")
@documented(
    tag=AUTHENTICATION,
    public=True,
    responses={201: Reply(schemas.Token, "A new token.")},
    errors=(401, 403, 429),
)
def tls_token() -> Response:
    """A bearer token for the TLS client certificate of this connection
    (`ca-service serve --tls`, or a trusted proxy's header)."""
    settings = settings_of(current_app)
    chain = presented_chain(request.environ, settings)
    if not chain:
        raise InvalidToken(
            "No TLS client certificate was presented on this connection: connect over https "
            "with your certificate and key, or use POST /api/v1/auth/challenges."
        )
    login = login_with_certificate(chain, settings=settings, now=utcnow())
    return issue_token(login.user, method=login.method, login=login)


def binding_json(binding: CertificateBinding) -> JSON:
    return {
        "id": binding.id,
        "issuer": binding.issuer,
        "serial": binding.serial,
        "subject": binding.subject,
        "fingerprint_sha256": binding.fingerprint_sha256,
        "spki_sha256": binding.spki_sha256,
        "not_before": timestamp(binding.not_before),
        "not_after": timestamp(binding.not_after),
        "bound_at": timestamp(binding.created_at),
        "unbound_at": timestamp(binding.unbound_at) if binding.unbound_at else None,
    }


@bp.get("/bindings")
@documented(
    tag=BINDINGS,
    query=schemas.BindingsQuery,
    responses={200: Reply(schemas.Bindings, "Newest first.")},
    errors=(400, 401, 403, 404),
)
def list_bindings() -> JSON:
    """Tax certificates bound to the employer (officers: ?registration_number=), unbound ones
    included."""
    user = bearer_user(Role.EMPLOYER_ADMIN, *_OFFICERS)
    if user.role is Role.EMPLOYER_ADMIN:
        employer_id = user.employer_id
    else:
        number = request.args.get("registration_number", "")
        if not number:
            raise ValidationError("Give ?registration_number= (officers see any employer's).")
        employer_id = bindings.employer_by_number(number).id
    if employer_id is None:
        raise ValidationError("This account belongs to no employer.")
    rows = bindings.list_bindings(employer_id, include_unbound=True)
    return {"bindings": [binding_json(row) for row in rows]}


@bp.post("/bindings")
@documented(
    tag=BINDINGS,
    public=True,
    body=schemas.ChallengeAnswer,
    responses={201: Reply(schemas.Binding, "Bound; the employer is notified.")},
    errors=(400, 403, 409, 415, 429, 503),
)
def bind() -> Response:
    """Bind a tax certificate by answering a bind challenge with its key (no token needed: the
    challenge names the administrator who asked for it)."""
    # No bearer token needed: the bind challenge itself was issued to a signed-in
    # administrator (web page or API) and names the account.
    data = json_body(schemas.ChallengeAnswer)
    binding = bindings.bind_by_challenge(
        nonce=text_field(data, "challenge"),
        chain=_chain(data),
        signature=_signature(data),
        settings=settings_of(current_app),
        now=utcnow(),
    )
    response = make_response(binding_json(binding), 201)
    response.headers["Location"] = f"/api/v1/bindings/{binding.id}"
    return response


@bp.delete("/bindings/<int:binding_id>")
@documented(
    tag=BINDINGS,
    responses={200: Reply(schemas.Binding, "Unbound.")},
    errors=(401, 403, 404, 503),
)
def unbind(binding_id: int) -> JSON:
    """Unbind a tax certificate (its employer's administrator, an RA officer or a CA
    administrator); the employer is notified."""
    user = bearer_user(Role.EMPLOYER_ADMIN, *_OFFICERS)
    binding = bindings.unbind(user=user, binding_id=binding_id, now=utcnow())
    return binding_json(binding)
