"""What the revocation package adds to an app: the CRL/OCSP and revocation pages'
blueprints, the OCSP fast path and its answer cache.

Its own module rather than the package's ``__init__``, so that importing any module of the
package does not import its views (tests/test_import_graph.py)."""

from __future__ import annotations

from typing import cast

from flask import Flask
from flask.typing import RouteCallable
from flask_limiter import Limiter

from ca_service.auth.ratelimit import MESSAGE
from ca_service.extensions import settings_of
from ca_service.revocation import portal
from ca_service.revocation.answer_cache import AnswerCache
from ca_service.revocation.fastpath import OcspFastPath
from ca_service.revocation.ocsp import ANSWER_CACHE, resign_margin, response_lifetime
from ca_service.revocation.portal_views import bp as portal_bp
from ca_service.revocation.views import bp

# A POST where a password can be guessed: rate-limited per client address like sign-in.
LIMITED_ENDPOINTS = ("revocation_portal.employer_revoke",)


def init_app(app: Flask) -> None:
    """Register the CRL/OCSP and the revocation pages' blueprints. Call after
    ``ca_service.auth.blueprints.init_app``, whose limiter the employer's revocation (a
    password check) shares."""
    app.register_blueprint(bp)
    app.register_blueprint(portal_bp)
    settings = settings_of(app)
    app.extensions[ANSWER_CACHE] = AnswerCache(resign_margin(response_lifetime(settings)))
    # In front of everything Flask does per request: most OCSP requests end here.
    app.wsgi_app = OcspFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
    # The issuance pages include the revocation forms (templates/revocation/), whose reason
    # lists come from the service, not from each view's context.
    app.jinja_env.globals["revocation_reasons"] = {
        "officer": portal.OFFICER_REASONS,
        "employer": portal.EMPLOYER_REASONS,
        "labels": portal.REASON_LABELS,
    }
    limiter: Limiter = app.extensions["auth_limiter"]
    limit = limiter.limit(
        str(settings["LOGIN_RATE_LIMIT"]), methods=["POST"], error_message=MESSAGE
    )
    for endpoint in LIMITED_ENDPOINTS:
        app.view_functions[endpoint] = cast(RouteCallable, limit(app.view_functions[endpoint]))
