"""The OpenAPI 3.1 document of API v1, written out by hand.

``tests/api/test_openapi.py`` checks it against the app's routes (every ``/api/v1`` route and
method is described, nothing else is) and against the OpenAPI schema, so it cannot drift.
Each operationId is the handler's endpoint name.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]
PREFIX = "/api/v1"


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JSON, description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: JSON, description: str = "") -> JSON:
    body: JSON = {"required": True, "content": {"application/json": {"schema": schema}}}
    if description:
        body["description"] = description
    return body


def _errors(*statuses: int) -> JSON:
    return {str(s): {"$ref": f"#/components/responses/{_ERROR_RESPONSES[s][0]}"} for s in statuses}


_ID = {"type": "integer", "minimum": 1}
_PATH_PARAMETERS = {
    "application_id": {"name": "application_id", "in": "path", "required": True, "schema": _ID},
    "document_id": {"name": "document_id", "in": "path", "required": True, "schema": _ID},
    "binding_id": {"name": "binding_id", "in": "path", "required": True, "schema": _ID},
    "serial": {
        "name": "serial",
        "in": "path",
        "required": True,
        "description": "Serial number in hexadecimal (leading zeros and 0x are ignored).",
        "schema": {"type": "string"},
    },
}
_ERROR_RESPONSES = {
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


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    responses: JSON,
    *,
    errors: tuple[int, ...],
    public: bool = False,
    body: JSON | None = None,
    parameters: list[JSON] | None = None,
) -> JSON:
    operation: JSON = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": {**responses, **_errors(*errors)},
    }
    if public:
        operation["security"] = []
    if body is not None:
        operation["requestBody"] = body
    if parameters:
        operation["parameters"] = parameters
    return operation


def _path(*names: str) -> list[JSON]:
    return [_PATH_PARAMETERS[n] for n in names]


_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_TIME = {"type": "string", "format": "date-time"}

SCHEMAS: JSON = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "examples": ["invalid_input", "invalid_token"]},
                    "message": {"type": "string"},
                },
            }
        },
    },
    "TokenRequest": {
        "type": "object",
        "required": ["username", "password"],
        "additionalProperties": False,
        "properties": {
            "username": {"type": "string"},
            "password": {"type": "string", "format": "password"},
            "totp_code": {
                "type": "string",
                "description": "Current authenticator code; required for agency staff.",
            },
            "sms_code": {
                "type": "string",
                "description": "Six-digit code sent by SMS to the employer's reserved mobile "
                "number by a call without it; required for employer administrators.",
            },
        },
    },
    "Token": {
        "type": "object",
        "required": ["token", "token_type", "expires_at"],
        "properties": {
            "token": {"type": "string", "description": "Send as 'Authorization: Bearer <token>'."},
            "token_type": {"const": "Bearer"},
            "expires_at": _TIME,
            "username": {"type": "string"},
            "role": {
                "type": "string",
                "enum": ["employer_admin", "ra_officer", "ca_admin", "auditor"],
            },
        },
    },
    "Registration": {
        "type": "object",
        "required": [
            "registration_number",
            "legal_name",
            "administrator_name",
            "mobile",
            "email",
            "password",
        ],
        "additionalProperties": False,
        "properties": {
            "registration_number": {
                "type": "string",
                "description": "The company's registration number (USCC); it becomes the username.",
            },
            "legal_name": {"type": "string", "maxLength": 64},
            "administrator_name": {"type": "string", "maxLength": 200},
            "mobile": {
                "type": "string",
                "description": "Reserved mobile number; gets the SMS code.",
            },
            "email": {"type": "string", "format": "email"},
            "password": {"type": "string", "format": "password", "minLength": 12},
            "legal_representative_id": {"type": "string"},
        },
    },
    "Employer": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "registration_number": {"type": "string"},
            "legal_name": {"type": "string"},
            "mobile": {"type": "string"},
            "email": {"type": "string"},
            "mobile_confirmed": {"type": "boolean"},
            "created_at": _TIME,
        },
    },
    "Registered": {
        "type": "object",
        "required": ["employer", "username", "next"],
        "properties": {
            "employer": _ref("Employer"),
            "username": {"type": "string"},
            "code_sent": {
                "type": "boolean",
                "description": "false: the limits on SMS codes held the confirmation code back; "
                "ask for one at /employers/resend-code after retry_after_seconds.",
            },
            "retry_after_seconds": {"type": "integer"},
            "next": {"type": "string"},
        },
    },
    "CodeResent": {
        "type": "object",
        "properties": {
            "message": {"type": "string"},
            "code_sent": {"type": "boolean"},
            "retry_after_seconds": {
                "type": "integer",
                "description": "When code_sent is false: seconds until a new code can be asked "
                "for (also in Retry-After); the code sent earlier still works.",
            },
        },
    },
    "MobileConfirmation": {
        "type": "object",
        "required": ["username", "password", "code"],
        "additionalProperties": False,
        "properties": {
            "username": {"type": "string"},
            "password": {"type": "string", "format": "password"},
            "code": {"type": "string", "description": "The code sent by SMS."},
        },
    },
    "Credentials": {
        "type": "object",
        "required": ["username", "password"],
        "additionalProperties": False,
        "properties": {
            "username": {"type": "string"},
            "password": {"type": "string", "format": "password"},
        },
    },
    "Message": {"type": "object", "properties": {"message": {"type": "string"}}},
    "NewApplication": {
        "type": "object",
        "required": ["key_source"],
        "additionalProperties": False,
        "properties": {
            "key_source": {
                "type": "string",
                "enum": ["csr", "counter"],
                "description": "csr: the employer uploads a PKCS#10 request; counter: an officer "
                "generates the key on the employer's token.",
            }
        },
    },
    "CsrJson": {
        "type": "object",
        "required": ["csr_pem"],
        "additionalProperties": False,
        "properties": {"csr_pem": {"type": "string"}},
    },
    "DocumentUpload": {
        "type": "object",
        "required": ["doc_type", "file"],
        "properties": {
            "doc_type": {"$ref": "#/components/schemas/DocumentType"},
            "file": {"type": "string", "contentMediaType": "application/octet-stream"},
            "signature": {
                "type": "string",
                "contentMediaType": "application/octet-stream",
                "description": "Detached CMS signature (.p7s) over a scan.",
            },
        },
    },
    "DocumentType": {
        "type": "string",
        "enum": [
            "application_form",
            "declaration_form",
            "commitment_letter",
            "business_licence",
            "social_security_registration",
            "legal_representative_id",
        ],
    },
    "Document": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "doc_type": _ref("DocumentType"),
            "label": {"type": "string"},
            "filename": {"type": "string"},
            "media_type": {"type": "string"},
            "size": {"type": "integer"},
            "sha256": {"type": "string"},
            "signature_sha256": _NULLABLE_STRING,
            "verdict": {
                "type": "string",
                "enum": [
                    "verified",
                    "tampered",
                    "untrusted_signer",
                    "other_organisation",
                    "signer_expired",
                    "signer_not_yet_valid",
                    "unsigned",
                    "invalid_file",
                ],
            },
            "detail": {"type": "string"},
            "signer_subject": _NULLABLE_STRING,
            "signed_at": _NULLABLE_TIME,
            "attested": {"type": "boolean"},
            "attested_at": _NULLABLE_TIME,
            "valid_until": {"type": ["string", "null"], "format": "date"},
            "acceptable": {"type": "boolean"},
            "uploaded_at": _TIME,
        },
    },
    "Certificate": {
        "type": "object",
        "properties": {
            "serial": {"type": "string"},
            "subject": {"type": "string"},
            "not_before": _TIME,
            "not_after": _TIME,
            "sha256": {"type": "string"},
            "revoked_at": _NULLABLE_TIME,
            "revocation_reason": _NULLABLE_STRING,
        },
    },
    "RenewalInfo": {
        "type": "object",
        "required": ["serial", "state", "due", "suggested_window", "renewable_until"],
        "properties": {
            "serial": {"type": "string"},
            "not_after": _TIME,
            "state": {
                "type": "string",
                "enum": ["not_due", "due", "grace", "past_grace", "pending", "renewed", "revoked"],
            },
            "due": {"type": "boolean", "description": "Renew now (inside the window or grace)."},
            "days_left": {"type": "integer"},
            "suggested_window": {
                "type": "object",
                "properties": {"start": _TIME, "end": _TIME},
            },
            "renewable_until": _TIME,
            "renewed_by": _NULLABLE_STRING,
            "explanation_url": {"type": "string"},
        },
    },
    "CertificateList": {
        "type": "object",
        "properties": {
            "certificates": {
                "type": "array",
                "items": {
                    "allOf": [
                        _ref("Certificate"),
                        {"type": "object", "properties": {"renewal": _ref("RenewalInfo")}},
                    ]
                },
            }
        },
    },
    "RenewalRequest": {
        "type": "object",
        "required": ["csr_pem"],
        "additionalProperties": False,
        "properties": {
            "csr_pem": {"type": "string", "description": "PKCS#10 request for the new key."},
            "supersede": {
                "type": "boolean",
                "description": "Revoke the old certificate as superseded once renewed.",
            },
            "contacts_confirmed": {
                "type": "boolean",
                "description": "After expiry: the administrator's mobile and e-mail are current.",
            },
        },
    },
    "RenewalResult": {
        "type": "object",
        "properties": {
            "application": _ref("Application"),
            "reasons": {"type": "array", "items": {"type": "string"}},
            "certificate": _ref("Certificate"),
            "certificate_pem": {"type": "string"},
            "chain_pem": {"type": "string"},
        },
    },
    "ApplicationStatus": {
        "type": "string",
        "enum": [
            "draft",
            "submitted",
            "awaiting_confirmation",
            "approved",
            "issued",
            "rejected",
        ],
    },
    "ApplicationSummary": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "status": _ref("ApplicationStatus"),
            "key_source": {"type": "string", "enum": ["csr", "counter"]},
            "employer": {
                "type": "object",
                "properties": {
                    "registration_number": {"type": "string"},
                    "legal_name": {"type": "string"},
                },
            },
            "key_description": _NULLABLE_STRING,
            "public_key_sha256": _NULLABLE_STRING,
            "created_at": _TIME,
            "submitted_at": _NULLABLE_TIME,
            "decided_at": _NULLABLE_TIME,
            "rejection_reason": _NULLABLE_STRING,
            "certificate": {"oneOf": [_ref("Certificate"), {"type": "null"}]},
        },
    },
    "Application": {
        "allOf": [
            _ref("ApplicationSummary"),
            {
                "type": "object",
                "properties": {
                    "documents": {"type": "array", "items": _ref("Document")},
                    "missing": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "What a draft still needs before submission.",
                    },
                    "history": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "status": _ref("ApplicationStatus"),
                                "actor": {"type": "string"},
                                "note": _NULLABLE_STRING,
                                "at": _TIME,
                            },
                        },
                    },
                },
            },
        ]
    },
    "Review": {
        "allOf": [
            _ref("Application"),
            {
                "type": "object",
                "properties": {
                    "approval_blockers": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Why it cannot be approved yet (empty: it can).",
                    },
                    "dual_control": {"type": "boolean"},
                },
            },
        ]
    },
    "ApplicationList": {
        "type": "object",
        "properties": {"applications": {"type": "array", "items": _ref("ApplicationSummary")}},
    },
    "Validity": {
        "type": "object",
        "required": ["valid_until"],
        "additionalProperties": False,
        "properties": {"valid_until": {"type": ["string", "null"], "format": "date"}},
    },
    "Rejection": {
        "type": "object",
        "required": ["reason"],
        "additionalProperties": False,
        "properties": {"reason": {"type": "string", "maxLength": 2000}},
    },
    "OfficerRevocation": {
        "type": "object",
        "required": ["reason"],
        "additionalProperties": False,
        "properties": {
            "reason": {
                "type": "string",
                "enum": [
                    "unspecified",
                    "keyCompromise",
                    "cACompromise",
                    "affiliationChanged",
                    "superseded",
                    "cessationOfOperation",
                    "certificateHold",
                    "privilegeWithdrawn",
                    "aACompromise",
                    "removeFromCRL",
                ],
                "description": "RFC 5280 reason; certificateHold suspends the certificate, "
                "removeFromCRL releases the hold.",
            },
            "invalidity_date": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "When the key is known or suspected to have been compromised "
                "(UTC when no offset is given); not in the future.",
            },
        },
    },
    "EmployerRevocation": {
        "type": "object",
        "required": ["reason", "password"],
        "additionalProperties": False,
        "properties": {
            "reason": {
                "type": "string",
                "enum": ["keyCompromise", "superseded", "cessationOfOperation"],
            },
            "password": {
                "type": "string",
                "format": "password",
                "description": "The administrator's current password; a wrong one counts as a "
                "failed sign-in.",
            },
        },
    },
    "StatusChange": {
        "type": "object",
        "required": ["certificate"],
        "properties": {
            "certificate": _ref("Certificate"),
            "crl_number": {
                "type": ["integer", "null"],
                "description": "The CRL published with the change; null when it is coalesced "
                "with other revocations and published within seconds (OCSP shows the change "
                "at once either way).",
            },
            "crl_published_at": _NULLABLE_TIME,
        },
    },
    "ChallengeRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "purpose": {
                "type": "string",
                "enum": ["login", "bind"],
                "default": "login",
                "description": "`bind` needs the employer administrator's bearer token.",
            }
        },
    },
    "Challenge": {
        "type": "object",
        "required": ["challenge", "purpose", "to_sign", "expires_at"],
        "properties": {
            "challenge": {"type": "string", "description": "The one-time nonce."},
            "purpose": {"type": "string", "enum": ["login", "bind"]},
            "to_sign": {
                "type": "string",
                "description": "The exact UTF-8 text to sign: "
                "`ca-service <purpose> challenge: <nonce>`.",
            },
            "expires_at": _TIME,
            "signature_algorithms": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ChallengeAnswer": {
        "type": "object",
        "required": ["challenge", "certificate", "signature"],
        "additionalProperties": False,
        "properties": {
            "challenge": {"type": "string"},
            "certificate": {
                "type": "string",
                "description": "PEM: the certificate, optionally followed by intermediates "
                "(only configured CAs build paths).",
            },
            "signature": {
                "type": "string",
                "contentEncoding": "base64",
                "description": "Signature of `to_sign` with the certificate's key: ECDSA "
                "(SHA-256 or SHA-384) or RSA PKCS#1 v1.5 (SHA-256 or SHA-384).",
            },
        },
    },
    "BrowserSignedIn": {
        "type": "object",
        "required": ["signed_in", "username"],
        "properties": {
            "signed_in": {"const": "browser"},
            "username": {"type": "string"},
            "method": {"type": "string"},
        },
    },
    "Binding": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "issuer": {"type": "string"},
            "serial": {"type": "string", "description": "Hexadecimal."},
            "subject": {"type": "string"},
            "fingerprint_sha256": {"type": "string"},
            "spki_sha256": {"type": "string"},
            "not_before": _TIME,
            "not_after": _TIME,
            "bound_at": _TIME,
            "unbound_at": _NULLABLE_TIME,
        },
    },
    "Bindings": {
        "type": "object",
        "required": ["bindings"],
        "properties": {"bindings": {"type": "array", "items": _ref("Binding")}},
    },
    "PublicStatus": {
        "type": "object",
        "properties": {
            "serial": {"type": "string"},
            "subject": {"type": "string"},
            "issuer": {"type": "string"},
            "not_before": _TIME,
            "not_after": _TIME,
            "status": {"type": "string", "enum": ["valid", "revoked", "expired", "not yet valid"]},
            "revoked_at": _NULLABLE_TIME,
            "revocation_reason": _NULLABLE_STRING,
            "sha256": {"type": "string"},
        },
    },
}

_EMPLOYER = "employer applications"
_OFFICER = "review"
_CERTIFICATE_FORMATS = {
    "application/x-pem-file": {"schema": {"type": "string"}},
    "application/pkix-cert": {
        "schema": {"type": "string", "contentMediaType": "application/pkix-cert"}
    },
    "application/pkcs7-mime": {
        "schema": {"type": "string", "contentMediaType": "application/pkcs7-mime"}
    },
}


def _paths() -> JSON:
    application = _path("application_id")
    document = _path("application_id", "document_id")
    review = {"200": _json(_ref("Review"), "The application as the officer sees it.")}
    return {
        "/auth/token": {
            "post": {
                **_operation(
                    "create_token",
                    "Exchange username, password and a second factor (SMS code for employer "
                    "administrators, TOTP code for agency staff) for a bearer token",
                    "authentication",
                    {"201": _json(_ref("Token"), "A new token; only its hash is stored.")},
                    errors=(400, 401, 403, 415, 423, 429),
                    public=True,
                    body=_body(_ref("TokenRequest")),
                ),
                "description": (
                    "Employer administrators sign in in two calls. The first, with username and "
                    "password only, sends a six-digit code by SMS to the employer's reserved "
                    "mobile number and answers 401 with error code `sms_code_required` (the "
                    "message gives the number's last digits). Repeat the call with the same "
                    "username and password and the code in `sms_code`; each call without it sends "
                    "a new code and the earlier one stops working, unless the limits on SMS codes "
                    "hold it back (one per number per CA_SMS_CODE_INTERVAL_SECONDS, a few an "
                    "hour): then the message says so and when to ask again, and the earlier code "
                    "still works. A wrong code answers 401 and "
                    "counts as a failed sign-in (too many lock the account: 423). Each sign-in is "
                    "audited and announced to the employer by e-mail and SMS.\n\n"
                    "Agency staff send the current authenticator code in `totp_code` (without it: "
                    "401 `totp_required`)."
                ),
            },
            "delete": _operation(
                "revoke_token",
                "Revoke the presented token",
                "authentication",
                {"204": {"description": "Revoked."}},
                errors=(401,),
            ),
        },
        "/auth/challenges": {
            "post": _operation(
                "create_challenge",
                "A one-time challenge for certificate login (or, with the administrator's "
                "token, for binding a tax certificate)",
                "authentication",
                {"201": _json(_ref("Challenge"), "Sign `to_sign` before `expires_at`, once.")},
                errors=(400, 401, 403, 415, 429),
                public=True,
                body={
                    "required": False,
                    "content": {"application/json": {"schema": _ref("ChallengeRequest")}},
                },
            )
        },
        "/auth/certificate": {
            "post": {
                **_operation(
                    "certificate_login",
                    "Sign in with a certificate by answering a login challenge",
                    "authentication",
                    {
                        "201": _json(_ref("Token"), "A challenge made through the API: a token."),
                        "200": _json(
                            _ref("BrowserSignedIn"),
                            "A challenge shown by a browser's certificate sign-in page: that "
                            "browser is signed in at its next reload.",
                        ),
                    },
                    errors=(400, 403, 415, 429),
                    public=True,
                    body=_body(_ref("ChallengeAnswer")),
                ),
                "description": (
                    "Our employer certificates and bound tax-bureau certificates sign in. A "
                    "refusal is a 403 whose error code says why: `expired`, `not_yet_valid`, "
                    "`revoked`, `untrusted_issuer`, `wrong_key_usage`, `not_bound`, "
                    "`other_organisation`, `revocation_unknown` (the tax CA's CRL is out of "
                    "date), `bad_signature` (signed another challenge or with another key), "
                    "`challenge_unusable` (unknown, expired or already used), `unreadable`, "
                    "`no_account`."
                ),
            }
        },
        "/auth/tls-token": {
            "post": _operation(
                "tls_token",
                "A bearer token for the TLS client certificate of this connection "
                "(`ca-service serve --tls`, or a trusted proxy's header)",
                "authentication",
                {"201": _json(_ref("Token"), "A new token.")},
                errors=(401, 403, 429),
                public=True,
            )
        },
        "/bindings": {
            "get": {
                **_operation(
                    "list_bindings",
                    "Tax certificates bound to the employer (officers: "
                    "?registration_number=), unbound ones included",
                    "bindings",
                    {"200": _json(_ref("Bindings"), "Newest first.")},
                    errors=(400, 401, 403, 404),
                ),
                "parameters": [
                    {
                        "name": "registration_number",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "The employer, for RA officers and CA administrators.",
                    }
                ],
            },
            "post": _operation(
                "bind",
                "Bind a tax certificate by answering a bind challenge with its key (no token "
                "needed: the challenge names the administrator who asked for it)",
                "bindings",
                {"201": _json(_ref("Binding"), "Bound; the employer is notified.")},
                errors=(400, 403, 409, 415, 429),
                public=True,
                body=_body(_ref("ChallengeAnswer")),
            ),
        },
        "/bindings/{binding_id}": {
            "delete": _operation(
                "unbind",
                "Unbind a tax certificate (its employer's administrator, an RA officer or a CA "
                "administrator); the employer is notified",
                "bindings",
                {"200": _json(_ref("Binding"), "Unbound.")},
                errors=(401, 403, 404),
                parameters=_path("binding_id"),
            )
        },
        "/employers": {
            "post": _operation(
                "register",
                "Register an employer and its administrator; an SMS code confirms the mobile",
                "registration",
                {"201": _json(_ref("Registered"), "Registered; confirm the mobile number next.")},
                errors=(400, 409, 415, 429),
                public=True,
                body=_body(_ref("Registration")),
            )
        },
        "/employers/confirm-mobile": {
            "post": _operation(
                "confirm_employer_mobile",
                "Confirm the reserved mobile number with the SMS code (password-authenticated)",
                "registration",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "employer": _ref("Employer"),
                                "next": {"type": "string"},
                            },
                        },
                        "Confirmed; request a token next.",
                    )
                },
                errors=(400, 401, 403, 404, 409, 415, 423, 429),
                public=True,
                body=_body(_ref("MobileConfirmation")),
            )
        },
        "/employers/resend-code": {
            "post": _operation(
                "resend_mobile_code",
                "Send a new SMS confirmation code (password-authenticated)",
                "registration",
                {
                    "202": _json(
                        _ref("CodeResent"),
                        "A new code is queued for delivery, or (code_sent false) the limits "
                        "on SMS codes held it back.",
                    )
                },
                errors=(400, 401, 403, 404, 409, 415, 423, 429),
                public=True,
                body=_body(_ref("Credentials")),
            )
        },
        "/applications": {
            "get": _operation(
                "list_applications",
                "The employer's applications, newest first",
                _EMPLOYER,
                {"200": _json(_ref("ApplicationList"), "Applications without their details.")},
                errors=(401, 403),
            ),
            "post": _operation(
                "create_application",
                "Start a draft application",
                _EMPLOYER,
                {"201": _json(_ref("Application"), "The new draft.")},
                errors=(400, 401, 403, 415),
                body=_body(_ref("NewApplication")),
            ),
        },
        "/applications/{application_id}": {
            "get": _operation(
                "get_application",
                "An application with its documents, history and what is missing",
                _EMPLOYER,
                {"200": _json(_ref("Application"), "The application.")},
                errors=(401, 403, 404),
                parameters=application,
            )
        },
        "/applications/{application_id}/csr": {
            "put": _operation(
                "put_csr",
                "Attach the PKCS#10 certificate request (PEM or DER) to a draft",
                _EMPLOYER,
                {"200": _json(_ref("Application"), "The application with the key described.")},
                errors=(400, 401, 403, 404, 409, 413, 415),
                parameters=application,
                body={
                    "required": True,
                    "content": {
                        "application/pkcs10": {
                            "schema": {
                                "type": "string",
                                "contentMediaType": "application/pkcs10",
                                "description": "PEM or DER.",
                            }
                        },
                        "application/json": {"schema": _ref("CsrJson")},
                    },
                },
            )
        },
        "/applications/{application_id}/documents": {
            "post": _operation(
                "upload_document",
                "Upload a sealed document (replaces one of the same type)",
                _EMPLOYER,
                {"201": _json(_ref("Document"), "The stored document with its seal verdict.")},
                errors=(400, 401, 403, 404, 409, 413, 415),
                parameters=application,
                body={
                    "required": True,
                    "content": {"multipart/form-data": {"schema": _ref("DocumentUpload")}},
                },
            )
        },
        "/applications/{application_id}/submit": {
            "post": _operation(
                "submit_application",
                "Submit the draft for review; it becomes read-only",
                _EMPLOYER,
                {"200": _json(_ref("Application"), "The submitted application.")},
                errors=(400, 401, 403, 404, 409),
                parameters=application,
            )
        },
        "/applications/{application_id}/certificate": {
            "get": _operation(
                "download_certificate",
                "Download the issued certificate",
                _EMPLOYER,
                {"200": {"description": "The certificate.", "content": _CERTIFICATE_FORMATS}},
                errors=(400, 401, 403, 404),
                parameters=[
                    *application,
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "description": "pem (default), der, chain (PEM with the CA chain) or "
                        "p7b (PKCS#7 with the chain, DER).",
                        "schema": {
                            "type": "string",
                            "enum": ["pem", "der", "chain", "p7b"],
                            "default": "pem",
                        },
                    },
                ],
            )
        },
        "/review": {
            "get": _operation(
                "review_queue",
                "Submitted applications, oldest first (500 at most)",
                _OFFICER,
                {"200": _json(_ref("ApplicationList"), "Applications without their details.")},
                errors=(400, 401, 403),
                parameters=[
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "description": "Only applications in this status (default: all but "
                        "drafts).",
                        "schema": _ref("ApplicationStatus"),
                    },
                    {
                        "name": "q",
                        "in": "query",
                        "required": False,
                        "description": "Part of the registration number or legal name.",
                        "schema": {"type": "string", "maxLength": 100},
                    },
                ],
            )
        },
        "/review/{application_id}": {
            "get": _operation(
                "review_application",
                "An application with its approval blockers",
                _OFFICER,
                review,
                errors=(401, 403, 404),
                parameters=application,
            )
        },
        "/review/{application_id}/documents/{document_id}/attest": {
            "post": _operation(
                "attest_document",
                "Attest the paper seal on an unsigned scan",
                _OFFICER,
                {"200": _json(_ref("Document"), "The attested document.")},
                errors=(401, 403, 404, 409),
                parameters=document,
            )
        },
        "/review/{application_id}/documents/{document_id}/validity": {
            "put": _operation(
                "set_document_validity",
                "Record when a business licence or ID expires (null: no end date)",
                _OFFICER,
                {"200": _json(_ref("Document"), "The document.")},
                errors=(400, 401, 403, 404, 409, 415),
                parameters=document,
                body=_body(_ref("Validity")),
            )
        },
        "/review/{application_id}/approve": {
            "post": _operation(
                "approve_application",
                "Approve; a CSR application is issued at once unless dual control waits for a "
                "second officer",
                _OFFICER,
                review,
                errors=(400, 401, 403, 404, 409, 503),
                parameters=application,
            )
        },
        "/review/{application_id}/reject": {
            "post": _operation(
                "reject_application",
                "Reject with a reason the employer sees",
                _OFFICER,
                review,
                errors=(400, 401, 403, 404, 409, 415),
                parameters=application,
                body=_body(_ref("Rejection")),
            )
        },
        "/review/{application_id}/issue": {
            "post": _operation(
                "issue_application",
                "Issue the approved application's certificate (retry after an HSM failure)",
                _OFFICER,
                review,
                errors=(401, 403, 404, 409, 503),
                parameters=application,
            )
        },
        "/applications/{application_id}/revoke": {
            "post": _operation(
                "revoke_own_certificate",
                "Revoke the application's certificate (the password again; the employer is "
                "notified)",
                _EMPLOYER,
                {"200": _json(_ref("StatusChange"), "Revoked; OCSP answers say so now.")},
                errors=(400, 401, 403, 404, 409, 415, 423, 429, 503),
                parameters=application,
                body=_body(_ref("EmployerRevocation")),
            )
        },
        "/review/certificates/{serial}/revoke": {
            "post": _operation(
                "revoke_certificate",
                "Revoke, hold or release an employer certificate (RA officers and CA "
                "administrators; the employer is notified)",
                _OFFICER,
                {"200": _json(_ref("StatusChange"), "The certificate's new status.")},
                errors=(400, 401, 403, 404, 409, 415, 503),
                parameters=_path("serial"),
                body=_body(_ref("OfficerRevocation")),
            )
        },
        "/certificates/{serial}/status": {
            "get": _operation(
                "certificate_status",
                "Public status of an employer certificate",
                "public",
                {"200": _json(_ref("PublicStatus"), "The certificate's status.")},
                errors=(404,),
                public=True,
                parameters=_path("serial"),
            )
        },
        "/certificates": {
            "get": _operation(
                "list_certificates",
                "The employer's certificates, newest first, with their renewal state",
                _EMPLOYER,
                {"200": _json(_ref("CertificateList"), "The certificates.")},
                errors=(401, 403),
            )
        },
        "/certificates/{serial}/renewal-info": {
            "get": _operation(
                "renewal_info",
                "Suggested renewal window of an employer certificate (as RFC 9773's renewal "
                "information; Retry-After says when to ask again)",
                "public",
                {"200": _json(_ref("RenewalInfo"), "Where the certificate stands for renewal.")},
                errors=(404,),
                public=True,
                parameters=_path("serial"),
            )
        },
        "/certificates/{serial}/renewal": {
            "post": _operation(
                "renew_certificate",
                "Renew (re-key) a certificate with a new CSR: issued at once when the employer "
                "record and documents are unchanged, else waiting for an officer or documents",
                _EMPLOYER,
                {
                    "201": _json(_ref("RenewalResult"), "Renewed: the new certificate."),
                    "202": _json(
                        _ref("RenewalResult"), "Accepted; it waits (see reasons and application)."
                    ),
                },
                errors=(400, 401, 403, 404, 409, 415, 503),
                parameters=_path("serial"),
                body=_body(_ref("RenewalRequest")),
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                "public",
                {"200": _json({"type": "object"}, "The OpenAPI 3.1 document.")},
                errors=(),
                public=True,
            )
        },
    }


def openapi_document(public_base_url: str) -> JSON:
    """The OpenAPI 3.1 document, with the service's public URL as its server."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Employer certificate authority API",
            "version": "1.0.0",
            "description": "Register an employer, apply for an organisation certificate with "
            "sealed documents, review applications (RA officers) and download certificates. "
            'Errors are JSON: {"error": {"code": ..., "message": ...}}.',
        },
        "servers": [{"url": public_base_url.rstrip("/") + PREFIX}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "authentication"},
            {"name": "registration"},
            {"name": "bindings"},
            {"name": _EMPLOYER},
            {"name": _OFFICER},
            {"name": "public"},
        ],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from POST /auth/token.",
                }
            },
            "schemas": SCHEMAS,
            "responses": {
                name: _json(_ref("Error"), description)
                for name, description in _ERROR_RESPONSES.values()
            },
        },
    }
