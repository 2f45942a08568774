"""One error hierarchy: each error carries an HTTP status and a message a user can act on."""

from __future__ import annotations

#: How much of a value a message quotes back: enough to recognise it, never the whole of a
#: 200 kB field.
ECHO_LIMIT = 64


def echoed(value: object, limit: int = ECHO_LIMIT) -> str:
    """``value`` quoted for a message: its repr, cut to ``limit`` characters with "…"."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return repr(text[:limit] + "…")
    return repr(text)


class CAError(Exception):
    """Base of every error the service shows to a user, the CLI or an API client."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(CAError):
    """A setting is missing or wrong; raised at start-up, before anything is served."""

    status_code = 500
    code = "configuration_error"


class ValidationError(CAError):
    status_code = 400
    code = "invalid_input"


class NotFound(CAError):
    status_code = 404
    code = "not_found"


class Forbidden(CAError):
    status_code = 403
    code = "forbidden"


class Conflict(CAError):
    """The request conflicts with the current state (already exists, already done)."""

    status_code = 409
    code = "conflict"


class AuthenticationFailed(CAError):
    status_code = 401
    code = "authentication_failed"


class AccountLocked(CAError):
    status_code = 423
    code = "account_locked"


class ServiceUnavailable(CAError):
    """A dependency (HSM, database) is unavailable; retrying later may succeed."""

    status_code = 503
    code = "service_unavailable"
